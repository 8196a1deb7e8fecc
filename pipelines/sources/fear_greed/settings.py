"""alternative.me Fear & Greed constants."""

import pyarrow as pa

FNG_PATH = "/fng/"
TABLE = "fear_greed"
PRIMARY_KEY = ("ts",)
FNG_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),  # the day the value is for (00:00 UTC)
        pa.field("value", pa.int16(), nullable=False),
        pa.field("value_classification", pa.string(), nullable=False),  # the API's own label, as sent
        pa.field("load_id", pa.string(), nullable=False),
    ]
)
