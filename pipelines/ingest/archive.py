"""Backfills from Binance's public kline archive: the fetch plan for a run, and the manifest of loaded files.

`--source auto` (the default of `cryptoflow backfill`) reads the archive and asks the REST API only for what
the archive lacks; `archive` never calls REST for candles (what the archive lacks stays missing, recorded
by the gap check for a later run); `rest` is the API alone. The manifest (ops.archive_files) keeps every
verified file's URL, size, checksum, rows and span: a re-run skips files loaded with the same checksum.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from pipelines.http import ApiClient, ApiError, client_for
from pipelines.ingest.klines import CandleFetch, Progress
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sources.binance import SymbolWindow
from pipelines.sources.binance.helpers import ExchangeInfo
from pipelines.sources.binance_archive import ArchiveLog, iter_archive_klines
from pipelines.sources.common import ExtractSink

SOURCES = ("auto", "archive", "rest")


def archive_client(settings: Settings) -> ApiClient:
    return client_for("binance_archive", settings.sources.binance_archive)


def archive_fetch(
    settings: Settings,
    rest: ApiClient | None,
    windows: list[SymbolWindow],
    info: ExchangeInfo,
    load_id: str,
    progress: Progress | None = None,
    archive_only: list[SymbolWindow] | None = None,
) -> tuple[CandleFetch, ArchiveLog]:
    """The windows from the archive (REST for the rest when `rest` is given), and `archive_only` windows
    from the archive alone (pairs that no longer trade: REST answers -1121 for them, the archive keeps
    their files); the log says what came from where. `progress(files, candles)` runs as files complete."""
    archive_only = archive_only or []
    client = archive_client(settings)
    log_ = ArchiveLog()
    known = known_files(settings)
    counted = [0, 0]

    def on_file(rows: int) -> None:  # called as each file's result is taken, in the consuming thread
        counted[0] += 1
        counted[1] += rows
        if progress:
            progress(counted[0], counted[1])

    def pages(sink: ExtractSink) -> Generator[pa.Table]:
        for some, rest_ in ((windows, rest), (archive_only, None)):
            if some:
                yield from iter_archive_klines(
                    client,
                    rest_,
                    some,
                    settings.interval,
                    info.server_time_ms,
                    load_id,
                    sink,
                    log_,
                    known,
                    settings.sources.binance_archive.concurrency,
                    on_file,
                )

    clients = (client,) if rest is None else (client, rest)
    return CandleFetch([*windows, *archive_only], pages, clients), log_


def unreachable(settings: Settings) -> str | None:
    """Why the archive cannot be reached (no answer at all after the client's retries), or None when it
    answers (any HTTP status: a 404 for a path is an answer)."""
    client = archive_client(settings)
    try:
        client.get_raw("/data/spot/")
    except ApiError as exc:
        if exc.status is None:
            return str(exc)
    return None


def known_files(settings: Settings) -> dict[str, str]:
    """Archive path -> checksum of every archive file loaded so far (the newest load of a path wins). By
    path, not URL: the same file behind another address (a mirror, a moved base URL) is the same file."""
    with db.cursor(settings) as cur:
        cur.execute("SELECT url, sha256 FROM ops.archive_files ORDER BY loaded_at")
        return {urlsplit(url).path: sha256 for url, sha256 in cur.fetchall()}


def record_files(settings: Settings, log_: ArchiveLog, load_id: str) -> None:
    """After the raw load committed: the verified files go to the manifest (a re-published one replaces its
    row). A crash before this only costs the next run a download: its rows compare unchanged."""
    rows = [
        (f.url, f.file.symbol, f.size, f.sha256, f.rows, f.first_ms, f.last_ms, load_id)
        for f in log_.loaded
        if not f.partial  # read again by a wider backfill, which needs its other hours
    ]
    if not rows:
        return
    with db.cursor(settings) as cur:
        cur.executemany(
            "INSERT INTO ops.archive_files (url, symbol, size_bytes, sha256, rows, first_open, last_open, load_id) "
            "VALUES (%s, %s, %s, %s, %s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), %s) "
            "ON CONFLICT (url) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, sha256 = EXCLUDED.sha256, "
            "rows = EXCLUDED.rows, first_open = EXCLUDED.first_open, last_open = EXCLUDED.last_open, "
            "load_id = EXCLUDED.load_id, loaded_at = now()",
            rows,
        )


def summary(log_: ArchiveLog) -> dict[str, Any]:
    """What the run's details say about the archive."""
    return {
        "archive_files": len(log_.loaded),
        "archive_files_skipped": log_.skipped,
        "archive_files_missing": len(log_.missing),
        "archive_files_failed": dict(log_.failed),
        "rest_windows": len(log_.rest_windows),
    }
