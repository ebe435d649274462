"""Recorded trades read as columns, a bounded chunk at a time: the input of the history path.

data.binance.vision ``trades`` and ``aggTrades`` CSVs (plain or the one CSV of a ``.zip``) are
cut into chunks of about :data:`CHUNK_BYTES` at line ends and parsed by pyarrow's CSV reader
with strict types (ids and times int64, the flag a boolean, prices and quantities as
``decimal128`` from their digits), then checked with numpy against the same rules as every
other input (:func:`~binance_metrics.trades.price_and_quantity`, the period of the file's
name). What this fast path does not take as it is goes to the row reader of
:mod:`binance_metrics.recordings`, so that the result is the one it gives:

* a chunk that pyarrow cannot parse whole (a bad row among good ones, a stray column, an
  unusual spelling) is read again row by row: its bad rows become
  :class:`~binance_metrics.trades.Rejected` with ``file:line: reason``, exactly as before;
* a row that parses but fails a check, or whose amount does not fit an int64, is read again
  alone: a valid trade among these comes back as a trade message (``odd``), the rest as
  rejected rows.

Other formats (trade-stream CSV, JSON lines, REST arrays) are read by
:func:`~binance_metrics.recordings.read_recording` and put into columns
:data:`RECORDS_PER_CHUNK` trades at a time. Memory is bounded by the chunk, whatever the file.
"""

from __future__ import annotations

import io
import queue
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, TypeVar, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pcsv

from binance_metrics.bars import trade_base_quantity
from binance_metrics.columnar import TradeColumns
from binance_metrics.errors import InvalidTradeError
from binance_metrics.fragments import NOT_MARKET
from binance_metrics.recordings import (
    AGG_TRADES_CSV,
    TRADES_CSV,
    RecordingError,
    check_recording,
    period_from_name,
    read_csv_lines,
    read_recording,
    symbol_from_name,
)
from binance_metrics.trades import (
    EARLIEST_TRADE_TIME_MS,
    MAX_QUOTE,
    Rejected,
    TradeMessage,
    encode_trade,
    price_and_quantity,
)

#: Bytes of CSV per chunk: about 200 k trades, some tens of MB of arrays at most.
CHUNK_BYTES: Final = 16 * 1024 * 1024
RECORDS_PER_CHUNK: Final = 100_000
_MICROSECONDS_FROM: Final = 10**14  # as in recordings: a time above this is in microseconds
_BOM: Final = b"\xef\xbb\xbf"


@dataclass
class Chunk:
    """What one chunk of a file holds."""

    columns: TradeColumns
    odd: list[TradeMessage] = field(default_factory=list)  # valid, but not for the columns
    rejected: list[Rejected] = field(default_factory=list)


def read_chunks(
    path: Path, symbol: str | None = None, latest_ms: int | None = None
) -> Iterator[Chunk]:
    """The trades of ``path`` in chunks. Raises :class:`RecordingError` for a file that is not
    trades, at the call; ``latest_ms``: trades after it are rejected (they are in the future)."""
    fmt = check_recording(path, symbol)
    if fmt is TRADES_CSV or fmt is AGG_TRADES_CSV:
        name = (symbol or symbol_from_name(path) or "").upper()
        return _archive_chunks(path, name, fmt is AGG_TRADES_CSV, latest_ms)
    return _record_chunks(path, read_recording(path, symbol), latest_ms)


# data.binance.vision CSVs ---------------------------------------------------------------


@dataclass(frozen=True)
class _Archive:
    path: Path
    symbol: str
    aggregate: bool
    latest_ms: int | None
    period: tuple[int, int] | None


