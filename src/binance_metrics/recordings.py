"""Read recorded Binance trades from files, as trade messages.

Formats (detected from the content and the file name):

* data.binance.vision ``trades`` CSV —
  ``id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]``
* data.binance.vision ``aggTrades`` CSV —
  ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker[,...]``

  both with or without header, ``.csv`` or ``.zip``, times in milliseconds (until 2024) or
  microseconds (from 2025);
* JSON lines of WebSocket frames, combined-stream (``{"stream": ..., "data": {...}}``) or bare,
  ``trade`` or ``aggTrade`` events (other streams in the file are skipped and counted);
* a JSON array from REST ``/api/v3/aggTrades`` (``{"a","p","q","f","l","T","m","M"}``) or
  ``/api/v3/historicalTrades`` (``{"id","price","qty","time","isBuyerMaker",...}``).

Archives carry no symbol: it comes from the data.binance.vision file name
(``XRPETH-aggTrades-2019-10-11.csv``) or from the caller. A row that cannot be read is
yielded as a :class:`~binance_metrics.trades.Rejected` (raw text and reason) for the dead-letter
topic.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from binance_metrics.errors import InvalidTradeError
from binance_metrics.trades import Rejected, TradeMessage, now_ms, validate_trade

_MICROSECONDS_FROM = 10**14  # a trade time above this is in microseconds (year 5138 in ms)
_SYMBOL_IN_NAME = re.compile(r"^([A-Z0-9_]{2,30})-")
_TRADES_HEADER = ("id", "price", "qty")
_AGG_HEADER = ("agg_trade_id", "price", "quantity")


Record = TradeMessage | Rejected


def symbol_from_name(path: Path) -> str | None:
    """``XRPETH-aggTrades-2019-10-11.csv`` -> ``XRPETH``."""
    match = _SYMBOL_IN_NAME.match(path.name)
    return match.group(1) if match else None


def read_recording(path: Path, symbol: str | None = None) -> Iterator[Record]:
    """Yield the trades of one recorded file, in file order."""
    symbol = symbol or symbol_from_name(path)
    text = _read_text(path)
    head = text.lstrip()[:1]
    if head == "[":
        yield from _rest_array(text, path, symbol)
    elif head == "{":
        yield from _json_lines(text)
    else:
        yield from _archive_csv(text, path, symbol)


def _read_text(path: Path) -> str:
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if not name.endswith("/")]
            if len(members) != 1:
                raise InvalidTradeError(f"{path}: expected one file in the zip, got {members}")
            return archive.read(members[0]).decode("utf-8")
    return path.read_text(encoding="utf-8")


def _ms(timestamp: int) -> int:
    return timestamp // 1000 if timestamp >= _MICROSECONDS_FROM else timestamp


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidTradeError(f"not a boolean: {text!r}")


def _need_symbol(symbol: str | None, path: Path) -> str:
    if not symbol:
        raise InvalidTradeError(f"{path.name}: no symbol in the file or its name; pass --symbol")
    return symbol.upper()


def _finish(trade: TradeMessage) -> TradeMessage:
    validate_trade(trade)
    return trade


def _archive_csv(text: str, path: Path, symbol: str | None) -> Iterator[Record]:
    sym = _need_symbol(symbol, path)
    rows = csv.reader(io.StringIO(text))
    first = next(rows, None)
    if first is None:
        return
    lowered = tuple(cell.strip().lower() for cell in first)
    if lowered[:3] == _AGG_HEADER:
        kind, pending = "agg", None
    elif lowered[:3] == _TRADES_HEADER:
        kind, pending = "trades", None
    else:
        kind, pending = _guess_kind(first, path), first
    parse = _agg_row if kind == "agg" else _trade_row
    ingested = now_ms()
    for row in [pending] if pending else []:
        yield _parse_row(parse, row, sym, ingested)
    for row in rows:
        if row:
            yield _parse_row(parse, row, sym, ingested)


def _guess_kind(row: list[str], path: Path) -> str:
    if "aggtrades" in path.name.lower():
        return "agg"
    if "-trades-" in path.name.lower():
        return "trades"
    # trades rows have a decimal quote quantity in the 4th column; aggTrades an integer id
    return "trades" if len(row) > 3 and "." in row[3] else "agg"


def _parse_row(parse: Any, row: list[str], symbol: str, ingested: int) -> Record:
    try:
        trade: TradeMessage = parse(row, symbol, ingested)
        return _finish(trade)
    except (InvalidTradeError, ValueError, IndexError) as exc:
        return Rejected(",".join(row).encode(), f"bad row: {exc}")


def _trade_row(row: list[str], symbol: str, ingested: int) -> TradeMessage:
    time_ms = _ms(int(row[4]))
    return TradeMessage(
        event_type="trade",
        event_time_ms=time_ms,
        symbol=symbol,
        trade_id=int(row[0]),
        price=row[1],
        quantity=row[2],
        trade_time_ms=time_ms,
        buyer_is_maker=_bool(row[5]),
        ingestion_time_ms=ingested,
        latency_ms=ingested - time_ms,
    )


def _agg_row(row: list[str], symbol: str, ingested: int) -> TradeMessage:
    time_ms = _ms(int(row[5]))
    return TradeMessage(
        event_type="aggTrade",
        event_time_ms=time_ms,
        symbol=symbol,
        aggregate_id=int(row[0]),
        price=row[1],
        quantity=row[2],
        trade_id=int(row[3]),
        aggregate_last_id=int(row[4]),
        trade_time_ms=time_ms,
        buyer_is_maker=_bool(row[6]),
        ingestion_time_ms=ingested,
        latency_ms=ingested - time_ms,
    )


def _json_lines(text: str) -> Iterator[Record]:
    ingested = now_ms()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            frame = msgspec.json.decode(line)
            data = frame.get("data", frame) if isinstance(frame, dict) else None
            if not isinstance(data, dict):
                raise InvalidTradeError("not a JSON object")
            if data.get("e") not in ("trade", "aggTrade"):
                continue  # depth, bookTicker, kline... frames are not trades
            yield _finish(_from_event(data, ingested))
        except (InvalidTradeError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            yield Rejected(line.encode(), f"bad frame: {exc}")


def _from_event(data: dict[str, Any], ingested: int) -> TradeMessage:
    event = dict(data)
    if event["e"] == "aggTrade":
        event["t"] = event.pop("f")
    event["T"] = _ms(int(event["T"]))
    event["ingestionTimeMs"] = ingested
    event["latencyMs"] = ingested - int(event["E"])
    for drop in ("b", "a") if event["e"] == "trade" else ():
        event.pop(drop, None)  # 2023 spot frames still carry buyer/seller order ids
    return msgspec.convert(event, TradeMessage)


def _rest_array(text: str, path: Path, symbol: str | None) -> Iterator[Record]:
    sym = _need_symbol(symbol, path)
    ingested = now_ms()
    for item in msgspec.json.decode(text):
        try:
            if "a" in item:
                time_ms = _ms(int(item["T"]))
                trade = TradeMessage(
                    event_type="aggTrade",
                    event_time_ms=time_ms,
                    symbol=sym,
                    aggregate_id=item["a"],
                    price=item["p"],
                    quantity=item["q"],
                    trade_id=item["f"],
                    aggregate_last_id=item["l"],
                    trade_time_ms=time_ms,
                    buyer_is_maker=item["m"],
                    best_match=item.get("M"),
                    ingestion_time_ms=ingested,
                    latency_ms=ingested - time_ms,
                )
            else:
                time_ms = _ms(int(item["time"]))
                trade = TradeMessage(
                    event_type="trade",
                    event_time_ms=time_ms,
                    symbol=sym,
                    trade_id=item["id"],
                    price=item["price"],
                    quantity=item["qty"],
                    trade_time_ms=time_ms,
                    buyer_is_maker=item["isBuyerMaker"],
                    best_match=item.get("isBestMatch"),
                    ingestion_time_ms=ingested,
                    latency_ms=ingested - time_ms,
                )
            yield _finish(trade)
        except (InvalidTradeError, KeyError, TypeError, ValueError) as exc:
            yield Rejected(msgspec.json.encode(item), f"bad record: {exc}")
