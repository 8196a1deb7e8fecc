"""Runs SQLMesh (plan/run, environments) against the same Postgres as the pipeline, one run at a time."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pipelines import catalog
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sqlmesh_console import LITERAL_IS_NOT, recording_console

log = logging.getLogger(__name__)
PROJECT_DIR = Path(__file__).resolve().parent.parent / "sqlmesh_project"
LOCK = "transform"


class TransformError(Exception):
    """A SQLMesh plan or run failed (a model error or a blocking audit); SQLMesh printed the details."""


@dataclass(frozen=True)
class TransformSummary:
    environment: str
    plan_s: float
    run_s: float
    changed_models: list[str]
    run_id: str = ""
    split_s: dict[str, float] | None = None  # context (project load), plan, run


def _no_usage_reporting() -> None:
    """SQLMesh reads this when it is first imported, before any Config: set it just before (never on import
    of this module). The Config below says the same for the `sqlmesh` CLI, which imports SQLMesh itself."""
    os.environ.setdefault("SQLMESH__DISABLE_ANONYMIZED_ANALYTICS", "true")


TRANSFORM_WORK_MEM = "256MB"  # per sort or hash of the transform's sessions (two models run at once)


def sqlmesh_config(settings: Settings) -> Any:
    """The SQLMesh Config whose gateway is this deployment's Postgres (embedded or configured)."""
    _no_usage_reporting()
    from sqlmesh.core.config import Config, GatewayConfig, ModelDefaultsConfig
    from sqlmesh.core.config.connection import PostgresConnectionConfig

    url = urlsplit(db.writer_url(settings))
    connection = PostgresConnectionConfig(
        host=parse_qs(url.query).get("host", [url.hostname or "localhost"])[0],
        port=url.port or 5432,
        user=unquote(url.username or ""),
        password=unquote(url.password or ""),
        database=url.path.lstrip("/"),
        concurrent_tasks=2,
        application_name="cryptoflow-sqlmesh",
    )
    return Config(
        # unit tests run on the same engine as the models (a Postgres dialect test on DuckDB proves little)
        gateways={"cryptoflow": GatewayConfig(connection=connection, test_connection=connection)},
        default_gateway="cryptoflow",
        model_defaults=ModelDefaultsConfig(
            dialect="postgres",
            start="2019-01-01",
            cron="@hourly",
            # Postgres's Memoize misjudges the (open_time, symbol) joins of a big build as cache hits and runs
            # 1.3M index probes (33 s) where a merge join over the same indexes takes 5 s
            # work_mem: a big build's sorts (the indicators' pass, staging's dedup) stay in memory
            pre_statements=[
                "@IF(@runtime_stage = 'evaluating', SET enable_memoize = off)",
                f"@IF(@runtime_stage = 'evaluating', SET work_mem = '{TRANSFORM_WORK_MEM}')",
            ],
        ),
        physical_table_naming_convention="hash_md5",  # Postgres truncates identifiers at 63 characters
        disable_anonymized_analytics=True,
    )


def context(settings: Settings, *, load: bool = True) -> Any:
    """A SQLMesh Context on this deployment's database; load=False reads nothing of the project (a run of
    what is already planned works from the state's snapshots)."""
    _no_usage_reporting()
    from sqlmesh import Context
    from sqlmesh.core.console import get_console, set_console

    if not hasattr(get_console(), "failures"):
        set_console(recording_console())
    warnings.filterwarnings("ignore", LITERAL_IS_NOT, SyntaxWarning, "<string>")
    db.ensure_database(settings)
    return Context(paths=str(PROJECT_DIR), config=sqlmesh_config(settings), load=load)


PROJECT_PARTS = ("models", "macros", "audits", "external_models.yaml")  # what a plan reads (tests aside)


