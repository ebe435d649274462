"""``binance-metrics``: the command line.

Every command reads the same environment variables (see ``.env.example``); flags override them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from binance_metrics import __version__
from binance_metrics.arguments import (
    Parser,
    attach_negative_values,
    day_value,
    port,
    positive_float,
    positive_int,
    time_value,
    utc_offset,
)
from binance_metrics.errors import ConfigError, deliberate_cause
from binance_metrics.export import COLUMNS, FORMATS
from binance_metrics.intervals import INTERVALS
from binance_metrics.markets import MARKETS
from binance_metrics.settings import Settings, load_settings

log = logging.getLogger("binance_metrics")

#: The header of ``bars --format csv``.
CSV_HEADER = COLUMNS


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="binance-metrics",
        description="Real-time OHLCV bars from Binance trade streams, exact to Binance's klines.",
        epilog="Configuration comes from environment variables (and ./.env); "
        "see docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run the whole pipeline: ingestor, dataflow, store and candle page",
        description="Run the whole pipeline in one process: the embedded broker (unless "
        "KAFKA_BOOTSTRAP_SERVERS is set), the ingestor, the dataflow, the store (embedded "
        "chDB under DATA_DIR unless CLICKHOUSE_URL is set) and the candle page. Ctrl-C stops.",
    )
    up.add_argument(
        "--exchange",
        metavar="SOURCE",
        default="binance",
        help="'binance' (live) or 'replay:PATH[,PATH...]' to stream recorded raw trades "
        "(@trade frames as JSON lines, or a trade-stream CSV) from a local exchange in real "
        "time (works offline)",
    )
    up.add_argument(
        "--speed",
        type=positive_float,
        default=1.0,
        help="with --exchange replay: play the recording this many times faster",
    )
    up.add_argument(
        "--symbols",
        help="comma-separated symbols, ALL or patterns like *USDT (default: the SYMBOLS setting)",
    )
    up.add_argument("--port", type=port, help="HTTP port (default: the HEALTH_PORT setting)")

    commands.add_parser(
        "ingest",
        help="run only the ingestor: Binance WebSocket -> Kafka, with /health and /metrics",
        description="Run the ingestor alone (uvicorn on HEALTH_HOST:HEALTH_PORT), producing to "
        "the Kafka at KAFKA_BOOTSTRAP_SERVERS, which it requires; `up` is the all-in-one.",
    )

    replay = commands.add_parser(
        "replay",
        help="replay recorded trades into the store",
        description="Fold recorded trades into bars in the store and print a summary: by "
        "default straight from the files (in chunks, bounded memory), with --through-kafka "
        "by producing them to Kafka and running the dataflow to the end of the topic. Reads "
        "data.binance.vision "
        "trades/aggTrades CSV (.csv or .zip), trade-stream CSV (TimestampOfReceive,Stream,...), "
        "JSON lines of WebSocket frames, and REST aggTrades/historicalTrades JSON arrays; the "
        "format is recognised from the first rows. Fails, before doing anything, on a file "
        "of another kind; fails if no row is a trade. Bad rows go to the dead-letter topic.",
    )
    replay.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="recorded files")
    replay.add_argument(
        "--symbol", help="symbol for files whose rows carry none (default: from the file name)"
    )
    _add_contract_size(replay)
    replay.add_argument(
        "--through-kafka",
        action="store_true",
        help="produce the trades to Kafka and run the live dataflow over them (slower; the "
        "broker holds the whole input)",
    )

    backfill = commands.add_parser(
        "backfill",
        help="download Binance's trade archives for a range of days and replay them into bars",
        description="Download the data.binance.vision archives (BINANCE_ARCHIVE_URL) of the "
        "symbols from --start to --end (both included) into DATA_DIR/archive, verify each "
        "against its .CHECKSUM, and replay them into the store, as `replay` does. Monthly files "
        "for whole months, daily files otherwise; files already downloaded are not fetched "
        "again. See docs/backfill.md.",
    )
    backfill.add_argument(
        "--symbols", required=True, help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT"
    )
    backfill.add_argument("--start", required=True, type=day_value, help="first day, YYYY-MM-DD")
    backfill.add_argument("--end", required=True, type=day_value, help="last day, YYYY-MM-DD")
    _add_market(backfill, "whose archives, and whose bars they become")
    _add_contract_size(backfill)
    backfill.add_argument(
        "--data", choices=["aggTrades", "trades"], default="aggTrades",
        help="the archive: aggregate trades (smaller) or raw trades; both give the same bars",
    )  # fmt: skip

    bars = commands.add_parser(
        "bars",
        help="print stored bars",
        description="Print stored bars of one symbol, oldest first. Times are ISO dates or "
        "times (UTC unless they say otherwise) or epoch milliseconds, as open_time is printed.",
    )
    bars.add_argument("--symbol", required=True, help="the symbol, e.g. BTCUSDT (any case)")
    _add_market(bars, "whose bars")
    bars.add_argument(
        "--start",
        type=time_value,
        help="first open time: ISO (2024-08-09T00:01) or epoch ms (default: the first bar)",
    )
    bars.add_argument(
        "--end",
        type=time_value,
        help="open times before this: ISO or epoch ms (default: no end)",
    )
    bars.add_argument(
        "--interval",
        choices=list(INTERVALS),
        default="1m",
        help="a Binance kline interval (1M is a month); 1s needs WINDOW_SECONDS=1",
    )
    bars.add_argument(
        "--timezone",
        type=utc_offset,
        default="+00:00",
        metavar="+HH:MM",
        help="anchor the intervals in this UTC offset, as Binance's timeZone (-12:00 to "
        "+14:00, e.g. +08:00, -03:30, +05:45); the times printed are the same instants",
    )
    bars.add_argument(
        "--format",
        choices=FORMATS,
        default="csv",
        help="csv/table: symbol, ISO open_time, Binance's columns, ISO close_time; json: the "
        "same, times in epoch ms; binance: data.binance.vision's 12-column kline CSV; "
        "parquet: Decimal128 columns (needs --output)",
    )
    bars.add_argument(
        "--output", type=Path, metavar="FILE", help="write to FILE (default: standard output)"
    )
    bars.add_argument(
        "--limit",
        type=positive_int,
        help="at most this many bars, the most recent of the range (default: all, up to 100000)",
    )
    bars.add_argument(
        "--include-open",
        action="store_true",
        help="also the forming bar of the current minute, last (a rollup's last bar holds "
        "it), and a 'closed' column: false for a bar with a minute still open",
    )
    audit = commands.add_parser(
        "audit",
        help="list every hole in the stored bars' trade ids (exit 1 if there is one)",
        description="Check that the stored bars count every trade id exactly once: list each "
        "gap (ids no bar counts) and overlap (ids counted twice) with the minutes it affects. "
        "Exit status 0 when complete, 1 when not. See docs/ledger.md.",
    )
    audit.add_argument("--symbol", help="only this symbol, any case (default: all)")
    _add_market(audit, "whose bars")
    audit.add_argument(
        "--start", type=time_value, help="first open time: ISO or epoch ms (default: the first bar)"
    )
    audit.add_argument(
        "--end", type=time_value, help="open times before this: ISO or epoch ms (default: no end)"
    )
    audit.add_argument(
        "--format", choices=["table", "json"], default="table", help="json: a list of holes"
    )
    _add_reconcile(commands)
    return parser


def _add_contract_size(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--contract-size",
        type=positive_int,
        metavar="USD",
        help="COIN-M (needed with MARKET=cm): the symbol's contractSize in exchangeInfo (100 for "
        "BTCUSD_PERP, 10 for most others), for the base-asset volume of each trade",
    )


def _add_market(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument(
        "--market",
        choices=MARKETS,
        help=f"the market {what} (default: the MARKET setting, spot unless set)",
    )


def _add_reconcile(commands: Any) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="compare stored bars with Binance's klines (REST or kline files)",
        description="Compare stored bars with Binance's klines on every field (open, high, low, "
        "close, volume, quote volume, trade count, taker-buy volumes), exactly. Exit status 0 "
        "when all are equal, 1 when anything differs. See docs/reconcile.md.",
    )
    reconcile.add_argument("--symbol", required=True, help="the symbol, e.g. BTCUSDT (any case)")
    reconcile.add_argument(
        "--start", type=time_value, help="first open time: ISO or epoch ms (files: their first)"
    )
    reconcile.add_argument(
        "--end", type=time_value, help="open times before this: ISO or epoch ms (files: all)"
    )
    reconcile.add_argument("--interval", choices=list(INTERVALS), default="1m", help="bar length")
    reconcile.add_argument(
        "--against",
        nargs="+",
        default=["rest"],
        metavar="rest|PATH",
        help="'rest' (Binance's REST klines; needs --start and --end) or data.binance.vision "
        "kline files (.csv or .zip)",
    )
    _add_market(
        reconcile,
        "whose bars, and with rest whose klines: spot (/api/v3/klines), USD-M (/fapi/v1) or "
        "COIN-M (/dapi/v1) futures",
    )
    reconcile.add_argument(
        "--rest-url",
        help="with rest: Binance's REST base URL (default: BINANCE_REST_URL for MARKET's own "
        "market, else fapi.binance.com / dapi.binance.com, or BINANCE_REST_URL for spot)",
    )
    reconcile.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="table: to read, differing fields side by side; json: every difference",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(attach_negative_values(argv, ("--timezone",)))
    try:
        overrides: dict[str, Any] = {}
        if getattr(args, "symbols", None):
            overrides["SYMBOLS"] = args.symbols
        if getattr(args, "port", None):
            overrides["HEALTH_PORT"] = args.port
        settings = load_settings(**overrides)
        _configure_logging("DEBUG" if args.verbose else settings.LOG_LEVEL)
        handler = {
            "up": _up, "ingest": _ingest, "replay": _replay, "backfill": _backfill, "bars": _bars,
            "audit": _audit, "reconcile": _reconcile,
        }[args.command]  # fmt: skip
        with _terminate_as_interrupt():
            return handler(args, settings)
    except KeyboardInterrupt as exc:
        return 128 + (exc.args[0] if exc.args else signal.SIGINT)
    except Exception as exc:
        # One line for the errors we raise on purpose, also when Bytewax wraps them.
        error = deliberate_cause(exc)
        if error is None:
            raise  # a bug: its traceback is what a report needs
        if isinstance(error, ConfigError):
            print(f"binance-metrics: {error}", file=sys.stderr)
            return 2
        print(f"binance-metrics: error: {error}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a service manager) ends a command the way Ctrl-C does:
    the broker and the store are closed, and the exit status is 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if level != "DEBUG":
        # Their warnings say, less clearly and over several lines, what our one error line says.
        for chatty in ("urllib3", "clickhouse_connect"):
            logging.getLogger(chatty).setLevel(logging.ERROR)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from binance_metrics.replay import replay

    folders = [str(path) for path in args.paths if path.is_dir()]
    if folders:
        raise ConfigError(
            f"a directory, not a file: {', '.join(folders)}; pass the files in it "
            f"(e.g. {Path(folders[0]) / '*.zip'})"
        )
    missing = [str(path) for path in args.paths if not path.is_file()]
    if missing:
        raise ConfigError(f"no such file: {', '.join(missing)}")
    summary = replay(
        args.paths, settings, symbol=args.symbol, through_kafka=args.through_kafka,
        contract_size=args.contract_size,
    )  # fmt: skip
    print("\n".join(summary.lines()))
    return 0


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from binance_metrics.archive.backfill import Request, backfill

    if args.start > args.end:
        raise ConfigError(f"--start ({args.start}) must not be after --end ({args.end})")
    from binance_metrics.ingest.discovery import is_pattern

    if patterns := [s for s in settings.SYMBOLS if is_pattern(s)]:
        raise ConfigError(f"SYMBOLS: backfill takes symbol names, not {', '.join(patterns)}")
    from binance_metrics.replay import check_contract_size

    market = args.market or settings.MARKET
    check_contract_size(market, args.contract_size)  # before any download
    request = Request(settings.SYMBOLS, args.start, args.end, market, args.data, args.contract_size)
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    # The archives of a market become that market's bars.
    settings = settings.model_copy(update={"MARKET": market})
    print("\n".join(backfill(request, settings).lines()))
    return 0


def _bars(args: argparse.Namespace, settings: Settings) -> int:
    from binance_metrics.export import klines, write_parquet, write_text
    from binance_metrics.store.clickhouse import open_store
    from binance_metrics.store.queries import as_binance, fetch_bars, intervals_for, list_symbols

    _check_range(args.start, args.end)
    bar_seconds = settings.WINDOW_SECONDS
    if args.interval not in intervals_for(bar_seconds):
        raise ConfigError(
            f"--interval {args.interval} needs 1-second bars: the store holds "
            f"{bar_seconds}-second bars (set WINDOW_SECONDS=1 to build 1s bars)"
        )
    if args.format == "parquet" and args.output is None:
        raise ConfigError("--format parquet writes a file: give it with --output FILE")
    market = args.market or settings.MARKET
    store = open_store(settings.clickhouse_dsn, market)
    symbol = args.symbol.upper()
    bars = fetch_bars(
        store, symbol, interval=args.interval, start=args.start, end=args.end,
        limit=args.limit, include_open=args.include_open, tz_offset_ms=args.timezone,
        bar_seconds=bar_seconds,
    )  # fmt: skip
    if not bars:
        stored = list_symbols(store, bar_seconds)
        if symbol not in stored:
            some = ", ".join(stored[:10]) + (", ..." if len(stored) > 10 else "")
            raise ConfigError(
                f"--symbol {symbol}: no {market} bars stored for it (stored: {some or 'none'})"
            )
    rows = klines(symbol, as_binance(bars, market), args.interval, args.timezone)
    closed = args.include_open
    if args.format == "parquet":
        write_parquet(rows, args.output, closed)
    elif args.output is not None:
        with args.output.open("w", encoding="utf-8", newline="") as out:
            write_text(rows, args.format, out, args.timezone, closed)
    else:
        try:
            write_text(rows, args.format, sys.stdout, args.timezone, closed)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader stopped early (`bars | head`): that is fine. Point stdout at devnull,
            # so that the interpreter's final flush does not fail a second time.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if not rows:
        print(f"no bars stored for {symbol} in that range", file=sys.stderr)
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from binance_metrics.audit import audit

    _check_range(args.start, args.end)
    return audit(
        settings, sys.stdout, symbol=args.symbol, start=args.start, end=args.end,
        fmt=args.format, market=args.market or settings.MARKET,
    )  # fmt: skip


def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start and end and start >= end:
        raise ConfigError(f"--start ({start.isoformat()}) must be before --end ({end.isoformat()})")


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from binance_metrics.reconcile.command import run_reconcile

    return run_reconcile(args, settings)


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from binance_metrics.ingest.app import serve
    from binance_metrics.kafka.broker import kafka_for

    if settings.embedded_kafka:
        # An embedded broker here would be private to this process: nothing would read it, and
        # every trade taken would be lost when it stops.
        raise ConfigError(
            "KAFKA_BOOTSTRAP_SERVERS is not set: the stand-alone ingestor needs a real Kafka "
            "(the trades must outlive it); `binance-metrics up` is the all-in-one pipeline with "
            "an embedded broker"
        )
    store = None
    if settings.CLICKHOUSE_URL is not None:
        from binance_metrics.store.clickhouse import open_store

        # The checkpoint of the resume and the ledger the heal loop repairs (a server: the
        # embedded store belongs to the process that runs the dataflow).
        store = open_store(settings.clickhouse_dsn, settings.MARKET)
    with kafka_for(settings) as kafka:
        serve(settings, kafka, store)
    return 0


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from binance_metrics.up import run_up

    return run_up(settings, exchange=args.exchange, speed=args.speed)


if __name__ == "__main__":
    sys.exit(main())
