"""The soak's report: what a long run left behind (bronze files, ops rows, database bytes, dead rows), the
incidents and the alerts they sent, and whether raw, bronze and gold are exact - gold against a rebuild of the
same raw from scratch, the rule the upgrade test judges by too."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import subprocess
from typing import Any

from pipelines import catalog, compaction, quality, transform
from pipelines.bronze import existing_files, open_lake
from pipelines.runtime import db, embedded
from pipelines.settings import Settings

OPENED = ("Data-quality check failing", "Pipeline run failed")  # the first words of an opening alert
RTOL = 1e-9  # gold against a rebuild: volatility's float sums may differ in the last bits
FACTS = (
    "SELECT symbol, open_time, close, change_1h, change_24h, change_7d, ma_7d, ma_30d, vwap_24h, "
    "volatility_24h, volatility_7d, volatility_30d, candles_in_7d, returns_in_30d, fng_value "
    "FROM gold.fct_prices ORDER BY symbol, open_time"
)
DAILY = "SELECT symbol, day, close, candles, ma_7d, ma_30d FROM gold.fct_daily_summary ORDER BY 1, 2"


def db_bytes(settings: Settings) -> int:
    with db.cursor(settings) as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        return int(db.one(cur)[0])


def _ops_rows(settings: Settings) -> dict[str, int]:
    with db.cursor(settings) as cur:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ops' ORDER BY 1")
        tables = [name for (name,) in cur.fetchall()]
        counts = {}
        for table in tables:
            cur.execute(f'SELECT count(*) FROM ops."{table}"')
            counts[table] = int(db.one(cur)[0])
    return counts


def _bronze_files(settings: Settings, end: dt.datetime) -> tuple[dict[str, int], int]:
    """Files per bronze table, and the most any closed day's partition of any table holds."""
    lake, closed = open_lake(settings), compaction.closed_before(settings, end)
    files, most = {}, 0
    for table in catalog.RAW:
        partitions = existing_files(lake, table.name)
        files[table.name] = sum(len(f) for f in partitions.values())
        most = max([most, *(len(f) for p, f in partitions.items() if compaction.day_of(p) < closed)])
    return files, most


def gold_differences(a: Settings, b: Settings) -> list[str]:
    """Where two databases' gold facts differ: keys, prices and counts exactly, floats to RTOL."""
    found = []
    for sql in (FACTS, DAILY):
        rows = []
        for settings in (a, b):
            with db.cursor(settings) as cur:
                cur.execute(sql)
                rows.append(cur.fetchall())
        if len(rows[0]) != len(rows[1]) or not rows[0]:
            found.append(f"{sql.split('FROM ')[1].split()[0]}: {len(rows[0])} rows against {len(rows[1])}")
            continue
        for x, y in zip(*rows, strict=True):
            if not all(
                math.isclose(u, v, rel_tol=RTOL) if isinstance(u, float) and isinstance(v, float) else u == v
                for u, v in zip(x, y, strict=True)
            ):
                found.append(f"{x} != {y}")
    return found


def _rebuild(settings: Settings, end: dt.datetime) -> Settings:
    """The same raw (and ops.pairs, which gold reads) in a database of its own, transformed from scratch."""
    fresh = settings.model_copy(
        update={"database": settings.database.model_copy(update={"name": "soak_rebuild"})}
    )
    db.ensure_database(fresh)
    dump = subprocess.run(
        [
            str(embedded.server_program("pg_dump")),
            "--no-owner",
            "--clean",
            "--if-exists",
            "-t",
            "raw.*",
            "-t",
            "ops.pairs",
            db.writer_url(settings),
        ],
        capture_output=True,
        check=True,
    )
    subprocess.run(
        [str(embedded.server_program("psql")), "-q", "-v", "ON_ERROR_STOP=1", db.writer_url(fresh)],
        input=dump.stdout,
        capture_output=True,
        check=True,
    )
    transform.transform(fresh, execution_time=end)
    return fresh


