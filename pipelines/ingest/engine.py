"""The delivery engine: extract once -> bronze Parquet + raw Postgres, dead letters, recovery, the run frame.

A run takes its source's advisory lock (source_run; backfills of disjoint pairs share it, each holding its
pairs' locks), extracts every page once (dlt extract), writes the
extracted tables to bronze, normalises and loads the same tables into `raw` (dlt, parquet + ADBC), then
records dead letters and the run. A failure before the raw load commits leaves raw and the cursors as they
were and removes the load's bronze files; one after keeps them, settled, so bronze and raw agree per load id.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import json
import logging
import os
import resource
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.schema.typing import TWriteDisposition

from pipelines import catalog, compaction
from pipelines.bronze import delete_load, lake_errors, open_lake, settle_bronze, write_bronze
from pipelines.catalog import Table
from pipelines.errors import root_cause
from pipelines.http import ApiClient
from pipelines.ingest import revisions
from pipelines.ingest.schema_drift import record_fields
from pipelines.ops.observability import RunRecord, new_run_id, run_ledger
from pipelines.redaction import redact
from pipelines.runtime import db, schema
from pipelines.settings import Settings
from pipelines.sources.common import ExtractSink, Rejected

log = logging.getLogger(__name__)

# dlt reads these when a pipeline is made, not at import: set them there (configure_dlt), never on import.
DLT_ENVIRONMENT = {
    "RUNTIME__DLTHUB_TELEMETRY": "false",  # no usage reporting from dlt, ever
    # dlt imports Airflow whenever it is installed, to read secrets from an Airflow Variable: that writes
    # ~/airflow/airflow.db outside a task and is a metadata-database call inside one. Our config is config.yaml.
    "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false",
}


def configure_dlt() -> None:
    """Before dlt makes a pipeline: no telemetry, no Airflow secrets lookup (a value set by the user wins)."""
    for name, value in DLT_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


@dataclass
class RunSummary:
    run_id: str
    source: str
    rows_raw: int
    rows_bronze: int
    dead_letters: int
    details: dict[str, Any]

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        return cls(run.run_id, run.source, run.rows_raw, run.rows_bronze, run.dead_letters, run.details)


# the run of this thread, when it shares its source with other runs (source_run(..., pairs=...)): its own dlt
# pipeline (dlt keeps a pipeline's pending packages in its folder: runs sharing one would abort or load each
# other's), and the raw load and bronze settling taken one run at a time
_SHARED_RUN: contextvars.ContextVar[str | None] = contextvars.ContextVar("shared_run", default=None)
QUEUE_WAIT_S = 3600  # how long a shared run waits its turn for the raw load or bronze settling


def _pipeline_name(source: str, run_id: str | None) -> str:
    return f"cryptoflow_{source}" if run_id is None else f"cryptoflow_{source}_{run_id.rsplit('-', 1)[-1]}"


def _pipeline(settings: Settings, source: str) -> dlt.Pipeline:
    name = _pipeline_name(source, _SHARED_RUN.get())
    return _dlt_pipeline(name, db.writer_url(settings), str(settings.state_dir / "dlt"))


def _drop_pipeline_folder(settings: Settings, source: str, run_id: str) -> None:
    """A shared run's own dlt folder, once the run ended (or was found dead): nothing in it is needed."""
    name = _pipeline_name(source, run_id)
    _dlt_pipeline.cache_clear()  # a cached pipeline object must not outlive its folder
    shutil.rmtree(settings.state_dir / "dlt" / name, ignore_errors=True)


@contextlib.contextmanager
def _one_run_at_a_time(settings: Settings, step: str) -> Iterator[None]:
    """Steps runs sharing a source take one at a time: dlt's merge goes through one staging table per raw
    table, and settling bronze rewrites older files that hold other runs' pairs too. A queue, not a refusal:
    it waits as long as a run may take. Nothing to wait for in a run that has its source to itself."""
    if _SHARED_RUN.get() is None:
        yield
        return
    with db.advisory_lock(settings, step, wait_s=QUEUE_WAIT_S):
        yield


@functools.lru_cache(maxsize=16)
def _dlt_pipeline(name: str, writer_url: str, pipelines_dir: str) -> dlt.Pipeline:
    """One dlt pipeline object per source and destination in a process: making one resolves dlt's whole
    configuration (about half a second), and a run can deliver twice (new candles, then revised ones)."""
    configure_dlt()
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.postgres(credentials=writer_url),
        dataset_name="raw",
        pipelines_dir=pipelines_dir,
    )


