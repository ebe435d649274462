"""COIN-M end to end: a real BTCUSD_PERP aggTrades file replayed (by the history path and through
Kafka) becomes cm bars whose base-asset volumes ``bars`` prints where Binance's COIN-M klines
have them; the same store keeps spot bars of the same minutes apart."""

from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from binance_metrics.recordings import read_recording
from binance_metrics.trades import TradeMessage
from tests.cli.support import error_line, run_cli
from tests.support.data import BTCUSD_PERP_CM_AGG_TRADES
from tests.support.oracle import reference_klines

MINUTE_MS = 60_000


def _reference() -> dict[int, tuple[Decimal, Decimal, Decimal, int]]:
    """open time -> (volume in contracts, base volume, taker-buy base volume, trades), in
    Decimal: each aggregate's base quantity rounded half up to 8 decimals, then summed."""
    trades = [r for r in read_recording(BTCUSD_PERP_CM_AGG_TRADES) if isinstance(r, TradeMessage)]
    out: dict[int, tuple[Decimal, Decimal, Decimal, int]] = {}
    for (_, start), fields in reference_klines(trades).items():
        mine = [t for t in trades if t.trade_time_ms // MINUTE_MS * MINUTE_MS == start]
        bases = [
            (
                (Decimal(t.quantity) * 100 / Decimal(t.price)).quantize(
                    Decimal("1e-8"), rounding=ROUND_HALF_UP
                ),
                t.buyer_is_maker,
            )
            for t in mine
        ]
        base = sum((b for b, _ in bases), Decimal(0))
        taker = sum((b for b, maker in bases if not maker), Decimal(0))
        out[start] = (fields["volume"], base, taker, fields["trade_count"])
    return out


def _binance_rows(cwd: Path, market: str) -> dict[int, list[str]]:
    result = run_cli(cwd, "bars", "--market", market, "--symbol", "BTCUSD_PERP", "--format",
                     "binance")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {int(row[0]): row for row in csv.reader(io.StringIO(result.stdout))}


@pytest.mark.parametrize("path", [[], ["--through-kafka"]], ids=["history", "through-kafka"])
def test_coin_m_replay_prints_binance_s_base_volume_columns(
    tmp_path: Path, path: list[str]
) -> None:
    replayed = run_cli(tmp_path, "replay", *path, "--contract-size", "100",
                       str(BTCUSD_PERP_CM_AGG_TRADES), MARKET="cm")  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    rows = _binance_rows(tmp_path, "cm")
    expected = _reference()
    assert set(rows) == set(expected)
    for start, (volume, base, taker, trades) in expected.items():
        row = rows[start]
        # Binance's COIN-M kline columns: volume (contracts), base-asset volume, trades,
        # taker-buy volume, taker-buy base-asset volume.
        assert (Decimal(row[5]), Decimal(row[7]), int(row[8]), Decimal(row[10])) == (
            volume, base, trades, taker,
        ), start  # fmt: skip
    # The cm bars are not spot's: that market has none of them.
    assert "no spot bars stored" in error_line(
        run_cli(tmp_path, "bars", "--symbol", "BTCUSD_PERP"), 2
    )


def test_coin_m_needs_its_contract_size_and_the_others_take_none(tmp_path: Path) -> None:
    missing = run_cli(tmp_path, "replay", str(BTCUSD_PERP_CM_AGG_TRADES), MARKET="cm")
    assert "need the symbol's contract size, --contract-size" in error_line(missing, 2)
    spot = run_cli(tmp_path, "replay", "--contract-size", "100", str(BTCUSD_PERP_CM_AGG_TRADES))
    assert error_line(spot, 2).endswith("--contract-size is for COIN-M (MARKET=cm), not spot")
