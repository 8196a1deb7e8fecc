"""Extract once -> bronze Parquet + raw Postgres; dead letters, gaps, the run ledger, run serialisation.

A run: take the source's advisory lock, extract every page once (dlt extract), write the extracted tables
to bronze, normalise and load the same tables into `raw` (dlt merge on natural keys, parquet + ADBC), then
record dead letters and the run. A failure before the raw load commits leaves raw and the cursors as they
were and removes the load's bronze files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dlt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import db, lifecycle, revisions
from pipelines.bronze import delete_load, open_lake, settle_bronze, write_bronze
from pipelines.errors import UniverseError, root_cause
from pipelines.http import ApiClient, client_for
from pipelines.observability import RunRecord, run_ledger
from pipelines.redaction import redact
from pipelines.schema_drift import record_fields
from pipelines.settings import Settings, validate_symbol
from pipelines.sources.binance import SymbolWindow, iter_klines
from pipelines.sources.binance import settings as bn
from pipelines.sources.binance.helpers import (
    ExchangeInfo,
    fetch_exchange_info,
    last_closed_open_ms,
    plan_pages,
)
from pipelines.sources.binance.settings import KLINES_SCHEMA
from pipelines.sources.coingecko import coingecko_source
from pipelines.sources.coingecko import settings as cg
from pipelines.sources.coingecko.helpers import fetch_markets
from pipelines.sources.common import ExtractSink, Rejected
from pipelines.sources.fear_greed import fear_greed_source
from pipelines.sources.fear_greed import settings as fg

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")  # no usage reporting from dlt, ever
# dlt imports Airflow whenever it is installed, to read secrets from an Airflow Variable: that writes
# ~/airflow/airflow.db outside a task and is a metadata-database call inside one. Our config is config.yaml.
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")
log = logging.getLogger(__name__)
HOUR_MS = 3_600_000
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TableSpec:
    name: str
    time_column: str
    key: tuple[str, ...]
    # the columns whose values a new load replaces whole in bronze (default: the natural key; a market
    # snapshot replaces every older copy of its snapshot_ts, so two snapshots of one hour never mix)
    replace_on: tuple[str, ...] | None = None

    @property
    def replaces(self) -> tuple[str, ...]:
        return self.replace_on or self.key


KLINES = TableSpec(bn.TABLE, "open_time", bn.PRIMARY_KEY)
MARKETS = TableSpec(cg.TABLE, "snapshot_ts", cg.PRIMARY_KEY, replace_on=("snapshot_ts",))
FEAR_GREED = TableSpec(fg.TABLE, "ts", fg.PRIMARY_KEY)
SPECS = {"binance": KLINES, "coingecko": MARKETS, "fear_greed": FEAR_GREED}


@dataclass
class RunSummary:
    run_id: str
    source: str
    rows_raw: int
    rows_bronze: int
    dead_letters: int
    details: dict[str, Any]


def _pipeline(settings: Settings, source: str) -> dlt.Pipeline:
    return _dlt_pipeline(f"cryptoflow_{source}", db.writer_url(settings), str(settings.state_dir / "dlt"))


@functools.lru_cache(maxsize=16)
def _dlt_pipeline(name: str, writer_url: str, pipelines_dir: str) -> dlt.Pipeline:
    """One dlt pipeline object per source and destination in a process: making one resolves dlt's whole
    configuration (about half a second), and a run can deliver twice (new candles, then revised ones)."""
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.postgres(credentials=writer_url),
        dataset_name="raw",
        pipelines_dir=pipelines_dir,
        progress=None,
    )


def _deliver(
    settings: Settings,
    source: str,
    data: Any,
    sink: ExtractSink,
    spec: TableSpec,
    load_id: str,
    write_disposition: str = "merge",
) -> tuple[int, int]:
    """Write one load to bronze and raw. `data` is a dlt source or resource (extracted here, its tables kept
    in `sink`), or None for the Arrow tables already in `sink.tables` (handed over: this function frees
    them before the raw load, so the caller must keep no other reference). Returns (rows_bronze, rows_raw).
    The extract's dead letters are stored before the raw load, so no crash after the raw commit loses them
    (a load that then fails leaves them queued: the records were bad either way, and a re-run does not
    queue them twice)."""
    if data is None:
        data = dlt.resource(
            _handed_over(sink.tables), name=spec.name, primary_key=list(spec.key),
            write_disposition=write_disposition,
        )  # fmt: skip
    pipeline = _pipeline(settings, source)
    pipeline.abort_packages()  # a killed run's half-made package must never load later
    with _stage(sink, "extract"):
        try:
            pipeline.extract(data, loader_file_format="parquet")
        except Exception as exc:
            pipeline.abort_packages()
            raise root_cause(exc) from None
    _queue_dead_letters(settings, source, spec.name, sink, load_id)
    lake = open_lake(settings)
    rows = pa.concat_tables(sink.tables) if sink.tables else None
    if rows is None or rows.num_rows == 0:
        pipeline.abort_packages()
        return 0, 0
    try:
        with _stage(sink, "bronze"):
            rows_bronze = write_bronze(lake, spec.name, rows, spec.time_column, load_id)
        sink.time_range = time_range = (
            pc.min(rows[spec.time_column]).as_py(),
            pc.max(rows[spec.time_column]).as_py(),
        )
        del rows
        sink.tables.clear()  # dlt loads from its own files: free the extracted tables before the raw load
        with _stage(sink, "raw"):
            pipeline.normalize()
            pipeline.load()
        with _stage(sink, "bronze_settle"):
            settle_bronze(lake, spec.name, [load_id], spec.replaces, time_range=time_range)
        with _stage(sink, "unique_index"):
            ensure_unique_key(settings, spec)
        with _stage(sink, "count"):
            rows_raw = count_rows(settings, spec.name, load_id)
    except BaseException:  # an error, a Ctrl-C or a task timeout: bronze must end up agreeing with raw
        with _cleanup("aborting the load package", load_id):
            pipeline.abort_packages()
        with _cleanup("making bronze agree with raw", load_id):
            _bronze_after_failure(settings, lake, spec, load_id)
        raise
    return rows_bronze, rows_raw


@contextlib.contextmanager
def _cleanup(what: str, load_id: str) -> Iterator[None]:
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


def _bronze_after_failure(settings: Settings, lake: Any, spec: TableSpec, load_id: str) -> None:
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
    if committed:
        settle_bronze(lake, spec.name, [load_id], spec.replaces)
    else:
        delete_load(lake, spec.name, load_id)


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
def _stage(sink: ExtractSink, name: str):
    """Time one delivery stage and note the process's peak RSS after it (for the benchmark)."""
    started = time.perf_counter()
    yield
    # a run can deliver more than once (new rows, then revised ones): stage times add up
    sink.timings[f"{name}_s"] = sink.timings.get(f"{name}_s", 0.0) + time.perf_counter() - started
    sink.timings[f"rss_after_{name}_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_unique_key(settings: Settings, spec: TableSpec) -> None:
    """A unique index on the natural key: the database itself refuses a duplicate."""
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE UNIQUE INDEX IF NOT EXISTS {spec.name}_natural_key ON raw.{spec.name} ({', '.join(spec.key)})"
        )


