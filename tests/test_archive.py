"""Backfills from Binance's public kline archive: parsing its files, verifying them, falling back to daily
files and to REST, and the same rows in raw and bronze as a REST backfill. The sandbox serves the archive's
layout (monthly and daily zips, CHECKSUM sidecars, microsecond times from 2025, header rows in some files)."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from decimal import Decimal

import pyarrow.compute as pc
import pytest

from pipelines import ingest
from pipelines.bronze import open_lake, read_bronze
from pipelines.cli import sandboxed
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer
from pipelines.sandbox.markets import klines_rows
from pipelines.sources.binance.helpers import parse_klines, parse_klines_csv

HOUR = 3_600_000
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
# 45 days up to 2025-03-05 11:00: January (13 days of it, from 01-19 12:00) and February from their monthly
# files, 03-01 to 03-04 from daily files; 03-05 00:00-11:00 from REST (its file is not out yet)
NOW = dt.datetime(2025, 3, 5, 12, 30, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
LAST = NOW_MS // HOUR * HOUR - HOUR
FIRST = LAST - (45 * 24 - 1) * HOUR
FILES_PER_PAIR = 6
WHOLE_FILES_PER_PAIR = 5  # January is read for part of its hours: not kept in the manifest
FEB = "BTCUSDT-1h-2025-02.zip"


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture
def sandbox():
    with SandboxServer(seed=42, now_ms=NOW_MS) as server:  # the realistic market
        yield server


@pytest.fixture
def settings(make_settings, sandbox):
    fast = {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5}
    return sandboxed(make_settings(sources={"binance": fast, "binance_archive": fast}), sandbox)


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def raw_rows(settings):
    """Every stored candle without its load id: (symbol, open ms, the 11 other fields)."""
    return query(
        settings,
        "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, (extract(epoch FROM close_time) * 1000)::bigint, "
        "open, high, low, close, volume, quote_volume, trades, taker_buy_base_volume, taker_buy_quote_volume "
        "FROM raw.binance_klines ORDER BY 1, 2",
    )


def bronze_rows(settings):
    table = read_bronze(open_lake(settings), "binance_klines").drop_columns(["load_id"])
    table = table.set_column(
        table.schema.get_field_index("open_time"),
        "open_time",
        pc.cast(pc.cast(table["open_time"], "timestamp[ms]"), "int64"),
    )
    return sorted(tuple(r.values()) for r in table.select(sorted(table.column_names)).to_pylist())


def expected(symbol, first=FIRST, last=LAST):
    """The exchange's candles as the REST API serves them now: (open ms, volume)."""
    return [(r[0], Decimal(r[5])) for r in klines_rows(symbol, "1h", first, last, NOW_MS, seed=42)]


def stored(settings, symbol):
    return query(
        settings,
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint, volume FROM raw.binance_klines "
        "WHERE symbol = %s ORDER BY open_time",
        (symbol,),
    )


def backfill(settings, source="auto"):
    return ingest.ingest_ohlcv(settings, days=45, command="backfill", source=source, symbols=SYMBOLS)


# ---- parsing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("micros", [False, True])
@pytest.mark.parametrize("header", [False, True])
def test_archive_csv_rows_parse_like_the_apis_rows_in_both_time_units(fixtures_dir, micros, header):
    """Real 12-field rows (an hour of BTCUSDT from the API) written as the archive writes them: times in
    milliseconds or (spot files from 2025) microseconds, with or without a header row."""
    rows = json.loads((fixtures_dir / "binance" / "klines_1h_BTCUSDT_24rows_pretty.json").read_text())
    lines = []
    for r in rows:
        fields = [str(v) for v in r]
        if micros:
            fields[0], fields[6] = str(r[0] * 1000), str(r[6] * 1000 + 999)
        lines.append(",".join(fields))
    head = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n"
    csv = ((head if header else "") + "\n".join(lines) + "\n").encode()
    server_time = rows[-1][6] + 1
    count, page = parse_klines_csv(csv, "BTCUSDT", "1h", server_time, "L")
    reference = parse_klines(rows, "BTCUSDT", "1h", server_time, "L")
    assert count == len(rows) == 24
    assert page.table.equals(reference.table) and page.table.num_rows == 24
    assert page.rejected == reference.rejected == []