def project_fingerprint(settings: Settings) -> str:
    """SHA-256 of what a plan depends on: the project's model, macro and audit files, the model defaults
    and the SQLMesh version. Equal fingerprints: nothing to plan."""
    import sqlmesh

    digest = hashlib.sha256(sqlmesh.__version__.encode())
    digest.update(sqlmesh_config(settings).model_defaults.model_dump_json().encode())
    for part in PROJECT_PARTS:
        root = PROJECT_DIR / part
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(PROJECT_DIR)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _planned(settings: Settings, environment: str) -> tuple[str, str] | None:
    """(project fingerprint, SQLMesh plan id) of this pipeline's last plan into the environment."""
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT project_sha256, plan_id FROM ops.transform_state WHERE environment = %s", (environment,)
        )
        row = cur.fetchone()
    return (row[0], row[1]) if row else None


def _record_plan(settings: Settings, environment: str, fingerprint: str, plan_id: str) -> None:
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ops.transform_state (environment, project_sha256, plan_id) VALUES (%s, %s, %s) "
            "ON CONFLICT (environment) DO UPDATE SET project_sha256 = EXCLUDED.project_sha256, "
            "plan_id = EXCLUDED.plan_id, planned_at = now()",
            (environment, fingerprint, plan_id),
        )


def _unchanged_context(settings: Settings, environment: str, fingerprint: str) -> Any | None:
    """Nothing to plan: a context that reads nothing of the project, when prod (a dev environment's plan
    also renews its expiry, so it always plans) holds exactly what this pipeline last planned into it, with
    this project, and that plan was finalized (not one from another checkout, nor one killed half-way)."""
    planned = _planned(settings, environment) if environment == "prod" else None
    if planned is None or planned[0] != fingerprint:
        return None
    ctx = context(settings, load=False)
    env = ctx.state_reader.get_environment(environment)
    return ctx if env is not None and env.finalized_ts is not None and env.plan_id == planned[1] else None


