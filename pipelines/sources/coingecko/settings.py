"""CoinGecko constants."""

import pyarrow as pa

from pipelines.catalog import MARKETS

MARKETS_PATH = "/api/v3/coins/markets"
TABLE = MARKETS.name
PRIMARY_KEY = MARKETS.key
API_KEY_HEADER = "x-cg-demo-api-key"

# CoinGecko serialises numbers as IEEE doubles, so float64 keeps every digit it sent.
FLOAT_FIELDS = (
    "current_price",
    "market_cap",
    "fully_diluted_valuation",
    "total_volume",
    "high_24h",
    "low_24h",
    "price_change_24h",
    "price_change_percentage_24h",
    "market_cap_change_24h",
    "market_cap_change_percentage_24h",
    "circulating_supply",
    "total_supply",
    "max_supply",
    "ath",
    "ath_change_percentage",
    "atl",
    "atl_change_percentage",
)
NON_NEGATIVE = ("current_price", "market_cap", "total_volume", "circulating_supply")
TS = pa.timestamp("ms", tz="UTC")
MARKETS_SCHEMA = pa.schema(
    [
        pa.field("snapshot_ts", TS, nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("symbol", pa.string()),
        pa.field("name", pa.string()),
        pa.field("image", pa.string()),
        pa.field("market_cap_rank", pa.int64()),
        *(pa.field(name, pa.float64()) for name in FLOAT_FIELDS),
        pa.field("ath_date", TS),
        pa.field("atl_date", TS),
        pa.field("roi", pa.string()),  # JSON text: {"times", "currency", "percentage"} or null
        pa.field("last_updated", TS),
        pa.field("load_id", pa.string(), nullable=False),
    ]
)
