"""The comparison: equal by value (Binance's trailing zeros too), every change found exactly
where it was made (hypothesis, against the list of changes as the reference)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from binance_metrics.reconcile.compare import FIELDS, Difference, Kline, reconcile

MINUTE = 60_000


def kline(open_time: int, **values: Decimal | int) -> Kline:
    return Kline(open_time, values)


def test_trailing_zeros_do_not_differ_and_missing_fields_are_not_compared() -> None:
    ours = [kline(0, open=Decimal("0.02722"), volume=Decimal("5"), trade_count=3)]
    binance = [kline(0, open=Decimal("0.02722000"), volume=Decimal("5.00000000"))]
    result = reconcile(ours, binance)
    assert (result.equal, result.matched, result.fields) == (True, 1, ("open", "volume"))


amounts = st.integers(min_value=0, max_value=10**20).map(lambda n: Decimal(n).scaleb(-8))


@st.composite
def bars(draw: st.DrawFn) -> dict[int, dict[str, Decimal | int]]:
    minutes = draw(st.sets(st.integers(min_value=0, max_value=200), min_size=1, max_size=40))
    return {
        minute * MINUTE: {
            name: draw(st.integers(0, 10**6)) if name == "trade_count" else draw(amounts)
            for name in FIELDS
        }
        for minute in minutes
    }


@given(bars(), st.data())
def test_every_change_is_reported_where_it_was_made(
    ours: dict[int, dict[str, Decimal | int]], data: st.DataObject
) -> None:
    times = sorted(ours)
    dropped_here = data.draw(st.sets(st.sampled_from(times)))
    dropped_there = data.draw(st.sets(st.sampled_from(times)).map(lambda s: s - dropped_here))
    changes = data.draw(
        st.lists(st.tuples(st.sampled_from(times), st.sampled_from(FIELDS)), unique=True)
    )
    binance = {t: dict(values) for t, values in ours.items() if t not in dropped_there}
    expected = []
    for time, name in sorted(changes, key=lambda c: (c[0], FIELDS.index(c[1]))):
        if time in binance and time not in dropped_here:
            old = binance[time][name]
            binance[time][name] = new = old + 1
            # Trailing zeros elsewhere change nothing.
            expected.append(Difference(time, name, ours[time][name], new))
    for values in binance.values():
        values["open"] = Decimal(values["open"]).quantize(Decimal("1E-12"))
    mine = [Kline(t, v) for t, v in ours.items() if t not in dropped_here]
    result = reconcile(mine, [Kline(t, v) for t, v in binance.items()])
    assert result.mismatched == expected
    assert result.missing_here == sorted(dropped_here)
    assert result.missing_there == sorted(dropped_there)
    differing = {d.open_time_ms for d in expected}
    assert result.matched == len(set(times) - dropped_here - dropped_there - differing)
    assert result.equal == (not expected and not dropped_here and not dropped_there)
