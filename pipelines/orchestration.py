"""What the Airflow DAGs call: one function per task, each a single pipeline step that loads the settings,
does its work and returns a small JSON-able summary (it becomes the task's XCom).

No Airflow import here, so the DAG files stay cheap to parse; the callbacks live in
pipelines/airflow_callbacks.py. The settings come from CRYPTOFLOW_CONFIG (set by `cryptoflow up`) or
./config.yaml, and every task waits up to `orchestration.lock_wait_s` for a running step of its kind
instead of failing at once (Airflow runs what the CLI would refuse to run twice).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from pipelines import catalog
from pipelines.settings import Settings, load_settings

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000

# Assets (Airflow data-aware scheduling): name -> URI, from the catalogue. The DAG files build
# airflow.sdk.Asset objects from these, so producer and consumer DAGs cannot disagree on a spelling.
ASSETS = catalog.assets()


class ChecksFailed(Exception):
    """A data-quality scan found failing checks. They were alerted one by one already (one incident per
    check), so the failure callback records this task but does not alert on it a second time."""

    already_alerted = True


class BadParams(ValueError):
    """A DAG run's params make no sense (e.g. a backfill without a window): fail without retrying."""


def task_settings() -> Settings:
    from pipelines.ops.observability import airflow_task_logging

    airflow_task_logging()
    settings = load_settings()
    waits = max(settings.database.lock_wait_s, settings.orchestration.lock_wait_s)
    return settings.model_copy(
        update={"database": settings.database.model_copy(update={"lock_wait_s": waits})}
    )


@contextlib.contextmanager
def _sources(settings: Settings) -> Iterator[Settings]:
    """With sandbox.enabled, use the sandbox on sandbox.port (as `cryptoflow up` runs it), or one started
    for this task alone when none is running. Otherwise the configured (live) APIs."""
    if not settings.sandbox.enabled:
        yield settings
        return
    from pipelines.http import answers

    url = f"http://127.0.0.1:{settings.sandbox.port}"
    if settings.sandbox.port and answers(f"{url}/binance/api/v3/ping", timeout_s=2):
        yield settings.with_sandbox(url)
        return
    from pipelines.sandbox import SandboxServer

    with SandboxServer(port=0, seed=settings.sandbox.seed, calm=settings.sandbox.calm) as server:
        log.warning("no sandbox on %s: serving one for this task", url)
        yield settings.with_sandbox(server.url)


# Failures a retry cannot fix: the DAGs' retry policy fails these at once (airflow_callbacks.default_args).
NO_RETRY = (
    "pipelines.http.ApiBanned",  # 418/451: retrying extends an IP ban
    "pipelines.settings.ConfigError",
    "pipelines.errors.UniverseError",
    "pipelines.orchestration.ChecksFailed",
    "pipelines.orchestration.BadParams",
)


@contextlib.contextmanager
def _plain_errors() -> Iterator[None]:
    """Re-raise our own error from behind dlt's wrappers, so the task log shows the one clear line and the
    retry policy can tell a ban from a timeout."""
    from pipelines.errors import root_cause

    try:
        yield
    except Exception as exc:
        cause = root_cause(exc)
        if cause is not exc and type(cause).__module__.startswith("pipelines"):
            raise cause from exc
        raise


def _summary(summary: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(summary).items() if isinstance(v, str | int | float | list | dict)}


# --------------------------------------------------------------------------------------------- ingestion


def ingest(what: str) -> dict[str, Any]:
    """`ohlcv`, `markets` or `fear-greed`: the incremental ingest of one source."""
    from pipelines import ingest as ingestion

    steps = {
        "ohlcv": ingestion.ingest_ohlcv,
        "markets": ingestion.ingest_markets,
        "fear-greed": ingestion.ingest_fear_greed,
    }
    settings = task_settings()
    with _plain_errors(), _sources(settings) as active:
        if what == "ohlcv":
            _settle_after_close(active)
        return _summary(steps[what](active, command=f"airflow ingest {what}"))


