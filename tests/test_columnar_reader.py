"""The chunked reader gives what the row reader gives: the same trades (in columns, or as odd
trades), the same rejected rows with the same reasons, whatever the chunk size, for trades and
aggTrades files with ms or µs times, with or without a header, zipped or not, with bad rows
among good ones."""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from binance_metrics import columnar_reader
from binance_metrics.columnar_reader import Chunk, read_ahead, read_chunks
from binance_metrics.recordings import RecordingError, read_recording
from binance_metrics.trades import Rejected, TradeMessage, format_scaled, parse_scaled
from tests.support.data import XRPETH_AGG_TRADES

DAY_MS = 1_723_161_600_000  # 2024-08-09, the day of the files' names

BAD_CELLS = {
    "price": ["abc", "-1.5", "+1.5", "1e2", " 1.5", "1.123456789", "0.00000000", "", "1.2.3"],
    "qty": ["x", "0", "99999999999999999999.00000000"],
    "time": ["1498867199999", "9999999999999", "abc", "17231616000001234"],
    "maker": ["maybe", ""],
}


@st.composite
def files(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(data kind, CSV lines): trades or aggTrades of one day, some rows bad."""
    kind = draw(st.sampled_from(["trades", "aggTrades"]))
    micro = draw(st.booleans())
    flag = draw(st.sampled_from(["true", "True"]))
    lines = []
    trade_id = draw(st.integers(0, 10**9))
    time_ms = DAY_MS + draw(st.integers(0, 1000))
    for n in range(draw(st.integers(1, 60))):
        time_ms += draw(st.sampled_from([0, 3, 9_000, 70_000]))
        price = format_scaled(draw(st.integers(1, 10**14)))
        qty = format_scaled(draw(st.one_of(st.integers(1, 10**12), st.integers(1, 10**20))))
        maker = (
            flag if draw(st.booleans()) else flag.replace("True", "False").replace("true", "false")
        )
        cells = {"price": price, "qty": qty, "time": str(time_ms * 1000 if micro else time_ms),
                 "maker": maker}  # fmt: skip
        if draw(st.integers(0, 9)) == 0:  # a bad row
            column = draw(st.sampled_from(sorted(BAD_CELLS)))
            cells[column] = draw(st.sampled_from(BAD_CELLS[column]))
        span = draw(st.integers(0, 2)) if kind == "aggTrades" else 0
        if kind == "trades":
            row = [str(trade_id), cells["price"], cells["qty"], "1.0", cells["time"],
                   cells["maker"], "True"]  # fmt: skip
        else:
            row = [str(n), cells["price"], cells["qty"], str(trade_id), str(trade_id + span),
                   cells["time"], cells["maker"], "True"]  # fmt: skip
        lines.append(",".join(row))
        trade_id += span + 1
    if draw(st.booleans()):
        repeat = draw(st.integers(0, len(lines) - 1))
        lines.append(lines[repeat])  # a row twice
    if draw(st.booleans()):
        header = ("id,price,qty,quote_qty,time,is_buyer_maker,is_best_match" if kind == "trades"
                  else "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,"
                  "is_buyer_maker,is_best_match")  # fmt: skip
        lines.insert(0, header)
    return kind, lines


def from_chunks(chunks: list[Chunk]) -> tuple[list[tuple[object, ...]], list[tuple[bytes, str]]]:
    trades: list[tuple[object, ...]] = []
    for chunk in chunks:
        c = chunk.columns
        trades += [
            (c.symbols[s], f, last, p, q, t, m)
            for s, f, last, p, q, t, m in zip(
                c.symbol.tolist(),
                c.first_id.tolist(),
                c.last_id.tolist(),
                c.price.tolist(),
                c.quantity.tolist(),
                c.time_ms.tolist(),
                c.buyer_is_maker.tolist(),
                strict=True,
            )
        ]
        trades += [_row(trade) for trade in chunk.odd]
    rejected = [(r.payload, r.error) for chunk in chunks for r in chunk.rejected]
    return sorted(trades), sorted(rejected)


def _row(trade: TradeMessage) -> tuple[object, ...]:
    return (trade.symbol, trade.trade_id, trade.last_trade_id, parse_scaled(trade.price),
            parse_scaled(trade.quantity), trade.trade_time_ms, trade.buyer_is_maker)  # fmt: skip


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files(), st.sampled_from([64, 300, 4096, 1 << 20]), st.booleans())
def test_chunks_hold_what_the_row_reader_reads(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    file: tuple[str, list[str]],
    chunk_bytes: int,
    zipped: bool,
) -> None:
    kind, lines = file
    monkeypatch.setattr(columnar_reader, "CHUNK_BYTES", chunk_bytes)
    name = f"BTCUSDT-{kind}-2024-08-09"
    path = tmp_path / f"{name}.csv"
    path.write_text("\n".join(lines) + "\n")
    if zipped:
        with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as archive:
            archive.write(path, path.name)
        path.unlink()
        path = tmp_path / f"{name}.zip"
    records = list(read_recording(path))
    expected_trades = sorted(_row(r) for r in records if isinstance(r, TradeMessage))
    expected_rejected = sorted((r.payload, r.error) for r in records if isinstance(r, Rejected))
    trades, rejected = from_chunks(list(read_chunks(path)))
    assert trades == expected_trades
    assert rejected == expected_rejected


def test_a_trade_in_the_future_is_rejected_with_its_row_and_line(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-trades-2024-08.csv"
    path.write_text(f"1,1.00000000,1.00000000,1,{DAY_MS},true,true\n"
                    f"2,1.00000000,1.00000000,1,{DAY_MS + 60_000},true,true\n")  # fmt: skip
    (chunk,) = read_chunks(path, latest_ms=DAY_MS + 1000)
    assert len(chunk.columns) == 1
    (rejected,) = chunk.rejected
    assert rejected.payload == f"2,1.00000000,1.00000000,1,{DAY_MS + 60_000},true,true".encode()
    assert rejected.error.startswith(f"{path.name}:2: trade time {DAY_MS + 60_000} ms is ")


def test_other_formats_come_in_columns_too() -> None:
    expected = [r for r in read_recording(XRPETH_AGG_TRADES.with_suffix(".api.json"),
                                          "XRPETH")]  # fmt: skip
    chunks = list(read_chunks(XRPETH_AGG_TRADES.with_suffix(".api.json"), "XRPETH"))
    trades, rejected = from_chunks(chunks)
    assert trades == sorted(_row(r) for r in expected if isinstance(r, TradeMessage))
    assert len(trades) == 10_063 and not rejected


def test_reading_ahead_gives_the_chunks_in_order_and_raises_the_readers_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(columnar_reader, "CHUNK_BYTES", 4096)
    ahead = list(read_ahead(read_chunks(XRPETH_AGG_TRADES), threading.Event()))
    assert from_chunks(ahead) == from_chunks(list(read_chunks(XRPETH_AGG_TRADES)))
    assert len(ahead) > 100

    def failing() -> Iterator[Chunk]:
        yield from read_chunks(XRPETH_AGG_TRADES)
        raise RecordingError(XRPETH_AGG_TRADES, "cannot be read to its end (a test)")

    with pytest.raises(RecordingError, match="a test"):
        list(read_ahead(failing(), threading.Event()))
