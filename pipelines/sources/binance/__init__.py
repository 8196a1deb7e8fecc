"""Binance spot klines as a dlt source: one cursor per symbol, grid-aligned pages fetched in parallel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import dlt
import pyarrow as pa

from pipelines.http import ApiClient
from pipelines.sources.binance.helpers import dedupe_candles, fetch_klines_page, parse_klines, plan_pages
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
) -> dlt.sources.DltResource:
    return klines(client, windows, interval, server_time_ms, load_id, sink, concurrency, on_page)


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

    def fetch(symbol: str, start_ms: int, end_ms: int):
        rows = fetch_klines_page(client, symbol, interval, start_ms, end_ms)
        return symbol, len(rows), parse_klines(rows, symbol, interval, server_time_ms, load_id)

    pending = {w.symbol: len(plan_pages(w.start_ms, w.end_ms, interval)) for w in windows}
    pages: dict[str, list[pa.Table]] = {w.symbol: [] for w in windows}
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [
            pool.submit(fetch, w.symbol, start, end)
            for w in windows
            for start, end in plan_pages(w.start_ms, w.end_ms, interval)
        ]
        try:
            for future in as_completed(futures):
                symbol, fetched, parsed = future.result()
                sink.pages += 1
                sink.fetched_rows += fetched
                sink.open_skipped += parsed.open_skipped
                sink.rejected.extend(parsed.rejected)
                pages[symbol].append(parsed.table)
                pending[symbol] -= 1
                if on_page:
                    on_page(fetched)
                if pending[symbol] == 0:
                    table, dropped = dedupe_candles(pa.concat_tables(pages.pop(symbol)))
                    sink.duplicates_dropped += dropped
                    if table.num_rows:
                        yield sink.keep(table)
        finally:
            for future in futures:
                future.cancel()
