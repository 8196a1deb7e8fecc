"""Restating silver and gold after raw changed under hours SQLMesh already processed: a backfill of older
history, a gap re-fetch, a verified revision (ops.raw_changes). An incremental run reprocesses only its new
intervals and their lookback; what lies earlier is restated here, from the changed hours to GOLD_REACH after."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

from pipelines import catalog
from pipelines.runtime import db
from pipelines.settings import Settings
from pipelines.sqlmesh_context import LOCK, TransformError, context, planned_into, record_plan
from pipelines.transform_report import failure_message

log = logging.getLogger(__name__)


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
    ctx: Any,
    settings: Settings,
    start: dt.datetime,
    end: dt.datetime,
    execution_time: dt.datetime | None,
    model: str | None = None,
) -> None:
    """Restate `model` (by default the staging model late kline loads land in) and every model downstream
    of it over [start, end)."""
    from sqlmesh.utils.errors import SQLMeshError

    planned, env = planned_into(settings, "prod"), ctx.state_reader.get_environment("prod")
    ours = planned is not None and env is not None and env.plan_id == planned[1]  # as our last plan left it
    try:
        ctx.plan(
            "prod",
            restate_models=[model or STAGING_MODEL],  # and every model downstream of it
            start=start,
            end=end,
            auto_apply=True,
            no_prompts=True,
            execution_time=execution_time,
            skip_tests=True,
        )
    except SQLMeshError as exc:
        raise TransformError(failure_message(settings, "prod", str(exc))) from None
    # A restatement changes no model (SQLMesh plans it from prod's own snapshots, whatever the project files
    # say) but is a plan of its own: when prod was as this pipeline's last plan left it, it still is, under the
    # restatement's plan id, and the next hourly run may skip planning. Else the next run plans as it would.
    if ours and planned is not None:
        env = ctx.state_reader.get_environment("prod")
        record_plan(settings, "prod", planned[0], env.plan_id if env else "")


# How far forward a changed candle reaches in gold: fct_prices reads 721 hours of candles before its range (its
# 30-day windows), so the indicators of the 721 hours after a changed hour change with it.
GOLD_REACH = dt.timedelta(hours=721)
STAGING_MODEL = catalog.KLINES.incremental_model or ""  # the model late kline loads restate (and downstream)
# The daily tables: processed a UTC day at a time, once the day has ended (fct_market_sentiment reads it)
DAILY_MODEL = catalog.FCT_DAILY_SUMMARY.qualified
REVISION_SUFFIX = "-rev"  # a load of revised candles (ingest/klines.py names it <load id>-rev)
HOUR = dt.timedelta(hours=1)


def _reprocessed_from(before: dt.datetime, after: dt.datetime, lookback: dt.timedelta) -> dt.datetime:
    """From where a run reprocessed a model that was processed up to `before` and is now up to `after`:
    new intervals come with their lookback; without new ones nothing is reprocessed."""
    return before - lookback if after > before else after


@dataclass
class LateLoads:
    """Raw loads of hours SQLMesh may already have processed (ops.raw_changes): a backfill of older history,
    a gap re-fetch, a verified revision. An incremental run reprocesses only its new intervals and the
    lookback before them; what lies earlier is restated here, from the changed hours to GOLD_REACH after."""

    ids: list[int]
    spans: list[tuple[dt.datetime, dt.datetime]]  # first and last hour of each load
    processed_until: dt.datetime | None  # end of the staging model's processed intervals before the run
    lookback: dt.timedelta
    loads: list[str]  # the load id of each span
    daily_until: dt.datetime | None  # the same for the daily tables
    daily_lookback: dt.timedelta

    @classmethod
    def pending(cls, settings: Settings, ctx: Any) -> LateLoads | None:
        """The changes of loads that have ended (a running load may not have committed its rows yet), and
        how far prod's staging model was processed; None when there is none."""
        with db.cursor(settings) as cur:
            cur.execute(
                "SELECT c.id, c.first_time, c.last_time, c.load_id FROM ops.raw_changes c WHERE c.table_name = %s "
                "AND NOT EXISTS (SELECT 1 FROM ops.pipeline_runs p "
                "WHERE p.status = 'running' AND starts_with(c.load_id, p.run_id)) ORDER BY c.id",
                (catalog.KLINES.name,),
            )
            rows = cur.fetchall()
        if not rows:
            return None
        until, lookback = _processed_until(ctx, STAGING_MODEL)
        daily_until, daily_lookback = _processed_until(ctx, DAILY_MODEL)
        # in UTC, whatever the session's time zone: the window starts on a whole UTC hour
        spans = [(first.astimezone(dt.UTC), last.astimezone(dt.UTC)) for _, first, last, _ in rows]
        loads = [load for *_, load in rows]
        return cls([r[0] for r in rows], spans, until, lookback, loads, daily_until, daily_lookback)

    def window(self, processed_until: dt.datetime | None) -> tuple[dt.datetime, dt.datetime] | None:
        """What to restate after a run that left the model processed up to `processed_until`: the changed
        hours before what the run reprocessed (its new intervals and their lookback), through GOLD_REACH."""
        if self.processed_until is None or processed_until is None:
            return None  # the first build processed every hour raw had
        reprocessed_from = _reprocessed_from(self.processed_until, processed_until, self.lookback)
        late = [(first, last) for first, last in self.spans if first < reprocessed_from]
        if not late:  # later hours: reprocessed, or not processed yet (a later run will)
            return None
        start = min(first for first, _ in late).replace(minute=0, second=0, microsecond=0)
        end = min(max(last for _, last in late) + HOUR + GOLD_REACH, processed_until)
        return start, end

    def daily_window(
        self, daily_until: dt.datetime | None, restated: tuple[dt.datetime, dt.datetime] | None
    ) -> tuple[dt.datetime, dt.datetime] | None:
        """Days the daily tables had closed before the run that a load brought new hours to (the run after
        midnight failed; the next one brings the day's last candle), outside what `restated` (the window
        above) already covers. The daily model processes a day once, when it has ended, and reaches back
        (its lookback) only when the next day ends: without this, such a day would miss its last hours for
        up to a day. Revision loads are left to that lookback: they come nearly every hour and change a
        volume by a fraction of a percent, and restating for each would double the hourly run's time."""
        if self.daily_until is None or daily_until is None:
            return None
        reprocessed_from = _reprocessed_from(self.daily_until, daily_until, self.daily_lookback)
        firsts = [
            first
            for (first, _), load in zip(self.spans, self.loads, strict=True)
            if first < reprocessed_from
            and not load.endswith(REVISION_SUFFIX)
            and not (restated and restated[0] <= first < restated[1])
        ]
        if not firsts:
            return None
        return min(firsts).replace(hour=0, minute=0, second=0, microsecond=0), reprocessed_from

    def done(self, settings: Settings) -> None:
        with db.cursor(settings) as cur:
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
        ctx = ctx if loaded else context(settings)
        loaded = True
        _restate(ctx, settings, *window, execution_time)
        log.info("late raw loads restated in silver and gold", extra={"from": window[0], "to": window[1]})
    days = late.daily_window(_processed_until(ctx, DAILY_MODEL)[0], window)
    if days is not None:
        _restate(ctx if loaded else context(settings), settings, *days, execution_time, DAILY_MODEL)
        log.info(
            "late hours of closed days restated in the daily tables", extra={"from": days[0], "to": days[1]}
        )
    late.done(settings)
    return window or days


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
