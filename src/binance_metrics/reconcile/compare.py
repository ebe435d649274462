"""Stored bars against Binance's klines, field by field, as exact decimals.

Both sides are :class:`Kline`: an open time and the fields a source has. A kline file of
data.binance.vision has all nine of ours; an OHLCV export may have only five; COIN-M's
"quote" volumes are base-asset volumes, and so are ours of COIN-M bars
(:func:`~binance_metrics.store.queries.as_binance`). A field is
compared where both sides have it; values are ``Decimal`` (or ``int`` for the trade count) and
compare by value, so Binance's ``"0.02722000"`` equals a stored ``0.02722``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

#: Binance's kline fields that a bar carries, in Binance's column order.
FIELDS: Final = (
    "open", "high", "low", "close", "volume", "quote_volume", "trade_count",
    "taker_buy_volume", "taker_buy_quote_volume",
)  # fmt: skip

Value = Decimal | int


@dataclass(frozen=True, slots=True)
class Kline:
    """One bar of one side: ``values`` holds the fields of :data:`FIELDS` the source has."""

    open_time_ms: int
    values: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class Difference:
    open_time_ms: int
    field: str
    ours: Value
    binance: Value


@dataclass(slots=True)
class Reconciliation:
    """The outcome: minutes equal on every compared field, the differing fields, the minutes
    only Binance has (``missing_here``) and those only we have (``missing_there``)."""

    fields: tuple[str, ...] = ()
    matched: int = 0
    mismatched: list[Difference] = field(default_factory=list)
    missing_here: list[int] = field(default_factory=list)
    missing_there: list[int] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.mismatched or self.missing_here or self.missing_there)

    @property
    def mismatched_minutes(self) -> list[int]:
        return sorted({difference.open_time_ms for difference in self.mismatched})


def reconcile(
    ours: Iterable[Kline], binance: Iterable[Kline], fields: Iterable[str] = FIELDS
) -> Reconciliation:
    """Compare two sets of bars by open time (a later kline of the same open time wins)."""
    wanted = tuple(name for name in FIELDS if name in set(fields))
    mine = {kline.open_time_ms: kline for kline in ours}
    theirs = {kline.open_time_ms: kline for kline in binance}
    result = Reconciliation()
    compared: set[str] = set()
    for open_time in sorted(mine.keys() | theirs.keys()):
        here, there = mine.get(open_time), theirs.get(open_time)
        if here is None:
            result.missing_here.append(open_time)
            continue
        if there is None:
            result.missing_there.append(open_time)
            continue
        names = [name for name in wanted if name in here.values and name in there.values]
        compared.update(names)
        differences = [
            Difference(open_time, name, here.values[name], there.values[name])
            for name in names
            if here.values[name] != there.values[name]
        ]
        if differences:
            result.mismatched.extend(differences)
        else:
            result.matched += 1
    result.fields = tuple(name for name in FIELDS if name in compared)
    return result
