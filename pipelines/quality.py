"""Runs the Soda Core scans in audits/ per layer, stores every outcome in ops.dq_results, summarises."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from pipelines import catalog
from pipelines.ops.observability import new_run_id
from pipelines.redaction import redact
from pipelines.runtime import db
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.bronze import BronzeLake

log = logging.getLogger(__name__)
CHECKS_DIR = Path(__file__).resolve().parent.parent / "audits"
LAYERS = ("raw", "silver", "gold")


@dataclass(frozen=True)
class CheckResult:
    layer: str
    name: str
    table: str
    level: str
    outcome: str
    value: float | None
    diagnostics: dict[str, Any]


@dataclass(frozen=True)
class CheckRun:
    run_id: str
    results: list[CheckResult]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome in ("fail", "error")]


def _telemetry_off(settings: Settings) -> None:
    """Soda reads its global config (usage statistics included) from the first path registered: ours."""
    from soda.common.config_helper import ConfigHelper

    path = settings.state_dir / "soda" / "config.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(yaml.safe_dump({"send_anonymous_usage_stats": False, "user_cookie_id": "cryptoflow"}))
    ConfigHelper.get_instance(str(path))


def _data_source_yaml(settings: Settings, layer: str) -> str:
    """One Soda data source per layer: its schema is the layer (checks name tables without a schema)."""
    url = urlsplit(db.writer_url(settings))
    config = {
        f"data_source {layer}": {
            "type": "postgres",
            "host": parse_qs(url.query).get("host", [url.hostname or "localhost"])[0],
            "port": str(url.port or 5432),
            "username": unquote(url.username or ""),
            "password": unquote(url.password or ""),
            "database": url.path.lstrip("/"),
            "schema": layer,
        }
    }
    return yaml.safe_dump(config)


# the Soda variables of the freshness checks (audits/*.yml) -> the table whose threshold each one is
SODA_FRESHNESS = {
    "FRESHNESS_OHLCV": catalog.KLINES,
    "FRESHNESS_OHLCV_SILVER": catalog.STG_OHLCV,
    "FRESHNESS_OHLCV_GOLD": catalog.FCT_PRICES,
    "FRESHNESS_MARKETS": catalog.MARKETS,
}


def _variables(settings: Settings, now: dt.datetime) -> dict[str, str]:
    c = settings.checks
    hours = catalog.column_max_age_hours(settings)
    return {
        "NOW": now.isoformat(),
        **{name: f"{int(hours[table.qualified] * 60)}m" for name, table in SODA_FRESHNESS.items()},
        "SPIKE_THRESHOLD": str(c.spike_return_threshold),
        "EXPECTED_COINS": str(c.expected_market_coins),
    }


def _scan_layer(settings: Settings, layer: str, now: dt.datetime) -> list[CheckResult]:
    from soda.scan import Scan

    scan = Scan()
    scan.set_data_source_name(layer)
    scan.add_configuration_yaml_str(_data_source_yaml(settings, layer))
    scan.add_variables(_variables(settings, now))
    scan.add_sodacl_yaml_str((CHECKS_DIR / f"{layer}.yml").read_text(), file_name=f"audits/{layer}.yml")
    scan.set_scan_definition_name(f"cryptoflow_{layer}")
    scan.execute()
    results = []
    for check in scan.get_scan_results().get("checks", []):
        outcome = check.get("outcome") or "error"
        diagnostics = check.get("diagnostics", {}) or {}
        value = diagnostics.get("value")
        if diagnostics.get("measure") == "time" and isinstance(value, int | float):
            value = value / 1000  # Soda measures freshness in ms; ops.dq_results keeps seconds
        results.append(
            CheckResult(
                layer=layer,
                name=check.get("name"),
                table=check.get("table") or "",
                level="warn" if _is_warn_only(check) else "fail",
                outcome=outcome,
                value=float(value) if isinstance(value, int | float) else None,
                diagnostics={k: v for k, v in diagnostics.items() if k != "blocks"},
            )
        )
    if scan.has_error_logs():
        # a check that could not be evaluated is a failure of the scan, never a silent pass
        errors = redact(scan.get_error_logs_text() or "unknown error")
        log.error("soda scan reported errors", extra={"layer": layer, "errors": errors[:2000]})
        results.append(
            CheckResult(
                layer,
                f"{layer} scan ran without errors",
                layer,
                "fail",
                "error",
                None,
                {"errors": errors[:2000]},
            )
        )
    return results


def _is_warn_only(check: dict[str, Any]) -> bool:
    """Checks written with a `warn:` threshold only ever warn (their fail threshold is out of reach)."""
    return "warn:" in check.get("definition", "")


COMPACTION_WAIT_S = 120  # a compaction holds a table's bronze for one partition's swap at a time


def bronze_reconciliation(settings: Settings) -> list[CheckResult]:
    """Bronze rows equal raw rows per load id (Parquet is outside Soda's reach, so this one is Python)."""
    from pipelines import compaction
    from pipelines.bronze import lake_errors, open_lake
    from pipelines.errors import LakeUnavailable

    lake = open_lake(settings)
    results = []
    for table in (t.name for t in catalog.RAW):  # every raw table has its bronze copy
        with db.cursor(settings) as cur:
            cur.execute("SELECT now()")
            began = db.one(cur)[0]
        # never in the middle of a compaction's swap (it holds the lock while it swaps a partition's files)
        name = f"bronze rows equal raw rows per load id ({table})"
        try:
            with (
                db.advisory_lock(settings, compaction.bronze_lock(table), COMPACTION_WAIT_S, shared=True),
                lake_errors(lake),
            ):
                compaction.recover(lake, table)
                in_bronze = _bronze_rows_per_load(settings, lake, table)
        except LakeUnavailable as exc:  # the check cannot be made: an error of this check, not of the run
            results.append(CheckResult("raw", name, table, "fail", "error", None, {"error": str(exc)}))
            continue
        with db.cursor(settings) as cur:
            cur.execute("SELECT to_regclass(%s)", (f"raw.{table}",))
            in_raw = {}
            if db.one(cur)[0] is not None:
                cur.execute(f"SELECT load_id, count(*) FROM raw.{table} GROUP BY load_id")
                in_raw = dict(cur.fetchall())
        mismatched = {
            load: (in_bronze.get(load, 0), in_raw.get(load, 0))
            for load in set(in_bronze) | set(in_raw)
            if in_bronze.get(load, 0) != in_raw.get(load, 0)
        }
        in_flight = _loads_in_flight(settings, list(mismatched), began)
        # a load in flight that merges (revised candles, a snapshot replaced) takes rows of older loads in raw
        # at its commit and in bronze only when it settles: their surplus in bronze waits for that too
        awaiting = {
            load for load, (b, r) in mismatched.items() if in_flight and load not in in_flight and b > r
        }
        mismatched = {
            load: n for load, n in mismatched.items() if load not in in_flight and load not in awaiting
        }
        results.append(
            CheckResult(
                "raw",
                name,
                table,
                "fail",
                "fail" if mismatched else "pass",
                float(sum(abs(b - r) for b, r in mismatched.values())),
                {
                    "mismatched_loads": {
                        k: {"bronze": b, "raw": r} for k, (b, r) in list(mismatched.items())[:20]
                    },
                    **({"loads_in_flight": sorted(in_flight)} if in_flight else {}),
                    **({"awaiting_their_settle": sorted(awaiting)} if awaiting else {}),
                },
            )
        )
    return results


def _bronze_rows_per_load(settings: Settings, lake: BronzeLake, table: str) -> dict[str, int]:
    """Rows per load id in bronze, reading only the files ops.bronze_index does not hold as they are now;
    the index is brought up to date in the same go (files gone deleted, files new or rewritten replaced)."""
    from pipelines.bronze import FileLoads, rows_per_load

    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT path, size, mtime_ns, load_id, rows FROM ops.bronze_index WHERE table_name = %s", (table,)
        )
        known: dict[str, FileLoads] = {}
        for path, size, mtime_ns, load_id, rows in cur.fetchall():
            known.setdefault(path, FileLoads(size, mtime_ns, {})).loads[load_id] = rows
    # the lake is read outside any transaction: a first read of years of files must not hold back vacuum
    totals, index = rows_per_load(lake, table, known)
    with db.cursor(settings) as cur:
        stale = [path for path, entry in known.items() if index.get(path) != entry]
        fresh = [(path, e) for path, e in index.items() if known.get(path) != e]
        cur.execute("DELETE FROM ops.bronze_index WHERE table_name = %s AND path = ANY(%s)", (table, stale))
        rows_ = [(path, e.size, e.mtime_ns, load, n) for path, e in fresh for load, n in e.loads.items()]
        cur.execute(
            "INSERT INTO ops.bronze_index (table_name, path, size, mtime_ns, load_id, rows) "
            "SELECT %s, * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::bigint[]) "
            "ON CONFLICT (table_name, path, load_id) DO UPDATE SET size = EXCLUDED.size, "
            "mtime_ns = EXCLUDED.mtime_ns, rows = EXCLUDED.rows",
            (table, *([list(column) for column in zip(*rows_, strict=True)] if rows_ else [[]] * 5)),
        )
    return totals


