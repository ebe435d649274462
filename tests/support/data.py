"""The files the tests read: the repository's own, and the real Binance recordings in tests/data.

Each recording is described, with its provenance, in tests/data/README.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
DATA: Final = REPO / "tests" / "data"

#: 10,063 spot aggTrades of XRPETH over 48 h, data.binance.vision layout without header.
XRPETH_AGG_TRADES: Final = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.csv"
#: The same aggTrades as the REST ``/api/v3/aggTrades`` JSON array.
XRPETH_AGG_TRADES_JSON: Final = DATA / "XRPETH-aggTrades-2019-10-11_2019-10-12.api.json"
#: Binance's own 1m klines of those 2,880 minutes (885 without trades).
XRPETH_KLINES: Final = DATA / "XRPETH-1m-2019-10-11_2019-10-12.ohlcv.csv"
#: Raw combined-stream ``@trade`` frames as received: 19,904 BTCUSDT and 14,515 ETHUSDT trades.
BTCUSDT_CAPTURE: Final = DATA / "BTCUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
ETHUSDT_CAPTURE: Final = DATA / "ETHUSDT-spot-trade-stream-20240808T235415Z-20240809T000505Z.jsonl"
#: 12,935 raw USD-M futures ``@trade`` frames; trade 3535191080 is an insurance-fund trade (X).
BTCUSDT_FUTURES_CAPTURE: Final = (
    DATA / "BTCUSDT-um-trade-stream-20230404T235820Z-20230405T000654Z.jsonl"
)
INSURANCE_FUND_TRADE_ID: Final = 3535191080
#: 5,235 raw COIN-M futures ``btcusd_perp@trade`` frames (quantities in contracts).
BTCUSD_PERP_CM_CAPTURE: Final = (
    DATA / "BTCUSD_PERP-cm-trade-stream-20240808T235417Z-20240809T000504Z.jsonl"
)
#: 10,000 spot ``@trade`` messages flattened to CSV by a capture tool (times in microseconds).
TRXUSDT_STREAM_CSV: Final = DATA / "TRXUSDT-spot-trade-stream-20250304T000001Z-20250304T004759Z.csv"
#: 1,440 official BTCUSDT 1m klines, the full data.binance.vision layout: not trades.
BTCUSDT_KLINES: Final = DATA / "BTCUSDT-1m-2020-01-01.csv"
#: The first 3,000 COIN-M futures aggTrades of BTCUSD_PERP on 2026-05-08, with the file's header.
BTCUSD_PERP_CM_AGG_TRADES: Final = DATA / "BTCUSD_PERP-cm-aggTrades-2026-05-08-first3000.csv"