def report(
    settings: Settings,
    *,
    received: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    faults: dict[int, str],
    durations: list[float],
    db_bytes_start: int,
    end: dt.datetime,
    delisted: str | None,
) -> dict[str, Any]:
    """The soak's JSON report (its keys: README's "A long run: the soak"), with the issue's targets."""
    files, most = _bronze_files(settings, end)
    reconciled = all(r.outcome == "pass" for r in quality.bronze_reconciliation(settings))
    differences = gold_differences(settings, _rebuild(settings, end))
    # an incident: a check or a run going from passing to failing (ops.alerts_sent has each one's delivery);
    # an alert: what reached Slack saying so
    with db.cursor(settings) as cur:
        cur.execute("SELECT check_name FROM ops.alerts_sent WHERE kind = 'opened' ORDER BY id")
        incidents = [name for (name,) in cur.fetchall()]
        cur.execute(
            "SELECT gap_class, count(*) FROM ops.gaps WHERE gap_class IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
        gaps = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM ops.revisions")
        revisions = int(db.one(cur)[0])
        cur.execute("SELECT count(*) FROM ops.pipeline_runs WHERE error LIKE '%%abandoned%%'")
        abandoned = int(db.one(cur)[0])
        cur.execute(
            "SELECT status, (SELECT array_agg(status ORDER BY valid_from) FROM ops.pair_status_history h "
            "WHERE h.symbol = p.symbol) FROM ops.pairs p WHERE symbol = %s",
            (delisted,),
        )
        pair = cur.fetchone()
    alerts = sum(body["text"].startswith(OPENED) for body in received)
    ops = _ops_rows(settings)
    retention = settings.retention
    out = {
        "cycles": len(durations),
        "cycle_s_first_day_median": round(statistics.median(durations[:24]), 2),
        "cycle_s_last_day_median": round(statistics.median(durations[-24:]), 2),
        "bronze_files": files,
        "bronze_files_per_closed_day_max": most,
        "ops_rows": ops,
        "db_bytes": {"start": db_bytes_start, "end": db_bytes(settings)},
        "dead_rows": dead_rows(settings),
        "incidents": len(incidents),
        "incident_names": incidents,
        "alerts_sent": alerts,
        "faults": [{"cycle": c, "fault": f} for c, f in sorted(faults.items())],
        "known_gaps": gaps,  # missing (pair, hour)s by class: the outage hour is an exchange_outage
        "revisions": revisions,  # candles the market revised after their close, restated
        "abandoned_runs": abandoned,  # killed runs the next run recovered
        # the delisted pair: its status now, and its spells (TRADING, BREAK, NOT_LISTED once removed)
        "delisted": {"symbol": delisted, "status": pair[0], "spells": pair[1]} if pair else None,
        "failures": failures,
        "exact": reconciled and not differences,
        "exact_details": {"bronze_equals_raw": reconciled, "gold_differences": differences[:10]},
    }
    out["targets"] = {
        "cycle_time_flat": out["cycle_s_last_day_median"] <= 1.2 * out["cycle_s_first_day_median"],
        "one_bronze_file_per_closed_day": most <= 1,
        "ops_within_retention": _within_retention(settings, end, retention),
        "one_alert_per_incident": alerts == len(incidents),
        "exact": out["exact"],
    }
    return out


def dead_rows(settings: Settings) -> dict[str, Any]:
    """Dead rows left in the pipeline's tables (raw, ops, SQLMesh's), in total and the three largest: what
    autovacuum (and maintain's vacuum) had not reached at the end."""
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT schemaname || '.' || relname, n_dead_tup, n_live_tup FROM pg_stat_user_tables "
            "WHERE schemaname IN ('raw', 'ops') OR schemaname LIKE 'sqlmesh%%' ORDER BY n_dead_tup DESC"
        )
        tables = cur.fetchall()
    return {
        "total": sum(int(dead) for _, dead, _ in tables),
        "largest": [{"table": t, "dead": int(d), "live": int(n)} for t, d, n in tables[:3]],
    }


def _within_retention(settings: Settings, end: dt.datetime, retention: Any) -> bool:
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM ops.dq_results WHERE checked_at < %(c)s AND run_id <> "
            "(SELECT run_id FROM ops.dq_results ORDER BY checked_at DESC LIMIT 1)) + "
            "(SELECT count(*) FROM ops.alerts_sent WHERE sent_at < %(a)s)",
            {
                "c": end - dt.timedelta(days=retention.checks_days + 1),
                "a": end - dt.timedelta(days=retention.alerts_days + 1),
            },
        )
        return int(db.one(cur)[0]) == 0
