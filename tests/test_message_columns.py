"""The vectorised batch fold equals the per-trade path: the same prices to the last digit, the
same trades in each (symbol, window), the same dead letters and heartbeats, whatever the batch
holds (bad records, odd spellings, repeats, heartbeats, backfilled and non-market trades)."""

from __future__ import annotations

import pickle
from collections import Counter, defaultdict

from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.bars import Bar, merge
from binance_metrics.fragments import FoldedTrade, Fragment, preaggregate
from binance_metrics.heartbeats import Heartbeat, encode_heartbeat
from binance_metrics.message_columns import MAX_DIGITS, fold_messages, scaled_column
from binance_metrics.trades import Rejected, TradeMessage, encode_trade, parse_scaled
from tests.support.strategies import BASE_TIME_MS, market_trades

WINDOW_MS = 60_000

binance_shaped = st.integers(0, 10**MAX_DIGITS - 1).map(lambda v: f"{v // 10**8}.{v % 10**8:08d}")
spellings = st.one_of(
    binance_shaped,
    st.text(alphabet="0123456789.+-_ e\x00\u0663", max_size=22),
    st.sampled_from(["1.5", "01.00000000", ".12345678", "1.000000000", "1e3", "", "1.0000000\x00"]),
    st.integers(0, 10**22).map(lambda v: f"{v // 10**8}.{v % 10**8:08d}"),  # too many digits
)


@given(st.lists(spellings, max_size=30))
def test_prices_parse_exactly_as_one_at_a_time(texts: list[str]) -> None:
    values, exact = scaled_column(texts)
    for text, value, is_exact in zip(texts, values.tolist(), exact.tolist(), strict=True):
        if is_exact:
            assert value == parse_scaled(text), text


@given(st.lists(binance_shaped, max_size=30))
def test_every_price_in_binance_shape_is_parsed_by_the_columns(texts: list[str]) -> None:
    values, exact = scaled_column(texts)
    assert exact.all()
    assert values.tolist() == [parse_scaled(text) for text in texts]


def _odd(trade: TradeMessage, kind: int) -> bytes:
    """The trade spelled in a way the columns leave to the per-trade path."""
    changes: list[dict[str, object]] = [
        {"price": "1.5"},  # valid, not Binance's shape
        {"quantity": "-1"},
        {"price": "0.00000000"},
        {"symbol": "btcusdt"},
        {"event_type": "kline"},
        {"trade_type": "ADL"},
        {"trade_type": "MARKET"},
        {"backfilled": True},
        {"trade_time_ms": 1_000},
        {"trade_time_ms": BASE_TIME_MS + 10**12},  # from the future
        {"price": "99999999999.99999999", "quantity": "99999999999.99999999"},  # quote too big
        {"aggregate_last_id": trade.trade_id - 1},
    ]
    values = {f: getattr(trade, f) for f in trade.__struct_fields__}
    values.update(changes[kind])
    return encode_trade(TradeMessage(**values))


_GARBAGE = [b"not json", b"", b"[]", b"\xff", b'{"e":"trade"}', encode_trade(
    TradeMessage("trade", 1, "BTCUSDT", 1, "1.00000000", "1.00000000", BASE_TIME_MS, False)
) + b"\n"]  # fmt: skip


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    trades = draw(market_trades())
    batch = [encode_trade(trade) for trade in trades]
    batch += draw(st.lists(st.sampled_from(batch), max_size=4))  # records produced twice
    for _ in range(draw(st.integers(0, 4))):
        batch.append(_odd(draw(st.sampled_from(trades)), draw(st.integers(0, 11))))
    batch += draw(st.lists(st.sampled_from(_GARBAGE), max_size=2))
    for _ in range(draw(st.integers(0, 3))):
        through = draw(st.integers(BASE_TIME_MS, BASE_TIME_MS + 10 * WINDOW_MS))
        batch.append(encode_heartbeat(draw(st.sampled_from(["BTCUSDT", "ETHUSDT"])), through, 0))
    return list(draw(st.permutations(batch)))


def _summary(out: list[Fragment | Heartbeat | Rejected]) -> object:
    """What the dataflow makes of a batch's output, whichever way it was folded."""
    bars: dict[tuple[str, int], Bar] = defaultdict(Bar)
    trades: dict[tuple[str, int], Counter[FoldedTrade]] = defaultdict(Counter)
    latest: dict[tuple[str, int], int] = defaultdict(int)
    backfilled: dict[tuple[str, int], set[bool]] = defaultdict(set)
    for item in out:
        if isinstance(item, Fragment):
            key = (item.symbol, item.window)
            bars[key] = merge(bars[key], item.bar)
            item.load_trades()
            assert item.trades, "every fragment's trades can be had"
            assert sum(t.last_id - t.first_id + 1 for t in item.trades) == item.bar.trade_count
            trades[key].update(item.trades)
            latest[key] = max(latest[key], item.max_trade_time_ms)
            backfilled[key].add(item.backfilled)
    # Where a trade id repeats with other values (a corrupt record), open and close depend on
    # which copy merges first; the seen-trades step keeps one copy before any bar is used, so
    # there only the trades must be the same.
    for key, held in trades.items():
        ids = [i for t in held.elements() for i in range(t.first_id, t.last_id + 1)]
        if len(ids) != len(set(ids)):
            del bars[key]
    return (
        [(r.payload, r.error, r.kind) for r in out if isinstance(r, Rejected)],
        sorted(h for h in out if isinstance(h, Heartbeat)),
        # Backfilled trades may come as a fragment of their own, as after a batch boundary.
        dict(bars), dict(trades), dict(latest), {k: all(v) for k, v in backfilled.items()},
    )  # fmt: skip


@given(batches())
def test_a_batch_folds_as_the_per_trade_path_folds_it(batch: list[bytes]) -> None:
    latest_ms = BASE_TIME_MS + 10**9
    counted: list[tuple[int, int]] = []
    expected: list[tuple[int, int]] = []
    out = fold_messages(batch, WINDOW_MS, lambda t, r: counted.append((t, r)), latest_ms)
    reference = preaggregate(batch, WINDOW_MS, lambda t, r: expected.append((t, r)), latest_ms)
    assert _summary(out) == _summary(reference)
    assert tuple(map(sum, zip(*counted, strict=True))) == tuple(
        map(sum, zip(*expected, strict=True))
    )
    # Heartbeats come after every fragment, as the windows expect them.
    kinds = [type(item) for item in out]
    assert kinds == sorted(kinds, key=[Rejected, Fragment, Heartbeat].index)


@given(market_trades())
def test_a_consecutive_fragment_keeps_its_trades_as_columns_and_pickles_them(
    trades: list[TradeMessage],
) -> None:
    out = fold_messages([encode_trade(t) for t in trades], WINDOW_MS, lambda t, r: None)
    for item in out:
        assert isinstance(item, Fragment)
        if item.consecutive:
            assert item.pending is not None and not item.trades
        copied = pickle.loads(pickle.dumps(item))
        copied.load_trades()
        item.load_trades()
        assert copied.trades == item.trades and copied.bar == item.bar


def test_a_batch_msgspec_cannot_read_as_lines_takes_the_per_trade_path() -> None:
    good = encode_trade(
        TradeMessage("trade", 1, "BTCUSDT", 7, "2.00000000", "3.00000000", BASE_TIME_MS, True)
    )
    out = fold_messages([good, b"{"], WINDOW_MS, lambda t, r: None)
    assert [type(item) for item in out] == [Rejected, Fragment]
    assert _summary(out) == _summary(preaggregate([good, b"{"], WINDOW_MS, lambda t, r: None))
