"""The kline archive: which files cover a window, and one file fetched, verified and parsed.

A window is served from whole months' files, then whole days' files, and the rest (the days the archive
has not published yet, a missing file's hours) is left to the REST API. Every zip is checked against its
SHA-256 sidecar before a row of it is used.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.http import ApiClient, ApiError
from pipelines.sources.binance import SymbolWindow
from pipelines.sources.binance.helpers import ParsedPage, parse_klines_csv
from pipelines.sources.binance.settings import INTERVAL_MS
from pipelines.sources.binance_archive.settings import CHECKSUM_SUFFIX, DAILY, MAX_ATTEMPTS, MONTHLY, PATH

DAY_MS = 86_400_000
MONTHLY_FROM_DAYS = 7  # a month the window holds at least this many days of is read from its monthly file
_CHECKSUM = re.compile(r"^([0-9a-f]{64})\s")


class ArchiveFileFailed(Exception):
    """A file that cannot be trusted (checksum mismatch twice, unreadable zip): none of its rows are used."""


@dataclass(frozen=True)
class ArchiveFile:
    """One zip of the archive: a pair's candles of one month or one day."""

    symbol: str
    interval: str
    kind: str  # monthly or daily
    period: str  # YYYY-MM or YYYY-MM-DD
    first_ms: int  # open time of the period's first candle
    last_ms: int  # ... and of its last

    @property
    def path(self) -> str:
        return PATH.format(kind=self.kind, pair=self.symbol, interval=self.interval, period=self.period)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[1]


@dataclass
class FetchedFile:
    """A verified file: its rows, and what the manifest keeps of it."""

    file: ArchiveFile
    url: str
    size: int
    sha256: str
    rows: int
    page: ParsedPage | None = field(repr=False)  # its rows; let go once they are handed on
    skipped: bool = False  # its checksum was loaded before: not downloaded
    partial: bool = False  # only some of its hours were in the window: not kept in the manifest
    first_ms: int | None = None  # open times of its first and last valid candle
    last_ms: int | None = None


def _month_start(year: int, month: int) -> int:
    return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp() * 1000)


def month_files(
    window: SymbolWindow, interval: str, closed_until_ms: int
) -> tuple[list[ArchiveFile], list[int]]:
    """Monthly files for the calendar months that ended before closed_until_ms and of which the window holds
    at least MONTHLY_FROM_DAYS days (one file instead of many; its other hours are not kept), and the first
    open time (ms) of every other day of the window, for daily files."""
    step = INTERVAL_MS[interval]
    files: list[ArchiveFile] = []
    days: list[int] = []
    day = window.start_ms - window.start_ms % DAY_MS
    while day <= window.end_ms:
        d = dt.datetime.fromtimestamp(day / 1000, dt.UTC)
        month_start = _month_start(d.year, d.month)
        month_end = month_start + calendar.monthrange(d.year, d.month)[1] * DAY_MS  # exclusive
        covered = min(month_end, window.end_ms + step) - max(month_start, window.start_ms)
        if month_end <= closed_until_ms and covered >= MONTHLY_FROM_DAYS * DAY_MS:
            files.append(
                ArchiveFile(window.symbol, interval, MONTHLY, f"{d:%Y-%m}", month_start, month_end - step)
            )
            day = month_end
            continue
        days.append(day)
        day += DAY_MS
    return files, days


def covers(window: SymbolWindow, file: ArchiveFile) -> bool:
    """Whether every hour of the file lies inside the window (only such files go to the manifest: a file
    read for part of its hours is read again by a later, wider backfill)."""
    return window.start_ms <= file.first_ms and file.last_ms <= window.end_ms


def day_file(symbol: str, interval: str, day_ms: int) -> ArchiveFile:
    d = dt.datetime.fromtimestamp(day_ms / 1000, dt.UTC)
    return ArchiveFile(
        symbol, interval, DAILY, f"{d:%Y-%m-%d}", day_ms, day_ms + DAY_MS - INTERVAL_MS[interval]
    )


def days_of(file: ArchiveFile) -> list[int]:
    """The first open time of every day a file covers (a missing month falls back to its days)."""
    return list(range(file.first_ms, file.last_ms + 1, DAY_MS))


def fetch_file(
    client: ApiClient, file: ArchiveFile, server_time_ms: int, load_id: str, known_sha256: str | None = None
) -> FetchedFile | None:
    """The file verified against its sidecar and parsed; None when the archive does not have it (404) or
    when its checksum equals known_sha256 (loaded before: its rows are in raw already, nothing is
    downloaded). ArchiveFileFailed when it cannot be trusted."""
    url = f"{client.base_url}{file.path}"
    problem = ""
    for _attempt in range(MAX_ATTEMPTS):
        expected = _sidecar(client, file)
        if expected is None:
            return None
        if expected == known_sha256:
            return FetchedFile(file, url, 0, expected, 0, None, skipped=True)
        data = _get_or_none(client, file.path)
        if data is None:
            return None
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            problem = (
                f"checksum mismatch: the sidecar says {expected}, the {len(data)} bytes hash to {actual}"
            )
            continue
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = [n for n in archive.namelist() if n.endswith(".csv")]
                if len(members) != 1:
                    raise ArchiveFileFailed(f"{url}: expected one CSV in the zip, found {archive.namelist()}")
                csv = archive.read(members[0])
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise ArchiveFileFailed(f"{url}: not a readable zip ({exc}); none of its rows are used") from None
        rows, page = parse_klines_csv(csv, file.symbol, file.interval, server_time_ms, load_id)
        span = pc.cast(pc.cast(page.table["open_time"], pa.timestamp("ms")), pa.int64())
        first, last = (pc.min(span).as_py(), pc.max(span).as_py()) if len(span) else (None, None)
        return FetchedFile(file, url, len(data), actual, rows, page, first_ms=first, last_ms=last)
    raise ArchiveFileFailed(f"{url}: {problem} (fetched {MAX_ATTEMPTS} times); none of its rows are used")


def _sidecar(client: ApiClient, file: ArchiveFile) -> str | None:
    body = _get_or_none(client, file.path + CHECKSUM_SUFFIX)
    if body is None:
        return None
    m = _CHECKSUM.match(body.decode("ascii", "replace").strip() + " ")
    if m is None:
        raise ArchiveFileFailed(
            f"{client.base_url}{file.path}{CHECKSUM_SUFFIX}: not a checksum line: {body[:100]!r}"
        )
    return m.group(1)


def _get_or_none(client: ApiClient, path: str) -> bytes | None:
    """The body, or None for a 404 (the archive has no such file: not yet published, or never)."""
    try:
        return client.get_raw(path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
