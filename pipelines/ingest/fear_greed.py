"""The Fear & Greed index: the whole daily history on the first run, then the days since the newest value."""

from __future__ import annotations

import contextlib
import datetime as dt

from pipelines import db
from pipelines.catalog import FEAR_GREED
from pipelines.http import client_for
from pipelines.ingest.engine import (
    RunSummary,
    deliver,
    queue_dead_letters,
    record_extract,
    record_http,
    source_run,
)
from pipelines.ingest.schema_drift import record_fields
from pipelines.settings import Settings
from pipelines.sources.common import ExtractSink
from pipelines.sources.fear_greed import fear_greed_source


def fear_greed_limit(settings: Settings) -> int:
    """0 (the whole history) on the first run, else the days since the newest stored value, plus overlap."""
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('raw.fear_greed')")
        if cur.fetchone()[0] is None:
            return 0
        cur.execute("SELECT max(ts) FROM raw.fear_greed")
        newest = cur.fetchone()[0]
    if newest is None:
        return 0
    return (dt.datetime.now(dt.UTC) - newest).days + 2


def ingest_fear_greed(settings: Settings, *, command: str = "ingest") -> RunSummary:
    with source_run(settings, "fear_greed", command) as run:
        client = client_for("fear_greed", settings.sources.fear_greed)
        limit = fear_greed_limit(settings)
        sink = ExtractSink()
        source = fear_greed_source(client, limit, run.run_id, sink)
        try:
            rows = deliver(settings, "fear_greed", source, sink, FEAR_GREED, run.run_id)
        finally:
            record_http(run, client)
        queued = queue_dead_letters(settings, "fear_greed", FEAR_GREED.name, sink, run.run_id)
        record_extract(run, sink, *rows, queued)
        run.details["schema_changes"] = record_fields(
            settings, "fear_greed", FEAR_GREED.name, sink.fields, run.run_id
        )
        run.details["limit"] = limit
        if sink.time_range:
            run.window_start, run.window_end = sink.time_range
        return RunSummary(
            run.run_id, "fear_greed", run.rows_raw, run.rows_bronze, run.dead_letters, run.details
        )