def _loads_in_flight(settings: Settings, loads: list[str], began: dt.datetime) -> set[str]:
    """Those of `loads` whose run was between bronze and raw while the check read them (a backfill batch on
    another worker): alive now (it holds its lock `run:<run id>`), or finished since the check began (on the
    database's clock). A killed run's half-written load is not among them: that mismatch is real."""
    if not loads:
        return set()
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT l.load_id, r.run_id, r.status, r.finished_at >= %s FROM unnest(%s::text[]) AS l(load_id) "
            "JOIN ops.pipeline_runs r ON starts_with(l.load_id, r.run_id)",
            (began, loads),
        )
        runs = cur.fetchall()
    return {
        load
        for load, run_id, status, finished_since in runs
        if finished_since or (status == "running" and not db.lock_is_free(settings, f"run:{run_id}"))
    }


def run_checks(
    settings: Settings, layers: tuple[str, ...] = LAYERS, now: dt.datetime | None = None
) -> CheckRun:
    """Scan the given layers, store every outcome in ops.dq_results and return them."""
    _telemetry_off(settings)
    db.ensure_database(settings)
    now = now or dt.datetime.now(dt.UTC)
    run_id = new_run_id("dq")
    results = [r for layer in layers for r in _scan_layer(settings, layer, now)]
    if "raw" in layers:
        results += bronze_reconciliation(settings)
    store_results(settings, run_id, results, now)
    return CheckRun(run_id, results)


