"""The Fear & Greed index: the whole daily history on the first run, then the days since the newest value."""

from __future__ import annotations

import datetime as dt

from pipelines.catalog import FEAR_GREED
from pipelines.http import client_for
from pipelines.ingest.engine import RunSummary, deliver_records, source_run
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sources.common import ExtractSink
from pipelines.sources.fear_greed import fear_greed_source


def fear_greed_limit(settings: Settings) -> int:
    """0 (the whole history) on the first run, else the days since the newest stored value, plus overlap."""
    with db.cursor(settings) as cur:
        cur.execute("SELECT to_regclass('raw.fear_greed')")
        if db.one(cur)[0] is None:
            return 0
        cur.execute("SELECT max(ts) FROM raw.fear_greed")
        newest = db.one(cur)[0]
    if newest is None:
        return 0
    return int((dt.datetime.now(dt.UTC) - newest).days) + 2


def ingest_fear_greed(settings: Settings, *, command: str = "ingest") -> RunSummary:
    with source_run(settings, "fear_greed", command) as run:
        client = client_for("fear_greed", settings.sources.fear_greed)
        limit = fear_greed_limit(settings)
        sink = ExtractSink()
        source = fear_greed_source(client, limit, run.run_id, sink)
        deliver_records(settings, run, client, source, sink, FEAR_GREED)
        run.details["limit"] = limit
        if sink.time_range:
            run.window_start, run.window_end = sink.time_range
        return RunSummary.of(run)