def deliver(
    settings: Settings,
    source: str,
    data: Any,
    sink: ExtractSink,
    spec: Table,
    load_id: str,
    write_disposition: TWriteDisposition = "merge",
) -> tuple[int, int]:
    """Write one load to bronze and raw. `data` is a dlt source or resource (extracted here, its tables kept
    in `sink`), or None for the Arrow tables already in `sink.tables` (handed over: this function frees
    them before the raw load, so the caller must keep no other reference). Returns (rows_bronze, rows_raw).
    The extract's dead letters are stored before the raw load, so no crash after the raw commit loses them
    (a load that then fails leaves them queued: the records were bad either way, and a re-run does not
    queue them twice)."""
    if data is None:
        data = dlt.resource(
            _handed_over(sink.tables),
            name=spec.name,
            primary_key=list(spec.key),
            write_disposition=write_disposition,
        )
    pipeline = _pipeline(settings, source)
    pipeline.abort_packages()  # a killed run's half-made package must never load later
    with stage(sink, "extract"):
        try:
            pipeline.extract(data, loader_file_format="parquet")
        except Exception as exc:
            pipeline.abort_packages()
            raise root_cause(exc) from None
    queue_dead_letters(settings, source, spec.name, sink, load_id)
    lake = open_lake(settings)
    with lake_errors(lake):
        compaction.recover(lake, spec.name)  # a compaction a crash interrupted: finished before we write
    rows = pa.concat_tables(sink.tables) if sink.tables else None
    if rows is None or rows.num_rows == 0:
        pipeline.abort_packages()
        return 0, 0
    try:
        with stage(sink, "bronze"), _one_run_at_a_time(settings, f"bronze:{spec.name}"), lake_errors(lake):
            rows_bronze = write_bronze(lake, spec.name, rows, spec.time_column, load_id, spec.replaces)
        sink.time_range = time_range = (
            pc.min(rows[spec.time_column]).as_py(),
            pc.max(rows[spec.time_column]).as_py(),
        )
        del rows
        sink.tables.clear()  # dlt loads from its own files: free the extracted tables before the raw load
        if spec.incremental_model:  # before the load: no commit can happen without it (the transform's cue)
            record_change(settings, spec, load_id, time_range)
        with _one_run_at_a_time(settings, f"load:raw.{spec.name}"):
            with stage(sink, "raw"):
                pipeline.normalize()
                pipeline.load()
            with stage(sink, "unique_index"):  # its ShareLock would wait for another run's load
                ensure_unique_key(settings, spec)
        with stage(sink, "bronze_settle"), _one_run_at_a_time(settings, f"bronze:{spec.name}"):
            settle_bronze(lake, spec.name, [load_id], spec.replaces, time_range=time_range)
        with stage(sink, "count"):
            rows_raw = count_rows(settings, spec.name, load_id)
    except BaseException:  # an error, a Ctrl-C or a task timeout: bronze must end up agreeing with raw
        with cleanup("aborting the load package", load_id):
            pipeline.abort_packages()
        with cleanup("making bronze agree with raw", load_id):
            _bronze_after_failure(settings, lake, spec, load_id)
        raise
    return rows_bronze, rows_raw


@contextlib.contextmanager
def cleanup(what: str, load_id: str) -> Iterator[None]:
    """Cleanup while an error (or a Ctrl-C) is on its way out: a failure of the cleanup itself (the
    database or the lake gone too) is logged, never raised in place of the error being handled. What it
    left undone, the next run's recovery finishes (_recover_abandoned)."""
    try:
        yield
    except Exception as exc:
        log.error(
            f"{what} failed while handling an earlier error; the next run finishes it",
            extra={"load_id": load_id, "error": redact(f"{type(exc).__name__}: {exc}")},
        )


HANDOFF_ROWS = 32_768  # at most this many rows per item handed to dlt


def _bronze_after_failure(settings: Settings, lake: Any, spec: Table, load_id: str) -> None:
    """A load that failed before raw committed loses its bronze files (older copies were not touched
    yet); one that failed after the commit (an interrupt during dlt's bookkeeping) keeps them, settled."""
    try:
        committed = count_rows(settings, spec.name, load_id) > 0
    except Exception:  # the database is gone too: leave bronze for the reconciliation check to flag
        log.error(
            "could not tell whether the raw load committed; bronze left as written",
            extra={"load_id": load_id},
        )
        return
    with _one_run_at_a_time(settings, f"bronze:{spec.name}"):
        if committed:
            settle_bronze(lake, spec.name, [load_id], spec.replaces)
        else:
            delete_load(lake, spec.name, load_id)
    if not committed:
        forget_change(settings, load_id)  # nothing of it reached raw: nothing to restate


