"""Every recorded format replay reads gives the same trades, exactly."""

from __future__ import annotations

import csv
import gzip
import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from binance_metrics.errors import ConfigError
from binance_metrics.recordings import (
    RecordingError,
    SymbolMissingError,
    check_raw_trades,
    check_recording,
    read_recording,
    symbol_from_name,
)
from binance_metrics.trades import Rejected, TradeMessage
from tests.support.data import (
    BTCUSDT_CAPTURE,
    BTCUSDT_KLINES,
    TRXUSDT_STREAM_CSV,
    XRPETH_AGG_TRADES,
    XRPETH_AGG_TRADES_JSON,
)

KEY = (
    "event_type",
    "symbol",
    "trade_id",
    "aggregate_last_id",
    "price",
    "quantity",
    "trade_time_ms",
    "buyer_is_maker",
)


def trades(path: Path, symbol: str | None = None) -> list[TradeMessage]:
    records = list(read_recording(path, symbol))
    assert not [r for r in records if isinstance(r, Rejected)]
    return [r for r in records if isinstance(r, TradeMessage)]


def key(trade: TradeMessage) -> tuple[object, ...]:
    return tuple(getattr(trade, name) for name in KEY)


def test_symbol_comes_from_the_data_binance_vision_name() -> None:
    assert symbol_from_name(XRPETH_AGG_TRADES) == "XRPETH"
    assert symbol_from_name(Path("BTCUSD_PERP-aggTrades-2026-05-08.zip")) == "BTCUSD_PERP"
    assert symbol_from_name(Path("trades.csv")) is None


def test_agg_trades_csv_and_rest_json_agree() -> None:
    from_csv, from_json = trades(XRPETH_AGG_TRADES), trades(XRPETH_AGG_TRADES_JSON)
    assert len(from_csv) == 10_063
    assert sum(t.trade_count for t in from_csv) == 11_884
    assert [key(t) for t in from_csv] == [key(t) for t in from_json]
    first = from_csv[0]
    assert first == TradeMessage(
        event_type="aggTrade",
        event_time_ms=1570752011620,
        symbol="XRPETH",
        aggregate_id=13519807,
        trade_id=15373518,
        aggregate_last_id=15373518,
        price="0.00141342",
        quantity="23.00000000",
        trade_time_ms=1570752011620,
        buyer_is_maker=True,
        ingestion_time_ms=first.ingestion_time_ms,
        latency_ms=first.latency_ms,
    )


def test_header_zip_and_microseconds(tmp_path: Path) -> None:
    lines = XRPETH_AGG_TRADES.read_text().splitlines()[:100]
    header = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    micro = []
    for line in lines:
        cells = line.split(",")
        cells[5] += "123"  # 2025+ archives: microseconds
        micro.append(",".join(cells[:7]))
    path = tmp_path / "XRPETH-aggTrades-2019-10-11.csv"  # the rows are of 2019-10-11
    path.write_text(header + "\n" + "\n".join(micro) + "\n")
    archive = tmp_path / "XRPETH-aggTrades-2019-10-11.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, path.name)
    expected = [key(t) for t in trades(XRPETH_AGG_TRADES)[:100]]
    assert [key(t) for t in trades(path)] == expected
    assert [key(t) for t in trades(archive)] == expected


def test_raw_trades_csv_and_historical_trades_json(tmp_path: Path) -> None:
    frames = trades(BTCUSDT_CAPTURE)[:50]
    csv_path = tmp_path / "BTCUSDT-trades-2024-08-08.csv"
    csv_path.write_text(
        "".join(
            f"{t.trade_id},{t.price},{t.quantity},0.0,{t.trade_time_ms},{t.buyer_is_maker},True\n"
            for t in frames
        )
    )
    rest = [
        {
            "id": t.trade_id,
            "price": t.price,
            "qty": t.quantity,
            "quoteQty": "0",
            "time": t.trade_time_ms,
            "isBuyerMaker": t.buyer_is_maker,
            "isBestMatch": True,
        }
        for t in frames
    ]
    json_path = tmp_path / "historical.json"
    json_path.write_text(json.dumps(rest))
    expected = [key(t) for t in frames]
    assert [key(t) for t in trades(csv_path)] == expected
    assert [key(t) for t in trades(json_path, "btcusdt")] == expected


def test_bare_frames_and_other_streams(tmp_path: Path) -> None:
    lines = BTCUSDT_CAPTURE.read_text().splitlines()[:20]
    bare = [json.dumps(json.loads(line)["data"]) for line in lines]
    depth = '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","s":"BTCUSDT"}}'
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([*lines[:10], depth, *bare[10:]]) + "\n")
    assert [key(t) for t in trades(path)] == [key(t) for t in trades(BTCUSDT_CAPTURE)[:20]]


