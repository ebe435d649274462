"""``SYMBOLS=ALL`` and patterns: the settings accept them, exchangeInfo (the local exchange's,
through the real REST client) resolves them, and a selection that matches nothing names
``SYMBOLS``."""

from __future__ import annotations

import asyncio

import pytest

from binance_metrics.errors import ConfigError
from binance_metrics.ingest.backfill import RestBackfill
from binance_metrics.ingest.discovery import (
    SymbolSelection,
    initial_symbols,
    is_pattern,
    trading_symbols,
)
from binance_metrics.rest_client import RestTuning
from binance_metrics.settings import Settings
from binance_metrics.testing.exchange import LocalExchange
from binance_metrics.testing.market import synthetic_market

MARKET = ("BTCUSDT", "ETHUSDT", "ETHBTC", "BNBBTC", "XRPETH", "NEWUSDT")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ALL", ("ALL",)),
        ("*usdt, BTCBUSD", ("*USDT", "BTCBUSD")),
        ("BTC?", ("BTC?",)),
        ("[AB]*BTC", ("[AB]*BTC",)),
    ],
)
def test_settings_accept_all_and_patterns(value: str, expected: tuple[str, ...]) -> None:
    assert Settings(SYMBOLS=value).SYMBOLS == expected


@pytest.mark.parametrize("value", ["*USD$", "BTC-USDT", "*.USDT"])
def test_settings_refuse_what_is_neither_a_symbol_nor_a_pattern(value: str) -> None:
    with pytest.raises(ValueError, match="SYMBOLS"):
        Settings(SYMBOLS=value)


def test_selection_keeps_names_and_matches_patterns() -> None:
    trading = set(MARKET) - {"NEWUSDT"}
    selection = SymbolSelection.of(("XRPETH", "*USDT", "DELISTED", "*BTC", "ZZZ*"))
    assert [is_pattern(e) for e in ("ALL", "*USDT", "BTC?", "[AB]X", "BTCUSDT")] == [
        True,
        True,
        True,
        True,
        False,
    ]
    assert selection.select(trading) == (
        "XRPETH",
        "DELISTED",
        "BNBBTC",
        "BTCUSDT",
        "ETHBTC",
        "ETHUSDT",
    )
    assert selection.unmatched(trading) == ["ZZZ*"]
    assert SymbolSelection.of(("ALL",)).select(trading) == tuple(sorted(trading))


def rest(exchange: LocalExchange) -> RestBackfill:
    return RestBackfill(exchange.rest_url, RestTuning(0.05, 0.1, 2, 10, 5000))


def test_exchange_info_resolves_all_and_patterns() -> None:
    with LocalExchange(synthetic_market(MARKET, 1), unlisted=("NEWUSDT",)) as exchange:

        async def run() -> tuple[set[str], tuple[str, ...], tuple[str, ...]]:
            client = rest(exchange)
            try:
                return (
                    set(await trading_symbols(client)),
                    await initial_symbols(SymbolSelection.of(("ALL",)), client),
                    await initial_symbols(SymbolSelection.of(("XRPETH", "*USDT")), client),
                )
            finally:
                await client.aclose()

        trading, everything, some = asyncio.run(run())
    assert trading == set(MARKET) - {"NEWUSDT"}, "only TRADING symbols"
    assert everything == tuple(sorted(trading))
    assert some == ("XRPETH", "BTCUSDT", "ETHUSDT")
    assert exchange.log.exchange_info_calls == 3


def test_a_selection_matching_nothing_names_symbols() -> None:
    with LocalExchange(synthetic_market(MARKET, 1)) as exchange:

        async def run() -> None:
            client = rest(exchange)
            try:
                await initial_symbols(SymbolSelection.of(("ZZZ*", "*EUR")), client)
            finally:
                await client.aclose()

        with pytest.raises(ConfigError, match=r"^SYMBOLS: ZZZ\*, \*EUR matches none of the 6"):
            asyncio.run(run())
