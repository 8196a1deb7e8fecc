"""The small adapter between Airflow and the pipeline: task callbacks that write ops.pipeline_runs and alert.

Every try of every task leaves one row in ops.pipeline_runs (source `airflow:<dag_id>.<task_id>[map
index]`, status success | up_for_retry | failed), a failed try's `error` saying why: what the task raised
(the line an operator acts on), or, for a try Airflow failed from outside (no exception reached the
callback), that much and where the logs say more (see _cause). A task that fails past its retries opens
the incident `run:<dag_id>.<task_id>[map index]` and posts one Slack message; its next success posts
"recovered" (see pipelines.ops.slack.notify_run). Callbacks never raise: a broken database or webhook is
logged, and the task's own outcome stands.

It also holds the DAGs' shared default_args. Airflow is imported only inside default_args(), which the
DAG files call after importing airflow.sdk themselves, and to name a task's log file; the callbacks use the
context duck-typed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)


def default_args() -> dict[str, Any]:
    """Every task: retries with exponential backoff from `orchestration.*` (config.yaml, read at parse time:
    a file, no database), no retry for what a retry cannot fix (an API ban, bad config, failing checks),
    and the callbacks below. The DAG files set each task's execution timeout."""
    from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

    from pipelines.orchestration import NO_RETRY
    from pipelines.settings import load_settings

    o = load_settings().orchestration
    return {
        "owner": "cryptoflow",
        "retries": o.retries,
        "retry_delay": dt.timedelta(seconds=o.retry_delay_s),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(seconds=o.retry_max_delay_s),
        "retry_policy": ExceptionRetryPolicy(
            rules=[RetryRule(exception=name, action=RetryAction.FAIL) for name in NO_RETRY]
        ),
        "on_success_callback": on_success,
        "on_retry_callback": on_retry,
        "on_failure_callback": on_failure,
    }


def orchestration_setting(key: str) -> Any:
    """`orchestration.<key>` from config.yaml, read when the DAG file is parsed (a file, no database)."""
    from pipelines.settings import load_settings

    return getattr(load_settings().orchestration, key)


def schedule(key: str) -> str:
    """A DAG's cron from `orchestration.<key>` (config.yaml)."""
    return str(orchestration_setting(key))


def _ids(context: dict[str, Any]) -> dict[str, Any]:
    ti = context.get("ti") or context.get("task_instance")
    map_index = getattr(ti, "map_index", -1)
    dag_id, task_id = getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?")
    map_index = -1 if map_index is None else map_index
    return {
        # the task as ledger source and incident name: each mapped task (a backfill batch) is its own
        "task": f"{dag_id}.{task_id}" + (f"[{map_index}]" if map_index >= 0 else ""),
        "dag_id": dag_id,
        "task_id": task_id,
        "dag_run_id": getattr(ti, "run_id", "?"),
        "try_number": getattr(ti, "try_number", 0) or 0,
        "map_index": map_index,
        "max_tries": getattr(ti, "max_tries", 0) or 0,
        "start_date": getattr(ti, "start_date", None),
        "log_url": getattr(ti, "log_url", None) if hasattr(type(ti), "log_url") else None,
    }


def _cause(context: dict[str, Any], settings: Any, ids: dict[str, Any]) -> str:
    """Why the try failed. Airflow puts the exception in the context when the task raised it in its own
    process, where the callback then runs. Without one, Airflow failed the try from outside and its
    dag-processor runs the callback: the scheduler found the try's worker done while the task had not
    reported (its process never started, e.g. the worker could not reach the execution API, or was killed),
    or found it without a heartbeat. The scheduler knows which, but hands the callback no reason (and no
    metadata-database access): the line names the logs that say."""
    from pipelines.errors import user_facing

    error = context.get("exception")
    if isinstance(error, BaseException):
        return user_facing(error) or f"{type(error).__name__}: {error}"
    if error:  # a message instead of an exception (Airflow 2 could pass one)
        return str(error)
    cause = (
        "Airflow failed the try from outside the task and no error reached it: the task process never "
        "started (e.g. its worker could not reach the Airflow API server), was killed, or lost its heartbeat"
    )
    # where `cryptoflow up` keeps the output of `airflow standalone` (services.up: logs/<service>.log)
    scheduler_log = settings.state_dir / "logs" / "airflow.log"
    cause += "; the scheduler's log says which"
    if scheduler_log.exists():
        cause += f" ({scheduler_log})"
    task_log = _task_log(ids)
    if task_log is not None and task_log.exists():
        cause += f"; task log {task_log}"
    elif ids.get("log_url"):
        cause += f"; task log {ids['log_url']}"
    return cause