def _archive_chunks(
    path: Path, symbol: str, aggregate: bool, latest_ms: int | None
) -> Iterator[Chunk]:
    archive = _Archive(path, symbol, aggregate, latest_ms, period_from_name(path))
    line = 1  # the number of the chunk's first line
    try:
        with _open_bytes(path) as raw:
            for number, block in enumerate(_line_blocks(raw)):
                if number == 0:
                    block = block.removeprefix(_BOM)
                    if block[:1] and not block[:1].isdigit():  # a header line
                        block = block.partition(b"\n")[2]
                        line += 1
                yield _archive_chunk(archive, block, line)
                line += block.count(b"\n")
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise RecordingError(path, f"cannot be read to its end ({exc})") from None


def _open_bytes(path: Path) -> IO[bytes]:
    raw = path.open("rb")
    if raw.read(4) != b"PK\x03\x04" and path.suffix.lower() != ".zip":
        raw.seek(0)
        return raw
    raw.seek(0)
    archive = zipfile.ZipFile(raw)  # one member: check_recording said so
    (member,) = [info for info in archive.infolist() if not info.is_dir()]
    return archive.open(member)


def _line_blocks(raw: IO[bytes]) -> Iterator[bytes]:
    """The file in blocks of about CHUNK_BYTES, each ending at a line end."""
    rest = b""
    while True:
        data = raw.read(CHUNK_BYTES)
        if not data:
            if rest:
                yield rest
            return
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        rest = data[cut:]
        yield data[:cut]


def _archive_chunk(archive: _Archive, block: bytes, first_line: int) -> Chunk:
    try:
        columns, suspect = _parse(archive, block)
    except (pa.ArrowException, ValueError):
        return _records_chunk(archive.path, _rows(archive, block, first_line), archive.latest_ms)
    if not suspect.any():
        return Chunk(columns)
    lines = block.split(b"\n")
    rows = [i for i, line in enumerate(lines) if line.removesuffix(b"\r")]
    if len(rows) != len(suspect) or any(b"\r" in line.removesuffix(b"\r") for line in lines):
        # Rows and lines do not match up (pyarrow reads a lone CR as a line end).
        return _records_chunk(archive.path, _rows(archive, block, first_line), archive.latest_ms)
    # The suspect rows again, alone, at their line numbers (the others left blank).
    only = [b""] * len(lines)
    for row in np.flatnonzero(suspect):
        only[rows[row]] = lines[rows[row]]
    again = _records_chunk(
        archive.path, _rows(archive, b"\n".join(only), first_line), archive.latest_ms
    )
    good = columns.take(np.flatnonzero(~suspect))
    return Chunk(_concat(good, again.columns), again.odd, again.rejected)


def _rows(archive: _Archive, text: bytes, first_line: int) -> Iterator[TradeMessage | Rejected]:
    lines = io.StringIO(text.decode("utf-8", errors="surrogateescape"), newline="")
    return read_csv_lines(archive.path, lines, archive.symbol, first_line, archive.latest_ms)


