"""Bronze compaction on a lake the real hourly ingest wrote: each closed day's files become one with the same
rows and load ids, the reconciliation still passes, a later re-load settles against the compacted file, and a
crash at any point of the swap leaves the old files or the new one - never both, never neither."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from pipelines import catalog, compaction, ingest, quality
from pipelines.bronze import existing_files, open_lake, read_bronze, rows_per_load
from pipelines.cli import sandboxed
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer

START = dt.datetime(2026, 3, 1, 20, 30, tzinfo=dt.UTC)  # the sandbox's clock at the first load
HOURLY_RUNS = 6  # the hourly runs after it (candles 20:00 ... 01:00): 03-01 gets 5 files, 03-02 2
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


@pytest.fixture
def lake_settings(make_settings):
    """A lake of klines the way production writes it: a backfill, then one load per closed hour."""
    settings = make_settings(universe={"symbols": ["BTCUSDT", "ETHUSDT"]})
    with SandboxServer(seed=5, now_ms=ms(START), calm=True) as sandbox:
        active = sandboxed(settings, sandbox)
        ingest.ingest_ohlcv(active, days=2)
        for n in range(1, HOURLY_RUNS + 1):
            sandbox.set_now(ms(START + n * HOUR))
            ingest.ingest_ohlcv(active)
    return settings


def snapshot(lake, table: str) -> tuple[list[dict], dict[str, int]]:
    rows = read_bronze(lake, table).drop_columns(["year", "month", "day"])
    rows = rows.sort_by([("symbol", "ascending"), ("open_time", "ascending")])
    return rows.to_pylist(), rows_per_load(lake, table)[0]


def reconciles(settings) -> bool:
    result = next(r for r in quality.bronze_reconciliation(settings) if r.table == "binance_klines")
    return result.outcome == "pass"


def test_closed_days_become_one_file_with_the_same_rows_and_load_ids(lake_settings):
    settings, lake = lake_settings, open_lake(lake_settings)
    before_files = existing_files(lake, "binance_klines")
    multi = {p: f for p, f in before_files.items() if len(f) > 1}
    assert sorted((p[-25:], len(f)) for p, f in multi.items()) == [
        ("year=2026/month=03/day=01", 5),
        ("year=2026/month=03/day=02", 2),
    ]
    before = snapshot(lake, "binance_klines")

    # days the trailing re-fetch (48 h) still reaches are not closed: left alone
    line = compaction.compact_table(settings, catalog.KLINES, START + (HOURLY_RUNS + 1) * HOUR)
    assert line.startswith("bronze binance_klines: compacted 0 closed days")
    assert existing_files(lake, "binance_klines") == before_files
    line = compaction.compact_table(settings, catalog.KLINES, START + 3 * DAY)  # 03-01 closed, 03-02 not
    assert line.startswith("bronze binance_klines: compacted 1 closed days (5 files into 1)")
    line = compaction.compact_table(settings, catalog.KLINES, START + 4 * DAY)  # both closed
    after_files = existing_files(lake, "binance_klines")
    assert set(after_files) == set(before_files)
    assert {p: len(f) for p, f in after_files.items()} == {p: 1 for p in before_files}
    assert all(f[0].rsplit("/", 1)[-1].startswith("compacted-") for p, f in after_files.items() if p in multi)
    assert snapshot(lake, "binance_klines") == before  # every row, every load id
    assert reconciles(settings)
    # 03-02's two hourly loads wrote only that day: their manifests went with their files
    assert line == (
        "bronze binance_klines: compacted 1 closed days (2 files into 1), 2 load manifests without files deleted"
    )
    again = compaction.compact_table(settings, catalog.KLINES, START + 4 * DAY)
    assert (
        again
        == "bronze binance_klines: compacted 0 closed days (0 files into 0), 0 load manifests without files deleted"
    )


def test_a_reload_of_a_compacted_day_settles_against_it(lake_settings):
    settings, lake = lake_settings, open_lake(lake_settings)
    compaction.compact_table(settings, catalog.KLINES, START + 4 * DAY)
    rows, _ = snapshot(lake, "binance_klines")
    with SandboxServer(seed=5, now_ms=ms(START + HOURLY_RUNS * HOUR), calm=True) as sandbox:
        ingest.ingest_ohlcv(  # the backfill of a compacted day again (an operator's re-run)
            sandboxed(settings, sandbox),
            since=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
            until=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
        )
    again, _ = snapshot(lake, "binance_klines")
    assert len(again) == len(rows)  # one copy of each candle
    assert [(r["symbol"], r["open_time"], r["close"]) for r in again] == [
        (r["symbol"], r["open_time"], r["close"]) for r in rows
    ]
    assert reconciles(settings)


@pytest.mark.parametrize("crash_at", ["staged", "recorded", "deleting"])
def test_a_crash_in_the_swap_leaves_the_old_files_or_the_new_never_both(lake_settings, crash_at):
    settings, lake = lake_settings, open_lake(lake_settings)
    before = snapshot(lake, "binance_klines")
    partition, files = max(existing_files(lake, "binance_klines").items(), key=lambda kv: len(kv[1]))
    day = dt.date(2026, 3, 1)
    assert partition.endswith("year=2026/month=03/day=01") and len(files) == 5

    with pytest.raises(compaction.CompactionCrash):
        compaction.compact_partition(lake, catalog.KLINES, day, sorted(files), crash_at=crash_at)
    if crash_at == "staged":  # not recorded yet: the old files never changed, and readers see just them
        assert sorted(existing_files(lake, "binance_klines")[partition]) == sorted(files)
        assert snapshot(lake, "binance_klines") == before

    assert compaction.recover(lake, "binance_klines") == (0 if crash_at == "staged" else 1)
    now = existing_files(lake, "binance_klines")[partition]
    if crash_at == "staged":
        assert sorted(now) == sorted(files)  # the old files
    else:
        assert len(now) == 1 and now[0].rsplit("/", 1)[-1].startswith("compacted-")  # the new one
    assert snapshot(lake, "binance_klines") == before
    assert reconciles(settings)
    assert (
        lake.fs.get_file_info(
            pa.fs.FileSelector(f"{lake.table_dir('binance_klines')}/_compactions", allow_not_found=True)
        )
        == []
    )  # nothing left behind


def test_a_run_of_the_source_goes_first_and_the_next_maintain_compacts(lake_settings):
    settings, lake = lake_settings, open_lake(lake_settings)
    before = existing_files(lake, "binance_klines")
    with db.advisory_lock(settings, "ingest:binance"):  # an hourly ingest in progress
        line = compaction.compact_table(settings, catalog.KLINES, START + 4 * DAY)
    assert line == (
        "bronze binance_klines: compacted 0 closed days (0 files into 0), 0 load manifests without files "
        "deleted; stopped for a run of its source in progress (the next maintain goes on)"
    )
    assert existing_files(lake, "binance_klines") == before
    assert compaction.compact_table(settings, catalog.KLINES, START + 4 * DAY).startswith(
        "bronze binance_klines: compacted 2 closed days (7 files into 2)"
    )