def transform(
    settings: Settings,
    environment: str = "prod",
    *,
    execution_time: dt.datetime | None = None,
    wait_s: float = 600,
) -> TransformSummary:
    """Apply model changes (plan, auto-applied) and process every interval due (run), serialised.

    Two SQLMesh runs at once can duplicate rows upstream, so runs wait for each other on an advisory lock.
    A failure raises TransformError naming each failed model and audit, with sample rows.
    """
    from sqlmesh.core.console import get_console
    from sqlmesh.utils.errors import SQLMeshError

    from pipelines.ops.observability import run_ledger
    from pipelines.upgrade import check_sqlmesh

    db.ensure_database(settings)
    check_sqlmesh(settings)  # SQLMesh's state from another SQLMesh version: migrated, or a one-line refusal
    with (
        db.advisory_lock(settings, LOCK, wait_s=wait_s),
        run_ledger(settings, "sqlmesh", f"transform {environment}") as run,
    ):
        # "now" on the clock this run uses: execution_time (the sandbox's) when given, else the wall clock
        offset = (execution_time - dt.datetime.now(dt.UTC)) if execution_time else dt.timedelta(0)
        require_raw_tables(settings)
        newest_before = gold_newest_close(settings, environment)
        started = time.perf_counter()
        fingerprint = project_fingerprint(settings)
        # nothing changed since the last plan into prod: run its due intervals, no parsing, no plan
        ctx = _unchanged_context(settings, environment, fingerprint)  # SQLMesh's start-up
        unchanged = ctx is not None
        if ctx is None:
            ctx = context(settings)
        context_s = time.perf_counter() - started
        console: Any = get_console()  # ours (context() installs it): it keeps the failures it shows
        console.failures.clear()
        changed: list[str] = []
        plan_s = restate_s = 0.0
        restated = None
        started = time.perf_counter()
        late = LateLoads.pending(settings, ctx) if environment == "prod" else None
        late_s = time.perf_counter() - started
        try:
            if not unchanged:
                started = time.perf_counter()
                plan = ctx.plan(
                    environment,
                    auto_apply=True,
                    no_prompts=True,
                    execution_time=execution_time,
                    # the unit tests are CI's (`make test`) and the analyst's (`sqlmesh plan dev` runs
                    # them): the pipeline does not re-run them in the production database at each deploy
                    skip_tests=True,
                    # a new dev environment without changes yet: all of prod's models, as views (cheap)
                    include_unmodified=environment != "prod",
                )
                plan_s = time.perf_counter() - started
                changed = sorted(s.name for s in plan.new_snapshots)
                env = ctx.state_reader.get_environment(environment)
                _record_plan(settings, environment, fingerprint, env.plan_id if env else "")
            started = time.perf_counter()
            # up to the run's clock (the sandbox's when given; by default SQLMesh stops at the wall clock);
            # right after a plan, which built everything due, SQLMesh's "no models are ready" goes to the log
            console.after_plan = not unchanged
            try:
                status = ctx.run(environment, execution_time=execution_time, end=execution_time)
            finally:
                console.after_plan = False
            run_s = time.perf_counter() - started
        except SQLMeshError as exc:
            raise TransformError(_failure_message(settings, environment, str(exc))) from None
        if status.is_failure:
            raise TransformError(_failure_message(settings, environment, "sqlmesh run failed"))
        started = time.perf_counter()
        restated = restate_late_loads(settings, ctx, late, execution_time, loaded=not unchanged)
        if restated:
            restate_s = time.perf_counter() - started
        else:  # only ops.raw_changes and SQLMesh's state were read
            late_s += time.perf_counter() - started
        run.details = {
            "environment": environment,
            "plan_s": round(plan_s, 3),
            "run_s": round(run_s, 3),
            # SQLMesh's own start-up (project load, plan) vs the run of the due intervals (their SQL, audits)
            # late_loads: the raw loads awaiting it and how far SQLMesh had processed (restate_s: a restatement)
            "split_s": {
                "context": round(context_s, 3),
                "plan": round(plan_s, 3),
                "run": round(run_s, 3),
                "late_loads": round(late_s, 3),
            },
            "changed": changed,
            # raw loads of hours processed before (a backfill, a re-fetch): restated [from, to) after the run
            **(
                {"restated": [t.isoformat() for t in restated], "restate_s": round(restate_s, 3)}
                if restated
                else {}
            ),
            **_latency(
                newest_before, gold_newest_close(settings, environment), dt.datetime.now(dt.UTC) + offset
            ),
        }
        if environment != "prod":
            _grant_reader(settings, f"gold__{environment}")  # the dashboard shows dev environments too
    log.info(
        "transform done",
        extra={
            "environment": environment,
            "plan_s": round(plan_s, 2),
            "run_s": round(run_s, 2),
            "changed": changed,
            "run_id": run.run_id,
        },
    )
    return TransformSummary(environment, plan_s, run_s, changed, run.run_id, run.details["split_s"])


def restate(
    settings: Settings,
    start: dt.datetime,
    end: dt.datetime,
    *,
    execution_time: dt.datetime | None = None,
    wait_s: float = 600,
) -> float:
    """Recompute prod's silver and gold over [start, end) after raw changed there: the staging model and
    everything downstream of it are restated for those intervals. Returns seconds."""
    db.ensure_database(settings)
    started = time.perf_counter()
    with db.advisory_lock(settings, LOCK, wait_s=wait_s):
        _restate(context(settings), settings, start, end, execution_time)
    return time.perf_counter() - started