def test_a_bad_row_in_an_archive_file_is_dead_lettered_like_an_api_row(fixtures_dir):
    rows = json.loads((fixtures_dir / "binance" / "klines_1h_BTCUSDT_24rows_pretty.json").read_text())
    lines = [",".join(str(v) for v in r) for r in rows]
    bad = rows[3][:]
    bad[2], bad[3] = bad[3], bad[2]  # high and low swapped
    lines[3] = ",".join(str(v) for v in bad)
    count, page = parse_klines_csv("\n".join(lines).encode(), "BTCUSDT", "1h", rows[-1][6] + 1, "L")
    assert (count, page.table.num_rows) == (24, 23)
    assert [(r.natural_key, r.reason) for r in page.rejected] == [(f"BTCUSDT@{rows[3][0]}", "high < low")]


# ---- the sandbox's archive -----------------------------------------------------------------------------


def test_the_sandbox_serves_the_archive_layout(sandbox):
    import hashlib
    import urllib.error
    import urllib.request

    base = f"{sandbox.url}/archive/data/spot"
    data = urllib.request.urlopen(f"{base}/monthly/klines/BTCUSDT/1h/{FEB}").read()
    sidecar = urllib.request.urlopen(f"{base}/monthly/klines/BTCUSDT/1h/{FEB}.CHECKSUM").read().decode()
    assert sidecar == f"{hashlib.sha256(data).hexdigest()}  {FEB}\n"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist() == ["BTCUSDT-1h-2025-02.csv"]
        lines = z.read("BTCUSDT-1h-2025-02.csv").decode().splitlines()
    body = [line for line in lines if line[0].isdigit()]
    assert len(body) == 28 * 24
    first = klines_rows("BTCUSDT", "1h", ms("2025-02-01T00:00"), ms("2025-02-01T00:00"), NOW_MS, seed=42)[0]
    fields = body[0].split(",")
    assert fields[0] == str(first[0] * 1000) and fields[6] == str(first[6] * 1000 + 999)  # microseconds
    assert fields[1:6] == first[1:6]
    for late in (
        "daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-03-05.zip",
        "monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2025-03.zip",
    ):
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/{late}")
        assert missing.value.code == 404  # not published yet


# ---- backfills -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_archive_backfill_equals_a_rest_backfill_row_for_row(settings_in, tmp_path, sandbox, settings):
    rest_settings = sandboxed(settings_in(tmp_path / "rest", universe={"symbols": SYMBOLS}), sandbox)
    assert rest_settings.storage.bronze_url != settings.storage.bronze_url  # two lakes, two databases
    by_rest = backfill(rest_settings, "rest")
    by_archive = backfill(settings, "auto")
    assert by_archive.rows_raw == by_rest.rows_raw == 2 * 45 * 24
    assert by_archive.details["archive_files"] == 2 * FILES_PER_PAIR
    assert by_archive.details["rest_windows"] == 2  # each pair's last 12 hours
    assert raw_rows(settings) == raw_rows(rest_settings)
    assert bronze_rows(settings) == bronze_rows(rest_settings)
    for symbol in SYMBOLS:
        assert stored(settings, symbol) == expected(symbol)
    manifest = query(
        settings,
        "SELECT count(*), sum(rows), min(first_open), max(last_open) FROM ops.archive_files WHERE symbol = 'BTCUSDT'",
    )
    assert manifest == [
        (
            WHOLE_FILES_PER_PAIR,
            (28 + 4) * 24,
            dt.datetime(2025, 2, 1, tzinfo=dt.UTC),
            dt.datetime(2025, 3, 4, 23, tzinfo=dt.UTC),
        )
    ]


def test_a_rerun_downloads_nothing_and_adds_nothing(settings):
    backfill(settings)
    before = raw_rows(settings)
    again = backfill(settings)
    assert (again.rows_raw, again.details["revised"]) == (0, 0)
    # the files kept in the manifest are not downloaded again; January (read in part) is
    assert (again.details["archive_files"], again.details["archive_files_skipped"]) == (
        2,
        2 * WHOLE_FILES_PER_PAIR,
    )
    assert raw_rows(settings) == before
    assert query(
        settings, "SELECT count(*) - count(DISTINCT (symbol, open_time)) FROM raw.binance_klines"
    ) == [(0,)]


