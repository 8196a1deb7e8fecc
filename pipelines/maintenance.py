"""`cryptoflow maintain` (and the maintenance_daily DAG): what a year of hourly runs leaves behind, expired
by `retention.*` - the ops ledgers, dlt's completed load packages, SQLMesh's expired environments and
snapshots (its janitor), Airflow's old metadata (`airflow db clean`) - and the dead rows autovacuum has not
reached yet (VACUUM ANALYZE of those tables). One line per step.

History is never expired: settled gaps, applied revisions, pair status spells, schema changes, archive files
and migrations are what an operator reads to explain the data. `ops.raw_changes` empties itself (the transform
deletes a row once restated) and `ops.request_weight` keeps one day (the weight budget).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from pipelines import catalog, compaction
from pipelines.runtime import db, embedded
from pipelines.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Expiry:
    table: str
    days_setting: str  # retention.<this>
    where: str  # rows older than %(before)s that may go; SQL over the table's own columns
    why: str


# Each source's newest finished run and the newest check run stay, whatever their age: the metrics, the
# dashboard and the freshness rules read "the latest" of each.
EXPIRIES = (
    Expiry(
        "ops.pipeline_runs",
        "runs_days",
        "status <> 'running' AND coalesce(finished_at, started_at) < %(before)s AND run_id NOT IN "
        "(SELECT DISTINCT ON (source) run_id FROM ops.pipeline_runs WHERE status <> 'running' "
        "ORDER BY source, started_at DESC)",
        "finished runs",
    ),
    Expiry(
        "ops.dq_results",
        "checks_days",
        "checked_at < %(before)s AND run_id <> "
        "(SELECT run_id FROM ops.dq_results ORDER BY checked_at DESC LIMIT 1)",
        "check results",
    ),
    Expiry("ops.alerts_sent", "alerts_days", "sent_at < %(before)s", "alert deliveries"),
    Expiry(
        "ops.alert_incidents",
        "alerts_days",
        "status = 'resolved' AND resolved_at < %(before)s",
        "resolved incidents",
    ),
)


def maintain(
    settings: Settings, now: dt.datetime | None = None, config_file: Path | None = None
) -> list[str]:
    """Every step, one line each (`config_file`: what Airflow's commands are told to read)."""
    now = now or dt.datetime.now(dt.UTC)
    db.ensure_database(settings)
    lines = [compaction.compact_table(settings, table, now) for table in catalog.RAW]
    lines += expire_ops(settings, now)
    lines.append(prune_dlt_packages(settings, now))
    lines.append(sqlmesh_janitor(settings))
    lines.append(airflow_db_clean(settings, now, config_file))
    lines.append(vacuum_behind(settings))  # last: the deletes above leave dead rows too
    return lines


# A table autovacuum has fallen behind on: more dead rows than this many, and than this share of its live ones
# (autovacuum itself would have started at 20% and 50 rows, or at the hot tables' own catalog.AUTOVACUUM).
BEHIND_ROWS, BEHIND_SHARE = 1000, 0.2
VACUUM_LOCK_TIMEOUT = "5s"  # a table locked by a running load or plan is left for tomorrow


def vacuum_behind(settings: Settings) -> str:
    """VACUUM (ANALYZE) each of the pipeline's tables (raw, ops, SQLMesh's) that autovacuum has fallen behind
    on: a server whose autovacuum is off, starved or cancelled by the loads. Normally none."""
    done, dead, skipped = [], 0, []
    with contextlib.closing(db.connect(settings)) as conn:
        conn.autocommit = True  # VACUUM runs outside a transaction
        with conn.cursor() as cur:
            cur.execute(f"SET lock_timeout = '{VACUUM_LOCK_TIMEOUT}'")
            cur.execute(
                "SELECT schemaname, relname, n_dead_tup FROM pg_stat_user_tables "
                "WHERE (schemaname IN ('raw', 'ops') OR schemaname LIKE 'sqlmesh%%') "
                "AND n_dead_tup > greatest(%s, %s * n_live_tup) ORDER BY n_dead_tup DESC",
                (BEHIND_ROWS, BEHIND_SHARE),
            )
            for schema, table, rows in cur.fetchall():
                try:
                    cur.execute(f'VACUUM (ANALYZE) "{schema}"."{table}"')
                except (psycopg2.errors.LockNotAvailable, psycopg2.errors.UndefinedTable):
                    skipped.append(f"{schema}.{table}")  # in use, or dropped meanwhile (a janitor, a plan)
                    continue
                done.append(f"{schema}.{table}")
                dead += rows
    line = f"Postgres: vacuumed {len(done)} tables autovacuum had not reached ({dead:,} dead rows)"
    if done:
        line += f": {', '.join(done[:5])}{' ...' if len(done) > 5 else ''}"
    if skipped:
        line += f"; skipped (locked): {', '.join(skipped)}"
    return line


def expire_ops(settings: Settings, now: dt.datetime) -> list[str]:
    lines = []
    with db.cursor(settings) as cur:
        for expiry in EXPIRIES:
            days = getattr(settings.retention, expiry.days_setting)
            cur.execute(
                f"DELETE FROM {expiry.table} WHERE {expiry.where}", {"before": now - dt.timedelta(days=days)}
            )
            lines.append(f"{expiry.table}: deleted {cur.rowcount:,} {expiry.why} older than {days} days")
    return lines


def prune_dlt_packages(settings: Settings, now: dt.datetime) -> str:
    """Completed load packages (`<pipeline>/load/loaded/<load id>/`): the data is in raw and bronze; dlt
    never reads them again. Packages not completed (normalized, in flight) are dlt's, and left alone."""
    days = settings.retention.dlt_packages_days
    before = (now - dt.timedelta(days=days)).timestamp()
    removed, freed = 0, 0
    for package in sorted((settings.state_dir / "dlt").glob("*/load/loaded/*")):
        marker = package / "package_completed.json"
        if marker.exists() and marker.stat().st_mtime < before:
            freed += sum(f.stat().st_size for f in package.rglob("*") if f.is_file())
            shutil.rmtree(package)
            removed += 1
    return f"dlt: deleted {removed:,} completed load packages older than {days} days ({freed / 1e6:,.1f} MB)"


def sqlmesh_janitor(settings: Settings) -> str:
    """SQLMesh's janitor: environments past their TTL (dev environments: a week by default) and the
    snapshots and tables no environment uses any more."""
    from pipelines import transform

    with db.cursor(settings) as cur:
        cur.execute("SELECT to_regclass('sqlmesh._environments')")
        if db.one(cur)[0] is None:
            return "SQLMesh: no state yet"
        cur.execute("SELECT count(*) FROM sqlmesh._environments")
        before = int(db.one(cur)[0])
    with db.advisory_lock(settings, transform.LOCK):  # never beside a plan or run using those tables
        transform.context(settings, load=False).run_janitor(ignore_ttl=False)
    with db.cursor(settings) as cur:
        cur.execute("SELECT count(*) FROM sqlmesh._environments")
        after = int(db.one(cur)[0])
    return f"SQLMesh: janitor removed {before - after} expired environments and their unused snapshots"


def airflow_db_clean(settings: Settings, now: dt.datetime, config_file: Path | None = None) -> str:
    """`airflow db clean` of metadata older than retention.airflow_days, once this deployment has one."""
    from pipelines.runtime import services

    if settings.database.embedded and not embedded.airflow_metadata_exists(settings):
        return "Airflow: no metadata database yet"
    if not settings.database.embedded and not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return "Airflow: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not set: its scheduler's host cleans it"
    days = settings.retention.airflow_days
    before = (now - dt.timedelta(days=days)).isoformat()
    services.run_airflow(
        settings, config_file, "db", "clean", "--clean-before-timestamp", before, "--yes", "--skip-archive"
    )
    return f"Airflow: metadata older than {days} days cleaned (`airflow db clean`)"