def exchange_now_ms(settings: Settings) -> int:
    """The exchange's clock (GET /api/v3/time): in sandbox mode that is the sandbox's, which may be frozen."""
    from pipelines import ingest as ingestion

    return int(ingestion.binance_client(settings).get_json("/api/v3/time")["serverTime"])


def _settle_after_close(settings: Settings) -> None:
    """The hourly run fires at the close; give the exchange `close_grace_s` after it (by its own clock)
    before asking for the bar, so a run that starts a moment early cannot miss the hour."""
    grace_ms = settings.orchestration.close_grace_s * 1000
    into_hour = exchange_now_ms(settings) % HOUR_MS
    if into_hour < grace_ms:
        time.sleep((grace_ms - into_hour) / 1000)
    elif into_hour > HOUR_MS - 60_000:  # started up to a minute before the close (clock skew): wait for it
        time.sleep((HOUR_MS - into_hour + grace_ms) / 1000)


def backfill_batches(symbols: list[str] | None = None, batch_size: int | None = None) -> list[list[str]]:
    """The backfill's symbols (the given ones, else the universe) in batches of
    `orchestration.backfill_batch_size`: one mapped task per batch."""
    from pipelines import ingest as ingestion
    from pipelines.sources.binance.helpers import fetch_exchange_info

    settings = task_settings()
    size = batch_size or settings.orchestration.backfill_batch_size
    with _plain_errors(), _sources(settings) as active:
        info = fetch_exchange_info(ingestion.binance_client(active))
        universe = ingestion.resolve_universe(active, info, symbols or None)
    return [universe[i : i + size] for i in range(0, len(universe), size)]


def check_window(days: int | None, since: str | None, until: str | None) -> tuple[dt.datetime | None, ...]:
    def parse(value: str | None) -> dt.datetime | None:
        if not value:
            return None
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

    if bool(days) == bool(since):
        raise BadParams("backfill_historical needs exactly one of the params `days` or `since` (YYYY-MM-DD)")
    try:
        start, end = parse(since), parse(until)
    except ValueError:
        raise BadParams(f"since/until must be dates like 2024-01-31, got {since!r} / {until!r}") from None
    if start and end and end < start:
        raise BadParams(f"until ({until}) is before since ({since})")
    return start, end


