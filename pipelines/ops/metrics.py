"""Prometheus metrics endpoint: a custom collector that reads Postgres on each scrape.

Every scrape answers (HTTP 200), whatever the state of the database: when Postgres cannot be reached the
answer is `cryptoflow_database_up 0` (so an alert can fire) plus the configured thresholds, and a table that
does not exist yet (a fresh database, no transform yet) is simply left out. One round of queries serves
every scrape within `cache_s` seconds, so a burst of scrapes costs one round.

The queries are cheap on the 1.3M-row tables: `max()` of a time column per table, and null ratios over the
newest 24 hours only. Identifiers are fixed in this module; values are bound parameters.
The metric names and help texts are catalogued in metric_catalog.py; metrics_server.py serves them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pipelines import catalog
from pipelines.ops.metric_catalog import METRICS
from pipelines.runtime import db
from pipelines.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9108
CACHE_S = 15.0  # one round of queries serves every scrape within this many seconds
STATEMENT_TIMEOUT_MS = 5000  # no single metrics query may hold a scrape longer than this

# binance, coingecko, fear_greed: the writer of each raw table
INGEST_SOURCES = tuple(s for s in catalog.BY_SOURCE if s)
TRANSFORM_SOURCE = "sqlmesh"  # `cryptoflow transform` records its runs under this source
KNOWN_SOURCES = (*INGEST_SOURCES, TRANSFORM_SOURCE)
FINISHED = ("success", "failed")
# The last-run gauges follow the scheduled pipeline. A DLQ replay (an operator's action, recorded under the
# source of the records it replays) and a transform into a dev environment (an analyst's; `transform <env>`)
# neither hide a failure nor count as a fresh run. Statuses other than success/failed (running, an Airflow
# try that will be retried: up_for_retry) are not final outcomes.
SCHEDULED_RUNS = (
    "command NOT LIKE %(dlq)s AND NOT (source = %(transform)s AND command LIKE %(transform_env)s "
    "AND command <> %(transform_prod)s)"
)
SCHEDULED_PARAMS = {
    "dlq": "dlq%",
    "transform": TRANSFORM_SOURCE,
    "transform_env": "transform %",
    "transform_prod": "transform prod",
}
DQ_OUTCOMES = ("pass", "warn", "fail", "error")
DQ_FAILING = ("fail", "error")
NULL_RATIO_WINDOW_HOURS = 24

# the tables whose freshness is exported: table -> the column whose newest value says how fresh it is
FRESHNESS_TABLES = (*catalog.RAW, catalog.FCT_PRICES)
FRESHNESS_COLUMNS = {t.qualified: t.fresh_column for t in FRESHNESS_TABLES}
# table -> (time column, key columns whose share of NULLs over the newest 24 hours is exported)
NULL_RATIO_COLUMNS = {
    "gold.fct_prices": (
        "open_time",
        (
            "close",
            "volume",
            "coin_id",
            "change_1h",
            "change_24h",
            "change_7d",
            "ma_7d",
            "ma_30d",
            "vwap_24h",
            "volatility_24h",
            "volatility_7d",
            "volatility_30d",
            "fng_value",
        ),
    ),
}
# summed over finished runs, in the order of the query's sums
RUN_TOTALS = (
    "cryptoflow_pipeline_rows_loaded_total",
    "cryptoflow_pipeline_retries_total",
    "cryptoflow_pipeline_requests_total",
    "cryptoflow_pipeline_rate_limited_total",
)
TABLES = ("ops.pipeline_runs", "ops.dq_results", "raw.dead_letter", *FRESHNESS_COLUMNS)


@dataclass
class _Samples:
    """Samples gathered by one round of queries, by metric name."""

    values: dict[str, list[tuple[tuple[str, ...], float]]] = field(default_factory=dict)

    def add(self, name: str, value: float, *labels: str) -> None:
        spec = METRICS[name]
        if len(labels) != len(spec.labels):
            raise ValueError(f"{name} takes labels {spec.labels}, got {labels}")
        self.values.setdefault(name, []).append((labels, float(value)))

    def families(self) -> list[Metric]:
        out: list[Metric] = []
        for name, spec in METRICS.items():
            if name not in self.values:
                continue
            cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = cls(name, spec.help, labels=list(spec.labels))
            for labels, value in self.values[name]:
                family.add_metric(list(labels), value)
            out.append(family)
        return out


@dataclass
class _Round:
    """What one round of queries shares between its sections."""

    present: set[str]  # tables that exist
    samples: _Samples
    newest: dict[str, Any] = field(default_factory=dict)  # table -> newest value of its time column


def freshness_thresholds(settings: Settings) -> dict[str, float]:
    """Maximum age in seconds per table, as the Soda freshness checks use them (gold's time column is the
    candle's open, an hour older than its close)."""
    return {
        table: hours * 3600
        for table, hours in catalog.column_max_age_hours(settings, FRESHNESS_TABLES).items()
    }


class CryptoflowCollector:
    """Reads ops, raw and gold on collect(); results are cached for `cache_s` seconds. Never raises."""

    def __init__(self, settings: Settings, cache_s: float = CACHE_S):
        self.settings = settings
        self.cache_s = cache_s
        self.collections = 0  # rounds of queries run so far
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at: float | None = None
        self._was_up: bool | None = None

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached_at is None or now - self._cached_at >= self.cache_s:
                self._cached = self._collect()
                self._cached_at = time.monotonic()
            return list(self._cached)

    # ------------------------------------------------------------------------------------------ one round

    def _collect(self) -> list[Metric]:
        self.collections += 1
        started = time.perf_counter()
        samples = _Samples()
        for table, seconds in freshness_thresholds(self.settings).items():
            samples.add("cryptoflow_freshness_threshold_seconds", seconds, table)
        samples.add("cryptoflow_alerts_via_alertmanager", int(self.settings.alerts.route == "alertmanager"))
        try:
            with contextlib.closing(db.connect(self.settings, db.reader_url(self.settings))) as conn:
                up = self._query_all(conn, samples)
            reason = "the connection was lost during the scrape"
        except Exception as exc:  # DatabaseUnavailable (its URL redacted), or the session could not be set up
            up, reason = False, str(exc)
        self._note_state(up, reason)
        samples.add("cryptoflow_database_up", 1 if up else 0)
        samples.add("cryptoflow_scrape_duration_seconds", time.perf_counter() - started)
        return samples.families()

    def _note_state(self, up: bool, reason: str) -> None:
        """Log when the database goes away or comes back (not on every scrape)."""
        if not up and self._was_up is not False:
            log.warning("metrics: database unavailable", extra={"error": reason[:500]})
        elif up and self._was_up is False:
            log.info("metrics: database reachable again")
        self._was_up = up

    def _query_all(self, conn: Any, samples: _Samples) -> bool:
        """Run every section; a failing section is logged and flagged, the others still report.

        Returns whether the connection is still open at the end (raises if not even the set-up worked)."""
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            cur.execute(
                "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
                (list(TABLES),),
            )
            present = {name for (name,) in cur.fetchall()}
        r = _Round(present, samples)
        sections: dict[str, Callable[[Any, _Round], None]] = {
            "pipeline_runs": self._pipeline_runs,
            "data_quality": self._data_quality,
            "dead_letters": self._dead_letters,
            "freshness": self._freshness,
            "null_ratio": self._null_ratios,
        }
        for section, query in sections.items():
            failed = 0
            try:
                with conn.cursor() as cur:
                    query(cur, r)
            except _SectionFailed:
                failed = 1
            except Exception as exc:
                failed = 1
                log.warning(
                    "metrics: a section's queries failed", extra={"section": section, "error": str(exc)[:500]}
                )
            samples.add("cryptoflow_scrape_section_failed", failed, section)
        return not conn.closed

    # ------------------------------------------------------------------------------------------ sections

    @staticmethod
    def _pipeline_runs(cur: Any, r: _Round) -> None:
        samples = r.samples
        if "ops.pipeline_runs" not in r.present:
            return
        cur.execute(
            "SELECT source, status, count(*), sum(rows_raw), sum(retries), sum(requests), sum(rate_limited) "
            "FROM ops.pipeline_runs GROUP BY source, status"
        )
        runs = {(s, st): 0 for s in KNOWN_SOURCES for st in FINISHED}
        running = dict.fromkeys(KNOWN_SOURCES, 0)
        totals = {metric: dict.fromkeys(KNOWN_SOURCES, 0) for metric in RUN_TOTALS}
        for source, status, n, *sums in cur.fetchall():
            if status == "running":  # not finished: its counts are not final yet
                running[source] = n
                continue
            runs[(source, status)] = n
            for metric, value in zip(RUN_TOTALS, sums, strict=True):
                totals[metric][source] = totals[metric].get(source, 0) + (value or 0)
        for (source, status), n in sorted(runs.items()):
            samples.add("cryptoflow_pipeline_runs_total", n, source, status)
        for source, n in sorted(running.items()):
            samples.add("cryptoflow_pipeline_runs_in_progress", n, source)
        for metric, per_source in totals.items():
            for source, value in sorted(per_source.items()):
                samples.add(metric, value, source)

        # the latest finished run of the scheduled pipeline per source (see SCHEDULED_RUNS)
        cur.execute(
            "SELECT DISTINCT ON (source) source, status, extract(epoch FROM coalesce(finished_at, started_at)), "
            f"duration_s FROM ops.pipeline_runs WHERE status IN ('success', 'failed') AND {SCHEDULED_RUNS} "
            "ORDER BY source, started_at DESC",
            SCHEDULED_PARAMS,
        )
        for source, status, ended, duration in cur.fetchall():
            samples.add("cryptoflow_pipeline_last_run_timestamp_seconds", ended, source)
            samples.add("cryptoflow_pipeline_last_run_failed", 1 if status == "failed" else 0, source)
            if duration is not None:
                samples.add("cryptoflow_pipeline_last_run_duration_seconds", duration, source)
        cur.execute(
            "SELECT DISTINCT ON (source) source, extract(epoch FROM coalesce(finished_at, started_at)), rows_raw, "
            f"duration_s FROM ops.pipeline_runs WHERE status = 'success' AND {SCHEDULED_RUNS} "
            "ORDER BY source, started_at DESC",
            SCHEDULED_PARAMS,
        )
        for source, ended, rows, duration in cur.fetchall():
            samples.add("cryptoflow_pipeline_last_success_timestamp_seconds", ended, source)
            if duration and source != TRANSFORM_SOURCE:  # a transform loads no rows into raw
                samples.add("cryptoflow_pipeline_last_success_records_per_second", rows / duration, source)
        cur.execute(
            "SELECT (details->>'latency_s')::float8 FROM ops.pipeline_runs "
            "WHERE source = %s AND status = 'success' AND details->>'environment' = 'prod' "
            "AND jsonb_typeof(details->'latency_s') = 'number' ORDER BY started_at DESC LIMIT 1",
            (TRANSFORM_SOURCE,),
        )
        row = cur.fetchone()
        if row:
            samples.add("cryptoflow_end_to_end_latency_seconds", row[0])

    @staticmethod
    def _data_quality(cur: Any, r: _Round) -> None:
        samples = r.samples
        if "ops.dq_results" not in r.present:
            return
        cur.execute(
            "WITH latest AS (SELECT DISTINCT ON (layer) layer, run_id, checked_at FROM ops.dq_results "
            "ORDER BY layer, checked_at DESC, run_id DESC) "
            "SELECT r.layer, r.check_name, r.outcome, extract(epoch FROM l.checked_at) "
            "FROM ops.dq_results r JOIN latest l USING (layer, run_id) ORDER BY r.layer, r.check_name"
        )
        layers: dict[str, dict[str, int]] = {}
        for layer, check, outcome, checked_at in cur.fetchall():
            if layer not in layers:
                layers[layer] = dict.fromkeys(DQ_OUTCOMES, 0)
                samples.add("cryptoflow_dq_last_run_timestamp_seconds", checked_at, layer)
            layers[layer][outcome] = layers[layer].get(outcome, 0) + 1
            samples.add("cryptoflow_dq_check_failed", 1 if outcome in DQ_FAILING else 0, layer, check)
        for layer, outcomes in layers.items():
            for outcome, n in outcomes.items():
                samples.add("cryptoflow_dq_checks", n, layer, outcome)
            samples.add("cryptoflow_dq_failures", sum(outcomes.get(o, 0) for o in DQ_FAILING), layer)

    @staticmethod
    def _dead_letters(cur: Any, r: _Round) -> None:
        if "raw.dead_letter" not in r.present:
            return
        cur.execute("SELECT source, count(*) FROM raw.dead_letter WHERE replayed_at IS NULL GROUP BY source")
        pending = dict.fromkeys(INGEST_SOURCES, 0) | dict(cur.fetchall())
        for source, n in sorted(pending.items()):
            r.samples.add("cryptoflow_dead_letters_pending", n, source)

    @staticmethod
    def _freshness(cur: Any, r: _Round) -> None:
        def one(table: str) -> None:
            column = FRESHNESS_COLUMNS[table]
            cur.execute(
                f"SELECT max({column}), extract(epoch FROM max({column}))::float8, extract(epoch FROM now()) "
                f"FROM {table}"
            )
            newest, epoch, now = cur.fetchone()
            r.newest[table] = newest
            if newest is not None:
                r.samples.add("cryptoflow_table_newest_timestamp_seconds", epoch, table)
                r.samples.add("cryptoflow_table_age_seconds", float(now) - epoch, table)

        _per_table([t for t in FRESHNESS_COLUMNS if t in r.present], one)

    @staticmethod
    def _null_ratios(cur: Any, r: _Round) -> None:
        def one(table: str) -> None:
            time_column, wanted = NULL_RATIO_COLUMNS[table]
            schema, name = table.split(".")
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
                (schema, name),
            )
            existing = {c for (c,) in cur.fetchall()}
            columns = [c for c in wanted if c in existing]  # fixed identifiers only
            if time_column not in existing or not columns:
                return
            if table in r.newest and FRESHNESS_COLUMNS.get(table) == time_column:
                newest = r.newest[table]  # the freshness section has just read it
            else:
                cur.execute(f"SELECT max({time_column}) FROM {table}")
                (newest,) = cur.fetchone()
            if newest is None:
                return
            counts = ", ".join(f'count("{c}")' for c in columns)
            cur.execute(
                f"SELECT count(*), {counts} FROM {table} WHERE {time_column} > %s - make_interval(hours => %s)",
                (newest, NULL_RATIO_WINDOW_HOURS),
            )
            total, *non_null = cur.fetchone()
            r.samples.add("cryptoflow_null_ratio_window_rows", total, table)
            if total:
                for column, n in zip(columns, non_null, strict=True):
                    r.samples.add("cryptoflow_null_ratio", (total - n) / total, table, column)

        _per_table([t for t in NULL_RATIO_COLUMNS if t in r.present], one)


class _SectionFailed(Exception):
    """Some of a section's queries failed; each failure has been logged already."""


def _per_table(tables: list[str], query: Callable[[str], None]) -> None:
    """Query each table in turn: one broken table (a view SQLMesh is swapping, say) does not hide the others."""
    failed = []
    for table in tables:
        try:
            query(table)
        except Exception as exc:
            failed.append(table)
            log.warning("metrics: a table's query failed", extra={"table": table, "error": str(exc)[:500]})
    if failed:
        raise _SectionFailed(", ".join(failed))