def count_rows(settings: Settings, table: str, load_id: str | None = None) -> int:
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"raw.{table}",))
        if cur.fetchone()[0] is None:
            return 0
        if load_id is None:
            cur.execute(f"SELECT count(*) FROM raw.{table}")
        else:
            cur.execute(f"SELECT count(*) FROM raw.{table} WHERE load_id = %s", (load_id,))
        return int(cur.fetchone()[0])


def store_dead_letters(
    settings: Settings, source: str, table: str, rejected: list[Rejected], load_id: str
) -> int:
    """Queue rejected records; returns how many were newly queued."""
    if not rejected:
        return 0
    queued = 0
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        for r in rejected:
            # A record already waiting for the same reason (say, seen again by the gap re-fetch) is not
            # queued twice.
            cur.execute(
                "INSERT INTO raw.dead_letter (source, table_name, natural_key, payload, reason, load_id) "
                "SELECT %(source)s, %(table)s, %(key)s, %(payload)s, %(reason)s, %(load_id)s "
                "WHERE NOT EXISTS (SELECT 1 FROM raw.dead_letter WHERE table_name = %(table)s "
                "AND natural_key = %(key)s AND reason = %(reason)s AND replayed_at IS NULL)",
                {"source": source, "table": table, "key": r.natural_key, "payload": json.dumps(r.payload),
                 "reason": r.reason, "load_id": load_id},
            )  # fmt: skip
            queued += cur.rowcount
    log.warning("records sent to the dead letter queue", extra={"source": source, "count": queued})
    return queued


def _queue_dead_letters(settings: Settings, source: str, table: str, sink: ExtractSink, load_id: str) -> int:
    """Store the sink's rejected records not stored yet; returns how many this sink has queued in all."""
    if sink.rejected:
        sink.queued += store_dead_letters(settings, source, table, sink.rejected, load_id)
        sink.rejected.clear()
    return sink.queued


def _recover_abandoned(settings: Settings, source: str) -> None:
    """Runs still 'running' while we hold the lock were killed. Record that, and make bronze agree with raw:
    a killed load that reached raw keeps its bronze files (older copies settled), one that did not loses them."""
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE ops.pipeline_runs SET status = 'failed', finished_at = now(), "
            "error = 'abandoned: the process ended without recording an outcome' "
            "WHERE source = %s AND status = 'running' RETURNING run_id",
            (source,),
        )
        abandoned = [run_id for (run_id,) in cur.fetchall()]
    if not abandoned:
        return
    spec = SPECS[source]
    lake = open_lake(settings)
    for run_id in abandoned:
        # every load a run can write: the main one, the gap re-fetch, and the revisions of each
        for load_id in (run_id, f"{run_id}-rev", f"{run_id}-refetch", f"{run_id}-refetch-rev"):
            if count_rows(settings, spec.name, load_id):
                settle_bronze(lake, spec.name, [load_id], spec.replaces)
            else:
                delete_load(lake, spec.name, load_id)
            if load_id.endswith("-rev") and source == "binance":
                revisions.settle(settings, load_id)  # applied if raw holds the load, else removed
    log.warning("recovered abandoned runs", extra={"source": source, "runs": abandoned})


@contextlib.contextmanager
def source_run(settings: Settings, source: str, command: str):
    """Lock, ledger, outcome: the frame every writer of a source shares (ingest, verify, dlq replay). One
    lock per source, so no two writers can abort each other's dlt package or take each other's loads for
    abandoned ones."""
    db.ensure_database(settings)
    with db.advisory_lock(settings, f"ingest:{source}"):
        _recover_abandoned(settings, source)
        with run_ledger(settings, source, command) as run:
            yield run


def _record_http(run: RunRecord, client: ApiClient) -> None:
    run.requests, run.retries, run.rate_limited = (
        client.stats.requests,
        client.stats.retries,
        client.stats.rate_limited,
    )
    if client.stats.synthetic:
        run.details["sandbox"] = True  # synthetic data: the dashboard says so


def _record_extract(run: RunRecord, sink: ExtractSink, rows_bronze: int, rows_raw: int, queued: int) -> None:
    run.rows_extracted += sink.fetched_rows
    run.dead_letters += queued
    run.rows_bronze += rows_bronze
    run.rows_raw += rows_raw


