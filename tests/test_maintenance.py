"""`cryptoflow maintain`: each retention window deletes exactly what is past it and keeps the newest of each
kind and all history; dlt's completed packages and SQLMesh's expired environments go, on a real database."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from helpers.gold import execute, small_deployment, stored_options

from pipelines import catalog, ingest, maintenance, transform
from pipelines.cli import sandboxed
from pipelines.runtime import db, embedded
from pipelines.sandbox import SandboxServer

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def settings(make_settings):
    settings = make_settings(retention={"runs_days": 90, "checks_days": 30, "alerts_days": 60})
    db.ensure_database(settings)
    return settings


def _run(settings, run_id: str, source: str, age_days: float, status: str = "success") -> None:
    started = NOW - dt.timedelta(days=age_days)
    finished = None if status == "running" else started + dt.timedelta(minutes=1)
    execute(
        settings,
        "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, finished_at, status) "
        "VALUES (%s, %s, 'ingest', %s, %s, %s)",
        (run_id, source, started, finished, status),
    )


def dead_rows(settings, table: str) -> tuple[int, bool]:
    return execute(
        settings,
        "SELECT n_dead_tup, last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relid = %s::regclass",
        (table,),
    )[0]


def test_maintain_vacuums_what_autovacuum_has_not_reached_and_nothing_else(settings):
    # a table autovacuum never visits (as on a server where it is off or starved), 6,000 rows replaced
    execute(settings, "CREATE TABLE raw.churn (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)")
    execute(settings, "INSERT INTO raw.churn SELECT g, 'a' FROM generate_series(1, 2000) g")
    execute(settings, "UPDATE raw.churn SET v = 'b'")
    execute(settings, "UPDATE raw.churn SET v = 'c'")
    execute(settings, "UPDATE raw.churn SET v = 'd'")  # 2,000 live rows, up to 6,000 dead (pages prune some)
    execute(settings, "CREATE TABLE raw.calm (id int) WITH (autovacuum_enabled = false)")
    execute(settings, "INSERT INTO raw.calm SELECT g FROM generate_series(1, 5000) g")
    execute(settings, "DELETE FROM raw.calm WHERE id <= 900")  # under BEHIND_ROWS: autovacuum's business
    dead, vacuumed = dead_rows(settings, "raw.churn")
    assert 4000 < dead <= 6000 and not vacuumed
    assert maintenance.vacuum_behind(settings) == (
        f"Postgres: vacuumed 1 tables autovacuum had not reached ({dead:,} dead rows): raw.churn"
    )
    assert dead_rows(settings, "raw.churn") == (0, True)
    assert dead_rows(settings, "raw.calm")[1] is False  # left to autovacuum
    assert execute(settings, "SELECT count(*), min(v), max(v) FROM raw.churn") == [(2000, "d", "d")]
    assert maintenance.vacuum_behind(settings) == (
        "Postgres: vacuumed 0 tables autovacuum had not reached (0 dead rows)"
    )


def test_each_window_expires_exactly_what_is_past_it(settings):
    _run(settings, "binance-old", "binance", 200)
    _run(settings, "binance-old-failed", "binance", 91, "failed")
    _run(settings, "binance-recent", "binance", 89)
    _run(settings, "binance-stuck", "binance", 300, "running")  # recovery's business, not retention's
    _run(settings, "fear_greed-only", "fear_greed", 400)  # its source's newest run: the metrics read it
    for run_id, age in (("dq-old", 31), ("dq-recent", 29), ("dq-older-but-newest-of-nothing", 40)):
        execute(
            settings,
            "INSERT INTO ops.dq_results (run_id, layer, check_name, table_name, level, outcome, checked_at) "
            "VALUES (%s, 'raw', 'c', 't', 'fail', 'pass', %s)",
            (run_id, NOW - age * DAY),
        )
    for age in (61, 59):
        execute(
            settings,
            "INSERT INTO ops.alerts_sent (check_name, kind, channel, sent_at, ok, attempts) "
            "VALUES ('c', 'opened', 'slack', %s, true, 1)",
            (NOW - age * DAY,),
        )
    execute(
        settings,
        "INSERT INTO ops.alert_incidents (check_name, opened_at, last_seen_at, resolved_at, status) VALUES "
        "('resolved-long-ago', %(a)s, %(a)s, %(a)s, 'resolved'), ('open-long-ago', %(a)s, %(a)s, NULL, 'open'),"
        " ('resolved-lately', %(b)s, %(b)s, %(b)s, 'resolved')",
        {"a": NOW - 100 * DAY, "b": NOW - 10 * DAY},
    )
    # history is never expired
    execute(
        settings,
        "INSERT INTO ops.gaps (symbol, interval, open_time, status, detected_run_id) "
        "VALUES ('BTCUSDT', '1h', '2023-03-24T13:00:00Z', 'known_gap', 'binance-old')",
    )

    lines = maintenance.expire_ops(settings, NOW)

    assert lines == [
        "ops.pipeline_runs: deleted 2 finished runs older than 90 days",
        "ops.dq_results: deleted 2 check results older than 30 days",
        "ops.alerts_sent: deleted 1 alert deliveries older than 60 days",
        "ops.alert_incidents: deleted 1 resolved incidents older than 60 days",
    ]
    assert execute(settings, "SELECT run_id FROM ops.pipeline_runs ORDER BY 1") == [
        ("binance-recent",),
        ("binance-stuck",),
        ("fear_greed-only",),
    ]
    assert execute(settings, "SELECT run_id FROM ops.dq_results") == [("dq-recent",)]
    assert execute(settings, "SELECT sent_at FROM ops.alerts_sent") == [(NOW - 59 * DAY,)]
    assert execute(settings, "SELECT check_name FROM ops.alert_incidents ORDER BY 1") == [
        ("open-long-ago",),
        ("resolved-lately",),
    ]
    assert execute(settings, "SELECT count(*) FROM ops.gaps") == [(1,)]
    assert (
        maintenance.expire_ops(settings, NOW)[0]
        == "ops.pipeline_runs: deleted 0 finished runs older than 90 days"
    )


def test_completed_dlt_packages_go_after_their_window(settings):
    with SandboxServer(seed=3, calm=True) as sandbox:
        ingest.ingest_fear_greed(sandboxed(settings, sandbox))
    packages = list((settings.state_dir / "dlt").glob("*/load/loaded/*"))
    assert len(packages) == 1
    assert maintenance.prune_dlt_packages(settings, dt.datetime.now(dt.UTC)).startswith(
        "dlt: deleted 0 completed load packages older than 7 days"
    )
    assert packages[0].exists()
    # a week and a day later
    line = maintenance.prune_dlt_packages(settings, dt.datetime.now(dt.UTC) + 8 * DAY)
    assert line.startswith("dlt: deleted 1 completed load packages older than 7 days")
    assert not packages[0].exists()
    assert execute(settings, "SELECT count(*) > 3000 FROM raw.fear_greed") == [(True,)]  # the data stays


@pytest.mark.slow
def test_the_janitor_removes_an_expired_dev_environment(settings, tmp_path):
    small_deployment(settings, seed=3)
    transform.transform(settings, "dev")
    assert ("gold__dev",) in execute(settings, "SELECT nspname FROM pg_namespace")
    assert maintenance.sqlmesh_janitor(settings) == (
        "SQLMesh: janitor removed 0 expired environments and their unused snapshots"
    )
    execute(settings, "UPDATE sqlmesh._environments SET expiration_ts = 0 WHERE name = 'dev'")
    assert maintenance.sqlmesh_janitor(settings) == (
        "SQLMesh: janitor removed 1 expired environments and their unused snapshots"
    )
    assert ("gold__dev",) not in execute(settings, "SELECT nspname FROM pg_namespace")
    # the hot tables' autovacuum settings, each as catalog.AUTOVACUUM states it: the ops ones from migration
    # 0002, raw's set by the engine at its first load (dlt created the table then)
    assert stored_options(settings) == catalog.AUTOVACUUM
    assert execute(settings, "SELECT count(*) > 0 FROM gold.fct_prices") == [(True,)]  # prod untouched
    assert os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") is None
    assert maintenance.airflow_db_clean(settings, NOW) == (
        "Airflow: metadata older than 30 days cleaned (`airflow db clean`)"  # an Airflow test made it
        if embedded.airflow_metadata_exists(settings)
        else "Airflow: no metadata database yet"
    )
