"""The completeness ledger: every hole in the stored bars' trade ids, found in ClickHouse.

Binance numbers each symbol's trades consecutively, and every bar says which trade ids it
counts (``first_trade_id``, ``last_trade_id``, ``trade_count`` and the id runs ``trade_ids``;
a bar of aggTrades covers the raw ids ``f..l``). So a symbol's bars are complete when, in id
order, the ids of its bars (and of the trades accounted for without a bar,
:mod:`binance_metrics.ledger.accounted`) follow each other without a missing id and without an
id counted twice, and each bar counts as many trades as it has ids. A hole is one of:

- ``gap``: ids between two counted ids that nothing counts (a lost bar, a lost part of a bar,
  trades the ingestor never got). ``missing_trades`` is how many.
- ``overlap``: ids counted more than once (by two bars, or by a bar and an accounted range);
  ``missing_trades`` is how many counts too many.
- a bar whose ``trade_count`` differs from the number of its ids (only a bar whose ids are not
  known can disagree): a ``gap`` or an ``overlap`` somewhere in ``first..last`` of that bar.

The minutes of a hole are those its trades can be in: for a gap, from the minute of the
counted id before it to the minute of the id after it; for an overlap, the minutes of the bars
that count its ids. All of it is one query (window functions over the ids in order), the same
SQL on chDB and on a ClickHouse server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from binance_metrics.store.clickhouse import BARS_TABLE, Store

ACCOUNTED_TABLE: Final = "binance.accounted_trades"


@dataclass(frozen=True)
class Hole:
    """One hole in a symbol's trade ids (see the module doc)."""

    symbol: str
    kind: Literal["gap", "overlap"]
    first_missing_id: int  # for an overlap: the first id counted twice
    last_missing_id: int
    missing_trades: int  # for an overlap: counts too many
    first_minute_ms: int  # open_time of the first affected minute
    last_minute_ms: int


