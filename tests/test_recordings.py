"""Every recorded format replay reads gives the same trades, exactly."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from binance_metrics.errors import InvalidTradeError
from binance_metrics.recordings import read_recording, symbol_from_name
from binance_metrics.trades import Rejected, TradeMessage
from tests.conftest import DATA

AGG_CSV = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.csv"
AGG_JSON = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.api.json"
CAPTURE = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
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
    assert symbol_from_name(AGG_CSV) == "XRPETH"
    assert symbol_from_name(Path("BTCUSD_PERP-aggTrades-2026-05-08.zip")) == "BTCUSD_PERP"
    assert symbol_from_name(Path("trades.csv")) is None


def test_agg_trades_csv_and_rest_json_agree() -> None:
    from_csv, from_json = trades(AGG_CSV), trades(AGG_JSON)
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
    lines = AGG_CSV.read_text().splitlines()[:100]
    header = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    micro = []
    for line in lines:
        cells = line.split(",")
        cells[5] += "123"  # 2025+ archives: microseconds
        micro.append(",".join(cells[:7]))
    path = tmp_path / "XRPETH-aggTrades-2025-01-01.csv"
    path.write_text(header + "\n" + "\n".join(micro) + "\n")
    archive = tmp_path / "XRPETH-aggTrades-2025-01-01.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, path.name)
    expected = [key(t) for t in trades(AGG_CSV)[:100]]
    assert [key(t) for t in trades(path)] == expected
    assert [key(t) for t in trades(archive)] == expected


def test_raw_trades_csv_and_historical_trades_json(tmp_path: Path) -> None:
    frames = trades(CAPTURE)[:50]
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
    lines = CAPTURE.read_text().splitlines()[:20]
    bare = [json.dumps(json.loads(line)["data"]) for line in lines]
    depth = '{"stream":"btcusdt@depth","data":{"e":"depthUpdate","s":"BTCUSDT"}}'
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([*lines[:10], depth, *bare[10:]]) + "\n")
    assert [key(t) for t in trades(path)] == [key(t) for t in trades(CAPTURE)[:20]]


def test_bad_rows_are_kept_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "XRPETH-aggTrades-2019-10-11.csv"
    path.write_text(
        "1,0.1,1.0,5,5,1570752011620,True,True\n"
        "2,0.1,-1.0,6,6,1570752011620,True,True\n"
        "3,0.1,1.0,7,7,1570752011620,maybe,True\n"
        "4,0.1\n"
    )
    records = list(read_recording(path))
    assert isinstance(records[0], TradeMessage)
    assert [type(r) for r in records[1:]] == [Rejected] * 3
    assert records[3] == Rejected(b"4,0.1", "bad row: list index out of range")


def test_a_file_without_symbol_needs_one(tmp_path: Path) -> None:
    path = tmp_path / "trades.json"
    path.write_bytes(AGG_JSON.read_bytes())
    with pytest.raises(InvalidTradeError, match="--symbol"):
        list(read_recording(path))
