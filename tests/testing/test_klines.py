"""The local exchange's klines: those of the trades it plays equal the plain Decimal reference,
and pages are cut as Binance cuts them."""

from __future__ import annotations

from decimal import Decimal

from binance_metrics.testing.klines import kline_rows_of, klines_page, read_kline_rows
from binance_metrics.testing.market import load_capture, merge_by_event_time
from binance_metrics.trades import TradeMessage
from tests.support.data import BTCUSDT_CAPTURE, BTCUSDT_KLINES, ETHUSDT_CAPTURE
from tests.support.oracle import FIELDS, reference_klines

#: The 12 columns' positions of the reference's fields.
COLUMNS = {"open": 1, "high": 2, "low": 3, "close": 4, "volume": 5, "quote_volume": 7,
           "trade_count": 8, "taker_buy_volume": 9, "taker_buy_quote_volume": 10}  # fmt: skip


def test_the_klines_of_played_trades_equal_the_reference() -> None:
    trades = merge_by_event_time(load_capture(BTCUSDT_CAPTURE), load_capture(ETHUSDT_CAPTURE))
    rows = kline_rows_of(trades)
    messages = [
        TradeMessage(event_type="trade", event_time_ms=t.event_time, symbol=t.symbol,
                     trade_id=t.id, price=t.data["p"], quantity=t.data["q"],
                     trade_time_ms=t.trade_time, buyer_is_maker=t.data["m"])
        for t in trades
    ]  # fmt: skip
    expected = reference_klines(messages)
    assert sum(len(r) for r in rows.values()) == len(expected)
    for symbol, symbol_rows in rows.items():
        for row in symbol_rows:
            start = int(row[0])
            assert int(row[6]) == start + 59_999 and len(row) == 12
            got = {name: (int if name == "trade_count" else Decimal)(row[COLUMNS[name]])
                   for name in FIELDS}  # fmt: skip
            assert got == expected[(symbol, start)], (symbol, start)


def test_pages_are_cut_as_binance_cuts_them() -> None:
    rows = {"BTCUSDT": read_kline_rows(BTCUSDT_KLINES)}
    first = 1577836800000

    def page(**query: str) -> tuple[int, list[int] | object]:
        status, body = klines_page(rows, {k: [v] for k, v in query.items()})
        return status, [r[0] for r in body] if status == 200 else body

    assert page(symbol="btcusdt", interval="1m", startTime=str(first + 1), limit="2") == (
        200, [first + 60_000, first + 120_000],
    )  # fmt: skip
    end = first + 10 * 60_000
    assert page(symbol="BTCUSDT", interval="1m", endTime=str(end), limit="3") == (
        200, [end - 120_000, end - 60_000, end],
    )  # fmt: skip
    status, body = page(symbol="BTCUSDT", interval="1m")
    assert status == 200 and isinstance(body, list) and len(body) == 500
    assert body[-1] == first + 1439 * 60_000, "no range: the most recent"
    assert page(symbol="BTCUSDT", interval="1m", limit="1001")[0] == 400
    assert page(symbol="NOPE", interval="1m") == (400, {"code": -1121, "msg": "Invalid symbol."})
