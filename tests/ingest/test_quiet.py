"""The ticker's proof for quiet symbols: how far a row lets a heartbeat vouch (the checks run
through the real parts in tests/live/test_quiet_minutes.py)."""

from __future__ import annotations

from binance_metrics.ingest.quiet import TICKER_MARGIN_MS, vouched_through


def test_a_row_vouches_through_the_last_whole_second_before_its_close_time_less_the_margin() -> (
    None
):
    boundary = 1_723_161_660_000  # a minute boundary
    # Asked 1.3 s after the boundary: the minute before it is vouched for, to its last ms.
    assert vouched_through(boundary + TICKER_MARGIN_MS + 300) == boundary - 1
    # Any earlier, and the margin keeps the last second before the boundary out.
    assert vouched_through(boundary + TICKER_MARGIN_MS - 1) == boundary - 1_001
    assert (vouched_through(boundary + 12_345) + 1) % 1_000 == 0
