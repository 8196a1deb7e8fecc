"""alternative.me Fear & Greed constants."""

import pyarrow as pa

from pipelines.catalog import FEAR_GREED

FNG_PATH = "/fng/"
TABLE = FEAR_GREED.name
PRIMARY_KEY = FEAR_GREED.key
FNG_SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),  # the day the value is for (00:00 UTC)
        pa.field("value", pa.int16(), nullable=False),
        pa.field("value_classification", pa.string(), nullable=False),  # the API's own label, as sent
        pa.field("load_id", pa.string(), nullable=False),
    ]
)
