"""Which symbols to ingest when ``SYMBOLS`` names a set: ``ALL`` or patterns such as ``*USDT``.

``SYMBOLS`` is a comma-separated mix of names (``BTCUSDT``) and fnmatch patterns (``*USDT``,
``BTC?``, ``[AB]*BTC``; ``ALL`` is ``*``). Names are always ingested, as given; patterns select
among the symbols ``GET /api/v3/exchangeInfo`` lists with status ``TRADING`` (weight 20, through
the backfill's REST client and its weight budget). :class:`SymbolWatch` reads it again every
``INGEST__SYMBOLS_REFRESH_S``: a new listing is added, a symbol no longer trading is dropped.
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
from binance_metrics.ingest.tuning import EXCHANGE_INFO_WEIGHT

log = logging.getLogger(__name__)

EXCHANGE_INFO: Final = "/api/v3/exchangeInfo"
#: Only trading symbols, without the permission sets (they make the answer several MB).
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
    status: str


class _ExchangeInfo(msgspec.Struct):
    symbols: list[_Symbol]


_decoder: Final = msgspec.json.Decoder(_ExchangeInfo)


async def trading_symbols(rest: RestBackfill) -> set[str]:
    """Every symbol ``exchangeInfo`` lists as ``TRADING``."""
    info = await rest.get(
        EXCHANGE_INFO,
        EXCHANGE_INFO_PARAMS,
        _decoder.decode,
        weight=EXCHANGE_INFO_WEIGHT,
        what="exchangeInfo",
    )
    return {s.symbol for s in info.symbols if s.status == "TRADING"}


async def initial_symbols(selection: SymbolSelection, rest: RestBackfill) -> tuple[str, ...]:
    """The symbols to start with; ``ConfigError`` naming ``SYMBOLS`` when there are none."""
    if not selection.needs_discovery:
        return selection.names
    trading = await trading_symbols(rest)
    unmatched = selection.unmatched(trading)
    symbols = selection.select(trading)
    if not symbols:
        raise ConfigError(
            f"SYMBOLS: {', '.join(unmatched)} matches none of the {len(trading)} "
            "TRADING symbols of exchangeInfo"
        )
    for pattern in unmatched:
        log.warning("SYMBOLS: %s matches no TRADING symbol (yet)", pattern)
    return symbols


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
    ) -> None:
        self._selection = selection
        self._rest = rest
        self._current = set(current)
        self._every_s = every_s
        self._on_change = on_change
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
