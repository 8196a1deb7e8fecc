"""Binance spot REST constants."""

import pyarrow as pa

from pipelines.catalog import KLINES

KLINES_PATH = "/api/v3/klines"
EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# request weight per endpoint (Binance's documentation; exchangeInfo of every symbol costs 20)
REQUEST_WEIGHTS = {KLINES_PATH: 2, EXCHANGE_INFO_PATH: 20, "/api/v3/time": 1, "/api/v3/ping": 1}
INTERVAL_MS = {"1h": 3_600_000, "1d": 86_400_000}
MAX_PAGE = 1000
TABLE = KLINES.name
PRIMARY_KEY = KLINES.key

# The 12 fields of a kline row, in the API's order.
ROW_FIELDS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)
DECIMAL_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
)
PRICE_FIELDS = ("open", "high", "low", "close")
# Binance sends 8 decimals; 28 integer digits hold any meme coin's hourly quote volume.
DECIMAL_TYPE = pa.decimal128(36, 8)
TIMESTAMP_TYPE = pa.timestamp("ms", tz="UTC")

KLINES_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("interval", pa.string(), nullable=False),
        pa.field("open_time", TIMESTAMP_TYPE, nullable=False),
        pa.field("close_time", TIMESTAMP_TYPE, nullable=False),
        *(pa.field(name, DECIMAL_TYPE, nullable=False) for name in DECIMAL_FIELDS[:6]),
        pa.field("trades", pa.int64(), nullable=False),
        *(pa.field(name, DECIMAL_TYPE, nullable=False) for name in DECIMAL_FIELDS[6:]),
        pa.field("load_id", pa.string(), nullable=False),
    ]
)
