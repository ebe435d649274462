"""Reconciliation: stored bars compared with Binance's own klines (docs/reconcile.md)."""
