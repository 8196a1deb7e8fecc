"""Schema drift of the JSON sources, end to end (embedded Postgres + the sandbox over HTTP): a field the
API adds is kept in bronze and raw, a dropped one becomes NULL, lossless type drift is coerced rather than
dead-lettered, each change is recorded, and a snapshot re-taken within its hour replaces the first whole."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from pipelines import ingest
from pipelines.bronze import open_lake, read_bronze
from pipelines.cli import sandboxed
from pipelines.runtime import db
from pipelines.sandbox import SandboxServer

ADDED = "price_change_percentage_7d_in_currency"  # a real field (markets_3coins_extra_fields fixture)


@pytest.fixture
def sandbox():
    with SandboxServer(seed=42) as server:
        yield server


@pytest.fixture
def settings(make_settings, sandbox):
    return sandboxed(
        make_settings(sources={"coingecko": {"max_retries": 1, "backoff_base_s": 0.01}}), sandbox
    )


def query(settings, sql, params=()):
    with db.cursor(settings) as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def newer_snapshot(fixtures_dir) -> list[dict]:
    """The real 2026-04-30 snapshot with three drifts: a field added, roi removed, max_supply as strings."""
    coins = json.loads((fixtures_dir / "coingecko" / "markets_top100_2026-04-30.json").read_text())
    for i, coin in enumerate(coins):
        coin[ADDED] = round(0.5 * i - 7.25, 4)
        coin.pop("roi")
        if coin["max_supply"] is not None:
            coin["max_supply"] = repr(float(coin["max_supply"]))
    return coins


def test_drift_between_two_real_snapshots_keeps_every_record_and_the_second_snapshot_only(
    settings, sandbox, fixtures_dir
):
    older = (fixtures_dir / "coingecko" / "markets_top100_2024-06-01.json").read_text()
    sandbox.set_fault("markets", "replay", body=older)
    first = ingest.ingest_markets(settings)
    assert (first.rows_raw, first.dead_letters, first.details["schema_changes"]) == (100, 0, [])

    newer = newer_snapshot(fixtures_dir)
    sandbox.set_fault("markets", "replay", body=json.dumps(newer))
    second = ingest.ingest_markets(settings)
    assert second.details["snapshot_ts"] == first.details["snapshot_ts"]  # the same snapshot hour
    assert (second.rows_raw, second.dead_letters) == (100, 0)
    assert sorted(
        (c["field"], c["change"], c["old_type"], c["new_type"]) for c in second.details["schema_changes"]
    ) == [
        ("max_supply", "type_changed", "number", "string"),
        (ADDED, "added", None, "number"),
        ("roi", "dropped", "object", None),
    ]
    assert query(settings, "SELECT field, change FROM ops.schema_changes ORDER BY field") == [
        ("max_supply", "type_changed"),
        (ADDED, "added"),
        ("roi", "dropped"),
    ]
    # raw holds exactly the second snapshot: its 100 coins, its values, the new column, roi NULL
    rows = query(
        settings,
        f"SELECT id, max_supply, {ADDED}, roi, load_id FROM raw.coingecko_markets ORDER BY id",
    )
    expected = sorted(
        (c["id"], None if c["max_supply"] is None else float(c["max_supply"]), c[ADDED], None, second.run_id)
        for c in newer
    )
    assert rows == expected
    assert query(settings, "SELECT count(*) FROM raw.dead_letter")[0][0] == 0
    # bronze: the same 100 records of the second load, the added field kept
    bronze = read_bronze(open_lake(settings), "coingecko_markets")
    assert bronze.num_rows == 100
    assert set(bronze["load_id"].to_pylist()) == {second.run_id}
    assert sorted(zip(bronze["id"].to_pylist(), bronze[ADDED].to_pylist(), strict=True)) == sorted(
        (c["id"], c[ADDED]) for c in newer
    )
    assert pc.all(pc.is_null(bronze["roi"])).as_py()


def test_sandbox_drift_switches_coerce_lossless_types(settings, sandbox):
    baseline = ingest.ingest_markets(settings)
    sandbox.set_fault(
        "markets", "schema_drift", float_ints=["market_cap_rank"], string_numbers=["total_volume", "ath"]
    )
    drifted = ingest.ingest_markets(settings)
    assert drifted.dead_letters == 0 and drifted.rows_raw == baseline.rows_raw
    # 5.0 for 5 is still a JSON number: coerced silently; numeric strings are a recorded type change
    assert sorted((c["field"], c["change"], c["new_type"]) for c in drifted.details["schema_changes"]) == [
        ("ath", "type_changed", "string"),
        ("total_volume", "type_changed", "string"),
    ]
    ranks = query(settings, "SELECT market_cap_rank FROM raw.coingecko_markets ORDER BY market_cap_rank")
    assert [r for (r,) in ranks] == list(range(1, baseline.rows_raw + 1))


def test_values_that_cannot_be_read_go_to_dead_letters_and_the_rest_loads(settings, sandbox, fixtures_dir):
    coins = json.loads((fixtures_dir / "coingecko" / "markets_top100_2026-04-30.json").read_text())
    coins[3]["max_supply"] = "about 21M"
    coins[7]["name"] = {"en": "Ether"}
    coins[9]["market_cap_rank"] = 2.5
    sandbox.set_fault("markets", "replay", body=json.dumps(coins))
    summary = ingest.ingest_markets(settings)
    assert (summary.rows_raw, summary.dead_letters) == (97, 3)
    reasons = query(settings, "SELECT natural_key, reason FROM raw.dead_letter ORDER BY reason")
    snapshot = summary.details["snapshot_ts"]
    assert reasons == [
        (f"{coins[9]['id']}@{snapshot}", "invalid market_cap_rank: 2.5"),
        (f"{coins[3]['id']}@{snapshot}", "non-numeric max_supply: 'about 21M'"),
        (f"{coins[7]['id']}@{snapshot}", "non-text name: {'en': 'Ether'}"),
    ]


def test_a_field_that_arrives_all_null_takes_its_type_from_its_first_values(settings, sandbox, fixtures_dir):
    """A field the API adds before it has values (all null) must not fix its type as text: raw would then
    split the numbers into a variant column, and bronze's files would disagree on the type."""
    coins = json.loads((fixtures_dir / "coingecko" / "markets_top100_2024-06-01.json").read_text())
    for coin in coins:
        coin[ADDED] = None
    sandbox.set_fault("markets", "replay", body=json.dumps(coins))
    first = ingest.ingest_markets(settings)
    assert (first.rows_raw, first.dead_letters) == (100, 0)
    for i, coin in enumerate(coins):
        coin[ADDED] = i + 0.25
    sandbox.set_fault("markets", "replay", body=json.dumps(coins))
    second = ingest.ingest_markets(settings)
    assert (second.rows_raw, second.dead_letters) == (100, 0)
    columns = dict(
        query(
            settings,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'raw' AND table_name = 'coingecko_markets' AND column_name LIKE %s",
            (ADDED + "%",),
        )
    )
    assert columns == {ADDED: "double precision"}
    assert query(settings, f"SELECT sum({ADDED}) FROM raw.coingecko_markets")[0][0] == sum(
        i + 0.25 for i in range(100)
    )


