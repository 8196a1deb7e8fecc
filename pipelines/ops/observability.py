"""Logging configuration (JSON lines, or readable text in a terminal) and the run ledger (ops.pipeline_runs)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pipelines.redaction import redact
from pipelines.runtime import db
from pipelines.settings import Settings

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
SECRET_WORDS = ("password", "secret", "token", "api_key", "webhook")


# Airflow exports the running task's ids to the environment (AIRFLOW_CTX_*): every line carries them.
AIRFLOW_IDS = {
    "dag_id": "AIRFLOW_CTX_DAG_ID",
    "task_id": "AIRFLOW_CTX_TASK_ID",
    "dag_run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "try_number": "AIRFLOW_CTX_TRY_NUMBER",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: "***" if any(w in key.lower() for w in SECRET_WORDS) else value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


def airflow_ids() -> dict[str, str]:
    return {key: os.environ[env] for key, env in AIRFLOW_IDS.items() if os.environ.get(env)}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, the Airflow task's ids when inside one,
    and every `extra` field (run id, source, rows, duration ...)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **airflow_ids(),
        }
        payload.update(_extras(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(payload, default=str))  # no password or webhook token in any line


class TextFormatter(logging.Formatter):
    """One short line for a person at a terminal: time, level, message, and only the fields that add to it
    (ids and values the message already says are left to the JSON log)."""

    IDS = ("run_id", "load_id", "dag_run_id")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        tail = " ".join(
            f"{k}={v}" for k, v in _extras(record).items() if k not in self.IDS and str(v) not in message
        )
        stamp = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        text = f"{stamp} {record.levelname:<7} {message}{'  ' + tail if tail else ''}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the sys.stderr of the moment, not the one at start: a live progress bar (rich) swaps it for
    a proxy that prints each line above the bar, so log lines never land on the bar's line."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(
        self, value: TextIO
    ) -> None:  # StreamHandler.__init__ sets it; the property always reads sys.stderr
        pass


_OURS: list[logging.Handler] = []


def configure_logging(
    level: str = "INFO",
    *,
    log_format: str = "auto",
    log_file: Path | None = None,
    console_level: str | None = None,
) -> None:
    """The console: JSON lines when not attached to a terminal (Airflow, CI, cron) or with log_format json,
    short text on a terminal or with text. log_file: every record as JSON lines there too (console_level
    can then keep the console to warnings)."""
    json_lines = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    console = _StderrHandler()
    console.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    console.setLevel(console_level or level)
    handlers: list[logging.Handler] = [console]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(JsonFormatter())
        handlers.append(to_file)
    root = logging.getLogger()
    for old in _OURS:  # a second call (the demo's) closes the file the first one opened
        old.close()
    _OURS[:] = handlers
    root.handlers[:] = handlers
    root.setLevel(level)
    for noisy in ("dlt", "urllib3", "sqlmesh", "sqlglot", "botocore", "pgserver", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _ExtrasIntoMessage(logging.Filter):
    """Inside an Airflow task, Airflow's own handlers write the task log (JSON lines with the dag, task and
    run ids) but drop a record's `extra` fields; this folds ours into the message as JSON instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pipelines") and not getattr(record, "_extras_folded", False):
            extras = _extras(record)
            if extras:
                record.msg = redact(f"{record.getMessage()} {json.dumps(extras, default=str)}")
                record.args = None
            record._extras_folded = True
        return True


def airflow_task_logging() -> None:
    """Called by the task functions (pipelines.orchestration): keep our fields in Airflow's task log."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ExtrasIntoMessage) for f in handler.filters):
            handler.addFilter(_ExtrasIntoMessage())


def new_run_id(source: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{source}-{stamp}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunRecord:
    """One row of ops.pipeline_runs, written at start (status running) and at the end."""

    settings: Settings
    source: str
    command: str
    run_id: str = ""
    window_start: dt.datetime | None = None
    window_end: dt.datetime | None = None
    rows_extracted: int = 0
    rows_bronze: int = 0
    rows_raw: int = 0
    dead_letters: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.run_id = self.run_id or new_run_id(self.source)

    def _write(self, status: str, error: str | None) -> None:
        duration = time.time() - self.started
        with db.cursor(self.settings) as cur:
            cur.execute(
                """
                INSERT INTO ops.pipeline_runs (run_id, source, command, window_start, window_end, started_at,
                    finished_at, duration_s, status, rows_extracted, rows_bronze, rows_raw, dead_letters,
                    requests, retries, rate_limited, error, details)
                VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), CASE WHEN %s <> 'running' THEN now() END,
                    %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (run_id) DO UPDATE SET window_start = EXCLUDED.window_start,
                    window_end = EXCLUDED.window_end, finished_at = EXCLUDED.finished_at,
                    duration_s = EXCLUDED.duration_s, status = EXCLUDED.status,
                    rows_extracted = EXCLUDED.rows_extracted, rows_bronze = EXCLUDED.rows_bronze,
                    rows_raw = EXCLUDED.rows_raw, dead_letters = EXCLUDED.dead_letters,
                    requests = EXCLUDED.requests, retries = EXCLUDED.retries,
                    rate_limited = EXCLUDED.rate_limited, error = EXCLUDED.error, details = EXCLUDED.details
                """,
                (
                    self.run_id,
                    self.source,
                    self.command,
                    self.window_start,
                    self.window_end,
                    self.started,
                    status,
                    round(duration, 3),
                    status,
                    self.rows_extracted,
                    self.rows_bronze,
                    self.rows_raw,
                    self.dead_letters,
                    self.requests,
                    self.retries,
                    self.rate_limited,
                    error,
                    json.dumps(self.details, default=str),
                ),
            )

    def start(self) -> RunRecord:
        self._write("running", None)
        return self

    def finish(
        self, error: BaseException | None = None, status: str | None = None, *, message: str | None = None
    ) -> None:
        """Record the outcome; the error column says `message` when given (a cause as the operator reads
        it), else the exception as `<type>: <text>`."""
        status = status or ("failed" if error or message else "success")
        if message is not None:
            message = redact(message)
        elif error:
            message = redact(f"{type(error).__name__}: {error}")
        try:
            self._write(status, message)
        except db.DatabaseUnavailable:
            logging.getLogger(__name__).error(
                "could not record the run outcome", extra={"run_id": self.run_id}
            )
        logging.getLogger(__name__).log(
            logging.ERROR if status == "failed" else logging.WARNING if message else logging.INFO,
            f"run {status}",
            extra={
                "run_id": self.run_id,
                "source": self.source,
                "rows_raw": self.rows_raw,
                "rows_bronze": self.rows_bronze,
                "dead_letters": self.dead_letters,
                "retries": self.retries,
                "duration_s": round(time.time() - self.started, 3),
                **({"error": message} if message else {}),
            },
        )


@contextlib.contextmanager
def run_ledger(settings: Settings, source: str, command: str, run_id: str = "") -> Iterator[RunRecord]:
    """A RunRecord started on entry and finished with the outcome; a failure's exception carries the run
    id (`exc.run_id`) so the alert can name the run (pipelines.ops.slack.alerting)."""
    run = RunRecord(settings, source, command, run_id=run_id).start()
    try:
        yield run
    except BaseException as exc:
        run.finish(exc)
        with contextlib.suppress(AttributeError):  # the CLI names the run in its one-line error
            exc.run_id = run.run_id  # type: ignore[attr-defined]  # a note on whatever was raised
        raise
    run.finish()