def test_a_rerun_against_the_archive_at_another_address_downloads_nothing(settings, make_settings):
    """The manifest knows files by their archive path: the same files behind another address (a mirror, or
    the demo's sandbox on a new port) are not fetched again, and raw keeps the candles it has."""
    backfill(settings)
    before = raw_rows(settings)
    with SandboxServer(seed=42, now_ms=NOW_MS) as elsewhere:
        moved = sandboxed(settings, elsewhere)
        assert moved.sources.binance_archive.base_url != settings.sources.binance_archive.base_url
        again = backfill(moved)
    assert (again.rows_raw, again.details["revised"]) == (0, 0)
    assert (again.details["archive_files"], again.details["archive_files_skipped"]) == (
        2,
        2 * WHOLE_FILES_PER_PAIR,
    )  # only January, read in part, is fetched again
    assert raw_rows(settings) == before


def test_a_checksum_mismatch_loads_no_rows_and_names_the_file(settings, sandbox):
    """Archive only: the day whose sidecar disagrees (twice) gives no rows; its hours are recorded as
    missing, not as exchange gaps; everything else loads."""
    bad = "BTCUSDT-1h-2025-03-02.zip"
    sandbox.set_fault("archive", "archive_bad_checksum", file=bad)
    summary = backfill(settings, "archive")
    failed = summary.details["archive_files_failed"]
    assert list(failed) == [bad]
    assert failed[bad].startswith(
        f"{sandbox.url}/archive/data/spot/daily/klines/BTCUSDT/1h/{bad}: checksum mismatch"
    )
    assert failed[bad].endswith("(fetched 2 times); none of its rows are used")
    day = [r for r in expected("BTCUSDT") if ms("2025-03-02T00:00") <= r[0] <= ms("2025-03-02T23:00")]
    today = [r for r in expected("BTCUSDT") if r[0] >= ms("2025-03-05T00:00")]  # archive only: no REST
    assert stored(settings, "BTCUSDT") == [r for r in expected("BTCUSDT") if r not in day and r not in today]
    assert stored(settings, "ETHUSDT") == [r for r in expected("ETHUSDT") if r[0] < ms("2025-03-05T00:00")]
    assert query(settings, "SELECT status, count(*) FROM ops.gaps GROUP BY 1") == [("missing", 24 + 12 + 12)]
    sandbox.clear_faults()
    backfill(settings, "auto")  # the next run fills them (the file is good now), REST the newest hours
    for symbol in SYMBOLS:
        assert stored(settings, symbol) == expected(symbol)


def test_a_truncated_zip_falls_back_to_rest_in_auto_mode(settings, sandbox):
    sandbox.set_fault("archive", "archive_truncated", file=FEB)
    summary = backfill(settings, "auto")
    assert list(summary.details["archive_files_failed"]) == [FEB]
    # the month is asked for day by day instead: 28 daily files
    assert summary.details["archive_files"] == 2 * FILES_PER_PAIR - 1 + 28
    for symbol in SYMBOLS:
        assert stored(settings, symbol) == expected(symbol)


def test_a_missing_month_falls_back_to_its_days_and_a_missing_day_to_rest(settings, sandbox):
    sandbox.set_fault("archive", "archive_missing", file=FEB)
    sandbox.set_fault("archive", "archive_missing", file="BTCUSDT-1h-2025-02-14.zip")
    summary = backfill(settings, "auto")
    assert summary.details["archive_files_missing"] == 2
    assert summary.details["archive_files"] == 2 * FILES_PER_PAIR - 1 + 27
    assert summary.details["rest_windows"] == 3  # BTC's 14 February and each pair's newest hours
    for symbol in SYMBOLS:
        assert stored(settings, symbol) == expected(symbol)
    assert query(settings, "SELECT count(*) FROM ops.gaps") == [(0,)]