def _parse(archive: _Archive, block: bytes) -> tuple[TradeColumns, npt.NDArray[np.bool_]]:
    """The block as columns, and which rows the fast path does not vouch for. Raises
    ``pa.ArrowException`` (or ValueError) when the block cannot be parsed whole."""
    first = block[: block.find(b"\n")]
    width = first.count(b",") + 1
    lo = 7 if archive.aggregate else 6
    if not lo <= width <= lo + 1:
        raise ValueError(f"{width} columns")
    # pyarrow's numbers also take signs, spaces and exponents, which the row reader refuses:
    # a block with a sign or a space, or an "e" that is not one of a true/false, is not ours.
    if b"+" in block or b" " in block:
        raise ValueError("a sign or a space")
    if archive.aggregate:
        names = ["a", "price", "qty", "first", "last", "time", "maker", "best"][:width]
        types = {"first": pa.int64(), "last": pa.int64()}
    else:
        names = ["first", "price", "qty", "quote", "time", "maker", "best"][:width]
        types = {"first": pa.int64()}
    amount = pa.decimal128(38, 8)  # from the digits, exactly; more than 8 decimals fail
    types.update(price=amount, qty=amount, time=pa.int64(), maker=pa.bool_())
    table = pcsv.read_csv(
        pa.py_buffer(block),
        read_options=pcsv.ReadOptions(column_names=names),
        parse_options=pcsv.ParseOptions(newlines_in_values=False),
        convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(types)),
    )
    flags = width - lo + 1  # true/false cells per row, each with one e or E
    if block.count(b"e") + block.count(b"E") != table.num_rows * flags:
        raise ValueError("an exponent")
    price, price_odd = _scaled(table.column("price"))
    qty, qty_odd = _scaled(table.column("qty"))
    first_id = _int64(table.column("first"))
    last_id = _int64(table.column("last")) if archive.aggregate else first_id
    time_ms = _int64(table.column("time"))
    time_ms = np.where(time_ms >= _MICROSECONDS_FROM, time_ms // 1000, time_ms)
    maker_column = table.column("maker")
    if maker_column.null_count:
        raise ValueError("an empty flag")
    maker = _bools(maker_column.combine_chunks())
    suspect = price_odd | qty_odd | (price <= 0) | (qty <= 0) | (first_id < 0)
    suspect |= last_id < first_id
    # Beyond what a trade may be (MAX_QUOTE); near the bound, the exact check decides.
    suspect |= price.astype(np.float64) * qty.astype(np.float64) > MAX_QUOTE * 0.99
    suspect |= time_ms < EARLIEST_TRADE_TIME_MS
    if archive.latest_ms is not None:
        suspect |= time_ms > archive.latest_ms
    if archive.period is not None:
        suspect |= (time_ms < archive.period[0]) | (time_ms >= archive.period[1])
    n = len(first_id)
    columns = TradeColumns(
        [archive.symbol], np.zeros(n, np.int32), first_id, last_id, price, qty, time_ms, maker
    )
    return columns, suspect


# The arrays' buffers are read directly: ``to_numpy`` would import pandas and pyarrow.compute,
# a second of CPU at start.


def _int64(column: pa.ChunkedArray) -> npt.NDArray[np.int64]:
    if column.null_count:
        raise ValueError("an empty number")
    array = column.combine_chunks()
    values = np.frombuffer(array.buffers()[1], np.int64)
    return values[array.offset : array.offset + len(array)]


def _bools(array: pa.Array) -> npt.NDArray[np.bool_]:
    bits = np.unpackbits(np.frombuffer(array.buffers()[1], np.uint8), bitorder="little")
    return bits[array.offset : array.offset + len(array)].astype(np.bool_)


def _scaled(
    column: pa.ChunkedArray,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """``decimal128(38, 8)`` values as integers scaled by 10**8 (the low word of each), and
    which do not fit an int64 (those go to the row reader)."""
    if column.null_count:
        raise ValueError("an empty number")
    decimals = column.combine_chunks()
    words = np.frombuffer(decimals.buffers()[1], np.int64).reshape(-1, 2)
    words = words[decimals.offset : decimals.offset + len(decimals)]
    low, high = words[:, 0], words[:, 1]
    return low.copy(), (high != 0) | (low < 0)


def _concat(a: TradeColumns, b: TradeColumns) -> TradeColumns:
    if len(b) == 0:
        return a
    symbols = list(a.symbols)
    for name in b.symbols:
        if name not in symbols:
            symbols.append(name)
    codes = [symbols.index(name) for name in b.symbols]
    bases = None
    if a.base_quantity is not None or b.base_quantity is not None:
        bases = np.concatenate([_bases(a), _bases(b)])
    return TradeColumns(
        symbols,
        np.concatenate([a.symbol, np.asarray(codes, np.int32)[b.symbol]]).astype(np.int32),
        np.concatenate([a.first_id, b.first_id]),
        np.concatenate([a.last_id, b.last_id]),
        np.concatenate([a.price, b.price]),
        np.concatenate([a.quantity, b.quantity]),
        np.concatenate([a.time_ms, b.time_ms]),
        np.concatenate([a.buyer_is_maker, b.buyer_is_maker]),
        bases,
    )


def _bases(columns: TradeColumns) -> npt.NDArray[np.int64]:
    if columns.base_quantity is None:
        return np.zeros(len(columns), np.int64)
    return columns.base_quantity


# Records read one by one ------------------------------------------------------------------


def _record_chunks(
    path: Path, records: Iterable[TradeMessage | Rejected], latest_ms: int | None
) -> Iterator[Chunk]:
    batch: list[TradeMessage | Rejected] = []
    for record in records:
        batch.append(record)
        if len(batch) == RECORDS_PER_CHUNK:
            yield _records_chunk(path, batch, latest_ms)
            batch = []
    if batch:
        yield _records_chunk(path, batch, latest_ms)


_INT63: Final = 2**63


def _records_chunk(
    path: Path, records: Iterable[TradeMessage | Rejected], latest_ms: int | None
) -> Chunk:
    """Records of the row reader as columns: the same checks as the dataflow's on each."""
    symbols: dict[str, int] = {}
    rows: list[tuple[int, int, int, int, int, int, bool, int]] = []
    coin_m = False
    chunk = Chunk(_empty_columns())
    for record in records:
        if isinstance(record, Rejected):
            chunk.rejected.append(record)
            continue
        try:
            price, qty = price_and_quantity(record, latest_ms)
        except InvalidTradeError as exc:
            chunk.rejected.append(Rejected(encode_trade(record), f"{path.name}: {exc}"))
            continue
        if record.trade_type is not None and record.trade_type != "MARKET":
            # As the dataflow does: dead-lettered, its ids accounted for (not market trades).
            message = f"not a market trade (X={record.trade_type}); klines exclude it"
            chunk.rejected.append(Rejected(encode_trade(record), message, NOT_MARKET))
            continue
        base = trade_base_quantity(record, price, qty)
        if price >= _INT63 or qty >= _INT63 or base >= _INT63:
            chunk.odd.append(record)
            continue
        coin_m = coin_m or record.contract_size is not None
        code = symbols.setdefault(record.symbol, len(symbols))
        rows.append((code, record.trade_id, record.last_trade_id, price, qty,
                     record.trade_time_ms, record.buyer_is_maker, base))  # fmt: skip
    if rows:
        table = np.array(rows, dtype=object).reshape(-1, 8)  # amounts < 2**63: int64 below
        ints = [table[:, k].astype(np.int64) for k in range(1, 6)]
        chunk.columns = TradeColumns(
            list(symbols), table[:, 0].astype(np.int32), ints[0], ints[1], ints[2], ints[3],
            ints[4], table[:, 6].astype(np.bool_),
            table[:, 7].astype(np.int64) if coin_m else None,
        )  # fmt: skip
    return chunk


def _empty_columns() -> TradeColumns:
    empty = np.zeros(0, np.int64)
    return TradeColumns([], np.zeros(0, np.int32), empty, empty, empty, empty, empty,
                        np.zeros(0, np.bool_))  # fmt: skip


# Reading ahead ------------------------------------------------------------------------------


_END: Final = object()
T = TypeVar("T")


def read_ahead(items: Iterator[T], stop: threading.Event) -> Iterator[T]:
    """``items`` (chunks), made one ahead in a thread of their own: pyarrow and numpy release
    the GIL, so the next chunk is parsed on the other core while this one is folded. Memory:
    two chunks at most. An error of the reader is raised here, in order; ``stop`` ends the
    thread (when the consumer stops early). Use one for a whole run: each new thread gets heaps
    of its own from the allocators, which keep them (some tens of MB a file)."""
    handoff: queue.Queue[object] = queue.Queue(maxsize=1)

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(exc)
            return
        put(_END)

    reader = threading.Thread(target=read, name="read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(T, item)
    finally:
        stop.set()
        reader.join()
