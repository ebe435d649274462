"""The futures markets' bars from real captures: COIN-M's base-asset volume, rounded per trade as
Binance rounds it, and USDⓈ-M's market trades only, each against a plain Decimal reference."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.bars import Bar, merge
from binance_metrics.contracts import base_quantity
from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage, encode_trade, parse_scaled
from tests.support.data import (
    BTCUSD_PERP_CM_AGG_TRADES,
    BTCUSD_PERP_CM_CAPTURE,
    BTCUSDT_FUTURES_CAPTURE,
)
from tests.support.oracle import as_fields, materialize, reference_klines
from tests.test_dataflow import run_bars

#: BTCUSD_PERP's contractSize (exchangeInfo): one contract is 100 USD.
BTCUSD_PERP_CONTRACT = 100
EIGHT_DECIMALS = Decimal("0.00000001")


def _trades(path: Path, contract_size: int | None = None) -> list[TradeMessage]:
    found = [r for r in read_recording(path) if isinstance(r, TradeMessage)]
    return [msgspec.structs.replace(t, contract_size=contract_size) for t in found]


def reference_base(trade: TradeMessage) -> Decimal:
    """quantity x contractSize / price, rounded half up to 8 decimals, in Decimal."""
    assert trade.contract_size is not None
    exact = Decimal(trade.quantity) * trade.contract_size / Decimal(trade.price)
    return exact.quantize(EIGHT_DECIMALS, rounding=ROUND_HALF_UP)


def test_base_quantities_are_binance_s_own() -> None:
    # Binance's /dapi/v1/trades example (price 9635.0, qty 1: baseQty 0.01037883, where
    # truncating would give ...882) and a data.binance.vision COIN-M trades row
    # (id 1151022504: 78526.1, 83.0 contracts, base_qty 0.10569734); BTCUSD_PERP, 100 USD.
    for price, qty, base in (("9635.0", "1", "0.01037883"), ("78526.1", "83.0", "0.10569734")):
        assert base_quantity(parse_scaled(price), parse_scaled(qty), 100) == parse_scaled(base)


@given(
    st.decimals(Decimal("0.00000001"), Decimal("1000000"), places=8),
    st.integers(1, 10**9),
    st.sampled_from([1, 10, 100, 1000]),
)
def test_base_quantity_rounds_half_up_exactly(price: Decimal, contracts: int, size: int) -> None:
    qty = Decimal(contracts)
    expected = (qty * size / price).quantize(EIGHT_DECIMALS, rounding=ROUND_HALF_UP)
    got = base_quantity(parse_scaled(f"{price:f}"), parse_scaled(str(qty)), size)
    assert Decimal(got).scaleb(-8) == expected


def _assert_bars_equal(trades: list[TradeMessage], market_only: bool = False) -> int:
    """Bars of ``trades`` through the dataflow equal the plain reference, base volumes included;
    return how many minutes."""
    counted = [t for t in trades if not market_only or t.trade_type == "MARKET"]
    updates, _, _ = run_bars([[encode_trade(t) for t in trades]], batch_size=500)
    table = materialize(updates)
    expected = reference_klines(counted)
    assert set(table) == set(expected)
    for key, fields in expected.items():
        assert as_fields(table[key]) == fields, key
        mine = [t for t in counted if (t.symbol, t.trade_time_ms // 60_000 * 60_000) == key]
        if trades[0].contract_size is None:
            base = taker_base = Decimal(0)
        else:
            base = sum((reference_base(t) for t in mine), Decimal(0))
            taker_base = sum((reference_base(t) for t in mine if not t.buyer_is_maker), Decimal(0))
        values = table[key].decimals()
        assert (values["base_volume"], values["taker_buy_base_volume"]) == (base, taker_base), key
    return len(expected)


def test_coin_m_aggtrades_bars_have_binance_s_base_volume() -> None:
    trades = _trades(BTCUSD_PERP_CM_AGG_TRADES, BTCUSD_PERP_CONTRACT)
    assert len(trades) == 3000
    assert _assert_bars_equal(trades) == 53  # 00:00 to 00:52


def test_coin_m_trade_stream_bars_have_binance_s_base_volume() -> None:
    trades = _trades(BTCUSD_PERP_CM_CAPTURE, BTCUSD_PERP_CONTRACT)
    assert len(trades) == 5235
    assert _assert_bars_equal(trades) == 12


def test_usd_m_bars_count_market_trades_only_and_no_base_volume() -> None:
    trades = _trades(BTCUSDT_FUTURES_CAPTURE)
    assert {t.trade_type for t in trades} == {"MARKET", "INSURANCE_FUND"}
    _assert_bars_equal(trades, market_only=True)


def test_base_volume_merges_like_every_other_sum() -> None:
    a = Bar().add(6 * 10**12, 10**8, 1, 1, False, 1_666_667)
    b = Bar().add(6 * 10**12, 2 * 10**8, 2, 2, True, 3_333_333)
    merged = merge(b, a)
    assert (merged.base_volume, merged.taker_buy_base_volume) == (5_000_000, 1_666_667)
