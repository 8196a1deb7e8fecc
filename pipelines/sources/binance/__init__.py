"""Binance spot klines: one window per symbol, grid-aligned pages fetched in parallel, Arrow tables out.

The engine (pipelines/ingest/klines.py) compares them with raw before it hands them to dlt (revisions).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.http import ApiClient
from pipelines.sources.binance.helpers import (
    ParsedPage,
    dedupe_candles,
    fetch_klines_page,
    plan_pages,
)
from pipelines.sources.common import ExtractSink


@dataclass(frozen=True)
class SymbolWindow:
    """Candles to fetch for one symbol: open times from start_ms to end_ms inclusive."""

    symbol: str
    start_ms: int
    end_ms: int


def iter_klines(
    client: ApiClient,
    windows: list[SymbolWindow],
    interval: str,
    server_time_ms: int,
    load_id: str,
    sink: ExtractSink,
    concurrency: int = 4,
    on_page: Callable[[int], None] | None = None,
) -> Generator[pa.Table]:
    """Closed, valid candles inside the requested windows, one Arrow table per symbol; rejects and counters
    go to `sink`. A candle the exchange returns outside every window of its symbol is dropped and counted."""

    def fetch(symbol: str, start_ms: int, end_ms: int) -> tuple[str, int, ParsedPage, float]:
        t0 = time.perf_counter()
        fetched, parsed = fetch_klines_page(
            client, symbol, interval, start_ms, end_ms, server_time_ms, load_id
        )
        return symbol, fetched, parsed, time.perf_counter() - t0

    jobs = [
        (w.symbol, start, end) for w in windows for start, end in plan_pages(w.start_ms, w.end_ms, interval)
    ]
    by_symbol: dict[str, list[SymbolWindow]] = {}
    for w in windows:
        by_symbol.setdefault(w.symbol, []).append(w)
    pending = Counter(symbol for symbol, _, _ in jobs)  # a symbol can have several windows (gap re-fetch)
    pages: dict[str, list[pa.Table]] = {symbol: [] for symbol in pending}
    for result in fetch_all(fetch, jobs, concurrency):
        symbol, fetched, parsed, fetch_s = result
        sink.pages += 1
        sink.fetch_s += fetch_s
        sink.parse_s += parsed.parse_s
        sink.fetched_rows += fetched
        sink.open_skipped += parsed.open_skipped
        sink.rejected.extend(parsed.rejected)
        pages[symbol].append(parsed.table)
        pending[symbol] -= 1
        if on_page:
            on_page(fetched)
        if pending[symbol] == 0:
            chunks = sorted(pages.pop(symbol), key=_first_open_time)  # usually no re-sort needed
            table, dropped = dedupe_candles(pa.concat_tables(chunks))
            sink.duplicates_dropped += dropped
            table, outside = inside_windows(table, by_symbol[symbol])
            sink.outside_window += outside
            if table.num_rows:
                yield sink.keep(table)
        del result, parsed


def fetch_all(fetch: Callable[..., Any], jobs: list[tuple[Any, ...]], concurrency: int) -> Iterator[Any]:
    """fetch(*job) for every job on `concurrency` daemon threads; results in completion order.

    Built for interrupts: the caller only ever blocks in a queue get with a timeout, which a Ctrl-C or a
    task timeout interrupts without leaving a lock held (an interrupted concurrent.futures.wait could, and
    then its workers hung). On any exit the workers stop taking jobs; a request still in flight finishes on
    a daemon thread, which never keeps the process alive.
    """
    todo: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    done: queue.SimpleQueue[Any] = queue.SimpleQueue()
    stop = threading.Event()
    for job in jobs:
        todo.put(job)

    def work() -> None:
        while not stop.is_set():
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((fetch(*job), None))
            except BaseException as exc:  # handed to the caller, which raises it
                done.put((None, exc))

    for n in range(min(concurrency, len(jobs))):
        threading.Thread(target=work, name=f"klines-fetch-{n}", daemon=True).start()
    try:
        for _ in range(len(jobs)):
            while True:
                try:
                    result, error = done.get(timeout=0.25)
                    break
                except queue.Empty:
                    continue
            if error is not None:
                raise error
            yield result
            del result
    finally:
        stop.set()


def inside_windows(table: pa.Table, windows: list[SymbolWindow]) -> tuple[pa.Table, int]:
    """Keep the rows whose open time lies in one of the windows; returns (rows, how many were dropped)."""
    if not table.num_rows:
        return table, 0
    ms = pc.cast(pc.cast(table["open_time"], pa.timestamp("ms")), pa.int64())
    lo, hi = pc.min(ms).as_py(), pc.max(ms).as_py()
    if any(w.start_ms <= lo and hi <= w.end_ms for w in windows):
        return table, 0  # the usual case: no row to drop
    keep = None
    for w in windows:
        inside = pc.and_(pc.greater_equal(ms, w.start_ms), pc.less_equal(ms, w.end_ms))
        keep = inside if keep is None else pc.or_(keep, inside)
    kept = table.filter(keep)
    return kept, table.num_rows - kept.num_rows


def _first_open_time(table: pa.Table) -> int:
    return table["open_time"][0].value if table.num_rows else 0
