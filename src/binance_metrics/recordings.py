"""Read recorded Binance trades from files, as trade messages.

Formats, recognised from the content (the header or the first rows), not from the file name:

* data.binance.vision ``trades`` CSV —
  ``id,price,qty,quote_qty,time,is_buyer_maker[,is_best_match]``
* data.binance.vision ``aggTrades`` CSV —
  ``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker[,...]``

  both with or without header, ``.csv`` or ``.zip``, times in milliseconds (until 2024) or
  microseconds (from 2025);
* a trade-stream CSV: WebSocket ``@trade`` messages flattened by the Binance-Data-Processor
  capture tool, header ``TimestampOfReceive,Stream,EventType,EventTime,TransactionTime,Symbol,
  TradeId,Price,Quantity,IsBuyerMarketMaker,MUnknownParameter`` (futures: ``XUnknownParameter``),
  times in microseconds;
* JSON lines of WebSocket frames, combined-stream (``{"stream": ..., "data": {...}}``) or bare,
  ``trade`` or ``aggTrade`` events (other streams in the file are skipped);
* a JSON array from REST ``/api/v3/aggTrades`` (``{"a","p","q","f","l","T","m","M"}``) or
  ``/api/v3/historicalTrades`` (``{"id","price","qty","time","isBuyerMaker",...}``).

Archives carry no symbol: it comes from the data.binance.vision file name
(``XRPETH-aggTrades-2019-10-11.csv``) or from the caller.

A file that is none of these (a klines file, a binary, a zip of several files, ...) raises
:class:`RecordingError`, naming the file and what it is, before any record is read. A row that
cannot be read is yielded as a :class:`~binance_metrics.trades.Rejected` (the row, and
``file:line: reason``) for the dead-letter topic. Files are read row by row, as a stream; only a
REST JSON array, which is one JSON document, is parsed whole.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Final, TextIO

import msgspec

from binance_metrics.errors import BinanceMetricsError, ConfigError, InvalidTradeError
from binance_metrics.trades import Rejected, TradeMessage, now_ms, validate_trade

#: What ``replay`` reads, said at the end of every error about a file that it cannot read.
READS: Final = (
    "replay reads data.binance.vision trades or aggTrades CSV (.csv or .zip), a trade-stream "
    "CSV (TimestampOfReceive,Stream,...), JSON lines of WebSocket trade/aggTrade frames, or a "
    "REST aggTrades/historicalTrades JSON array"
)
#: What the local exchange (``up --exchange replay:``) streams.
RAW_TRADES: Final = (
    "--exchange replay: needs raw @trade recordings: JSON lines of @trade frames or a "
    "trade-stream CSV (TimestampOfReceive,Stream,...); a data.binance.vision trades CSV works too"
)


class RecordingError(BinanceMetricsError):
    """A file that cannot be read as trades. The message names the file, what is wrong with it
    and what is expected instead; ``problem`` is the middle part alone."""

    def __init__(self, path: Path, problem: str, expected: str = READS) -> None:
        super().__init__(f"{path}: {problem}; {expected}")
        self.path = path
        self.problem = problem


class SymbolMissingError(RecordingError, ConfigError):
    """A file whose rows carry no symbol, with no symbol in its name and none given."""


@dataclass(frozen=True, slots=True)
class RecordingFormat:
    """One of the formats read; ``needs_symbol``: its rows carry no symbol."""

    name: str
    needs_symbol: bool


TRADES_CSV: Final = RecordingFormat("a data.binance.vision trades CSV", needs_symbol=True)
AGG_TRADES_CSV: Final = RecordingFormat("a data.binance.vision aggTrades CSV", needs_symbol=True)
TRADE_STREAM_CSV: Final = RecordingFormat("a trade-stream CSV", needs_symbol=False)
JSON_LINES: Final = RecordingFormat("JSON lines of WebSocket frames", needs_symbol=False)
REST_JSON: Final = RecordingFormat("a REST JSON array", needs_symbol=True)

Record = TradeMessage | Rejected

_MICROSECONDS_FROM: Final = 10**14  # a trade time above this is in microseconds (year 5138 in ms)
_SYMBOL_IN_NAME: Final = re.compile(r"^([A-Z0-9_]{2,30})-")
_HEAD_CHARS: Final = 64 * 1024  # enough for a header and a few rows of any format read here
_NOT_TEXT: Final = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as decoded here
_STREAM_COLUMNS: Final = (
    "EventType", "EventTime", "TransactionTime", "Symbol", "TradeId", "Price", "Quantity",
    "IsBuyerMarketMaker",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Layout:
    format: RecordingFormat
    header: bool = False  # the first row names the columns
    columns: dict[str, int] = field(default_factory=dict)  # trade-stream CSV: lower name -> index


def symbol_from_name(path: Path) -> str | None:
    """``XRPETH-aggTrades-2019-10-11.csv`` -> ``XRPETH``."""
    match = _SYMBOL_IN_NAME.match(path.name)
    return match.group(1) if match else None


_PERIOD_IN_NAME: Final = re.compile(
    r"-(?:trades|aggTrades)-(\d{4}-\d{2}(?:-\d{2})?)(?:_(\d{4}-\d{2}(?:-\d{2})?))?\.(?:csv|zip)$"
)


def period_from_name(path: Path) -> tuple[int, int] | None:
    """The trade times a data.binance.vision archive can hold, ``[start, end)`` in ms, from its
    name: ``BTCUSDT-trades-2024-08-09.zip`` is that day, ``...-2024-08.zip`` that month
    (``XRPETH-aggTrades-2019-10-11_2019-10-12.csv``: both days). None for other names."""
    match = _PERIOD_IN_NAME.search(path.name)
    if match is None:
        return None
    first, last = match.group(1), match.group(2) or match.group(1)
    try:
        start = _period_start(first)
        end = _period_start(last, after=True)
    except ValueError:
        return None
    return start, end


def _period_start(text: str, *, after: bool = False) -> int:
    """Epoch ms at the start of the day or month ``text`` (of the next one with ``after``)."""
    if len(text) == 10:
        day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        moment = day + timedelta(days=1) if after else day
    else:
        month = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
        moment = (
            month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)
            if after
            else month
        )
    return int(moment.timestamp() * 1000)


def check_recording(path: Path, symbol: str | None = None) -> RecordingFormat:
    """The format of ``path``, from its first rows, or :class:`RecordingError` saying why it
    cannot be read (:class:`SymbolMissingError` if it needs a symbol that nothing gives)."""
    layout = _layout(path)
    if layout.format.needs_symbol:
        _need_symbol(symbol or symbol_from_name(path), path)
    return layout.format


def read_recording(path: Path, symbol: str | None = None) -> Iterator[Record]:
    """The records of one recorded file, in file order: a trade message per trade, a
    :class:`Rejected` per row that is not one.

    A file that cannot be read as trades raises :class:`RecordingError` here, at the call,
    before any record is read. ``symbol`` is for formats whose rows carry none.
    """
    layout = _layout(path)
    sym = _need_symbol(symbol or symbol_from_name(path), path) if layout.format.needs_symbol else ""
    return _read(path, layout, sym)


def check_raw_trades(path: Path) -> RecordingFormat:
    """Check that ``path`` holds raw trades, which the local exchange streams as ``@trade``
    frames; raise :class:`RecordingError` naming the file otherwise. Reads up to the first trade.
    """
    try:
        fmt = check_recording(path)
        records = read_recording(path)
    except RecordingError as exc:
        raise RecordingError(path, exc.problem, RAW_TRADES) from None
    for record in records:
        if isinstance(record, TradeMessage):
            if record.event_type == "trade":
                return fmt
            problem = f"holds aggregate trades ({fmt.name}), which cannot be sent as @trade frames"
            raise RecordingError(path, problem, RAW_TRADES)
    raise RecordingError(path, f"holds no valid trade ({fmt.name})", RAW_TRADES)


# Recognising the format -------------------------------------------------------------------


def _layout(path: Path) -> _Layout:
    with _open_text(path) as text:
        head = text.read(_HEAD_CHARS)
    start = head.lstrip()
    # A stray bad byte further down is one bad row; at the very start it is not a text file.
    if "\x00" in head or _NOT_TEXT.search(start.split("\n", 1)[0]):
        raise RecordingError(path, "not UTF-8 text (a binary file, or another encoding)")
    if not start:
        raise RecordingError(path, "empty file")
    if start[0] == "{":
        return _Layout(JSON_LINES)
    if start[0] == "[":
        if re.match(r"\[\s*\[", start):
            raise RecordingError(path, "a JSON array of arrays (REST klines?), not trades")
        if re.match(r"\[\s*\]", start):
            raise RecordingError(path, "an empty JSON array")
        return _Layout(REST_JSON)
    lines = [line for line in head.splitlines(keepends=True) if line.strip()]
    if len(head) == _HEAD_CHARS and not lines[0].endswith(("\n", "\r")):
        raise RecordingError(path, f"no line ends in the first {_HEAD_CHARS // 1024} KiB")
    return _csv_layout(path, next(csv.reader(lines[:1])))


def _csv_layout(path: Path, first: list[str]) -> _Layout:
    cells = [cell.strip().lower() for cell in first]
    shown = ",".join(cell.strip() for cell in first)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if not cells[0].isdigit():  # every data row begins with an id or a time
        if cells[:3] == ["agg_trade_id", "price", "quantity"]:
            return _Layout(AGG_TRADES_CSV, header=True)
        if cells[:3] == ["id", "price", "qty"]:
            return _Layout(TRADES_CSV, header=True)
        if "timestampofreceive" in cells:
            return _stream_layout(path, cells)
        if "open_time" in cells or cells[1:5] == ["open", "high", "low", "close"]:
            raise RecordingError(path, f"this is a klines file ({shown}), not trades or aggTrades")
        raise RecordingError(path, f"it begins with {shown!r}, which is no trades file's header")
    if len(cells) == 12:
        raise RecordingError(path, "this is a klines file (12 columns), not trades or aggTrades")
    if len(cells) == 6 or (len(cells) == 7 and cells[5] in ("true", "false")):
        return _Layout(TRADES_CSV)  # 7 columns: is_buyer_maker, is_best_match
    if len(cells) in (7, 8):
        return _Layout(AGG_TRADES_CSV)  # 7 columns: transact_time, is_buyer_maker
    raise RecordingError(
        path, f"a CSV of {len(cells)} columns ({shown}), not trades (6 or 7) or aggTrades (7 or 8)"
    )


def _stream_layout(path: Path, cells: list[str]) -> _Layout:
    columns = {name: index for index, name in enumerate(cells)}
    missing = [name for name in _STREAM_COLUMNS if name.lower() not in columns]
    if missing:
        what = "an order book (depth) CSV" if "isask" in columns else "a stream CSV"
        raise RecordingError(path, f"{what}, not a trade stream (no {', '.join(missing)} column)")
    return _Layout(TRADE_STREAM_CSV, header=True, columns=columns)


def _need_symbol(symbol: str | None, path: Path) -> str:
    if not symbol:
        raise SymbolMissingError(
            path,
            "its rows carry no symbol and its name does not begin with one",
            "pass --symbol, or name it as data.binance.vision does (BTCUSDT-trades-2024-08-08.csv)",
        )
    return symbol.upper()


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """The file's text, decoded as it is read; the one file inside a ``.zip``.

    Only regular files: the format is recognised from a first read, and a pipe cannot be read
    a second time.
    """
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file" if not path.exists() else None
        raise RecordingError(path, what or "not a regular file (a pipe?): save it to a file first")
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise RecordingError(path, f"cannot be opened ({exc.strerror})") from None
    with raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(b"\x1f\x8b"):
            raise RecordingError(path, f"compressed with gzip: unpack it first (gunzip -k {path})")
        if magic == b"PK\x03\x04" or path.suffix.lower() == ".zip":
            with _zip_member(path, raw) as member:
                yield _text(member)
        else:
            yield _text(raw)


@contextlib.contextmanager
def _zip_member(path: Path, raw: IO[bytes]) -> Iterator[IO[bytes]]:
    try:
        archive = zipfile.ZipFile(raw)
    except zipfile.BadZipFile as exc:
        raise RecordingError(path, f"not a zip archive, or a truncated one ({exc})") from None
    with archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        if len(members) != 1:
            names = ", ".join(info.filename for info in members[:3])
            raise RecordingError(
                path,
                f"a zip of {len(members)} files ({names}{', ...' if len(members) > 3 else ''}); "
                "a zip is read when it holds one CSV, as data.binance.vision publishes them",
            )
        with archive.open(members[0]) as member:
            yield member


def _text(raw: IO[bytes]) -> TextIO:
    # utf-8-sig drops a byte-order mark. Bytes that are not UTF-8 are kept (as surrogates), so
    # that a bad row is refused with its bytes instead of the file failing half-way.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


# Reading the records ----------------------------------------------------------------------

_Parse = Callable[[list[str], str, int], TradeMessage]


def _read(path: Path, layout: _Layout, symbol: str) -> Iterator[Record]:
    ingested = now_ms()
    try:
        with _open_text(path) as text:
            if layout.format is JSON_LINES:
                yield from _json_lines(text, path, ingested)
            elif layout.format is REST_JSON:
                yield from _rest_array(text.read(), path, symbol, ingested)
            else:
                yield from _csv_rows(text, path, layout, symbol, ingested)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise RecordingError(path, f"cannot be read to its end ({exc})") from None


def read_csv_lines(
    path: Path,
    lines: Iterable[str],
    symbol: str,
    first_line: int = 1,
    latest_ms: int | None = None,
) -> Iterator[Record]:
    """The records of some lines of the data.binance.vision CSV ``path`` (no header among
    them; ``first_line`` is the number of the first), exactly as :func:`read_recording` reads
    them, trade times after ``latest_ms`` rejected too: for a reader that parses most of a file
    by other means."""
    layout = replace(_layout(path), header=False)
    return _csv_rows(lines, path, layout, symbol.upper(), now_ms(), first_line - 1, latest_ms)


def _csv_rows(
    text: Iterable[str],
    path: Path,
    layout: _Layout,
    symbol: str,
    ingested: int,
    lines_before: int = 0,
    latest_ms: int | None = None,
) -> Iterator[Record]:
    parse: _Parse
    if layout.format is TRADE_STREAM_CSV:
        columns = layout.columns
        lo = hi = len(columns)

        def parse(row: list[str], _symbol: str, now: int) -> TradeMessage:
            return _stream_row(row, columns, now)

    elif layout.format is TRADES_CSV:
        lo, hi, parse = 6, 7, _trade_row
    else:
        lo, hi, parse = 7, 8, _agg_row
    period = None if layout.format is TRADE_STREAM_CSV else period_from_name(path)
    rows = csv.reader(text)
    if layout.header:
        next(rows, None)
    for row in rows:
        if not row:
            continue
        try:
            if not lo <= len(row) <= hi:
                expected = str(lo) if lo == hi else f"{lo} or {hi}"
                raise InvalidTradeError(f"{len(row)} columns, expected {expected}")
            trade = validate_trade(parse(row, symbol, ingested), latest_ms)
            if period is not None and not period[0] <= trade.trade_time_ms < period[1]:
                raise InvalidTradeError(
                    f"trade time {trade.trade_time_ms} ms is outside the period the file's name "
                    "gives"
                )
            yield trade
        except ValueError as exc:  # InvalidTradeError included
            payload = ",".join(row).encode("utf-8", errors="surrogateescape")
            line = rows.line_num + lines_before
            yield Rejected(payload, f"{path.name}:{line}: {_why(exc)}")


def _ms(timestamp: int) -> int:
    return timestamp // 1000 if timestamp >= _MICROSECONDS_FROM else timestamp


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise InvalidTradeError(f"not a boolean: {text!r}")


def _why(exc: Exception) -> str:
    """The reason, printable: undecodable bytes shown as escapes."""
    reason = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
    return reason.encode("utf-8", errors="backslashreplace").decode("utf-8")


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


def _stream_row(row: list[str], columns: dict[str, int], ingested: int) -> TradeMessage:
    def cell(name: str) -> str:
        return row[columns[name]].strip()

    if cell("eventtype") != "trade":
        raise InvalidTradeError(f"not a trade event: {cell('eventtype')!r}")
    event_ms = _ms(int(cell("eventtime")))
    return TradeMessage(
        event_type="trade",
        event_time_ms=event_ms,
        symbol=cell("symbol"),
        trade_id=int(cell("tradeid")),
        price=cell("price"),
        quantity=cell("quantity"),
        trade_time_ms=_ms(int(cell("transactiontime"))),
        buyer_is_maker=_bool(cell("isbuyermarketmaker")),
        best_match=_bool(cell("munknownparameter")) if "munknownparameter" in columns else None,
        trade_type=cell("xunknownparameter") if "xunknownparameter" in columns else None,
        ingestion_time_ms=ingested,
        latency_ms=ingested - event_ms,
    )


def _json_lines(text: Iterable[str], path: Path, ingested: int) -> Iterator[Record]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        raw = line.rstrip("\r\n").encode("utf-8", errors="surrogateescape")
        try:
            frame = msgspec.json.decode(raw)
            data = frame.get("data", frame) if isinstance(frame, dict) else None
            if not isinstance(data, dict):
                raise InvalidTradeError("not a JSON object")
            if data.get("e") not in ("trade", "aggTrade"):
                continue  # depth, bookTicker, kline... frames are not trades
            yield validate_trade(_from_event(data, ingested))
        except (ValueError, KeyError, TypeError, msgspec.ValidationError) as exc:
            # msgspec.DecodeError and InvalidTradeError are ValueErrors
            yield Rejected(raw, f"{path.name}:{number}: {_why(exc)}")


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


def _rest_array(text: str, path: Path, symbol: str, ingested: int) -> Iterator[Record]:
    try:
        items = msgspec.json.decode(text.encode("utf-8", errors="surrogateescape"))
    except msgspec.DecodeError as exc:
        raise RecordingError(path, f"not valid JSON ({exc})") from None
    for index, item in enumerate(items):
        try:
            yield validate_trade(_rest_trade(item, symbol, ingested))
        except (ValueError, KeyError, TypeError) as exc:
            yield Rejected(msgspec.json.encode(item), f"{path.name}: item {index}: {_why(exc)}")


def _rest_trade(item: Any, symbol: str, ingested: int) -> TradeMessage:
    if not isinstance(item, dict):
        raise InvalidTradeError("not a JSON object")
    if "a" in item:
        time_ms = _ms(int(item["T"]))
        return TradeMessage(
            event_type="aggTrade",
            event_time_ms=time_ms,
            symbol=symbol,
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
    time_ms = _ms(int(item["time"]))
    return TradeMessage(
        event_type="trade",
        event_time_ms=time_ms,
        symbol=symbol,
        trade_id=item["id"],
        price=item["price"],
        quantity=item["qty"],
        trade_time_ms=time_ms,
        buyer_is_maker=item["isBuyerMaker"],
        best_match=item.get("isBestMatch"),
        ingestion_time_ms=ingested,
        latency_ms=ingested - time_ms,
    )