def _restate(
    ctx: Any, settings: Settings, start: dt.datetime, end: dt.datetime, execution_time: dt.datetime | None
) -> None:
    from sqlmesh.utils.errors import SQLMeshError

    planned, env = _planned(settings, "prod"), ctx.state_reader.get_environment("prod")
    ours = planned is not None and env is not None and env.plan_id == planned[1]  # as our last plan left it
    try:
        ctx.plan(
            "prod",
            restate_models=[catalog.KLINES.incremental_model],  # and every model downstream of it
            start=start,
            end=end,
            auto_apply=True,
            no_prompts=True,
            execution_time=execution_time,
            skip_tests=True,
        )
    except SQLMeshError as exc:
        raise TransformError(_failure_message(settings, "prod", str(exc))) from None
    # A restatement changes no model (SQLMesh plans it from prod's own snapshots, whatever the project files
    # say) but is a plan of its own: when prod was as this pipeline's last plan left it, it still is, under the
    # restatement's plan id, and the next hourly run may skip planning. Else the next run plans as it would.
    if ours and planned is not None:
        env = ctx.state_reader.get_environment("prod")
        _record_plan(settings, "prod", planned[0], env.plan_id if env else "")


# How far forward a changed candle reaches in gold: fct_prices reads 721 hours of candles before its range (its
# 30-day windows), so the indicators of the 721 hours after a changed hour change with it.
GOLD_REACH = dt.timedelta(hours=721)
STAGING_MODEL = catalog.KLINES.incremental_model or ""  # the model late kline loads restate (and downstream)
HOUR = dt.timedelta(hours=1)


@dataclass
class LateLoads:
    """Raw loads of hours SQLMesh may already have processed (ops.raw_changes): a backfill of older history,
    a gap re-fetch, a verified revision. An incremental run reprocesses only its new intervals and the
    lookback before them; what lies earlier is restated here, from the changed hours to GOLD_REACH after."""

    ids: list[int]
    spans: list[tuple[dt.datetime, dt.datetime]]  # first and last hour of each load
    processed_until: dt.datetime | None  # end of the staging model's processed intervals before the run
    lookback: dt.timedelta

    @classmethod
    def pending(cls, settings: Settings, ctx: Any) -> LateLoads | None:
        """The changes of loads that have ended (a running load may not have committed its rows yet), and
        how far prod's staging model was processed; None when there is none."""
        with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT c.id, c.first_time, c.last_time FROM ops.raw_changes c WHERE c.table_name = %s "
                "AND NOT EXISTS (SELECT 1 FROM ops.pipeline_runs p "
                "WHERE p.status = 'running' AND starts_with(c.load_id, p.run_id)) ORDER BY c.id",
                (catalog.KLINES.name,),
            )
            rows = cur.fetchall()
        if not rows:
            return None
        until, lookback = _processed_until(ctx, STAGING_MODEL)
        # in UTC, whatever the session's time zone: the window starts on a whole UTC hour
        spans = [(first.astimezone(dt.UTC), last.astimezone(dt.UTC)) for _, first, last in rows]
        return cls([r[0] for r in rows], spans, until, lookback)

    def window(self, processed_until: dt.datetime | None) -> tuple[dt.datetime, dt.datetime] | None:
        """What to restate after a run that left the model processed up to `processed_until`: the changed
        hours before what the run reprocessed (its new intervals and their lookback), through GOLD_REACH."""
        if self.processed_until is None or processed_until is None:
            return None  # the first build processed every hour raw had
        if processed_until > self.processed_until:  # the run processed new intervals, with their lookback
            reprocessed_from = self.processed_until - self.lookback
        else:
            reprocessed_from = processed_until  # nothing was reprocessed
        late = [(first, last) for first, last in self.spans if first < reprocessed_from]
        if not late:  # later hours: reprocessed, or not processed yet (a later run will)
            return None
        start = min(first for first, _ in late).replace(minute=0, second=0, microsecond=0)
        end = min(max(last for _, last in late) + HOUR + GOLD_REACH, processed_until)
        return start, end

    def done(self, settings: Settings) -> None:
        with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
            cur.execute("DELETE FROM ops.raw_changes WHERE id = ANY(%s)", (self.ids,))