# Each {where_*} is an AND-joined filter on symbol and time (or "1").
_HOLES_SQL: Final = f"""
WITH
bars AS (
    SELECT symbol, toUnixTimestamp64Milli(window_start) AS minute_ms,
           toInt64(trade_count) AS trades, first_trade_id, last_trade_id,
           if(empty(trade_ids), [(first_trade_id, last_trade_id)], trade_ids) AS runs
    FROM {BARS_TABLE} FINAL
    WHERE trade_count > 0 AND {{where_bars}}
),
id_runs AS (
    SELECT toString(symbol) AS symbol, minute_ms, run.1 AS lo, run.2 AS hi
    FROM bars ARRAY JOIN runs AS run
    UNION ALL
    SELECT toString(symbol), intDiv(toUnixTimestamp64Milli(trade_time), 60000) * 60000 AS minute_ms,
           first_trade_id, last_trade_id
    FROM {ACCOUNTED_TABLE} FINAL
    WHERE {{where_accounted}}
),
ordered AS (
    SELECT symbol, minute_ms, lo, hi,
           count() OVER before AS earlier,
           max(hi) OVER before AS reach,
           max((hi, minute_ms)) OVER before AS reach_latest,
           max((hi, -minute_ms)) OVER before AS reach_earliest,
           min(minute_ms) OVER same_start AS start_earliest,
           max(minute_ms) OVER same_start AS start_latest
    FROM id_runs
    WINDOW before AS (PARTITION BY symbol ORDER BY lo, hi, minute_ms
                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
           same_start AS (PARTITION BY symbol, lo)
),
gaps AS (
    SELECT symbol, 'gap' AS kind, reach + 1 AS first_id, lo - 1 AS last_id,
           lo - reach - 1 AS trades,
           least(-reach_earliest.2, start_earliest) AS first_minute,
           greatest(reach_latest.2, start_latest) AS last_minute
    FROM ordered
    WHERE earlier > 0 AND lo > reach + 1
),
doubled AS (
    SELECT symbol, lo AS first_id, least(hi, reach) AS last_id
    FROM ordered
    WHERE earlier > 0 AND lo <= reach
),
doubled_islands AS (
    SELECT symbol, first_id, last_id,
           sum(starts) OVER (PARTITION BY symbol ORDER BY first_id, last_id
                             ROWS UNBOUNDED PRECEDING) AS island
    FROM (
        SELECT symbol, first_id, last_id,
               if(count() OVER w = 0 OR first_id > max(last_id) OVER w + 1, 1, 0) AS starts
        FROM doubled
        WINDOW w AS (PARTITION BY symbol ORDER BY first_id, last_id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    )
),
overlaps AS (
    SELECT symbol, min(piece_first) AS first_id, max(piece_last) AS last_id,
           sum(piece_last - piece_first + 1) AS trades
    FROM (SELECT symbol, island, first_id AS piece_first, last_id AS piece_last
          FROM doubled_islands)
    GROUP BY symbol, island
),
overlap_minutes AS (
    SELECT o.symbol AS symbol, 'overlap' AS kind, o.first_id AS first_id,
           o.last_id AS last_id, o.trades AS trades,
           min(r.minute_ms) AS first_minute, max(r.minute_ms) AS last_minute
    FROM id_runs AS r INNER JOIN overlaps AS o ON r.symbol = o.symbol
    WHERE r.lo <= o.last_id AND r.hi >= o.first_id
    GROUP BY o.symbol, o.first_id, o.last_id, o.trades
),
miscounted AS (
    SELECT toString(symbol) AS symbol, if(excess > 0, 'overlap', 'gap') AS kind,
           first_trade_id AS first_id, last_trade_id AS last_id, abs(excess) AS trades,
           minute_ms AS first_minute, minute_ms AS last_minute
    FROM (
        SELECT *, trades - arraySum(run -> run.2 - run.1 + 1, runs) AS excess FROM bars
    )
    WHERE excess != 0
)
SELECT symbol, kind, toInt64(first_id), toInt64(last_id), toInt64(trades),
       toInt64(first_minute), toInt64(last_minute)
FROM (
    SELECT * FROM gaps
    UNION ALL SELECT * FROM overlap_minutes
    UNION ALL SELECT * FROM miscounted
)
ORDER BY symbol, first_minute, toInt64(first_id), kind
"""


def find_holes(
    store: Store,
    *,
    symbol: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
) -> list[Hole]:
    """Every hole of the stored bars of ``store.market`` (of ``symbol``, with open times in
    ``[start_ms, end_ms)``), ordered by symbol and minute. An empty list: the bars are complete.

    Within a time range, the ids before its first bar and after its last are not looked at.
    """
    parameters: dict[str, Any] = {"market": store.market}
    bars_filter = ["market = {market:String}"]
    accounted_filter = ["market = {market:String}"]
    if symbol is not None:
        parameters["symbol"] = symbol.upper()
        bars_filter.append("symbol = {symbol:String}")
        accounted_filter.append("symbol = {symbol:String}")
    if start_ms is not None:
        parameters["start"] = start_ms
        bars_filter.append("window_start >= fromUnixTimestamp64Milli({start:Int64})")
        accounted_filter.append("minute_ms >= {start:Int64}")
    if end_ms is not None:
        parameters["end"] = end_ms
        bars_filter.append("window_start < fromUnixTimestamp64Milli({end:Int64})")
        accounted_filter.append("minute_ms < {end:Int64}")
    sql = _HOLES_SQL.format(
        where_bars=" AND ".join(bars_filter), where_accounted=" AND ".join(accounted_filter)
    )
    return [
        Hole(
            symbol=str(row[0]),
            kind=cast(Literal["gap", "overlap"], row[1]),
            first_missing_id=int(row[2]),
            last_missing_id=int(row[3]),
            missing_trades=int(row[4]),
            first_minute_ms=int(row[5]),
            last_minute_ms=int(row[6]),
        )
        for row in store.query(sql, parameters)
    ]
