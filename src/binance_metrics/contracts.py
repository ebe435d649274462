"""COIN-M contracts: a trade's base-asset quantity, rounded as Binance rounds it.

A COIN-M trade's quantity is in contracts of ``contractSize`` USD (exchangeInfo: 100 for
BTCUSD_PERP, 10 for most others), so its base-asset quantity is
``quantity * contractSize / price``. Binance publishes that value per trade (``baseQty`` of
``/dapi/v1/trades``, ``base_qty`` of the data.binance.vision COIN-M ``trades`` archives) with 8
decimals, **rounded to nearest**, not truncated: Binance's own example trade (price ``9635.0``,
qty ``1``, contract size 100) has ``baseQty`` ``0.01037883``, where 100 / 9635 =
0.0103788271... truncates to ``0.01037882``; the archive row
``1151022504,78526.1,83.0,0.10569734`` (8300 / 78526.1 = 0.1056973413...) agrees. A tie (the
exact quotient ending in 5 at the ninth decimal) is rare and no sample shows one: it rounds up.
A COIN-M kline's base-asset volume is the sum of its trades' ``baseQty``
(docs/markets.md, COIN-M volumes).
"""

from __future__ import annotations

from binance_metrics.trades import SCALE


def base_quantity(price: int, quantity: int, contract_size: int) -> int:
    """The base-asset quantity, scaled by 10**8, of ``quantity`` contracts (scaled by 10**8)
    of ``contract_size`` at ``price`` (scaled by 10**8), rounded half up to 8 decimals.

    >>> base_quantity(963_500_000_000, 100_000_000, 100)  # 100 / 9635.0
    1037883
    """
    numerator, denominator = quantity * contract_size * SCALE, price
    return (2 * numerator + denominator) // (2 * denominator)