def record_change(settings: Settings, spec: Table, load_id: str, time_range: tuple[Any, Any]) -> None:
    """Note the hours a load brings to a table a silver model reads by time range (ops.raw_changes): the
    transform restates those its lookback does not reach."""
    with db.cursor(settings) as cur:
        cur.execute(
            "INSERT INTO ops.raw_changes (table_name, load_id, first_time, last_time) VALUES (%s, %s, %s, %s)",
            (spec.name, load_id, *(t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in time_range)),
        )


def forget_change(settings: Settings, load_id: str) -> None:
    with db.cursor(settings) as cur:
        cur.execute("DELETE FROM ops.raw_changes WHERE load_id = %s", (load_id,))


def _handed_over(tables: list[pa.Table]) -> Iterator[pa.Table]:
    """Yield the tables in slices of at most HANDOFF_ROWS rows, keeping none once extracted (the sink's list
    is cleared after bronze). Small items keep the raw load's memory flat: measured on 438k candles, one
    item raised the process's peak by 240 MB during the raw load, 100k-row slices by 80 MB, 10k-row ones
    by nothing but cost extract time; the fetch's own per-pair chunks (up to 26k rows) do both."""
    pending = list(tables)
    while pending:
        table = pending.pop(0)
        for batch in table.to_batches(max_chunksize=HANDOFF_ROWS):  # zero-copy: the fetch's own chunks
            yield pa.Table.from_batches([batch])
        del table


@contextlib.contextmanager
def stage(sink: ExtractSink, name: str) -> Iterator[None]:
    """Time one delivery stage and note the process's peak RSS after it (for the benchmark)."""
    started = time.perf_counter()
    yield
    # a run can deliver more than once (new rows, then revised ones): stage times add up
    sink.timings[f"{name}_s"] = sink.timings.get(f"{name}_s", 0.0) + time.perf_counter() - started
    sink.timings[f"rss_after_{name}_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_unique_key(settings: Settings, spec: Table) -> None:
    """A unique index on the natural key: the database itself refuses a duplicate. And the table's autovacuum
    settings (catalog.AUTOVACUUM), which a raw table dlt just created does not have yet."""
    with db.cursor(settings) as cur:
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {spec.name}_natural_key ON raw.{spec.name} ({', '.join(spec.key)})"
        )
        schema.ensure_storage_options(cur, spec.qualified)


def count_rows(settings: Settings, table: str, load_id: str | None = None) -> int:
    with db.cursor(settings) as cur:
        cur.execute("SELECT to_regclass(%s)", (f"raw.{table}",))
        if db.one(cur)[0] is None:
            return 0
        if load_id is None:
            cur.execute(f"SELECT count(*) FROM raw.{table}")
        else:
            cur.execute(f"SELECT count(*) FROM raw.{table} WHERE load_id = %s", (load_id,))
        return int(db.one(cur)[0])


def store_dead_letters(
    settings: Settings, source: str, table: str, rejected: list[Rejected], load_id: str
) -> int:
    """Queue rejected records; returns how many were newly queued."""
    if not rejected:
        return 0
    queued = 0
    with db.cursor(settings) as cur:
        for r in rejected:
            # A record already waiting for the same reason (say, seen again by the gap re-fetch) is not
            # queued twice.
            cur.execute(
                "INSERT INTO raw.dead_letter (source, table_name, natural_key, payload, reason, load_id) "
                "SELECT %(source)s, %(table)s, %(key)s, %(payload)s, %(reason)s, %(load_id)s "
                "WHERE NOT EXISTS (SELECT 1 FROM raw.dead_letter WHERE table_name = %(table)s "
                "AND natural_key = %(key)s AND reason = %(reason)s AND replayed_at IS NULL)",
                {
                    "source": source,
                    "table": table,
                    "key": r.natural_key,
                    "payload": json.dumps(r.payload),
                    "reason": r.reason,
                    "load_id": load_id,
                },
            )
            queued += cur.rowcount
    log.warning("records sent to the dead letter queue", extra={"source": source, "count": queued})
    return queued


def queue_dead_letters(settings: Settings, source: str, table: str, sink: ExtractSink, load_id: str) -> int:
    """Store the sink's rejected records not stored yet; returns how many this sink has queued in all."""
    if sink.rejected:
        sink.queued += store_dead_letters(settings, source, table, sink.rejected, load_id)
        sink.rejected.clear()
    return sink.queued


