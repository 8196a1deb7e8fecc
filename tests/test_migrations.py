"""Versioned migrations (pipelines/runtime/migrations.py) on a real Postgres: applied once and in order, each
with its record or not at all; a database from before them (v0.1.0) recognised in place with its rows; a
newer or edited one refused with a one-line cause; `cryptoflow db migrate` says what it did."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import yaml

from pipelines.runtime import db, embedded, migrations, schema

BASELINE = migrations.MIGRATIONS_DIR / "0001_baseline.sql"


def fresh(make_settings, **database):
    """Settings on a database of their own, started without touching its schema."""
    settings = make_settings(database=database)
    embedded.start(settings, check_schema=False)
    return settings


def rows(settings, query: str, params=()):
    with db.cursor(settings) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def execute(settings, statement: str, params=()) -> None:
    with db.cursor(settings) as cur:
        cur.execute(statement, params)


def ledger(settings):
    return rows(settings, "SELECT version, name, checksum FROM ops.schema_migrations ORDER BY version")


def applied() -> list[str]:
    """What applying every shipped migration says, one line each."""
    return [f"applied migration {m.path.stem}" for m in migrations.available()]


def tables(settings, schema: str) -> set[str]:
    found = rows(
        settings, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    return {name for (name,) in found}


def test_a_new_database_gets_every_migration_once_with_its_checksum(make_settings):
    settings = fresh(make_settings, auto_migrate=False)  # a new database is migrated whatever the setting
    assert schema.ensure_schema(settings) == applied()
    shipped = migrations.available()
    assert ledger(settings) == [(m.version, m.name, m.checksum) for m in shipped]
    assert {"pipeline_runs", "gaps", "pairs", "revisions", "raw_changes", "schema_migrations"} <= tables(
        settings, "ops"
    )
    assert schema.ensure_schema(settings) == []  # every later command: one query, nothing applied
    assert len(ledger(settings)) == len(shipped)


def test_a_database_built_before_versioned_migrations_is_recognised_and_keeps_its_rows(make_settings):
    """v0.1.0 ran its schema file (migration 1's DDL) on every command and recorded nothing."""
    settings = fresh(make_settings, auto_migrate=False)
    body = BASELINE.read_text()
    execute(settings, body)  # what v0.1.0's db.ensure_schema did
    execute(
        settings,
        "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, status) "
        "VALUES ('binance-1', 'binance', 'backfill', '2026-01-01T00:00:00Z', 'success')",
    )
    execute(
        settings,
        "INSERT INTO ops.gaps (symbol, interval, open_time, status, detected_run_id, gap_class) "
        "VALUES ('BTCUSDT', '1h', '2023-03-24T13:00:00Z', 'known_gap', 'binance-1', 'exchange_outage')",
    )
    before = rows(settings, "SELECT * FROM ops.pipeline_runs"), rows(settings, "SELECT * FROM ops.gaps")

    with pytest.raises(migrations.SchemaError) as refused:
        schema.ensure_schema(settings)  # a configured server: any command refuses until `db migrate`
    assert str(refused.value) == (
        "the database's schema is from before versioned migrations (v0.1.0); this cryptoflow needs version "
        f"{len(migrations.available())}: back it up, then run `cryptoflow db migrate` (or set "
        "database.auto_migrate: true)"
    )
    assert "\n" not in str(refused.value)

    assert schema.migrate(settings) == [
        "recognised a database built before versioned migrations (v0.1.0): its schema is migration 1",
        *applied(),
    ]
    assert (
        rows(settings, "SELECT * FROM ops.pipeline_runs"),
        rows(settings, "SELECT * FROM ops.gaps"),
    ) == before
    assert [v for v, *_ in ledger(settings)] == [m.version for m in migrations.available()]
    assert schema.migrate(settings) == [
        f"the schema is at version {len(migrations.available())}: nothing to migrate"
    ]


def test_embedded_mode_migrates_by_itself(make_settings):
    settings = fresh(make_settings)  # database.auto_migrate unset: true in embedded mode
    execute(settings, BASELINE.read_text())
    assert settings.database.migrates_itself
    assert schema.ensure_schema(settings)[1:] == applied()


def test_a_newer_or_an_edited_schema_is_refused_in_one_line(make_settings, tmp_path):
    settings = fresh(make_settings)
    schema.ensure_schema(settings)
    execute(
        settings, "INSERT INTO ops.schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')"
    )
    with pytest.raises(migrations.SchemaError) as newer:
        schema.ensure_schema(settings)
    assert str(newer.value) == (
        "the database's schema is at version 99, newer than this cryptoflow knows "
        f"({len(migrations.available())}): a newer release migrated it; run that release (or restore the backup "
        "taken before the upgrade)"
    )
    execute(settings, "DELETE FROM ops.schema_migrations WHERE version = 99")
    execute(settings, "UPDATE ops.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(
        migrations.SchemaError, match=r"^migration 0001_baseline differs from the one applied"
    ):
        schema.ensure_schema(settings)


def _folder(tmp_path: Path, extra: dict[str, str]) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    shutil.copy(BASELINE, folder / BASELINE.name)
    for name, body in extra.items():
        (folder / name).write_text(body)
    return folder


def test_later_migrations_apply_in_order_and_a_failing_one_leaves_nothing_half_done(make_settings, tmp_path):
    settings = fresh(make_settings)
    folder = _folder(
        tmp_path,
        {
            "0002_pairs_market.sql": "ALTER TABLE ops.pairs ADD COLUMN market text NOT NULL DEFAULT 'spot';",
            "0003_backfill_note.py": (
                "def apply(cur):\n"
                '    cur.execute("CREATE TABLE ops.note (id int PRIMARY KEY)")\n'
                '    cur.execute("INSERT INTO ops.note VALUES (3)")\n'
            ),
            # the second statement fails: the first must not stay
            "0004_broken.sql": "CREATE TABLE ops.half (id int);\nALTER TABLE ops.no_such_table ADD COLUMN x int;",
        },
    )
    with contextlib.closing(db.connect(settings)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.UndefinedTable):
            migrations.migrate(cur, folder)
    assert [(v, n) for v, n, _ in ledger(settings)] == [
        (1, "baseline"),
        (2, "pairs_market"),
        (3, "backfill_note"),
    ]
    assert rows(settings, "SELECT id FROM ops.note") == [(3,)]
    assert "half" not in tables(settings, "ops")
    (folder / "0004_broken.sql").write_text("CREATE TABLE ops.half (id int);")
    with contextlib.closing(db.connect(settings)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            assert migrations.migrate(cur, folder) == ["applied migration 0004_broken"]
    assert "half" in tables(settings, "ops")


def test_migrations_are_numbered_without_gaps(tmp_path):
    folder = _folder(tmp_path, {"0003_skipped_two.sql": "SELECT 1;"})
    with pytest.raises(migrations.SchemaError, match=r"without gaps: \[1, 3\]"):
        migrations.available(folder)


def test_cryptoflow_db_migrate_says_what_it_did_and_other_commands_wait_for_it(make_settings, tmp_path):
    settings = fresh(make_settings, auto_migrate=False)
    execute(settings, BASELINE.read_text())  # a v0.1.0 database
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "database": {
                    "embedded_dir": settings.database.embedded_dir,
                    "name": settings.database.name,
                    "auto_migrate": False,
                }
            }
        )
    )
    cli = [str(Path(sys.executable).parent / "cryptoflow"), "--config", str(config)]

    refused = subprocess.run([*cli, "check"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert refused.returncode != 0
    assert "run `cryptoflow db migrate`" in refused.stderr + refused.stdout

    done = subprocess.run([*cli, "db", "migrate"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "cryptoflow: recognised a database built before versioned migrations (v0.1.0): its schema is migration 1",
        *(f"cryptoflow: {line}" for line in applied()),
        "SQLMesh: no state yet (the first transform creates it)",
        # the session's server has Airflow's metadata database once an Airflow test made it: it is migrated
        "Airflow: metadata database migrated (`airflow db migrate`)"
        if embedded.airflow_metadata_exists(settings)
        else "Airflow: no metadata database yet (`cryptoflow up` creates it)",
        "dlt: nothing to do (it upgrades its own state at a pipeline's next load)",
    ]


def test_a_sqlmesh_state_from_another_sqlmesh_version_is_migrated_and_carries_on(make_settings):
    """An upgrade that moves the SQLMesh pin: its state records the version that wrote it. The transform
    refuses it until `cryptoflow db migrate` runs SQLMesh's migrate; afterwards the models carry on in the
    same physical tables, with no rebuild."""
    from helpers.gold import small_deployment

    from pipelines import transform, upgrade

    settings = make_settings(database={"auto_migrate": False})  # a configured server's default
    db.ensure_database(settings)
    small_deployment(settings, seed=5)
    physical = "SELECT definition FROM pg_views WHERE schemaname = 'gold' AND viewname = 'fct_prices'"
    built = rows(settings, physical), rows(settings, "SELECT count(*) FROM gold.fct_prices")
    assert upgrade.migrate_sqlmesh(settings).endswith(": nothing to migrate")

    current, state_schema = rows(settings, "SELECT sqlmesh_version, schema_version FROM sqlmesh._versions")[0]
    execute(settings, "UPDATE sqlmesh._versions SET sqlmesh_version = '0.200.0'")  # an older release's pin
    with pytest.raises(migrations.SchemaError) as refused:
        transform.transform(settings)
    assert str(refused.value) == (
        f"SQLMesh's state was written by sqlmesh 0.200.0 (schema {state_schema}); this cryptoflow runs sqlmesh "
        f"{current} (schema {state_schema}): back it up, then run `cryptoflow db migrate` (or set "
        "database.auto_migrate: true)"
    )
    assert upgrade.migrate_sqlmesh(settings).startswith("migrated its state from sqlmesh 0.200.0 (schema ")
    assert rows(settings, "SELECT sqlmesh_version FROM sqlmesh._versions") == [(current,)]
    assert upgrade.migrate_sqlmesh(settings).endswith(": nothing to migrate")
    transform.transform(settings)
    assert (rows(settings, physical), rows(settings, "SELECT count(*) FROM gold.fct_prices")) == built

    # embedded mode's default (database.auto_migrate unset): the transform migrates it by itself
    execute(settings, "UPDATE sqlmesh._versions SET sqlmesh_version = '0.200.0'")
    unset = settings.database.model_copy(update={"auto_migrate": None})
    transform.transform(settings.model_copy(update={"database": unset}))
    assert rows(settings, "SELECT sqlmesh_version FROM sqlmesh._versions") == [(current,)]

    # a state a newer SQLMesh wrote (the previous release restored over a newer one): refused, untouched
    execute(settings, "UPDATE sqlmesh._versions SET sqlmesh_version = '9.1.0'")
    with pytest.raises(migrations.SchemaError) as newer:
        upgrade.migrate_sqlmesh(settings)
    assert str(newer.value) == (
        f"SQLMesh's state was written by sqlmesh 9.1.0 (schema {state_schema}), newer than the installed "
        f"sqlmesh {current} (schema {state_schema}): run that release (or restore the backup taken before the upgrade)"
    )
    assert rows(settings, "SELECT sqlmesh_version FROM sqlmesh._versions") == [("9.1.0",)]
    assert (rows(settings, physical), rows(settings, "SELECT count(*) FROM gold.fct_prices")) == built
