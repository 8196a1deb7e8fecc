"""Binance spot klines as a dlt source: one cursor per symbol, grid-aligned pages fetched in parallel."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import dlt
import pyarrow as pa

from pipelines.http import ApiClient
from pipelines.sources.binance.helpers import (
    ParsedPage,
    dedupe_candles,
    fetch_klines_page,
    plan_pages,
)
from pipelines.sources.binance.settings import PRIMARY_KEY, TABLE
from pipelines.sources.common import ExtractSink


@dataclass(frozen=True)
class SymbolWindow:
    """Candles to fetch for one symbol: open times from start_ms to end_ms inclusive."""

    symbol: str
    start_ms: int
    end_ms: int


@dlt.source(name="binance")
def binance_source(
    client: ApiClient,
    windows: list[SymbolWindow],
    interval: str,
    server_time_ms: int,
    load_id: str,
    sink: ExtractSink,
    concurrency: int = 4,
    on_page: Callable[[int], None] | None = None,
    write_disposition: str = "merge",
) -> dlt.sources.DltResource:
    """`write_disposition="append"` is only for windows that lie wholly after every symbol's cursor."""
    resource = klines(client, windows, interval, server_time_ms, load_id, sink, concurrency, on_page)
    resource.apply_hints(write_disposition=write_disposition)
    return resource


@dlt.resource(name=TABLE, primary_key=list(PRIMARY_KEY), write_disposition="merge")
def klines(
    client: ApiClient,
    windows: list[SymbolWindow],
    interval: str,
    server_time_ms: int,
    load_id: str,
    sink: ExtractSink,
    concurrency: int = 4,
    on_page: Callable[[int], None] | None = None,
) -> Iterator[pa.Table]:
    """Closed, valid candles, one Arrow table per symbol; rejects and counters go to `sink`."""

    def fetch(symbol: str, start_ms: int, end_ms: int) -> tuple[str, int, ParsedPage, float]:
        t0 = time.perf_counter()
        fetched, parsed = fetch_klines_page(
            client, symbol, interval, start_ms, end_ms, server_time_ms, load_id
        )
        return symbol, fetched, parsed, time.perf_counter() - t0

    jobs = [
        (w.symbol, start, end) for w in windows for start, end in plan_pages(w.start_ms, w.end_ms, interval)
    ]
    pending = Counter(symbol for symbol, _, _ in jobs)  # a symbol can have several windows (gap re-fetch)
    pages: dict[str, list[pa.Table]] = {symbol: [] for symbol in pending}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        # A set, not a list: a finished page's future is dropped once consumed, so its table is not kept
        # alive twice (once in the future, once in the symbol's concatenated table).
        running = {pool.submit(fetch, *job) for job in jobs}
        try:
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    symbol, fetched, parsed, fetch_s = future.result()
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
                        if table.num_rows:
                            yield sink.keep(table)
                del done
        finally:
            for future in running:
                future.cancel()


def _first_open_time(table: pa.Table) -> int:
    return table["open_time"][0].value if table.num_rows else 0