def test_bad_rows_are_kept_with_file_line_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "XRPETH-aggTrades-2019-10-11.csv"
    path.write_bytes(
        b"1,0.1,1.0,5,5,1570752011620,True,True\n"
        b"2,0.1,-1.0,6,6,1570752011620,True,True\n"
        b"3,0.1,1.0,7,7,1570752011620,maybe,True\n"
        b"4,0.1\n"
        b"\n"
        b"5,0.1,1.0,8,8,1570752011620,\xff,True\n"
    )
    first, *rest = read_recording(path)
    assert isinstance(first, TradeMessage)
    rejected = [r for r in rest if isinstance(r, Rejected)]
    assert len(rejected) == len(rest) == 4
    name = path.name
    assert rejected[0].error == f"{name}:2: not a decimal number: '-1.0'"
    assert rejected[1].error == f"{name}:3: not a boolean: 'maybe'"
    assert rejected[2] == Rejected(b"4,0.1", f"{name}:4: 2 columns, expected 7 or 8")
    # bytes that are not UTF-8 reach the dead-letter topic as they were, the reason printable
    assert rejected[3].payload == b"5,0.1,1.0,8,8,1570752011620,\xff,True"
    assert rejected[3].error == rf"{name}:6: not a boolean: '\udcff'"


def test_a_file_without_symbol_needs_one(tmp_path: Path) -> None:
    path = tmp_path / "trades.json"
    path.write_bytes(XRPETH_AGG_TRADES_JSON.read_bytes())
    with pytest.raises(SymbolMissingError, match="pass --symbol") as raised:
        read_recording(path)
    assert isinstance(raised.value, ConfigError), "a usage error: the command line lacks --symbol"
    assert len(trades(path, "XRPETH")) == 10_063


