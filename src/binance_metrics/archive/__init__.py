"""Binance's public trade archives (data.binance.vision): which files cover a range of days,
downloading them with resume and retries, their checksums, and ``binance-metrics backfill``
([backfill.md](../../../docs/backfill.md))."""
