"""Hypothesis strategies for Binance trades: consecutive ids per symbol, exact decimal strings."""

from __future__ import annotations

from hypothesis import strategies as st

from binance_metrics.trades import TradeMessage, format_scaled

BASE_TIME_MS = 1_723_161_600_000  # 2024-08-09 00:00:00 UTC, a minute boundary
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SHIBUSDT")

# From SHIB-like (price 1e-8, qty 1e9) to BTC-like (price 1e5) values, all exact.
prices = st.integers(min_value=1, max_value=10**13).map(format_scaled)
quantities = st.integers(min_value=1, max_value=10**17).map(format_scaled)


@st.composite
def symbol_trades(draw: st.DrawFn, symbol: str, max_trades: int = 40) -> list[TradeMessage]:
    """Trades of one symbol: ids consecutive from a random start, times non-decreasing.

    Time steps include multi-minute pauses, so zero-trade minutes occur.
    """
    count = draw(st.integers(min_value=1, max_value=max_trades))
    trade_id = draw(st.integers(min_value=0, max_value=10**10))
    time_ms = BASE_TIME_MS + draw(st.integers(min_value=0, max_value=59_999))
    trades = []
    for _ in range(count):
        time_ms += draw(st.sampled_from([0, 1, 250, 7_000, 45_000, 61_000, 185_000]))
        aggregate = draw(st.integers(min_value=0, max_value=3))
        trades.append(
            TradeMessage(
                event_type="aggTrade" if aggregate else "trade",
                event_time_ms=time_ms,
                symbol=symbol,
                trade_id=trade_id,
                aggregate_last_id=trade_id + aggregate if aggregate else None,
                price=draw(prices),
                quantity=draw(quantities),
                trade_time_ms=time_ms,
                buyer_is_maker=draw(st.booleans()),
            )
        )
        trade_id += aggregate + 1
    return trades


@st.composite
def market_trades(draw: st.DrawFn, max_symbols: int = 3) -> list[TradeMessage]:
    """Trades of 1..3 symbols, each symbol's trades in id order (as they happened)."""
    n = draw(st.integers(min_value=1, max_value=max_symbols))
    return [trade for symbol in SYMBOLS[:n] for trade in draw(symbol_trades(symbol))]
