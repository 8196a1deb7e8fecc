"""CoinGecko market snapshots: one snapshot of the top coins per run, stamped with its UTC hour."""

from __future__ import annotations

import datetime as dt

from pipelines.catalog import MARKETS
from pipelines.http import ApiClient, client_for
from pipelines.ingest.engine import RunSummary, deliver_records, source_run
from pipelines.settings import Settings
from pipelines.sources.coingecko import coingecko_source
from pipelines.sources.coingecko import settings as cg
from pipelines.sources.common import ExtractSink


def coingecko_client(settings: Settings) -> ApiClient:
    key = settings.secrets.coingecko_api_key
    return client_for(
        "coingecko", settings.sources.coingecko, headers={cg.API_KEY_HEADER: key} if key else None
    )


def ingest_markets(settings: Settings, *, command: str = "ingest") -> RunSummary:
    """One market snapshot of the top coins, stamped with the current UTC hour (re-runs merge)."""
    with source_run(settings, "coingecko", command) as run:
        client = coingecko_client(settings)
        snapshot = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        run.window_start = run.window_end = snapshot
        sink = ExtractSink()
        src = settings.sources.coingecko
        source = coingecko_source(client, src.snapshot_coins, src.per_page, snapshot, run.run_id, sink)
        deliver_records(settings, run, client, source, sink, MARKETS)
        run.details["snapshot_ts"] = snapshot.isoformat()
        return RunSummary.of(run)
