"""Binance's three markets: spot, USDⓈ-M futures (``um``) and COIN-M futures (``cm``).

One process serves one market (``MARKET``); every stored bar carries its market, so spot
BTCUSDT and USDⓈ-M BTCUSDT never collide.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Market = Literal["spot", "um", "cm"]
MARKETS: Final[tuple[Market, ...]] = get_args(Market)