# --- Binance ---------------------------------------------------------------------------------------------


def binance_client(settings: Settings) -> ApiClient:
    src = settings.sources.binance
    return client_for(
        "binance", src, weight_limit=src.weight_limit_per_minute, weight_header=bn.WEIGHT_HEADER
    )


def coingecko_client(settings: Settings) -> ApiClient:
    key = settings.secrets.coingecko_api_key
    return client_for(
        "coingecko", settings.sources.coingecko, headers={cg.API_KEY_HEADER: key} if key else None
    )


def resolve_universe(settings: Settings, info: ExchangeInfo, requested: list[str] | None = None) -> list[str]:
    """The pairs to fetch: pinned symbols (no CoinGecko call) or the top N by market cap, TRADING only."""
    return resolve_pairs(settings, info, requested).trading


def resolve_pairs(
    settings: Settings, info: ExchangeInfo, requested: list[str] | None = None
) -> lifecycle.Pairs:
    """Requested or configured pairs split into TRADING and skipped (with their status). A pair that does
    not trade never stops the others; only a universe with no trading pair at all is an error."""
    universe = settings.universe
    if requested or universe.mode == "pinned":
        symbols = [validate_symbol(s) for s in (requested or universe.symbols)]
        pairs = lifecycle.split_by_status(symbols, info)
        lifecycle.require_some_trading(pairs)
        return pairs
    coins = fetch_markets(coingecko_client(settings), min(1000, universe.top_n * 3))
    stable = {s.upper() for s in universe.stablecoins}
    chosen: list[str] = []
    for coin in coins:
        base = str(coin.get("symbol", "")).upper()
        pair = f"{base}{universe.quote_asset}"
        if base in stable or pair in chosen or pair not in info.trading:
            continue
        chosen.append(pair)
        if len(chosen) == universe.top_n:
            break
    if not chosen:
        raise UniverseError(
            "the top_n universe came out empty: no CoinGecko coin maps to a TRADING USDT pair"
        )
    return lifecycle.Pairs(chosen, {})


def klines_cursors(settings: Settings) -> dict[str, int]:
    """Per-symbol cursor: open time (ms) of the newest candle in raw."""
    return {symbol: newest for symbol, (_, newest) in stored_spans(settings).items()}


def stored_spans(settings: Settings) -> dict[str, tuple[int, int]]:
    """Per symbol: open times (ms) of the oldest and the newest candle in raw."""
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('raw.binance_klines')")
        if cur.fetchone()[0] is None:
            return {}
        cur.execute(
            "SELECT symbol, (extract(epoch FROM min(open_time)) * 1000)::bigint, "
            "(extract(epoch FROM max(open_time)) * 1000)::bigint FROM raw.binance_klines GROUP BY symbol"
        )
        return {symbol: (oldest, newest) for symbol, oldest, newest in cur.fetchall()}


def last_open_before(until: dt.datetime) -> int:
    """Windows are half-open, [since, until): the newest candle that opens strictly before `until`."""
    return (int(until.timestamp() * 1000) - 1) // HOUR_MS * HOUR_MS


