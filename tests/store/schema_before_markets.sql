-- The schema of the release before markets (no market column, no base volumes), verbatim: the
-- migration test builds an old store from it.
-- binance-metrics schema. Applied automatically to the embedded chDB store, and by the
-- ClickHouse server in compose.yaml (mounted into /docker-entrypoint-initdb.d/).
-- Statements are separated by a line holding only ';' so that simple tools can split them.

CREATE DATABASE IF NOT EXISTS binance
;

-- One row per symbol and minute. The dataflow may write a bar more than once (a late trade
-- corrects it, a replay or a recovery writes it again): ReplacingMergeTree keeps the row with
-- the highest version, and among equals the last written. The version is the trade count, so a
-- re-emitted partial bar never replaces the full one and writing the same input twice leaves the
-- table as it was; a bar that counts more trades than its id span (a trade counted twice) has
-- version 0, so any correct bar written later replaces it.
-- Read it with FINAL (or through the views below).
CREATE TABLE IF NOT EXISTS binance.ohlcv
(
    symbol                 LowCardinality(String),
    window_start           DateTime64(3, 'UTC'),
    open                   Decimal(38, 8),
    high                   Decimal(38, 8),
    low                    Decimal(38, 8),
    close                  Decimal(38, 8),
    volume                 Decimal(38, 8),
    quote_volume           Decimal(38, 16),
    trade_count            UInt64,
    taker_buy_volume       Decimal(38, 8),
    taker_buy_quote_volume Decimal(38, 16),
    first_trade_id         Int64,
    last_trade_id          Int64,
    -- Exactly which trade ids the bar counts, as runs of consecutive ids (usually one run):
    -- lets a trade that arrives after the dataflow forgot its minute be merged exactly.
    trade_ids              Array(Tuple(Int64, Int64)),
    written_at             DateTime64(3, 'UTC') DEFAULT now64(3),
    version                UInt64 MATERIALIZED
        if(trade_count <= toUInt64(greatest(last_trade_id - first_trade_id + 1, 0)), trade_count, 0)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (symbol, window_start)
;

-- Trade ids that no bar counts, on purpose, so that the completeness ledger (`binance-metrics
-- audit`) does not report them as missing: futures trades that are not market trades (X is
-- INSURANCE_FUND, ADL, ...), which klines exclude. One row per id range (docs/ledger.md).
CREATE TABLE IF NOT EXISTS binance.accounted_trades
(
    symbol         LowCardinality(String),
    first_trade_id Int64,
    last_trade_id  Int64,
    trade_time     DateTime64(3, 'UTC'),
    reason         LowCardinality(String),
    written_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (symbol, first_trade_id, last_trade_id)
;

-- Where the ingestor started each symbol when nothing told it where to resume (no trade in Kafka,
-- no bar stored): the resume's checkpoint until a first bar is stored, so that a crash of the
-- very first run still backfills from its first trade (docs/healing.md).
CREATE TABLE IF NOT EXISTS binance.ingest_starts
(
    symbol         LowCardinality(String),
    first_trade_id Int64,
    written_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (symbol, first_trade_id)
;

-- Rollups: exact bars of 5m, 15m, 1h, 4h and 1d computed from the current 1-minute bars, so they
-- follow every correction. A filler minute (no trades: O = H = L = C = previous close) must not
-- lend its price to the open, high or low of a longer bar that has trades.
CREATE VIEW IF NOT EXISTS binance.ohlcv_rollup AS
SELECT
    symbol,
    toStartOfInterval(minute, toIntervalSecond({interval_seconds:UInt32})) AS window_start,
    if(countIf(n > 0) > 0, argMinIf(o, minute, n > 0), argMin(o, minute)) AS open,
    if(countIf(n > 0) > 0, maxIf(h, n > 0), max(h)) AS high,
    if(countIf(n > 0) > 0, minIf(l, n > 0), min(l)) AS low,
    argMax(c, minute) AS close,
    sum(v) AS volume,
    sum(qv) AS quote_volume,
    sum(n) AS trade_count,
    sum(tbv) AS taker_buy_volume,
    sum(tbqv) AS taker_buy_quote_volume
FROM
(
    SELECT symbol, window_start AS minute, open AS o, high AS h, low AS l, close AS c,
           volume AS v, quote_volume AS qv, trade_count AS n,
           taker_buy_volume AS tbv, taker_buy_quote_volume AS tbqv
    FROM binance.ohlcv FINAL
)
GROUP BY symbol, window_start

;

-- 1-second bars (written instead of binance.ohlcv when WINDOW_SECONDS=1), same layout and rules.
CREATE TABLE IF NOT EXISTS binance.ohlcv_1s
(
    symbol                 LowCardinality(String),
    window_start           DateTime64(3, 'UTC'),
    open                   Decimal(38, 8),
    high                   Decimal(38, 8),
    low                    Decimal(38, 8),
    close                  Decimal(38, 8),
    volume                 Decimal(38, 8),
    quote_volume           Decimal(38, 16),
    trade_count            UInt64,
    taker_buy_volume       Decimal(38, 8),
    taker_buy_quote_volume Decimal(38, 16),
    first_trade_id         Int64,
    last_trade_id          Int64,
    -- Exactly which trade ids the bar counts, as runs of consecutive ids (usually one run):
    -- lets a trade that arrives after the dataflow forgot its minute be merged exactly.
    trade_ids              Array(Tuple(Int64, Int64)),
    written_at             DateTime64(3, 'UTC') DEFAULT now64(3),
    version                UInt64 MATERIALIZED
        if(trade_count <= toUInt64(greatest(last_trade_id - first_trade_id + 1, 0)), trade_count, 0)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (symbol, window_start)
;

-- Klines of every Binance interval, computed from the current bars at query time (so they follow
-- every correction), anchored as Binance anchors them: up to 1d on multiples of the length since
-- the epoch, 3d on every third day from 1970-01-02, 1w on Mondays, 1M on calendar months, all in
-- the local time of tz_offset_ms (Binance's timeZone, in ms). Returns the whole bars of symbol
-- that overlap [from_ms, to_ms) (UTC epoch ms): the one holding from_ms and those opening before
-- to_ms. A filler bar (no trades: O = H = L = C = previous close) must not lend its price to the
-- open, high or low of a longer bar that has trades. For example:
--   SELECT * FROM binance.ohlcv_klines(symbol = 'BTCUSDT', interval = '1w', tz_offset_ms = 0,
--                                      from_ms = 1704067200000, to_ms = 1706745600000)
CREATE VIEW IF NOT EXISTS binance.ohlcv_klines AS
SELECT
    symbol,
    fromUnixTimestamp64Milli(open_ms, 'UTC') AS window_start,
    if(countIf(n > 0) > 0, argMinIf(o, minute, n > 0), argMin(o, minute)) AS open,
    if(countIf(n > 0) > 0, maxIf(h, n > 0), max(h)) AS high,
    if(countIf(n > 0) > 0, minIf(l, n > 0), min(l)) AS low,
    argMax(c, minute) AS close,
    sum(v) AS volume,
    sum(qv) AS quote_volume,
    sum(n) AS trade_count,
    sum(tbv) AS taker_buy_volume,
    sum(tbqv) AS taker_buy_quote_volume
FROM
(
    WITH
        transform({interval:String},
            ['1s', '1m', '3m', '5m', '15m', '30m', '1h', '2h', '4h', '6h', '8h', '12h', '1d',
             '3d', '1w'],
            [1000, 60000, 180000, 300000, 900000, 1800000, 3600000, 7200000, 14400000,
             21600000, 28800000, 43200000, 86400000, 259200000, 604800000],
            toInt64(0)) AS length_ms,
        transform({interval:String}, ['3d', '1w'], [86400000, 345600000], toInt64(0)) AS anchor_ms,
        -- Local time: the grid is laid in the time zone, the result is UTC again.
        toUnixTimestamp64Milli(window_start) + {tz_offset_ms:Int64} AS local_ms,
        {from_ms:Int64} + {tz_offset_ms:Int64} AS from_local_ms,
        if({interval:String} = '1M',
           toUnixTimestamp64Milli(toDateTime64(toStartOfMonth(fromUnixTimestamp64Milli(local_ms, 'UTC')), 3, 'UTC')),
           local_ms - positiveModulo(local_ms - anchor_ms, greatest(length_ms, 1)))
            - {tz_offset_ms:Int64} AS open_ms,
        -- The open time of the bar holding from_ms: that bar is returned whole.
        if({interval:String} = '1M',
           toUnixTimestamp64Milli(toDateTime64(toStartOfMonth(fromUnixTimestamp64Milli(from_local_ms, 'UTC')), 3, 'UTC')),
           from_local_ms - positiveModulo(from_local_ms - anchor_ms, greatest(length_ms, 1)))
            - {tz_offset_ms:Int64} AS first_open_ms
    -- Short names: an alias equal to a column name would be taken for the aggregate.
    SELECT symbol, open_ms, window_start AS minute, open AS o, high AS h, low AS l, close AS c,
           volume AS v, quote_volume AS qv, trade_count AS n,
           taker_buy_volume AS tbv, taker_buy_quote_volume AS tbqv
    FROM binance.ohlcv FINAL
    WHERE symbol = {symbol:String}
      AND NOT throwIf({interval:String} NOT IN ('1s', '1m', '3m', '5m', '15m', '30m', '1h', '2h',
                      '4h', '6h', '8h', '12h', '1d', '3d', '1w', '1M'), 'unknown interval')
      AND window_start >= fromUnixTimestamp64Milli(first_open_ms, 'UTC')
      -- a bar that opens before to_ms may run on for up to a month
      AND window_start < fromUnixTimestamp64Milli({to_ms:Int64} + 2764800000, 'UTC')
)
GROUP BY symbol, open_ms
HAVING open_ms < {to_ms:Int64}
;

-- The same klines from the 1-second bars (1s itself, and every longer interval).
CREATE VIEW IF NOT EXISTS binance.ohlcv_1s_klines AS
SELECT
    symbol,
    fromUnixTimestamp64Milli(open_ms, 'UTC') AS window_start,
    if(countIf(n > 0) > 0, argMinIf(o, minute, n > 0), argMin(o, minute)) AS open,
    if(countIf(n > 0) > 0, maxIf(h, n > 0), max(h)) AS high,
    if(countIf(n > 0) > 0, minIf(l, n > 0), min(l)) AS low,
    argMax(c, minute) AS close,
    sum(v) AS volume,
    sum(qv) AS quote_volume,
    sum(n) AS trade_count,
    sum(tbv) AS taker_buy_volume,
    sum(tbqv) AS taker_buy_quote_volume
FROM
(
    WITH
        transform({interval:String},
            ['1s', '1m', '3m', '5m', '15m', '30m', '1h', '2h', '4h', '6h', '8h', '12h', '1d',
             '3d', '1w'],
            [1000, 60000, 180000, 300000, 900000, 1800000, 3600000, 7200000, 14400000,
             21600000, 28800000, 43200000, 86400000, 259200000, 604800000],
            toInt64(0)) AS length_ms,
        transform({interval:String}, ['3d', '1w'], [86400000, 345600000], toInt64(0)) AS anchor_ms,
        -- Local time: the grid is laid in the time zone, the result is UTC again.
        toUnixTimestamp64Milli(window_start) + {tz_offset_ms:Int64} AS local_ms,
        {from_ms:Int64} + {tz_offset_ms:Int64} AS from_local_ms,
        if({interval:String} = '1M',
           toUnixTimestamp64Milli(toDateTime64(toStartOfMonth(fromUnixTimestamp64Milli(local_ms, 'UTC')), 3, 'UTC')),
           local_ms - positiveModulo(local_ms - anchor_ms, greatest(length_ms, 1)))
            - {tz_offset_ms:Int64} AS open_ms,
        -- The open time of the bar holding from_ms: that bar is returned whole.
        if({interval:String} = '1M',
           toUnixTimestamp64Milli(toDateTime64(toStartOfMonth(fromUnixTimestamp64Milli(from_local_ms, 'UTC')), 3, 'UTC')),
           from_local_ms - positiveModulo(from_local_ms - anchor_ms, greatest(length_ms, 1)))
            - {tz_offset_ms:Int64} AS first_open_ms
    -- Short names: an alias equal to a column name would be taken for the aggregate.
    SELECT symbol, open_ms, window_start AS minute, open AS o, high AS h, low AS l, close AS c,
           volume AS v, quote_volume AS qv, trade_count AS n,
           taker_buy_volume AS tbv, taker_buy_quote_volume AS tbqv
    FROM binance.ohlcv_1s FINAL
    WHERE symbol = {symbol:String}
      AND NOT throwIf({interval:String} NOT IN ('1s', '1m', '3m', '5m', '15m', '30m', '1h', '2h',
                      '4h', '6h', '8h', '12h', '1d', '3d', '1w', '1M'), 'unknown interval')
      AND window_start >= fromUnixTimestamp64Milli(first_open_ms, 'UTC')
      -- a bar that opens before to_ms may run on for up to a month
      AND window_start < fromUnixTimestamp64Milli({to_ms:Int64} + 2764800000, 'UTC')
)
GROUP BY symbol, open_ms
HAVING open_ms < {to_ms:Int64}
;

-- The forming bar: each symbol's current window as the dataflow last saw it, at most a few
-- times a second, one row per symbol. It is never a closed bar: reads show it only while its
-- window is newer than the symbol's newest bar in binance.ohlcv (docs/live.md). The version
-- orders by window first, then by trade count (a trade count of 2^32 or more would tie).
CREATE TABLE IF NOT EXISTS binance.ohlcv_forming
(
    symbol                 LowCardinality(String),
    window_start           DateTime64(3, 'UTC'),
    open                   Decimal(38, 8),
    high                   Decimal(38, 8),
    low                    Decimal(38, 8),
    close                  Decimal(38, 8),
    volume                 Decimal(38, 8),
    quote_volume           Decimal(38, 16),
    trade_count            UInt64,
    taker_buy_volume       Decimal(38, 8),
    taker_buy_quote_volume Decimal(38, 16),
    first_trade_id         Int64,
    last_trade_id          Int64,
    written_at             DateTime64(3, 'UTC') DEFAULT now64(3),
    version                UInt64 MATERIALIZED
        toUInt64(toUnixTimestamp(window_start)) * 4294967296 + least(trade_count, 4294967295)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY symbol
;
