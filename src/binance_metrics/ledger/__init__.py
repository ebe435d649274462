"""The completeness ledger: which trade ids the stored bars count, and where they do not."""