def ingest_ohlcv(
    settings: Settings,
    *,
    symbols: list[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    days: int | None = None,
    command: str = "ingest",
    progress: Progress | None = None,
) -> RunSummary:
    """Incremental by default (each symbol from its own cursor, re-fetching the trailing
    `restate_hours` to pick up revised candles); a backfill of [since, until) or the last `days` days."""
    if days is not None and days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    with source_run(settings, "binance", command) as run:
        client = binance_client(settings)
        info = fetch_exchange_info(client)
        if info.weight_limit:
            client.limiter.weight_limit = min(
                info.weight_limit, settings.sources.binance.weight_limit_per_minute
            )
        pairs = resolve_pairs(settings, info, symbols)
        lifecycle.record_statuses(settings, info, [*pairs.trading, *pairs.skipped], run.run_id)
        lifecycle.warn_skipped(settings, pairs)
        universe = pairs.trading
        end_ms = last_closed_open_ms(info.server_time_ms, settings.interval)
        if until is not None:
            end_ms = min(end_ms, last_open_before(until))
        spans = stored_spans(settings)
        cursors = {symbol: newest for symbol, (_, newest) in spans.items()}
        incremental = since is None and days is None
        windows = _windows(settings, universe, end_ms, since, days, spans)
        windows, listed = _after_listing(settings, client, windows, cursors)
        run.window_start = _ts(min((w.start_ms for w in windows), default=end_ms))
        run.window_end = _ts(end_ms)
        total_pages = sum(len(plan_pages(w.start_ms, w.end_ms, settings.interval)) for w in windows)
        _note_gap_checks(settings, run.run_id, windows)
        summary = _deliver_klines(
            settings, run, client, windows, info, run.run_id, progress, total_pages, cursors,
            "restate" if incremental else "backfill",
        )  # fmt: skip
        clock = time.perf_counter()
        inherited = _inherited_gap_checks(settings, run.run_id)  # a killed run's, after its raw commit
        gap_windows = detect_gaps(settings, run.run_id, _merged([*windows, *inherited]))
        summary["timings"]["gap_check_s"] = round(time.perf_counter() - clock, 3)
        if gap_windows:
            refill = _deliver_klines(
                settings, run, client, gap_windows, info, f"{run.run_id}-refetch", None, 0,
                klines_cursors(settings), "refetch",
            )  # fmt: skip
            summary["refetched_rows"] = refill["rows_raw"]
        # also settles hours an earlier (killed) run left 'missing' that raw now holds
        summary["known_gaps"] = settle_gaps(settings, run.run_id, gap_windows)
        summary["gap_classes"] = classify_gaps(settings)
        _done_gap_checks(settings)
        if inherited:
            summary["inherited_gap_checks"] = len(inherited)
        run.details.update(
            summary,
            symbols=len(universe),
            pages=total_pages,
            skipped_pairs=pairs.skipped,
            listed_inside_window={s: _ts(ms).isoformat() for s, ms in listed.items()},
        )
        return RunSummary(run.run_id, "binance", run.rows_raw, run.rows_bronze, run.dead_letters, run.details)


def _ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def _windows(
    settings: Settings,
    universe: list[str],
    end_ms: int,
    since: dt.datetime | None,
    days: int | None,
    spans: dict[str, tuple[int, int]],
) -> list[SymbolWindow]:
    if since is not None:
        start = -(-int(since.timestamp() * 1000) // HOUR_MS) * HOUR_MS
        return [SymbolWindow(s, start, end_ms) for s in universe if start <= end_ms]
    horizon = days or settings.backfill.days
    first = end_ms - (horizon * 24 - 1) * HOUR_MS
    if days is not None:
        return [SymbolWindow(s, first, end_ms) for s in universe]
    # Incremental: from the cursor, and back over the stored part of the trailing restate window, where
    # the exchange may have revised closed candles.
    restate_from = end_ms - (settings.sources.binance.restate_hours - 1) * HOUR_MS
    windows = []
    for symbol in universe:
        start = first
        if symbol in spans:
            oldest, newest = spans[symbol]
            start = min(newest + HOUR_MS, max(restate_from, oldest))
        if start <= end_ms:
            windows.append(SymbolWindow(symbol, start, end_ms))
    return windows


def _after_listing(
    settings: Settings, client: ApiClient, windows: list[SymbolWindow], cursors: dict[str, int]
) -> tuple[list[SymbolWindow], dict[str, int]]:
    """Start each window no earlier than the pair's first candle on the exchange, so nothing before a listing
    is fetched or recorded as a gap. Returns the windows and {symbol: first candle} where that cut one."""
    reaching_back = [w.symbol for w in windows if w.symbol not in cursors or w.start_ms <= cursors[w.symbol]]
    first = (
        lifecycle.first_candles(settings, client, reaching_back, settings.interval) if reaching_back else {}
    )
    out, listed = [], {}
    for w in windows:
        start = max(w.start_ms, first.get(w.symbol, w.start_ms))
        if start > w.start_ms:
            listed[w.symbol] = start
            log.warning(
                f"{w.symbol} starts at its first candle on the exchange, {_ts(start).isoformat()}: "
                "nothing before its listing is fetched or counted as missing",
                extra={"symbol": w.symbol},
            )
        if start <= w.end_ms:
            out.append(SymbolWindow(w.symbol, start, w.end_ms))
    return out, listed


def _deliver_klines(
    settings: Settings,
    run: RunRecord,
    client: ApiClient,
    windows: list[SymbolWindow],
    info: ExchangeInfo,
    load_id: str,
    progress: Progress | None,
    total_pages: int,
    cursors: dict[str, int],
    found_by: str,
) -> dict[str, Any]:
    """Fetch the windows once; append the candles raw does not have, restate the ones the exchange changed
    (recorded in ops.revisions first), drop the unchanged ones."""
    if all(w.start_ms > cursors.get(w.symbol, -1) for w in windows):
        # Nothing in these windows can be stored yet (a first backfill, a lagging pair's catch-up): stream
        # each pair's candles into dlt as its pages complete, so writing overlaps fetching.
        return _stream_new_klines(settings, run, client, windows, info, load_id, progress, total_pages)
    sink = _fetch_klines(settings, run, client, windows, info, load_id, progress, total_pages)
    fetched = pa.concat_tables(sink.tables) if sink.tables else None
    sink.tables.clear()
    parts = _against_raw(settings, sink, fetched, cursors)
    del fetched  # parts holds what is left to load; a backfill's rows must be freed before the raw load
    return _store_klines(settings, run, sink, parts, load_id, found_by)


def _against_raw(
    settings: Settings, sink: ExtractSink, fetched: pa.Table | None, cursors: dict[str, int]
) -> revisions.Split:
    """Split fetched candles into new, changed and unchanged; only rows at or before their symbol's cursor
    can be stored already, so only those are read back from raw."""
    if fetched is None:
        empty = KLINES_SCHEMA.empty_table()
        return revisions.Split(empty, empty, pa.table({}), 0)
    stored_part = _at_or_before_cursor(fetched, cursors)
    if not pc.any(stored_part).as_py():
        return revisions.Split(fetched, KLINES_SCHEMA.empty_table(), pa.table({}), 0)
    with _stage(sink, "compare"):
        known = fetched.filter(stored_part)
        parts = revisions.split(known, revisions.stored_candles(settings, *_ranges_of(known)))
        parts.new = pa.concat_tables([fetched.filter(pc.invert(stored_part)), parts.new])
    return parts


def _store_klines(
    settings: Settings, run: RunRecord, sink: ExtractSink, parts: revisions.Split, load_id: str, found_by: str
) -> dict[str, Any]:
    rows_bronze = rows_raw = 0
    if parts.new.num_rows:
        # Every row here is absent from raw: append in one transaction (COPY speed); the unique index on
        # (symbol, open_time) stands guard.
        sink.tables[:], parts.new = [parts.new], KLINES_SCHEMA.empty_table()  # handed over to _deliver
        rows_bronze, rows_raw = _deliver(settings, "binance", None, sink, KLINES, load_id, "append")
    queued = _queue_dead_letters(settings, "binance", KLINES.name, sink, load_id)
    revised = 0
    if parts.changed.num_rows:
        revision_load = f"{load_id}-rev"
        changed = parts.changed.set_column(
            parts.changed.schema.get_field_index("load_id"),
            KLINES_SCHEMA.field("load_id"),
            pa.array([revision_load] * parts.changed.num_rows, pa.string()),
        )
        revisions.record(settings, changed, parts.previous, revision_load, found_by, run.run_id)
        sink.tables[:] = [changed]
        del changed
        try:
            b, revised = _deliver(settings, "binance", None, sink, KLINES, revision_load, "merge")
        except BaseException:
            with _cleanup("settling the revisions", revision_load):
                revisions.settle(settings, revision_load)
            raise
        revisions.settle(settings, revision_load)
        rows_bronze, rows_raw = rows_bronze + b, rows_raw + revised
        log.warning(
            "revised candles restated", extra={"run_id": run.run_id, "count": revised, "found_by": found_by}
        )
    _record_extract(run, sink, rows_bronze, rows_raw, queued)
    return _klines_summary(sink, rows_raw, revised, parts.unchanged)


def _stream_new_klines(
    settings: Settings,
    run: RunRecord,
    client: ApiClient,
    windows: list[SymbolWindow],
    info: ExchangeInfo,
    load_id: str,
    progress: Progress | None,
    total_pages: int,
) -> dict[str, Any]:
    sink = ExtractSink()
    pages = iter_klines(
        client, windows, settings.interval, info.server_time_ms, load_id, sink,
        settings.sources.binance.concurrency, _page_counter(progress, total_pages),
    )  # fmt: skip
    resource = dlt.resource(pages, name=KLINES.name, primary_key=list(KLINES.key), write_disposition="append")
    try:
        rows_bronze, rows_raw = _deliver(settings, "binance", resource, sink, KLINES, load_id, "append")
    finally:
        pages.close()  # dlt's extract failing outside the generator must still stop the fetch workers
        _record_http(run, client)
    queued = _queue_dead_letters(settings, "binance", KLINES.name, sink, load_id)
    _record_extract(run, sink, rows_bronze, rows_raw, queued)
    return _klines_summary(sink, rows_raw, 0, 0)


def _klines_summary(sink: ExtractSink, rows_raw: int, revised: int, unchanged: int) -> dict[str, Any]:
    return {
        "rows_raw": rows_raw,
        "revised": revised,
        "unchanged": unchanged,
        "open_candles_skipped": sink.open_skipped,
        "duplicates_dropped": sink.duplicates_dropped,
        "outside_window_dropped": sink.outside_window,
        "timings": {
            **{k: round(v, 3) for k, v in sink.timings.items()},
            "fetch_thread_s": round(sink.fetch_s, 3),
            "parse_thread_s": round(sink.parse_s, 3),
        },
    }


@dataclass
class Verification:
    """What `cryptoflow verify` found: per pair and hour, what differs between the exchange and raw."""

    run_id: str
    window: tuple[dt.datetime, dt.datetime]
    changed: list[tuple[str, dt.datetime, dict[str, dict[str, str]]]]
    missing_in_raw: list[tuple[str, dt.datetime]]
    missing_on_exchange: list[tuple[str, dt.datetime]]
    applied: bool
    details: dict[str, Any]


def verify_klines(
    settings: Settings,
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    symbols: list[str] | None = None,
    apply: bool = False,
) -> Verification:
    """Re-fetch [since, until) and compare it with raw, per pair and hour. With apply: changed candles are
    restated (ops.revisions, found_by verify), candles raw lacks are added; gold is restated by the caller
    (transform.restate) over the window."""
    with source_run(settings, "binance", "verify --apply" if apply else "verify") as run:
        client = binance_client(settings)
        info = fetch_exchange_info(client)
        pairs = resolve_pairs(settings, info, symbols)
        lifecycle.warn_skipped(settings, pairs)
        end_ms = last_closed_open_ms(info.server_time_ms, settings.interval)
        if until is not None:
            end_ms = min(end_ms, last_open_before(until))
        start_ms = -(-int(since.timestamp() * 1000) // HOUR_MS) * HOUR_MS
        windows = [SymbolWindow(s, start_ms, end_ms) for s in pairs.trading if start_ms <= end_ms]
        run.window_start, run.window_end = _ts(start_ms), _ts(end_ms)
        sink = _fetch_klines(settings, run, client, windows, info, run.run_id, None, 0)
        fetched = pa.concat_tables(sink.tables) if sink.tables else KLINES_SCHEMA.empty_table()
        sink.tables.clear()
        symbols_ = [w.symbol for w in windows]
        stored = revisions.stored_candles(
            settings, symbols_, [start_ms] * len(symbols_), [end_ms] * len(symbols_)
        )
        parts = revisions.split(fetched, stored)
        fetched_keys = set(
            zip(fetched["symbol"].to_pylist(), revisions._ms(fetched["open_time"]).to_pylist(), strict=True)
        )
        stored_keys = set(zip(stored["symbol"].to_pylist(), stored["k_ms"].to_pylist(), strict=True))
        diffs = revisions.differences(parts.changed, parts.previous)
        result = Verification(
            run.run_id,
            (_ts(start_ms), _ts(end_ms)),
            changed=[
                (sym, _ts(ms), diff)
                for sym, ms, diff in zip(
                    parts.changed["symbol"].to_pylist(),
                    revisions._ms(parts.changed["open_time"]).to_pylist(),
                    diffs,
                    strict=True,
                )
            ],
            missing_in_raw=sorted((s, _ts(ms)) for s, ms in fetched_keys - stored_keys),
            missing_on_exchange=sorted((s, _ts(ms)) for s, ms in stored_keys - fetched_keys),
            applied=apply,
            details={},
        )
        summary = {"changed": len(result.changed), "missing_in_raw": len(result.missing_in_raw),
                   "missing_on_exchange": len(result.missing_on_exchange), "unchanged": parts.unchanged}  # fmt: skip
        if apply:
            # parts holds what is left to load; the rest must be freed before the raw load (as in ingest)
            del fetched, stored, fetched_keys, stored_keys
            summary |= _store_klines(settings, run, sink, parts, run.run_id, "verify")
        run.details.update(summary, skipped_pairs=pairs.skipped)
        result.details = run.details
        return result


def _fetch_klines(
    settings: Settings,
    run: RunRecord,
    client: ApiClient,
    windows: list[SymbolWindow],
    info: ExchangeInfo,
    load_id: str,
    progress: Progress | None,
    total_pages: int,
) -> ExtractSink:
    """Every page of the windows, once: the sink holds one Arrow table per symbol."""
    sink = ExtractSink()
    pages = iter_klines(
        client, windows, settings.interval, info.server_time_ms, load_id, sink,
        settings.sources.binance.concurrency, _page_counter(progress, total_pages),
    )  # fmt: skip
    try:
        with _stage(sink, "fetch"):
            for _table in pages:  # each symbol's table is kept in the sink as it is yielded
                pass
    except Exception as exc:
        raise root_cause(exc) from None
    finally:
        _record_http(run, client)
    return sink


def _page_counter(progress: Progress | None, total_pages: int) -> Callable[[int], None]:
    """The per-page callback of the fetch threads: counts pages for the progress bar."""
    done = [0]
    lock = threading.Lock()

    def on_page(_rows: int) -> None:
        with lock:
            done[0] += 1
            if progress:
                progress(done[0], total_pages)

    return on_page


def _at_or_before_cursor(table: pa.Table, cursors: dict[str, int]) -> pa.Array:
    """True for rows at or before their symbol's cursor: raw may already hold them."""
    if not cursors:
        return pa.array(np.zeros(table.num_rows, dtype=bool))
    symbols = pa.array(list(cursors))
    limits = pa.array(list(cursors.values()), pa.int64())
    index = pc.index_in(table["symbol"], value_set=symbols)
    cursor = pc.fill_null(pc.take(limits, index), -1)
    return pc.less_equal(revisions._ms(table["open_time"]), cursor).combine_chunks()


def _ranges_of(table: pa.Table) -> tuple[list[str], list[int], list[int]]:
    """(symbols, first ms, last ms) of the rows of each symbol in the table."""
    grouped = table.append_column("ms", revisions._ms(table["open_time"])).group_by("symbol")
    agg = grouped.aggregate([("ms", "min"), ("ms", "max")])
    return agg["symbol"].to_pylist(), agg["ms_min"].to_pylist(), agg["ms_max"].to_pylist()


def detect_gaps(settings: Settings, run_id: str, windows: list[SymbolWindow]) -> list[SymbolWindow]:
    """Missing hours inside each symbol's window (not already known gaps): recorded, returned as ranges."""
    # A cheap count per page of 1000 hours first: only the pages that hold fewer candles than hours are
    # searched (an exchange-wide outage makes every pair's window short, but only a few of its pages).
    pages = [
        SymbolWindow(w.symbol, lo, hi)
        for w in windows
        for lo, hi in plan_pages(w.start_ms, w.end_ms, settings.interval)
    ]
    windows = _short_windows(settings, pages)
    if not windows:
        return []
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            """
            WITH w AS (  -- one row per window (i): a symbol can have several (pages, re-fetch ranges)
                SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) WITH ORDINALITY
                    AS t(symbol, start_ms, end_ms, i)
            ), bounds AS (
                SELECT i, symbol, to_timestamp(start_ms / 1000.0) AS lo, to_timestamp(end_ms / 1000.0) AS hi FROM w
            ), present AS (  -- LATERAL ... OFFSET 0: an index range scan per window, never the whole table
                SELECT b.i, k.symbol, k.open_time,
                       lag(k.open_time) OVER (PARTITION BY b.i ORDER BY k.open_time) AS prev
                FROM bounds b CROSS JOIN LATERAL (
                    SELECT r.symbol, r.open_time FROM raw.binance_klines r
                    WHERE r.symbol = b.symbol AND r.open_time BETWEEN b.lo AND b.hi OFFSET 0
                ) k
            ), holes AS (
                SELECT symbol, prev + interval '1 hour' AS first_missing, open_time - interval '1 hour' AS last_missing
                FROM present WHERE prev IS NOT NULL AND open_time - prev > interval '1 hour'
                UNION ALL  -- missing at the start or end of a window, or a window with no rows at all
                SELECT b.symbol, b.lo, coalesce(min(p.open_time) - interval '1 hour', b.hi)
                FROM bounds b LEFT JOIN present p USING (i) GROUP BY b.i, b.symbol, b.lo, b.hi
                HAVING min(p.open_time) IS NULL OR min(p.open_time) > b.lo
                UNION ALL
                SELECT b.symbol, max(p.open_time) + interval '1 hour', b.hi
                FROM bounds b JOIN present p USING (i) GROUP BY b.i, b.symbol, b.hi
                HAVING max(p.open_time) < b.hi
            )
            INSERT INTO ops.gaps (symbol, interval, open_time, status, detected_run_id)
            SELECT h.symbol, %s, g, 'missing', %s
            FROM holes h, generate_series(h.first_missing, h.last_missing, interval '1 hour') AS g
            ON CONFLICT (symbol, interval, open_time) DO UPDATE
                SET status = 'missing', detected_run_id = EXCLUDED.detected_run_id, detected_at = now()
                WHERE ops.gaps.status <> 'known_gap'
            RETURNING symbol, (extract(epoch FROM open_time) * 1000)::bigint
            """,
            (
                [w.symbol for w in windows],
                [w.start_ms for w in windows],
                [w.end_ms for w in windows],
                settings.interval,
                run_id,
            ),
        )
        missing = sorted(cur.fetchall())
    if missing:
        log.warning("missing hours detected", extra={"run_id": run_id, "hours": len(missing)})
    return _ranges(missing)


def _note_gap_checks(settings: Settings, run_id: str, windows: list[SymbolWindow]) -> None:
    """Record the windows this run will search for gaps, before anything reaches raw."""
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.pending_gap_checks (run_id, symbol, start_time, end_time) "
            "SELECT %s, symbol, to_timestamp(lo / 1000.0), to_timestamp(hi / 1000.0) "
            "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS t(symbol, lo, hi) ON CONFLICT DO NOTHING",
            (run_id, [w.symbol for w in windows], [w.start_ms for w in windows], [w.end_ms for w in windows]),
        )


def _inherited_gap_checks(settings: Settings, run_id: str) -> list[SymbolWindow]:
    """The windows a killed run left unsearched. Only those of a run whose raw load committed: there the
    cursor moved past them, so nothing else would ever search them. A run killed before its commit stored
    nothing; its windows are dropped (the cursor did not move: this or a later run fetches them again)."""
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute("SELECT DISTINCT run_id FROM ops.pending_gap_checks WHERE run_id <> %s", (run_id,))
        others = [r for (r,) in cur.fetchall()]
        committed = [r for r in others if count_rows(settings, KLINES.name, r)]
        cur.execute(
            "DELETE FROM ops.pending_gap_checks WHERE run_id = ANY(%s::text[]) AND NOT run_id = ANY(%s::text[])",
            (others, committed),
        )
        cur.execute(
            "SELECT symbol, (extract(epoch FROM start_time) * 1000)::bigint, (extract(epoch FROM end_time) * 1000)::bigint "
            "FROM ops.pending_gap_checks WHERE run_id = ANY(%s::text[]) ORDER BY symbol, start_time",
            (committed,),
        )
        found = [SymbolWindow(*row) for row in cur.fetchall()]
    if found:
        log.warning(
            "searching the windows a killed run left unsearched for missing hours",
            extra={"runs": committed, "windows": len(found)},
        )
    return found


def _done_gap_checks(settings: Settings) -> None:
    """This run's windows, and any it inherited, are searched and settled. (The ingest lock is held: every
    pending check left is this run's or one it took over.)"""
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute("DELETE FROM ops.pending_gap_checks")


def _merged(windows: list[SymbolWindow]) -> list[SymbolWindow]:
    """Per symbol, overlapping or adjacent windows joined: each hour is searched once."""
    out: list[SymbolWindow] = []
    for w in sorted(windows, key=lambda w: (w.symbol, w.start_ms)):
        last = out[-1] if out else None
        if last and last.symbol == w.symbol and w.start_ms <= last.end_ms + HOUR_MS:
            out[-1] = SymbolWindow(w.symbol, last.start_ms, max(last.end_ms, w.end_ms))
        else:
            out.append(w)
    return out


def _short_windows(settings: Settings, windows: list[SymbolWindow]) -> list[SymbolWindow]:
    """The windows holding fewer candles than their hours (an index-only count per window)."""
    if not windows:
        return []
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT w.i FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) WITH ORDINALITY AS w(symbol, lo, hi, i)
            WHERE (SELECT count(*) FROM raw.binance_klines k WHERE k.symbol = w.symbol
                   AND k.open_time BETWEEN to_timestamp(w.lo / 1000.0) AND to_timestamp(w.hi / 1000.0))
                  < (w.hi - w.lo) / %s + 1
            """,
            (
                [w.symbol for w in windows],
                [w.start_ms for w in windows],
                [w.end_ms for w in windows],
                HOUR_MS,
            ),
        )
        short = {i for (i,) in cur.fetchall()}
    return [w for i, w in enumerate(windows, start=1) if i in short]


def _ranges(points: list[tuple[str, int]]) -> list[SymbolWindow]:
    ranges: list[SymbolWindow] = []
    for symbol, ms in points:
        last = ranges[-1] if ranges else None
        if last and last.symbol == symbol and last.end_ms + HOUR_MS == ms:
            ranges[-1] = SymbolWindow(symbol, last.start_ms, ms)
        else:
            ranges.append(SymbolWindow(symbol, ms, ms))
    return ranges


def settle_gaps(settings: Settings, run_id: str, windows: list[SymbolWindow]) -> int:
    """After the one re-fetch: hours now present are 'refilled', this run's others are known exchange gaps.
    Hours an earlier (killed) run left 'missing' are settled too once raw has them."""
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            """
            UPDATE ops.gaps g
            SET refetched_at = CASE WHEN g.detected_run_id = %(run)s THEN now() ELSE g.refetched_at END,
                status = CASE WHEN EXISTS (SELECT 1 FROM raw.binance_klines k
                                           WHERE k.symbol = g.symbol AND k.open_time = g.open_time)
                              THEN 'refilled' ELSE 'known_gap' END
            WHERE g.status = 'missing'
              AND (g.detected_run_id = %(run)s OR EXISTS (SELECT 1 FROM raw.binance_klines k
                                                        WHERE k.symbol = g.symbol AND k.open_time = g.open_time))
            RETURNING status
            """,
            {"run": run_id},
        )
        return sum(1 for (status,) in cur.fetchall() if status == "known_gap")


def classify_gaps(settings: Settings) -> dict[str, int]:
    """Give every settled missing hour its class: ingest_failure when the re-fetch found it; else
    exchange_outage when at least two pairs miss that hour and no tracked pair has a candle in it;
    else pair_halt. Re-evaluated each run: a pair loaded later can turn an outage into a halt."""
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute("UPDATE ops.gaps SET gap_class = 'ingest_failure' WHERE status = 'refilled'")
        cur.execute("SELECT symbol FROM ops.pairs")
        tracked = [symbol for (symbol,) in cur.fetchall()]
        # `symbol = ANY(<constant array>) AND open_time = h` is one index probe per pair (unique index)
        cur.execute(
            """
            WITH hours AS (
                SELECT open_time, count(*) AS missing_pairs FROM ops.gaps
                WHERE status = 'known_gap' GROUP BY open_time
            ), traded AS (
                SELECT h.open_time, h.missing_pairs,
                       EXISTS (SELECT 1 FROM raw.binance_klines k
                               WHERE k.symbol = ANY(%(tracked)s::text[]) AND k.open_time = h.open_time)
                           AS someone_traded
                FROM hours h
            )
            UPDATE ops.gaps g
            SET gap_class = CASE WHEN NOT t.someone_traded AND t.missing_pairs >= 2
                                 THEN 'exchange_outage' ELSE 'pair_halt' END
            FROM traded t
            WHERE t.open_time = g.open_time AND g.status = 'known_gap'
            """,
            {"tracked": tracked},
        )
        cur.execute("SELECT gap_class, count(*) FROM ops.gaps WHERE gap_class IS NOT NULL GROUP BY 1")
        return dict(cur.fetchall())


# --- CoinGecko and Fear & Greed ---------------------------------------------------------------------------


def ingest_markets(settings: Settings, *, command: str = "ingest") -> RunSummary:
    """One market snapshot of the top coins, stamped with the current UTC hour (re-runs merge)."""
    with source_run(settings, "coingecko", command) as run:
        client = coingecko_client(settings)
        snapshot = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        run.window_start = run.window_end = snapshot
        sink = ExtractSink()
        src = settings.sources.coingecko
        source = coingecko_source(client, src.snapshot_coins, src.per_page, snapshot, run.run_id, sink)
        try:
            rows = _deliver(settings, "coingecko", source, sink, MARKETS, run.run_id)
        finally:
            _record_http(run, client)
        queued = _queue_dead_letters(settings, "coingecko", MARKETS.name, sink, run.run_id)
        _record_extract(run, sink, *rows, queued)
        run.details["schema_changes"] = record_fields(
            settings, "coingecko", MARKETS.name, sink.fields, run.run_id
        )
        run.details["snapshot_ts"] = snapshot.isoformat()
        return RunSummary(
            run.run_id, "coingecko", run.rows_raw, run.rows_bronze, run.dead_letters, run.details
        )


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
            rows = _deliver(settings, "fear_greed", source, sink, FEAR_GREED, run.run_id)
        finally:
            _record_http(run, client)
        queued = _queue_dead_letters(settings, "fear_greed", FEAR_GREED.name, sink, run.run_id)
        _record_extract(run, sink, *rows, queued)
        run.details["schema_changes"] = record_fields(
            settings, "fear_greed", FEAR_GREED.name, sink.fields, run.run_id
        )
        run.details["limit"] = limit
        if sink.time_range:
            run.window_start, run.window_end = sink.time_range
        return RunSummary(
            run.run_id, "fear_greed", run.rows_raw, run.rows_bronze, run.dead_letters, run.details
        )


def describe_data(settings: Settings, elapsed_s: float) -> str:
    """The demo's closing summary: rows per table, time taken, where the data is."""
    lines = [f"done in {elapsed_s:.1f} s (sandbox data: synthetic, not real prices)", "", "raw tables:"]
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        for table in (KLINES.name, MARKETS.name, FEAR_GREED.name, "dead_letter"):
            lines.append(f"  raw.{table:<20} {count_rows(settings, table):>12,} rows")
        cur.execute("SELECT count(*) FILTER (WHERE status = 'known_gap'), count(*) FROM ops.gaps")
        known, total = cur.fetchone()
        lines.append(
            f"  ops.gaps                 {total:>12,} missing hours seen ({known} the exchange does not have)"
        )
    lake = open_lake(settings)
    lines += [
        "",
        f"bronze Parquet lake: {lake.url}/crypto/<table>/year=YYYY/month=MM/day=DD/",
        f"Postgres: {db.redact(db.writer_url(settings))}  (cryptoflow db url prints it with the password)",
    ]
    return "\n".join(lines)