def stream_csv_trades(path: Path) -> list[tuple[object, ...]]:
    """The trade-stream CSV read plainly, by its header: times in microseconds."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        (
            "trade",
            row["Symbol"],
            int(row["TradeId"]),
            None,
            row["Price"],
            row["Quantity"],
            int(row["TransactionTime"]) // 1000,
            row["IsBuyerMarketMaker"] == "1",
        )
        for row in rows
    ]


def test_the_flattened_trade_stream_csv_is_read_by_its_header() -> None:
    read = trades(TRXUSDT_STREAM_CSV)
    assert check_recording(TRXUSDT_STREAM_CSV).name == "a trade-stream CSV"
    assert [key(t) for t in read] == stream_csv_trades(TRXUSDT_STREAM_CSV)
    assert len(read) == 10_000
    first = read[0]
    assert (first.event_time_ms, first.best_match, first.trade_type) == (1741046401271, True, None)
    assert check_raw_trades(TRXUSDT_STREAM_CSV) is not None, "the local exchange can stream it"


def test_stream_csv_columns_may_come_in_any_order(tmp_path: Path) -> None:
    with TRXUSDT_STREAM_CSV.open(newline="") as f:
        rows = list(csv.reader(f))[:50]
    order = list(reversed(range(len(rows[0]))))
    path = tmp_path / "trx.csv"
    path.write_text("".join(",".join(row[i] for i in order) + "\n" for row in rows))
    assert [key(t) for t in trades(path)] == stream_csv_trades(TRXUSDT_STREAM_CSV)[:49]


def not_trades(tmp_path: Path, name: str) -> Path:
    """A file that is no recording of trades, written the way a user would come by it."""
    path = tmp_path / name
    if name == "binary.csv":
        path.write_bytes(bytes(range(256)) * 8)
    elif name == "junk.zip":
        path.write_text("this is no zip archive\n")
    elif name == "two.zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("a.csv", XRPETH_AGG_TRADES.read_text()[:1000])
            zf.writestr("b.csv", XRPETH_AGG_TRADES.read_text()[:1000])
    elif name == "XRPETH-aggTrades.csv.gz":
        path.write_bytes(gzip.compress(XRPETH_AGG_TRADES.read_bytes()[:1000]))
    elif name == "empty.jsonl":
        path.write_text("\n\n")
    elif name == "klines.json":
        path.write_text('[[1499040000000,"0.01634790","0.80000000"]]')
    elif name == "depth.csv":
        path.write_text(
            "TimestampOfReceive,Stream,EventType,EventTime,Symbol,FirstUpdateId,FinalUpdateId,"
            "IsAsk,Price,Quantity\n1741046401272286,trxusdt@depth@100ms,depthUpdate,"
            "1741046401271969,TRXUSDT,1,2,1,0.2312,100\n"
        )
    elif name == "notes.csv":
        path.write_text("symbol,comment\nBTCUSDT,fine\n")
    elif name == "BTCUSDT-9columns.csv":
        path.write_text("1,2,3,4,5,6,7,8,9\n")
    return path


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("binary.csv", "not UTF-8 text"),
        ("junk.zip", "not a zip archive"),
        ("two.zip", "a zip of 2 files (a.csv, b.csv)"),
        ("XRPETH-aggTrades.csv.gz", "compressed with gzip: unpack it first"),
        ("empty.jsonl", "empty file"),
        ("klines.json", "a JSON array of arrays (REST klines?)"),
        ("depth.csv", "an order book (depth) CSV, not a trade stream (no TransactionTime, "
         "TradeId, IsBuyerMarketMaker column)"),
        ("notes.csv", "it begins with 'symbol,comment', which is no trades file's header"),
        ("BTCUSDT-9columns.csv", "a CSV of 9 columns (1,2,3,4,5,6,7,8,9), not trades (6 or 7)"),
        ("missing.csv", "no such file"),
        ("", "a directory"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_trades_is_refused_before_any_record(
    tmp_path: Path, name: str, problem: str
) -> None:
    path = not_trades(tmp_path, name)
    with pytest.raises(RecordingError) as raised:
        read_recording(path)
    assert raised.value.problem.startswith(problem)
    assert str(raised.value).startswith(f"{path}: {problem}")
    assert "replay reads data.binance.vision trades or aggTrades CSV" in str(raised.value)


def test_klines_are_recognised_with_and_without_header(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"this is a klines file \(12 columns\)"):
        check_recording(BTCUSDT_KLINES)
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,x,y,ignore\n"
    path = tmp_path / "BTCUSDT-1m-2025-01-01.csv"
    path.write_text(header + BTCUSDT_KLINES.read_text())
    with pytest.raises(RecordingError, match=r"this is a klines file \(open_time,open,high"):
        check_recording(path)


def test_seven_columns_are_told_apart_by_their_content(tmp_path: Path) -> None:
    # trades with is_best_match, and aggTrades without it (futures) both have 7 columns
    frames = trades(BTCUSDT_CAPTURE)[:5]
    raw = tmp_path / "BTCUSDT-x.csv"
    raw.write_text("".join(f"{t.trade_id},{t.price},{t.quantity},1.0,{t.trade_time_ms},"
                           f"{t.buyer_is_maker},True\n" for t in frames))  # fmt: skip
    agg = tmp_path / "XRPETH-y.csv"
    agg.write_text("".join(",".join(line.split(",")[:7]) + "\n"
                           for line in XRPETH_AGG_TRADES.read_text().splitlines()[:5]))  # fmt: skip
    assert [key(t) for t in trades(raw)] == [key(t) for t in frames]
    assert [key(t) for t in trades(agg)] == [key(t) for t in trades(XRPETH_AGG_TRADES)[:5]]


def test_the_local_exchange_needs_raw_trades() -> None:
    for path in (XRPETH_AGG_TRADES, XRPETH_AGG_TRADES_JSON):
        with pytest.raises(RecordingError, match="holds aggregate trades") as raised:
            check_raw_trades(path)
        assert "--exchange replay: needs raw @trade recordings" in str(raised.value)
    with pytest.raises(RecordingError, match="klines"):
        check_raw_trades(BTCUSDT_KLINES)


@pytest.mark.parametrize("kind", ["csv", "zip", "jsonl"])
def test_reading_the_first_record_does_not_load_the_file(tmp_path: Path, kind: str) -> None:
    source = BTCUSDT_CAPTURE if kind == "jsonl" else XRPETH_AGG_TRADES
    text = source.read_text()
    path = tmp_path / f"XRPETH-aggTrades-big.{kind}"
    with path.open("w") as f:
        for _ in range(10):  # 7.5 MB of CSV, 6 MB of frames
            f.write(text)
    if kind == "zip":
        big = path.with_suffix(".csv")
        path.rename(big)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(big, big.name)
    tracemalloc.start()
    try:
        records = read_recording(path)
        assert isinstance(next(records), TradeMessage)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000 < 10 * len(text), f"{peak:,} bytes to read one record"


def test_a_row_outside_the_period_of_the_file_name_is_rejected(tmp_path: Path) -> None:
    lines = XRPETH_AGG_TRADES.read_text().splitlines()[:4]
    year_back, nine_years_back = lines[1].split(","), lines[2].split(",")
    year_back[5] = str(int(year_back[5]) - 365 * 86_400_000)
    nine_years_back[5] = str(int(nine_years_back[5]) - 9 * 365 * 86_400_000)
    path = tmp_path / "XRPETH-aggTrades-2019-10-11.csv"
    rows = [lines[0], ",".join(year_back), ",".join(nine_years_back), lines[3]]
    path.write_text("\n".join(rows) + "\n")
    records = list(read_recording(path))
    assert [type(r) for r in records] == [TradeMessage, Rejected, Rejected, TradeMessage]
    assert isinstance(records[1], Rejected) and isinstance(records[2], Rejected)
    assert "outside the period the file's name gives" in records[1].error
    assert "before Binance existed" in records[2].error