def _task_log(ids: dict[str, Any]) -> Path | None:
    """The try's log file, named as Airflow's [logging] base_log_folder and log_filename_template say (read
    from Airflow's configuration: no database), or None when the name cannot be made."""
    try:
        import jinja2
        from airflow.sdk.configuration import conf

        folder: str = conf.get("logging", "base_log_folder")
        template: str = conf.get("logging", "log_filename_template")
        ti = SimpleNamespace(**{k: ids[k] for k in ("dag_id", "task_id", "map_index", "try_number")})
        ti.run_id = ids["dag_run_id"]
        name: str = jinja2.Template(template, undefined=jinja2.StrictUndefined).render(
            ti=ti, try_number=ids["try_number"]
        )
    except Exception as exc:  # a template naming more than the try's ids, no Airflow configuration ...
        log.warning("could not name the task's log file", extra={"error": f"{type(exc).__name__}: {exc}"})
        return None
    return Path(folder) / name


def _record(context: dict[str, Any], status: str) -> dict[str, Any]:
    """Record the try in ops.pipeline_runs. Returns its ids, the settings and `cause`: why it failed, the
    line the ledger records and the alert says (None for a success)."""
    from pipelines.ops.observability import RunRecord
    from pipelines.orchestration import task_settings
    from pipelines.runtime import db

    ids = _ids(context)
    settings = task_settings()
    run_id = f"{ids['task']}:{ids['dag_run_id']}:try{ids['try_number']}"
    cause = None if status == "success" else _cause(context, settings, ids)
    done = {"settings": settings, "run_id": run_id, "cause": cause, **ids}
    try:
        db.ensure_database(settings)  # a task that never touched the database (a planner) is recorded too
    except db.DatabaseUnavailable as exc:  # nothing to record into; the alert must still go out
        log.error("could not record the task outcome", extra={"run_id": run_id, "error": str(exc)[:500]})
        return done
    run = RunRecord(
        settings,
        source=f"airflow:{ids['task']}",
        command=ids["task"].split(".", 1)[1],
        run_id=run_id,
        retries=max(ids["try_number"] - 1, 0),
        details={k: v for k, v in ids.items() if k not in ("start_date",) and v is not None},
    )
    start = ids["start_date"]
    if isinstance(start, dt.datetime):
        run.started = start.timestamp()
    run.finish(status=status, message=cause)  # the cause as it reads, never "<type>: <message>"
    return done


def _safely(name: str, context: dict[str, Any], body: Callable[[dict[str, Any]], None]) -> None:
    try:
        body(context)
    except Exception as exc:  # a callback must never change the task's outcome
        log.error(
            "airflow callback failed", extra={"callback": name, "error": f"{type(exc).__name__}: {exc}"}
        )


def on_success(context: dict[str, Any]) -> None:
    def body(ctx: dict[str, Any]) -> None:
        from pipelines.ops.slack import notify_run

        done = _record(ctx, "success")
        notify_run(done["settings"], done["task"], failed=False, run_id=done["run_id"])

    _safely("on_success", context, body)


def on_retry(context: dict[str, Any]) -> None:
    def body(ctx: dict[str, Any]) -> None:
        _record(ctx, "up_for_retry")

    _safely("on_retry", context, body)


def on_failure(context: dict[str, Any]) -> None:
    def body(ctx: dict[str, Any]) -> None:
        from pipelines.ops.slack import notify_run

        done = _record(ctx, "failed")
        if getattr(ctx.get("exception"), "already_alerted", False):
            return  # e.g. failing data-quality checks: each was announced as its own incident
        extra = {
            "DAG": done["dag_id"],
            "Task": done["task"].split(".", 1)[1],
            "Airflow run": done["dag_run_id"],
            "Tries": str(done["try_number"]),
        }
        if done["log_url"]:
            extra["Log"] = done["log_url"]
        notify_run(
            done["settings"],
            done["task"],
            failed=True,
            run_id=done["run_id"],
            error=done["cause"],
            extra=extra,
        )

    _safely("on_failure", context, body)
