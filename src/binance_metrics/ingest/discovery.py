"""Which symbols to ingest when ``SYMBOLS`` names a set: ``ALL`` or patterns such as ``*USDT``.

``SYMBOLS`` is a comma-separated mix of names (``BTCUSDT``) and fnmatch patterns (``*USDT``,
``BTC?``, ``[AB]*BTC``; ``ALL`` is ``*``). Names are always ingested, as given; patterns select
among the symbols ``GET /api/v3/exchangeInfo`` lists with status ``TRADING`` (weight 20, through
the backfill's REST client and its weight budget). :class:`SymbolWatch` reads it again every
``INGEST__SYMBOLS_REFRESH_S``: a new listing is added, a symbol no longer trading is dropped.

On the futures markets the path is ``/fapi/v1/exchangeInfo`` or ``/dapi/v1/exchangeInfo``
(weight 1, no parameters); COIN-M lists ``contractStatus`` instead of ``status`` and each
symbol's ``contractSize`` (USD per contract), which every COIN-M trade carries (``cs``): on
COIN-M, exchangeInfo is read even for names, and a symbol without a contract size is refused
(a name: at start, naming ``SYMBOLS``; a listing: logged and left out), never ingested with
volumes that could not be turned into base-asset volumes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from binance_metrics.errors import ConfigError
from binance_metrics.ingest.backfill import BackfillError, RestBackfill
from binance_metrics.ingest.tuning import EXCHANGE_INFO_WEIGHT, FUTURES_EXCHANGE_INFO_WEIGHT

log = logging.getLogger(__name__)

#: Spot: only trading symbols, without the permission sets (they make the answer several MB).
EXCHANGE_INFO_PARAMS: Final = {"symbolStatus": "TRADING", "showPermissionSets": "false"}
ALL: Final = "ALL"
_WILDCARDS: Final = frozenset("*?[")


def is_pattern(entry: str) -> bool:
    """``ALL`` and anything with an fnmatch wildcard; a plain name is not a pattern."""
    return entry == ALL or not _WILDCARDS.isdisjoint(entry)


@dataclass(frozen=True)
class SymbolSelection:
    """``SYMBOLS`` split into names and patterns (upper case, as the settings keep them)."""

    names: tuple[str, ...]
    patterns: tuple[str, ...]

    @classmethod
    def of(cls, entries: Sequence[str]) -> SymbolSelection:
        names = tuple(e for e in entries if not is_pattern(e))
        patterns = tuple("*" if e == ALL else e for e in entries if is_pattern(e))
        return cls(names, tuple(dict.fromkeys(patterns)))

    @property
    def needs_discovery(self) -> bool:
        return bool(self.patterns)

    def select(self, trading: Collection[str]) -> tuple[str, ...]:
        """The names, then the trading symbols any pattern matches, sorted; each once."""
        matched = sorted(
            s for s in trading if any(fnmatch.fnmatchcase(s, p) for p in self.patterns)
        )
        return tuple(dict.fromkeys((*self.names, *matched)))

    def unmatched(self, trading: Collection[str]) -> list[str]:
        """The patterns that match no trading symbol."""
        return [p for p in self.patterns if not any(fnmatch.fnmatchcase(s, p) for s in trading)]


class _Symbol(msgspec.Struct):
    symbol: str
    status: str | None = None  # spot, USDⓈ-M
    contractStatus: str | None = None  # COIN-M
    contractSize: int | None = None  # COIN-M

    @property
    def trading(self) -> bool:
        return (self.status or self.contractStatus) == "TRADING"


class _ExchangeInfo(msgspec.Struct):
    symbols: list[_Symbol]


_decoder: Final = msgspec.json.Decoder(_ExchangeInfo)


async def trading_symbols(rest: RestBackfill) -> dict[str, int | None]:
    """Every symbol ``exchangeInfo`` lists as ``TRADING``, with its ``contractSize`` (COIN-M;
    None elsewhere)."""
    futures = rest.market.futures
    info = await rest.get(
        rest.market.path("exchangeInfo"),
        {} if futures else EXCHANGE_INFO_PARAMS,
        _decoder.decode,
        weight=FUTURES_EXCHANGE_INFO_WEIGHT if futures else EXCHANGE_INFO_WEIGHT,
        what="exchangeInfo",
    )
    return {s.symbol: s.contractSize for s in info.symbols if s.trading}


async def initial_symbols(
    selection: SymbolSelection, rest: RestBackfill, contract_sizes: dict[str, int] | None = None
) -> tuple[str, ...]:
    """The symbols to start with; ``ConfigError`` naming ``SYMBOLS`` when there are none.

    ``contract_sizes`` (COIN-M): filled with each chosen symbol's contract size; a name
    without one is a ``ConfigError``, a matched symbol without one is left out (logged).
    """
    if not selection.needs_discovery and contract_sizes is None:
        return selection.names
    trading = await trading_symbols(rest)
    unmatched = selection.unmatched(trading)
    symbols = selection.select(trading)
    if contract_sizes is not None:
        unsized = [s for s in selection.names if trading.get(s) is None]
        if unsized:
            raise ConfigError(
                f"SYMBOLS: {', '.join(unsized)} has no contractSize in "
                f"{rest.market.path('exchangeInfo')} (not a TRADING COIN-M symbol?): its "
                "volumes in contracts could not be turned into base-asset volumes"
            )
        symbols = keep_sized(symbols, trading, contract_sizes)
    if not symbols:
        raise ConfigError(
            f"SYMBOLS: {', '.join(unmatched)} matches none of the {len(trading)} "
            "TRADING symbols of exchangeInfo"
        )
    for pattern in unmatched:
        log.warning("SYMBOLS: %s matches no TRADING symbol (yet)", pattern)
    return symbols


def keep_sized(
    symbols: Sequence[str], listed: dict[str, int | None], contract_sizes: dict[str, int]
) -> tuple[str, ...]:
    """``symbols`` that have a contract size in ``listed``, their sizes put in
    ``contract_sizes``; the others logged as errors and left out."""
    kept = []
    for symbol in symbols:
        size = listed.get(symbol)
        if size is None or size <= 0:
            log.error("%s: exchangeInfo gives it no contractSize: not ingested", symbol)
            continue
        contract_sizes[symbol] = size
        kept.append(symbol)
    return tuple(kept)


class SymbolWatch:
    """Reads ``exchangeInfo`` every ``every_s`` and reports what changed.

    ``on_change(added, removed)`` gets the symbols newly selected and those no longer trading
    (names given explicitly are never removed).
    """

    def __init__(
        self,
        selection: SymbolSelection,
        rest: RestBackfill,
        current: Sequence[str],
        every_s: float,
        on_change: Callable[[list[str], list[str]], None],
        contract_sizes: dict[str, int] | None = None,
    ) -> None:
        """``contract_sizes`` (COIN-M): new listings' sizes are put in it before ``on_change``;
        a listing without one is left out."""
        self._selection = selection
        self._rest = rest
        self._current = set(current)
        self._every_s = every_s
        self._on_change = on_change
        self._contract_sizes = contract_sizes
        self.refreshes = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                trading = await trading_symbols(self._rest)
            except BackfillError as exc:  # REST down: keep the current symbols, try next time
                log.warning("symbols refresh failed, keeping the symbols: %s", exc)
                continue
            selected = set(self._selection.select(trading))
            if self._current and not selected - set(self._selection.names):
                # A listing that lost every match at once is a broken answer, not a delisting.
                log.warning("symbols refresh: the patterns match nothing now; keeping them all")
                continue
            if self._contract_sizes is not None:  # names keep the size they started with
                names = set(self._selection.names)
                sized = keep_sized(sorted(selected - names), trading, self._contract_sizes)
                selected = names | set(sized)
            added = sorted(selected - self._current)
            removed = sorted(self._current - selected)
            self._current = selected
            self.refreshes += 1
            if added or removed:
                log.info(
                    "symbols refresh: %d listed (%s), %d delisted (%s)",
                    len(added),
                    ", ".join(added[:10]),
                    len(removed),
                    ", ".join(removed[:10]),
                )
                self._on_change(added, removed)