def test_bronze_reads_files_whose_types_of_a_field_differ(make_settings):
    """Hourly snapshots written while a field was null, then numbers, then text (the API changed its type):
    the lake reads as one table, the field as text where the files cannot agree, nulls promoted."""
    import datetime as dt

    import pyarrow as pa

    from pipelines.bronze import write_bronze

    lake = open_lake(make_settings())
    hours = [dt.datetime(2024, 6, 1, h, tzinfo=dt.UTC) for h in range(3)]
    for hour, values in zip(
        hours, [pa.array([None], pa.null()), pa.array([1.5]), pa.array(["n/a"])], strict=True
    ):
        rows = pa.table({"id": ["btc"], "snapshot_ts": [hour], "x": values, "load_id": [f"l{hour.hour}"]})
        write_bronze(lake, "coingecko_markets", rows, "snapshot_ts", f"l{hour.hour}")
    table = read_bronze(lake, "coingecko_markets").sort_by("snapshot_ts")
    assert table["x"].to_pylist() == [None, "1.5", "n/a"]
    numbers = [pa.array([None], pa.null()), pa.array([2.0])]
    for hour, values in zip(hours[:2], numbers, strict=True):
        rows = pa.table({"id": ["eth"], "snapshot_ts": [hour], "x": values, "load_id": [f"m{hour.hour}"]})
        write_bronze(lake, "other", rows, "snapshot_ts", f"m{hour.hour}")
    assert read_bronze(lake, "other").sort_by("snapshot_ts")["x"].to_pylist() == [None, 2.0]