def _recover_abandoned(settings: Settings, source: str) -> None:
    """Runs still 'running' whose process is gone were killed: record that, and make bronze agree with raw (a
    killed load that reached raw keeps its bronze files, older copies settled; one that did not loses them).
    A live run holds its own lock (`run:<run id>`) until it ends, so one sharing the source is left alone;
    each dead run is claimed by one recovering run only."""
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT run_id FROM ops.pipeline_runs WHERE source = %s AND status = 'running'", (source,)
        )
        dead = [run_id for (run_id,) in cur.fetchall() if db.lock_is_free(settings, f"run:{run_id}")]
        cur.execute(
            "UPDATE ops.pipeline_runs SET status = 'failed', finished_at = now(), "
            "error = 'abandoned: the process ended without recording an outcome' "
            "WHERE source = %s AND status = 'running' AND run_id = ANY(%s) RETURNING run_id",
            (source, dead),
        )
        abandoned = [run_id for (run_id,) in cur.fetchall()]
    if not abandoned:
        return
    spec = catalog.BY_SOURCE[source]
    lake = open_lake(settings)
    for run_id in abandoned:
        # every load a run can write: the main one, the gap re-fetch, and the revisions of each
        for load_id in (run_id, f"{run_id}-rev", f"{run_id}-refetch", f"{run_id}-refetch-rev"):
            # bronze is read and rewritten by every run sharing the source: one at a time
            with db.advisory_lock(settings, f"bronze:{spec.name}", wait_s=QUEUE_WAIT_S):
                if count_rows(settings, spec.name, load_id):
                    settle_bronze(lake, spec.name, [load_id], spec.replaces)
                else:
                    delete_load(lake, spec.name, load_id)
            if load_id.endswith("-rev") and source == "binance":
                revisions.settle(settings, load_id)  # applied if raw holds the load, else removed
        _drop_pipeline_folder(settings, source, run_id)  # if it shared its source
    log.warning("recovered abandoned runs", extra={"source": source, "runs": abandoned})


@contextlib.contextmanager
def source_run(
    settings: Settings, source: str, command: str, *, pairs: list[str] | None = None
) -> Iterator[RunRecord]:
    """Lock, ledger, outcome: the frame every writer of a source shares (ingest, verify, dlq replay).

    By default a run has its source to itself: one lock per source, taken exclusively. A run given `pairs`
    (a backfill batch) shares the source with other such runs: it takes the source's lock in shared mode and
    each of its pairs' locks exclusively, so runs of disjoint pairs go side by side (Airflow's workers), a run
    overlapping one of them waits, and a run that wants the source to itself waits for all of them. A shared
    run loads through its own dlt pipeline, takes the raw load and bronze settling one run at a time, and
    holds `run:<run id>` while it lives, so another run's recovery never takes it for a killed one."""
    configure_dlt()
    db.ensure_database(settings)
    run_id = new_run_id(source)
    shared = pairs is not None
    with db.advisory_lock(
        settings,
        f"ingest:{source}",
        shared=shared,
        also=[f"run:{run_id}", *(f"ingest:{source}:{pair}" for pair in pairs or ())],
    ):
        _recover_abandoned(settings, source)
        token = _SHARED_RUN.set(run_id if shared else None)
        try:
            with run_ledger(settings, source, command, run_id=run_id) as run:
                yield run
        finally:
            _SHARED_RUN.reset(token)
            if shared:
                _drop_pipeline_folder(settings, source, run_id)


def record_http(run: RunRecord, *clients: ApiClient) -> None:
    """The run's HTTP counters: the totals of every client it used so far (each client counts from 0)."""
    run.requests = sum(c.stats.requests for c in clients)
    run.retries = sum(c.stats.retries for c in clients)
    run.rate_limited = sum(c.stats.rate_limited for c in clients)
    if any(c.stats.synthetic for c in clients):
        run.details["sandbox"] = True  # synthetic data: the dashboard says so


def deliver_records(
    settings: Settings, run: RunRecord, client: ApiClient, data: Any, sink: ExtractSink, table: Table
) -> None:
    """One load of a record-shaped source (markets, Fear & Greed): bronze and raw, the HTTP counters, the
    dead letters, and the fields the records came with (schema drift)."""
    assert table.source is not None, f"{table.qualified} is not a raw table of a source"
    try:
        rows = deliver(settings, table.source, data, sink, table, run.run_id)
    finally:
        record_http(run, client)
    queued = queue_dead_letters(settings, table.source, table.name, sink, run.run_id)
    record_extract(run, sink, *rows, queued)
    run.details["schema_changes"] = record_fields(settings, table.source, table.name, sink.fields, run.run_id)


def record_extract(run: RunRecord, sink: ExtractSink, rows_bronze: int, rows_raw: int, queued: int) -> None:
    run.rows_extracted += sink.fetched_rows
    run.dead_letters += queued
    run.rows_bronze += rows_bronze
    run.rows_raw += rows_raw