def backfill_batch(
    symbols: list[str], days: int | None = None, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    """Load one batch of a historical window. Idempotent: a batch whose window is already complete in raw
    (every hour present or a known exchange gap) is skipped, so re-triggering a failed backfill only
    re-does what is missing."""
    from pipelines import ingest as ingestion

    start, end = check_window(days, since, until)
    settings = task_settings()
    with _plain_errors(), _sources(settings) as active:
        complete = _complete_symbols(active, symbols, days, start, end)
        todo = [s for s in symbols if s not in complete]
        if not todo:
            log.info("backfill batch already complete: skipped", extra={"symbols": symbols})
            return {"symbols": symbols, "skipped": symbols, "rows_raw": 0}
        summary = ingestion.ingest_ohlcv(
            active,
            symbols=todo,
            since=start,
            until=end,
            days=None if start else days,
            command="backfill",
            source=settings.backfill.source,
            shared=True,  # batches of other pairs run on other workers
        )
    return {**_summary(summary), "symbols": symbols, "skipped": sorted(complete)}


def _complete_symbols(
    settings: Settings,
    symbols: list[str],
    days: int | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> set[str]:
    """Symbols with every hour of the window in raw.binance_klines or ops.gaps (known gaps)."""
    from pipelines.ingest import binance_client
    from pipelines.runtime import db
    from pipelines.sources.binance.helpers import fetch_exchange_info, last_closed_open_ms

    hour = dt.timedelta(hours=1)
    server_ms = fetch_exchange_info(binance_client(settings)).server_time_ms  # the exchange's clock
    last_closed = dt.datetime.fromtimestamp(last_closed_open_ms(server_ms, settings.interval) / 1000, dt.UTC)
    end = min(last_closed, until.replace(minute=0, second=0, microsecond=0)) if until else last_closed
    if since:
        start = since.replace(minute=0, second=0, microsecond=0)
        start += hour if start < since else dt.timedelta(0)  # the first whole hour, as the loader does
    else:
        start = end - dt.timedelta(days=days or 0) + hour
    expected = int((end - start) / hour) + 1
    if expected <= 0:
        return set(symbols)  # an empty window: nothing to load
    db.ensure_database(settings)
    with db.cursor(settings) as cur:
        cur.execute("SELECT to_regclass('raw.binance_klines')")
        if db.one(cur)[0] is None:
            return set()
        cur.execute(
            """
            SELECT symbol, count(*) FROM (
                SELECT symbol, open_time FROM raw.binance_klines
                WHERE symbol = ANY(%(s)s) AND open_time BETWEEN %(a)s AND %(b)s
                UNION
                SELECT symbol, open_time FROM ops.gaps
                WHERE status = 'known_gap' AND symbol = ANY(%(s)s) AND open_time BETWEEN %(a)s AND %(b)s
            ) hours GROUP BY symbol
            """,
            {"s": symbols, "a": start, "b": end},
        )
        return {symbol for symbol, n in cur.fetchall() if n >= expected}


# --------------------------------------------------------------------------------------------- downstream


def transform(environment: str = "prod") -> dict[str, Any]:
    from pipelines.transform import RawNotLoaded, require_raw_tables
    from pipelines.transform import transform as run_transform

    settings = task_settings()
    try:
        require_raw_tables(settings)
    except RawNotLoaded as exc:
        # a new deployment: the first source's asset event comes before the others have loaded. Nothing
        # failed; the next raw table's update runs the transform again (no failed run to page for)
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"{exc}; the next raw update runs the transform") from exc
    with _plain_errors():
        # Sandbox mode runs on the sandbox's clock, which tests and the benchmark move: SQLMesh's intervals
        # follow it, or a candle "closed" on that clock would wait for the real clock to catch up.
        execution_time = None
        if settings.sandbox.enabled:
            with _sources(settings) as active:
                execution_time = dt.datetime.fromtimestamp(exchange_now_ms(active) / 1000, dt.UTC)
        return _summary(
            run_transform(
                settings, environment, execution_time=execution_time, wait_s=settings.database.lock_wait_s
            )
        )


def check(layers: list[str] | None = None) -> dict[str, Any]:
    """The Soda scans; each failing check alerts once (its own incident). Raises ChecksFailed so the task
    shows red when a check fails."""
    from pipelines import quality
    from pipelines.ops import slack

    settings = task_settings()
    run = quality.run_checks(settings, tuple(layers or quality.LAYERS))
    log.info("checks done", extra={"run_id": run.run_id, "checks": len(run.results)})
    sent = slack.notify_check_run(settings, run)
    failed = [f"{r.layer}: {r.name} (value {r.value})" for r in run.failed]
    if failed:
        raise ChecksFailed(f"{len(failed)} check(s) failed in run {run.run_id}: " + "; ".join(failed))
    return {"run_id": run.run_id, "checks": len(run.results), "alerts": sent}


def digest() -> dict[str, Any]:
    from pipelines.ops import digest

    settings = task_settings()
    if not digest.send_digest(settings):
        a = settings.alerts
        if a.smtp_host and a.email_to:
            raise RuntimeError("the digest could not be delivered (see ops.alerts_sent)")
        return {"sent": False, "reason": "alerts.smtp_host / alerts.email_to not configured"}
    return {"sent": True}


def maintain() -> dict[str, Any]:
    """maintenance_daily: `cryptoflow maintain` (retention.*), its lines as the task's result."""
    from pipelines.maintenance import maintain as run_maintenance

    with _plain_errors():
        return {"done": run_maintenance(task_settings())}
