"""Ingestion: every writer of the raw schema and the bronze lake.

- engine.py: extract once -> bronze + raw, dead letters, recovery of killed runs, the run frame (source_run)
- binance.py: the Binance client, the universe of pairs, cursors and windows; lifecycle.py: pair statuses
- klines.py: candles fetched once, appended or restated; revisions.py: the trace of revised candles
- gaps.py (+ gaps.sql): missing hours found, re-fetched once, settled and classified
- ohlcv.py: the runs `ingest_ohlcv` and `verify_klines`; markets.py and fear_greed.py: the other sources
- dlq.py: the dead letter queue (list, replay); schema_drift.py: fields the JSON sources add or drop

Importing this package changes nothing (no environment, no connection): each run sets up what it needs.
"""

from pipelines.ingest.binance import binance_client, klines_cursors, resolve_universe
from pipelines.ingest.engine import RunSummary, count_rows
from pipelines.ingest.fear_greed import ingest_fear_greed
from pipelines.ingest.markets import ingest_markets
from pipelines.ingest.ohlcv import Verification, ingest_ohlcv, verify_klines

__all__ = [
    "RunSummary",
    "Verification",
    "binance_client",
    "count_rows",
    "ingest_fear_greed",
    "ingest_markets",
    "ingest_ohlcv",
    "klines_cursors",
    "resolve_universe",
    "verify_klines",
]
