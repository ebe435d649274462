"""A local stand-in for Binance: the offline demo (``up --exchange replay:``), the tests and the
benchmarks all run against :class:`~binance_metrics.testing.exchange.LocalExchange`."""