def store_results(settings: Settings, run_id: str, results: list[CheckResult], now: dt.datetime) -> None:
    """Into ops.dq_results, which the reader (dashboard, metrics) can read: the diagnostics are redacted
    (a scan's error text can quote its connection, password included)."""
    with db.cursor(settings) as cur:
        cur.executemany(
            "INSERT INTO ops.dq_results (run_id, layer, check_name, table_name, level, outcome, measured_value, "
            "diagnostics, checked_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    run_id,
                    r.layer,
                    r.name,
                    r.table,
                    r.level,
                    r.outcome,
                    r.value,
                    redact(json.dumps(r.diagnostics, default=str)),
                    now,
                )
                for r in results
            ],
        )


def render(run: CheckRun) -> str:
    width = max((len(r.name) for r in run.results), default=10)
    lines = [f"{'layer':<7} {'outcome':<8} {'value':>12}  check", "-" * (width + 32)]
    for r in run.results:
        value = "" if r.value is None else f"{r.value:g}"
        lines.append(f"{r.layer:<7} {r.outcome:<8} {value:>12}  {r.name}")
    counts = {o: sum(r.outcome == o for r in run.results) for o in ("pass", "warn", "fail", "error")}
    lines.append("")
    lines.append(f"run {run.run_id}: " + ", ".join(f"{n} {o}" for o, n in counts.items()))
    return "\n".join(lines)