def describe_exchange(settings: Settings, runs: list[RunSummary]) -> str:
    """What the runs met on the exchange: listings inside the window, delisted pairs and their successors,
    classified missing hours, revisions applied."""
    listed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    revised = 0
    for run in runs:
        listed |= run.details.get("listed_inside_window", {})
        skipped |= run.details.get("skipped_pairs", {})
        revised += run.details.get("revised", 0)
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(DISTINCT open_time) FILTER (WHERE gap_class = 'exchange_outage'), "
            "count(*) FILTER (WHERE gap_class = 'pair_halt') FROM ops.gaps"
        )
        outage_hours, halt_hours = cur.fetchone()
    successors = settings.universe.successors
    lines = ["", "what the exchange did (ops.pairs, ops.gaps, ops.revisions):"]
    lines.append(
        f"  {len(listed)} listing(s) inside the horizon: "
        + (", ".join(f"{s} from {t[:10]}" for s, t in sorted(listed.items())) or "none")
    )
    lines.append(
        f"  {len(skipped)} pair(s) not trading, skipped with their history kept: "
        + (
            ", ".join(
                f"{s} ({state}{', successor ' + successors[s] if s in successors else ''})"
                for s, state in sorted(skipped.items())
            )
            or "none"
        )
    )
    lines.append(
        f"  {outage_hours} exchange-wide outage hour(s), {halt_hours} pair-halt hour(s): known, not failures"
    )
    lines.append(f"  {revised} revised candle(s) restated")
    return "\n".join([*lines, ""])
