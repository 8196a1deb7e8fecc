"""Runs SQLMesh (plan/run, environments) against the same Postgres as the pipeline, one run at a time.

Its parts live beside it: sqlmesh_context.py (the Config, the Context, what was last planned), restatement.py
(late raw loads restated in silver and gold), transform_report.py (freshness, failure messages, the demo's
picture of gold)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pipelines import catalog
from pipelines.restatement import LateLoads, restate_late_loads
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sqlmesh_context import (
    LOCK,
    TransformError,
    context,
    project_fingerprint,
    record_plan,
    unchanged_context,
)
from pipelines.transform_report import failure_message, gold_newest_close, latency

log = logging.getLogger(__name__)

__all__ = ["LOCK", "TransformError", "TransformSummary", "context", "transform"]


@dataclass(frozen=True)
class TransformSummary:
    environment: str
    plan_s: float
    run_s: float
    changed_models: list[str]
    run_id: str = ""
    split_s: dict[str, float] | None = None  # context (project load), plan, run


@dataclass
class _Run:
    """One transform's steps and their timings: SQLMesh's start-up (project load, plan) against the run of
    the due intervals (their SQL, audits), and the late loads (what awaited it, and their restatement)."""

    settings: Settings
    environment: str
    execution_time: dt.datetime | None
    seconds: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("context", "plan", "run", "late_loads"), 0.0)
    )
    changed: list[str] = field(default_factory=list)
    unchanged: bool = False
    restated: tuple[dt.datetime, dt.datetime] | None = None
    restate_s: float = 0.0
    fingerprint: str = ""  # of the project, as open() found it

    def open(self) -> Any:
        """The Context: one that reads nothing of the project when nothing changed since the last plan into
        prod (its due intervals run without parsing or planning), else one that loads it."""
        started = time.perf_counter()
        fingerprint = project_fingerprint(self.settings)
        ctx = unchanged_context(self.settings, self.environment, fingerprint)
        self.unchanged = ctx is not None
        if ctx is None:
            ctx = context(self.settings)
        self.fingerprint = fingerprint
        self.seconds["context"] = time.perf_counter() - started
        return ctx

    def plan_and_run(self, ctx: Any) -> None:
        from sqlmesh.core.console import get_console
        from sqlmesh.utils.errors import SQLMeshError

        console: Any = get_console()  # ours (context() installs it): it keeps the failures it shows
        console.failures.clear()
        try:
            if not self.unchanged:
                started = time.perf_counter()
                plan = ctx.plan(
                    self.environment,
                    auto_apply=True,
                    no_prompts=True,
                    execution_time=self.execution_time,
                    # the unit tests are CI's (`make test`) and the analyst's (`sqlmesh plan dev` runs
                    # them): the pipeline does not re-run them in the production database at each deploy
                    skip_tests=True,
                    # a new dev environment without changes yet: all of prod's models, as views (cheap)
                    include_unmodified=self.environment != "prod",
                )
                self.seconds["plan"] = time.perf_counter() - started
                self.changed = sorted(s.name for s in plan.new_snapshots)
                env = ctx.state_reader.get_environment(self.environment)
                record_plan(self.settings, self.environment, self.fingerprint, env.plan_id if env else "")
            started = time.perf_counter()
            # up to the run's clock (the sandbox's when given; by default SQLMesh stops at the wall clock);
            # right after a plan, which built everything due, SQLMesh's "no models are ready" goes to the log
            console.after_plan = not self.unchanged
            try:
                status = ctx.run(
                    self.environment, execution_time=self.execution_time, end=self.execution_time
                )
            finally:
                console.after_plan = False
            self.seconds["run"] = time.perf_counter() - started
        except SQLMeshError as exc:
            raise TransformError(failure_message(self.settings, self.environment, str(exc))) from None
        if status.is_failure:
            raise TransformError(failure_message(self.settings, self.environment, "sqlmesh run failed"))

    def restate_late(self, ctx: Any, late: LateLoads | None) -> None:
        started = time.perf_counter()
        self.restated = restate_late_loads(
            self.settings, ctx, late, self.execution_time, loaded=not self.unchanged
        )
        if self.restated:
            self.restate_s = time.perf_counter() - started
        else:  # only ops.raw_changes and SQLMesh's state were read
            self.seconds["late_loads"] += time.perf_counter() - started

    def details(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "plan_s": round(self.seconds["plan"], 3),
            "run_s": round(self.seconds["run"], 3),
            "split_s": {name: round(s, 3) for name, s in self.seconds.items()},
            "changed": self.changed,
            # raw loads of hours processed before (a backfill, a re-fetch): restated [from, to) after the run
            **(
                {"restated": [t.isoformat() for t in self.restated], "restate_s": round(self.restate_s, 3)}
                if self.restated
                else {}
            ),
        }


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
        steps = _Run(settings, environment, execution_time)
        ctx = steps.open()
        started = time.perf_counter()
        late = LateLoads.pending(settings, ctx) if environment == "prod" else None
        steps.seconds["late_loads"] = time.perf_counter() - started
        steps.plan_and_run(ctx)
        steps.restate_late(ctx, late)
        newest = gold_newest_close(settings, environment)
        run.details = steps.details() | latency(newest_before, newest, dt.datetime.now(dt.UTC) + offset)
        if environment != "prod":
            _grant_reader(settings, f"gold__{environment}")  # the dashboard shows dev environments too
    log.info(
        "transform done",
        extra={
            "environment": environment,
            "plan_s": round(steps.seconds["plan"], 2),
            "run_s": round(steps.seconds["run"], 2),
            "changed": steps.changed,
            "run_id": run.run_id,
        },
    )
    return TransformSummary(
        environment,
        steps.seconds["plan"],
        steps.seconds["run"],
        steps.changed,
        run.run_id,
        run.details["split_s"],
    )


def _grant_reader(settings: Settings, schema: str) -> None:
    """Let the read-only dashboard role read a SQLMesh environment's gold views (e.g. gold__dev)."""
    reader = settings.database.reader_role
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT to_regnamespace(%s) IS NOT NULL AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)",
            (schema, reader),
        )
        if db.one(cur)[0]:  # the schema exists and so does the reader role
            cur.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{reader}"')
            cur.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO "{reader}"')


class RawNotLoaded(TransformError):
    """A raw table the models read does not exist yet (its source has never loaded)."""


def require_raw_tables(settings: Settings) -> None:
    with db.cursor(settings) as cur:
        missing = []
        for table in catalog.RAW:
            cur.execute("SELECT to_regclass(%s)", (table.qualified,))
            if db.one(cur)[0] is None:
                missing.append((table.name, table.ingest_step))
    if missing:
        tables = ", ".join(f"raw.{t}" for t, _ in missing)
        steps = " and ".join(f"`cryptoflow ingest {s}`" for _, s in missing)
        raise RawNotLoaded(f"{tables} not loaded yet: run {steps} first (or `cryptoflow run`)")