def _processed_until(ctx: Any, model: str) -> tuple[dt.datetime | None, dt.timedelta]:
    """End of the intervals prod's `model` has processed (SQLMesh's state; None before its first build), and
    the model's lookback."""
    from sqlglot import exp

    env = ctx.state_reader.get_environment("prod")
    for info in env.snapshots if env else ():
        table = exp.to_table(info.name)
        if f"{table.db}.{table.name}" == model:
            snapshot = ctx.state_reader.get_snapshots([info.snapshot_id])[info.snapshot_id]
            node = snapshot.node
            lookback = dt.timedelta(milliseconds=node.lookback * node.interval_unit.milliseconds)
            ends = [end for _, end in snapshot.intervals]
            return (dt.datetime.fromtimestamp(max(ends) / 1000, dt.UTC) if ends else None), lookback
    if env is None:
        return None, dt.timedelta(0)  # before the first build
    # forgetting the late loads would lose them: say what is wrong instead
    raise TransformError(
        f"{model} is not in prod, so the raw loads awaiting it (ops.raw_changes) cannot be restated: "
        "pipelines/catalog.py (Table.incremental_model) must name the staging model that reads the table"
    )


def restate_late_loads(
    settings: Settings, ctx: Any, late: LateLoads | None, execution_time: dt.datetime | None, *, loaded: bool
) -> tuple[dt.datetime, dt.datetime] | None:
    """After a run of prod (or on its own, `late` read just before): restate what its lookback did not
    reach, then forget those changes. `loaded`: ctx has read the project (a plan needs it). Returns the
    window restated, if any."""
    if late is None:
        return None
    window = late.window(_processed_until(ctx, STAGING_MODEL)[0])
    if window is not None:
        _restate(ctx if loaded else context(settings), settings, *window, execution_time)
        log.info("late raw loads restated in silver and gold", extra={"from": window[0], "to": window[1]})
    late.done(settings)
    return window


def restate_pending(
    settings: Settings, *, execution_time: dt.datetime | None = None, wait_s: float = 600
) -> tuple[float, tuple[dt.datetime, dt.datetime] | None]:
    """Restate now every change raw loads brought to hours prod has processed (`verify --apply`).
    Returns (seconds, the window restated or None)."""
    db.ensure_database(settings)
    started = time.perf_counter()
    with db.advisory_lock(settings, LOCK, wait_s=wait_s):
        ctx = context(settings)
        window = restate_late_loads(
            settings, ctx, LateLoads.pending(settings, ctx), execution_time, loaded=True
        )
    return time.perf_counter() - started, window


def _grant_reader(settings: Settings, schema: str) -> None:
    """Let the read-only dashboard role read a SQLMesh environment's gold views (e.g. gold__dev)."""
    reader = settings.database.reader_role
    with contextlib.closing(db.connect(settings)) as conn, conn, conn.cursor() as cur:
        cur.execute(
            "SELECT to_regnamespace(%s) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)",
            (schema, reader),
        )
        if db.one(cur)[0]:  # the schema exists and so does the reader role
            cur.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{reader}"')
            cur.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{reader}"')


def gold_newest_close(settings: Settings, environment: str = "prod") -> dt.datetime | None:
    """Close time of the newest candle in gold.fct_prices (of that environment); None before the first build."""
    schema = "gold" if environment == "prod" else f"gold__{environment}"
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"{schema}.fct_prices",))
        if db.one(cur)[0] is None:
            return None
        cur.execute(f'SELECT max(open_time) FROM "{schema}".fct_prices')
        newest = db.one(cur)[0]
    return None if newest is None else newest.astimezone(dt.UTC) + dt.timedelta(hours=1)


def _latency(before: dt.datetime | None, after: dt.datetime | None, now: dt.datetime) -> dict[str, Any]:
    """End-to-end latency of the newest candle this run brought into gold: from its close to now."""
    if after is None or (before is not None and after <= before):
        return {}  # nothing new reached gold: no latency to report
    latency = (now - after).total_seconds()
    return {"gold_newest_close": after.isoformat(), "latency_s": round(latency, 3)}


