"""Binance's public kline archive (data.binance.vision) for the synthetic markets.

Layout as documented in binance-public-data: `data/spot/monthly/klines/<PAIR>/<interval>/<PAIR>-<interval>-
YYYY-MM.zip` and `data/spot/daily/klines/<PAIR>/<interval>/<PAIR>-<interval>-YYYY-MM-DD.zip`, each with a
`.zip.CHECKSUM` sidecar (`<sha256>  <file>.zip`) and one CSV inside holding the 12 kline fields. The quirks
are kept: files from 2025-01-01 on carry open and close times in microseconds; some files start with a header
row; a daily file appears hours after its day, a monthly one days after its month; a delisted pair keeps its
files (the REST API answers -1121 for it). A file holds what the exchange serves at the request's moment, so
a candle revised after publication changes the file and its checksum (a re-upload), as on the real archive.

Faults (route "archive", param `file` = the zip's name): archive_missing (404 for the zip and its sidecar),
archive_bad_checksum (the sidecar names another hash), archive_truncated (half the zip),
archive_reupload (the file re-published with revised volumes and a new checksum).
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import hashlib
import io
import re
import zipfile
import zlib
from typing import TYPE_CHECKING

from . import events
from .bars import HOUR_MS, INTERVAL_HOURS, QVOL, TBASE, TQUOTE, VOL
from .coins import COIN_BY_SYMBOL
from .kline_wire import klines_json
from .replies import Reply

if TYPE_CHECKING:
    from .faults import Fault
from .series import Market

PREFIX = "/archive/data/spot/"
PATH = re.compile(
    r"^/archive/data/spot/(?P<kind>monthly|daily)/klines/(?P<pair>[A-Z0-9]+)/(?P<interval>[0-9a-z]+)/"
    r"(?P=pair)-(?P=interval)-(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.zip(?P<checksum>\.CHECKSUM)?$"
)
MICROS_FROM_MS = 1_735_689_600_000  # 2025-01-01: spot files carry microsecond times from this day on
DAILY_DELAY_MS = 6 * HOUR_MS  # a day's file appears 6 hours after the day closes ...
MONTHLY_DELAY_MS = 36 * HOUR_MS  # ... a month's 36 hours after the month closes
HEADER = b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n"
ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed member time: the same rows give the same zip and checksum
CONTENT_TYPE = "application/zip"
REUPLOAD_PER_MILLE = 3  # a re-uploaded file's volumes grow by 0.3%


def period_bounds(kind: str, period: str) -> tuple[int, int]:
    """[first open, last open] in ms of the hours a file covers."""
    parts = [int(p) for p in period.split("-")]
    first = dt.datetime(parts[0], parts[1], parts[2] if kind == "daily" else 1, tzinfo=dt.UTC)
    days = 1 if kind == "daily" else calendar.monthrange(parts[0], parts[1])[1]
    start = int(first.timestamp() * 1000)
    return start, start + days * 24 * HOUR_MS - HOUR_MS


def has_header(name: str) -> bool:
    """Some files start with a header row, others not: a fixed choice per file name."""
    return zlib.crc32(name.encode()) % 3 == 0


def answer(market: Market, path: str, now_ms: int, faults: list[Fault]) -> Reply:
    """GET under /archive/data/spot/: a zip, its CHECKSUM sidecar, or the archive's 404."""
    m = PATH.match(path)
    if m is None or m["pair"] not in COIN_BY_SYMBOL or m["interval"] not in INTERVAL_HOURS:
        return _not_found(path)
    kind, pair, interval, period = m["kind"], m["pair"], m["interval"], m["period"]
    if (kind == "daily") != (len(period) == 10):
        return _not_found(path)
    name = f"{pair}-{interval}-{period}.zip"
    mine = {f.kind: f for f in faults if f.params.get("file") == name}
    first, last = period_bounds(kind, period)
    published = last + HOUR_MS + (DAILY_DELAY_MS if kind == "daily" else MONTHLY_DELAY_MS)
    if now_ms < published or "archive_missing" in mine:
        return _not_found(path)
    data = _zip(market, pair, interval, first, last, now_ms, name, "archive_reupload" in mine)
    if data is None:  # no candle in the period (before listing, after delisting): no file
        return _not_found(path)
    if m["checksum"]:
        digest = hashlib.sha256(data).hexdigest()
        if "archive_bad_checksum" in mine:
            digest = hashlib.sha256(digest.encode()).hexdigest()
        return Reply(200, f"{digest}  {name}\n".encode(), "text/plain")
    if "archive_truncated" in mine:
        data = data[: len(data) // 2]
    return Reply(200, data, CONTENT_TYPE)


def _not_found(path: str) -> Reply:
    """S3's answer for a missing key (the archive is an S3 bucket behind a CDN)."""
    body = f"<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>{path}</Key></Error>"
    return Reply(404, body.encode(), "application/xml")


@functools.lru_cache(maxsize=256)  # a client asks for the CHECKSUM, then the zip: build it once
def _zip(
    market: Market,
    pair: str,
    interval: str,
    first: int,
    last: int,
    now_ms: int,
    name: str,
    reuploaded: bool,
) -> bytes | None:
    bars = events.exchange_bars(market, pair, interval, first, last, now_ms, None)
    # only closed candles: a file is published after its period, so the check is for safety
    closed = bars.open_time + bars.interval_ms <= now_ms
    if not closed.any():
        return None
    bars = bars._replace(open_time=bars.open_time[closed], data=bars.data[:, closed])
    if reuploaded:
        data = bars.data.copy()
        for row in (VOL, QVOL, TBASE, TQUOTE):
            data[row] += data[row] * REUPLOAD_PER_MILLE // 1000
        bars = bars._replace(data=data)
    if first >= MICROS_FROM_MS:  # microseconds: open x 1000, close = open + interval - 1 microsecond
        bars = bars._replace(open_time=bars.open_time * 1000, interval_ms=bars.interval_ms * 1000)
    body = klines_json(bars)
    csv = body[2:-2].replace(b"],[", b"\n").replace(b'"', b"") + b"\n"
    if has_header(name):
        csv = HEADER + csv
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        member = zipfile.ZipInfo(name.replace(".zip", ".csv"), date_time=ZIP_TIME)
        member.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(member, csv)
    return out.getvalue()