def test_a_reuploaded_file_is_reloaded_and_its_changes_land_as_revisions(settings, sandbox):
    backfill(settings)
    day = "ETHUSDT-1h-2025-03-03.zip"
    sandbox.set_fault("archive", "archive_reupload", file=day)
    again = backfill(settings)
    assert again.details["archive_files"] == 1 + 2 and again.details["revised"] == 24  # + the Januaries
    lo, hi = ms("2025-03-03T00:00"), ms("2025-03-03T23:00")
    bumped = [
        (t, v + (v * 3 / 1000).quantize(Decimal("1e-8"), rounding="ROUND_DOWN"))
        for t, v in expected("ETHUSDT", lo, hi)
    ]
    got = [r for r in stored(settings, "ETHUSDT") if lo <= r[0] <= hi]
    assert [t for t, _ in got] == [t for t, _ in bumped] and len(got) == 24
    assert all(v > old for (_, v), (_, old) in zip(got, expected("ETHUSDT", lo, hi), strict=True))
    assert query(settings, "SELECT count(*), min(found_by) FROM ops.revisions") == [(24, "backfill")]
    assert query(
        settings, "SELECT count(DISTINCT sha256) FROM ops.archive_files WHERE url LIKE %s", (f"%{day}",)
    ) == [(1,)]
    assert stored(settings, "BTCUSDT") == expected("BTCUSDT")


def test_a_pair_that_no_longer_trades_is_backfilled_from_the_archive_up_to_its_last_candle(make_settings):
    """MATICUSDT stopped trading on 2024-09-10 04:00 (BREAK) and was removed on 10-10: REST answers -1121
    for it, the archive keeps its files. Its history loads up to its last candle, no hour after it is a gap,
    and its status is recorded; BTCUSDT loads as usual."""
    now = ms("2024-11-15T12:30")
    with SandboxServer(seed=42, now_ms=now) as server:
        settings = sandboxed(make_settings(sources={"binance_archive": {"max_retries": 1}}), server)
        summary = ingest.ingest_ohlcv(
            settings,
            since=dt.datetime(2024, 8, 1, tzinfo=dt.UTC),
            command="backfill",
            source="auto",
            symbols=["BTCUSDT", "MATICUSDT"],
        )
    last_matic = ms("2024-09-10T03:00")
    assert summary.details["skipped_pairs"] == {"MATICUSDT": "NOT_LISTED"}
    assert summary.details["not_trading_from_archive"] == {"MATICUSDT": "2024-09-10T03:00:00+00:00"}
    matic = [
        (r[0], Decimal(r[5])) for r in klines_rows("MATICUSDT", "1h", ms("2024-08-01T00:00"), last_matic, now)
    ]
    assert (
        stored(settings, "MATICUSDT") == matic
        and len(matic) == (last_matic - ms("2024-08-01T00:00")) // HOUR + 1
    )
    btc_last = now // HOUR * HOUR - HOUR
    assert len(stored(settings, "BTCUSDT")) == (btc_last - ms("2024-08-01T00:00")) // HOUR + 1
    assert query(settings, "SELECT count(*) FROM ops.gaps") == [(0,)]
    assert query(settings, "SELECT status FROM ops.pairs WHERE symbol = 'MATICUSDT'") == [("NOT_LISTED",)]


def test_where_the_rest_api_answers_451_an_archive_backfill_still_loads(settings, sandbox, caplog):
    """US-hosted CI runners get 451 from api.binance.com but not from the archive: `--source archive` goes
    on with the requested pairs (no exchangeInfo, no listing probe) and loads exact rows; `auto` and `rest`
    stop at once with the ban's message, as before."""
    from pipelines.http import ApiBanned

    for route in ("exchangeInfo", "klines"):
        sandbox.set_fault(route, "451")
    since, until = dt.datetime(2025, 1, 19, tzinfo=dt.UTC), dt.datetime(2025, 3, 5, tzinfo=dt.UTC)
    with pytest.raises(ApiBanned, match="region blocked"):
        ingest.ingest_ohlcv(
            settings, since=since, until=until, command="backfill", source="auto", symbols=SYMBOLS
        )
    summary = ingest.ingest_ohlcv(
        settings, since=since, until=until, command="backfill", source="archive", symbols=SYMBOLS
    )
    assert (
        summary.details["rest_region_blocked"] is True
        and summary.details["archive_files"] == 2 * FILES_PER_PAIR
    )
    for symbol in SYMBOLS:  # January and February (monthly files), 4 days of March (daily files)
        assert stored(settings, symbol) == expected(symbol, ms("2025-01-19T00:00"), ms("2025-03-04T23:00"))
    assert query(settings, "SELECT count(*) FROM ops.gaps") == [(0,)]
    assert any(
        r.getMessage().startswith("the REST API answers 451 here (region blocked)") for r in caplog.records
    )