def _failure_message(settings: Settings, environment: str, headline: str, samples: int = 5) -> str:
    """Name each failed model and audit, with a few of the offending rows (the audit query, re-run)."""

    from sqlmesh.core.console import get_console
    from sqlmesh.utils.errors import AuditError, NodeAuditsErrors

    lines = [f"{headline} (environment '{environment}')"]
    for failure in getattr(get_console(), "failures", []):
        audits = [e for e in _causes(failure) if isinstance(e, AuditError)]
        audits += [a for e in _causes(failure) if isinstance(e, NodeAuditsErrors) for a in e.errors]
        if not audits:
            lines.append(f"- {failure}: {failure.__cause__}")
        for audit in audits:
            lines.append(
                f"- model {audit.model_name}: audit '{audit.audit_name}' failed for {audit.count} row(s)"
            )
            lines += _sample_rows(settings, audit.sql(dialect="postgres"), samples)
    return "\n".join(lines)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__
    return chain


def _sample_rows(settings: Settings, audit_sql: str, samples: int) -> list[str]:
    """A few of the rows an audit query returns (a courtesy: the failure itself is already reported)."""
    try:
        with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT * FROM ({audit_sql}) AS failed LIMIT {samples}")
            names = [d.name for d in cur.description or ()]
            return [f"    {dict(zip(names, row, strict=True))}" for row in cur.fetchall()]
    except Exception as exc:
        return [f"    (sample rows unavailable: {exc})"]


class RawNotLoaded(TransformError):
    """A raw table the models read does not exist yet (its source has never loaded)."""


def require_raw_tables(settings: Settings) -> None:
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        missing = []
        for table in catalog.RAW:
            cur.execute("SELECT to_regclass(%s)", (table.qualified,))
            if db.one(cur)[0] is None:
                missing.append((table.name, table.ingest_step))
    if missing:
        tables = ", ".join(f"raw.{t}" for t, _ in missing)
        steps = " and ".join(f"`cryptoflow ingest {s}`" for _, s in missing)
        raise RawNotLoaded(f"{tables} not loaded yet: run {steps} first (or `cryptoflow run`)")


def describe_gold(settings: Settings, symbol: str = "BTCUSDT", rows: int = 5) -> str:
    """Row counts of the gold tables and the newest rows of one symbol from fct_prices."""
    lines = ["gold tables (synthetic sandbox data):"]
    with contextlib.closing(db.connect(settings)) as conn, conn.cursor() as cur:
        for table in ("fct_prices", "fct_daily_summary", "fct_market_sentiment", "dim_crypto", "dim_date"):
            cur.execute(f"SELECT count(*) FROM gold.{table}")
            lines.append(f"  gold.{table:<22} {db.one(cur)[0]:>12,} rows")
        cur.execute(
            "SELECT open_time, close, change_24h, ma_7d, vwap_24h, volatility_30d, fng_label FROM gold.fct_prices "
            "WHERE symbol = %s ORDER BY open_time DESC LIMIT %s",
            (symbol, rows),
        )
        sample = cur.fetchall()
    lines += ["", f"newest {symbol} rows of gold.fct_prices:"]
    lines.append(
        f"  {'open_time (UTC)':<17} {'close':>14} {'chg 24h':>8} {'MA 7d':>12} {'VWAP 24h':>12} {'vol 30d':>8}  F&G"
    )
    for open_time, close, change, ma, vwap, vol, label in sample:
        lines.append(
            f"  {open_time:%Y-%m-%d %H:%M} {close:>14.4f} {_pct(change):>8} {ma:>12.4f} {vwap:>12.4f} "
            f"{_pct(vol, signed=False):>8}  {label or ''}"
        )
    return "\n".join(lines)


def _pct(value: float | None, signed: bool = True) -> str:
    return "" if value is None else f"{value * 100:{'+' if signed else ''}.2f}%"
