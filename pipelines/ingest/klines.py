"""Candles from the exchange into bronze and raw: fetch each window once, then append what raw lacks and
restate what the exchange revised (ingest/revisions.py keeps the trace); a first backfill streams instead."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import dlt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.catalog import KLINES
from pipelines.errors import root_cause
from pipelines.http import ApiClient
from pipelines.ingest import revisions
from pipelines.ingest.engine import cleanup, deliver, queue_dead_letters, record_extract, record_http, stage
from pipelines.ops.observability import RunRecord
from pipelines.settings import Settings
from pipelines.sources.binance import SymbolWindow, iter_klines
from pipelines.sources.binance.helpers import ExchangeInfo
from pipelines.sources.binance.settings import KLINES_SCHEMA
from pipelines.sources.common import ExtractSink

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CandleFetch:
    """Where a run's candles come from: `pages(sink)` yields one Arrow table per symbol (kept in the sink),
    `clients` are the HTTP clients it uses (their counters go to the run)."""

    windows: list[SymbolWindow]
    pages: Callable[[ExtractSink], Generator[pa.Table]]
    clients: tuple[ApiClient, ...]


def rest_fetch(
    settings: Settings,
    client: ApiClient,
    windows: list[SymbolWindow],
    info: ExchangeInfo,
    load_id: str,
    progress: Progress | None = None,
    total_pages: int = 0,
) -> CandleFetch:
    """The windows from the REST API, page by page."""

    def pages(sink: ExtractSink) -> Generator[pa.Table]:
        return iter_klines(
            client,
            windows,
            settings.interval,
            info.server_time_ms,
            load_id,
            sink,
            settings.sources.binance.concurrency,
            _page_counter(progress, total_pages),
        )

    return CandleFetch(windows, pages, (client,))


def deliver_klines(
    settings: Settings,
    run: RunRecord,
    fetch: CandleFetch,
    load_id: str,
    cursors: dict[str, int],
    found_by: str,
) -> dict[str, Any]:
    """Fetch the windows once; append the candles raw does not have, restate the ones the exchange changed
    (recorded in ops.revisions first), drop the unchanged ones."""
    if all(w.start_ms > cursors.get(w.symbol, -1) for w in fetch.windows):
        # Nothing in these windows can be stored yet (a first backfill, a lagging pair's catch-up): stream
        # each pair's candles into dlt as its pages complete, so writing overlaps fetching.
        return _stream_new_klines(settings, run, fetch, load_id)
    sink = fetch_klines(run, fetch)
    fetched = pa.concat_tables(sink.tables) if sink.tables else None
    sink.tables.clear()
    parts = _against_raw(settings, sink, fetched, cursors)
    del fetched  # parts holds what is left to load; a backfill's rows must be freed before the raw load
    return store_klines(settings, run, sink, parts, load_id, found_by)


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
    with stage(sink, "compare"):
        known = fetched.filter(stored_part)
        parts = revisions.split(known, revisions.stored_candles(settings, *_ranges_of(known)))
        parts.new = pa.concat_tables([fetched.filter(pc.invert(stored_part)), parts.new])
    return parts


def store_klines(
    settings: Settings, run: RunRecord, sink: ExtractSink, parts: revisions.Split, load_id: str, found_by: str
) -> dict[str, Any]:
    rows_bronze = rows_raw = 0
    if parts.new.num_rows:
        # Every row here is absent from raw: append in one transaction (COPY speed); the unique index on
        # (symbol, open_time) stands guard.
        sink.tables[:], parts.new = [parts.new], KLINES_SCHEMA.empty_table()  # handed over to deliver
        rows_bronze, rows_raw = deliver(settings, "binance", None, sink, KLINES, load_id, "append")
    queued = queue_dead_letters(settings, "binance", KLINES.name, sink, load_id)
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
            b, revised = deliver(settings, "binance", None, sink, KLINES, revision_load, "merge")
        except BaseException:
            with cleanup("settling the revisions", revision_load):
                revisions.settle(settings, revision_load)
            raise
        revisions.settle(settings, revision_load)
        rows_bronze, rows_raw = rows_bronze + b, rows_raw + revised
        log.warning(
            "revised candles restated", extra={"run_id": run.run_id, "count": revised, "found_by": found_by}
        )
    record_extract(run, sink, rows_bronze, rows_raw, queued)
    return _klines_summary(sink, rows_raw, revised, parts.unchanged)


def _stream_new_klines(
    settings: Settings, run: RunRecord, fetch: CandleFetch, load_id: str
) -> dict[str, Any]:
    sink = ExtractSink()
    pages = fetch.pages(sink)
    resource = dlt.resource(pages, name=KLINES.name, primary_key=list(KLINES.key), write_disposition="append")
    try:
        rows_bronze, rows_raw = deliver(settings, "binance", resource, sink, KLINES, load_id, "append")
    finally:
        pages.close()  # dlt's extract failing outside the generator must still stop the fetch workers
        record_http(run, *fetch.clients)
    queued = queue_dead_letters(settings, "binance", KLINES.name, sink, load_id)
    record_extract(run, sink, rows_bronze, rows_raw, queued)
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


def fetch_klines(run: RunRecord, fetch: CandleFetch) -> ExtractSink:
    """Every page of the windows, once: the sink holds one Arrow table per symbol."""
    sink = ExtractSink()
    pages = fetch.pages(sink)
    try:
        with stage(sink, "fetch"):
            for _table in pages:  # each symbol's table is kept in the sink as it is yielded
                pass
    except Exception as exc:
        raise root_cause(exc) from None
    finally:
        record_http(run, *fetch.clients)
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