def test_an_unreachable_archive_leaves_an_auto_backfill_to_the_rest_api(make_settings, sandbox, caplog):
    """`auto` treats the archive as the fast path, not a dependency: with nothing answering at its address
    the whole window comes from REST, with one warning; `archive` alone fails clearly."""
    from pipelines.http import ApiError

    closed = {"base_url": "http://127.0.0.1:9", "max_retries": 1, "backoff_base_s": 0.01, "timeout_s": 2}
    settings = sandboxed(make_settings(), sandbox)
    settings = settings.model_copy(
        update={
            "sources": settings.sources.model_copy(
                update={"binance_archive": settings.sources.binance_archive.model_copy(update=closed)}
            )
        }
    )
    summary = backfill(settings, "auto")
    assert summary.details["archive_unreachable"] is True and "archive_files" not in summary.details
    for symbol in SYMBOLS:
        assert stored(settings, symbol) == expected(symbol)
    assert any(r.getMessage().startswith("the kline archive cannot be reached") for r in caplog.records)
    with pytest.raises(ApiError, match="giving up on /data/spot/"):
        backfill(settings, "archive")


def test_a_wider_backfill_reads_a_file_an_earlier_one_read_in_part(settings):
    """The first backfill read January's file for its last 13 days only; a later backfill from January 1st
    must get the rest of that file, not skip it as loaded."""
    backfill(settings)
    wider = ingest.ingest_ohlcv(
        settings,
        since=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        command="backfill",
        source="archive",
        symbols=SYMBOLS,
    )
    assert wider.details["archive_files"] == 2  # each pair's January, whole now
    assert wider.rows_raw == 2 * (18 * 24 + 12)  # January 1st to 19th 11:00
    for symbol in SYMBOLS:
        assert stored(settings, symbol) == expected(symbol, ms("2025-01-01T00:00"))
    assert query(settings, "SELECT count(*) FROM ops.gaps") == [(0,)]


def test_an_outage_inside_a_retired_pairs_history_is_a_known_gap_not_a_rest_call(make_settings):
    """2023-03-24 13:00 is missing for every pair (a real exchange outage). MATICUSDT, removed since, has it
    inside its archived history: the gap re-fetch asks REST only for pairs that trade, so the run does not
    fail on MATIC's -1121, and the hour is an exchange outage for both pairs."""
    now = ms("2024-11-15T12:30")
    with SandboxServer(seed=42, now_ms=now) as server:
        settings = sandboxed(make_settings(), server)
        summary = ingest.ingest_ohlcv(
            settings,
            since=dt.datetime(2023, 3, 20, tzinfo=dt.UTC),
            until=dt.datetime(2023, 3, 28, tzinfo=dt.UTC),
            command="backfill",
            source="auto",
            symbols=["BTCUSDT", "MATICUSDT"],
        )
    assert summary.details["known_gaps"] == 2 and summary.details["gap_classes"] == {"exchange_outage": 2}
    for symbol in ("BTCUSDT", "MATICUSDT"):
        assert len(stored(settings, symbol)) == 8 * 24 - 1
    assert query(settings, "SELECT symbol, open_time FROM ops.gaps ORDER BY 1") == [
        ("BTCUSDT", dt.datetime(2023, 3, 24, 13, tzinfo=dt.UTC)),
        ("MATICUSDT", dt.datetime(2023, 3, 24, 13, tzinfo=dt.UTC)),
    ]
