"""Binance klines from the public archive first, the REST API for the rest: one Arrow table per symbol.

Per pair and window: whole months from monthly files, then days from daily files (a month the archive
lacks falls back to its days), then the REST API for what the archive has not published yet or lacks (a
404), and - in `auto` mode - for the hours of a file that failed verification. Rows outside the window
(a file's days around it) are not kept. The engine compares the tables with raw as it does REST's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pyarrow as pa

from pipelines.http import ApiClient
from pipelines.sources.binance import SymbolWindow, fetch_all, inside_windows, iter_klines
from pipelines.sources.binance.helpers import dedupe_candles
from pipelines.sources.binance.settings import INTERVAL_MS
from pipelines.sources.binance_archive.helpers import (
    DAY_MS,
    ArchiveFile,
    ArchiveFileFailed,
    FetchedFile,
    covers,
    day_file,
    days_of,
    fetch_file,
    month_files,
)
from pipelines.sources.common import ExtractSink

log = logging.getLogger(__name__)


@dataclass
class ArchiveLog:
    """What the archive gave: verified files (for the manifest), skipped and failed ones, REST's share."""

    loaded: list[FetchedFile] = field(default_factory=list)
    skipped: int = 0  # loaded before with the same checksum: not downloaded again
    missing: list[str] = field(default_factory=list)  # file names the archive answered 404 for
    failed: dict[str, str] = field(default_factory=dict)  # file name -> why none of its rows were used
    rest_windows: list[SymbolWindow] = field(default_factory=list)


def iter_archive_klines(
    archive: ApiClient,
    rest: ApiClient | None,
    windows: list[SymbolWindow],
    interval: str,
    server_time_ms: int,
    load_id: str,
    sink: ExtractSink,
    log_: ArchiveLog,
    known: dict[str, str],
    concurrency: int = 8,
    on_file: Callable[[int], None] | None = None,
) -> Generator[pa.Table]:
    """Closed, valid candles of the windows, one table per symbol. `known` maps file paths to the checksum
    already loaded (those files are not downloaded again); `rest` None means archive only (what the
    archive lacks stays missing, for the gap check to record)."""
    closed_until = server_time_ms - server_time_ms % DAY_MS  # the archive only has whole past days
    for symbol in sorted({w.symbol for w in windows}):
        mine = [w for w in windows if w.symbol == symbol]
        tables: list[pa.Table] = []
        rest_windows: list[SymbolWindow] = []
        for window in mine:
            months, days = month_files(window, interval, closed_until)
            fetch = functools.partial(
                _fetch,
                archive,
                server_time_ms=server_time_ms,
                load_id=load_id,
                log_=log_,
                known=known,
                concurrency=concurrency,
                on_file=on_file,
            )
            for file in _used(fetch(months), window, sink, tables):  # a month it lacks: day by day
                days.extend(d for d in days_of(file) if d + DAY_MS > window.start_ms and d <= window.end_ms)
            complete = [d for d in sorted(days) if d + DAY_MS <= closed_until]
            later = [d for d in days if d + DAY_MS > closed_until]
            files = [day_file(symbol, interval, d) for d in complete]
            later += [file.first_ms for file in _used(fetch(files), window, sink, tables)]  # REST's
            rest_windows += _clipped(symbol, sorted(later), window, INTERVAL_MS[interval])
        if rest_windows:
            log_.rest_windows += rest_windows
            if rest is not None:
                by_rest = ExtractSink()  # its own: iter_klines keeps what it yields, `sink` keeps the whole
                tables += list(iter_klines(rest, rest_windows, interval, server_time_ms, load_id, by_rest))
                _add_counts(sink, by_rest)
        if not tables:
            continue
        table, dropped = dedupe_candles(pa.concat_tables(tables).sort_by("open_time"))
        sink.duplicates_dropped += dropped
        table, _outside = inside_windows(table, mine)  # a file's hours around the window are not asked for
        if table.num_rows:
            yield sink.keep(table)


def _used(
    results: Iterator[tuple[ArchiveFile, FetchedFile | None]],
    window: SymbolWindow,
    sink: ExtractSink,
    tables: list[pa.Table],
) -> Iterator[ArchiveFile]:
    """Keep each verified file's table; yield the files that gave nothing (not published, or failed)."""
    for file, got in results:
        if got is None:
            yield file
        elif not got.skipped:
            got.partial = not covers(window, file)
            tables.append(_kept(sink, got))


def _add_counts(sink: ExtractSink, other: ExtractSink) -> None:
    for name in (
        "pages",
        "fetched_rows",
        "open_skipped",
        "duplicates_dropped",
        "outside_window",
        "fetch_s",
        "parse_s",
    ):
        setattr(sink, name, getattr(sink, name) + getattr(other, name))
    sink.rejected.extend(other.rejected)


def _kept(sink: ExtractSink, got: FetchedFile) -> pa.Table:
    """Count a verified file's rows and rejects into the sink; return its table (the file lets go of it)."""
    page, got.page = got.page, None
    assert page is not None, f"{got.file} was counted twice"
    sink.pages += 1
    sink.fetched_rows += got.rows
    sink.open_skipped += page.open_skipped
    sink.parse_s += page.parse_s
    sink.rejected.extend(page.rejected)
    return page.table


def _fetch(
    archive: ApiClient,
    files: list[ArchiveFile],
    server_time_ms: int,
    load_id: str,
    log_: ArchiveLog,
    known: dict[str, str],
    concurrency: int,
    on_file: Callable[[int], None] | None,
) -> Iterator[tuple[ArchiveFile, FetchedFile | None]]:
    """Each file fetched and verified on `concurrency` threads: (file, fetched) in completion order; a
    skipped file comes with page None, a 404 or a failed file with None (a failure is logged once)."""

    def one(file: ArchiveFile) -> tuple[ArchiveFile, FetchedFile | None, str | None]:
        url = f"{archive.base_url}{file.path}"
        try:
            got = fetch_file(archive, file, server_time_ms, load_id, known.get(urlsplit(url).path))
        except ArchiveFileFailed as exc:
            return file, None, str(exc)
        return file, got, None

    for file, got, failure in fetch_all(one, [(f,) for f in files], concurrency):  # the caller's thread
        if failure is not None:
            log_.failed[file.name] = failure
            log.error("archive file failed verification", extra={"file": file.name, "error": failure})
        elif got is None:
            log_.missing.append(file.name)
        elif got.skipped:
            log_.skipped += 1
        else:
            log_.loaded.append(got)
        if on_file:
            on_file(0 if got is None or got.skipped else got.rows)
        yield file, got


def _clipped(symbol: str, days: list[int], window: SymbolWindow, step: int) -> list[SymbolWindow]:
    """Days (first open times, sorted) as REST windows inside `window`, consecutive days joined."""
    out: list[SymbolWindow] = []
    for day in days:
        lo, hi = max(day, window.start_ms), min(day + DAY_MS - step, window.end_ms)
        if lo > hi:
            continue
        if out and lo == out[-1].end_ms + step:
            out[-1] = SymbolWindow(symbol, out[-1].start_ms, hi)
        else:
            out.append(SymbolWindow(symbol, lo, hi))
    return out
