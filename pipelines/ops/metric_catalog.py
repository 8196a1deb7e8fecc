"""Every metric the /metrics endpoint can expose: name, kind, help and labels (counters end in _total).

monitoring/alerts.yml's rules use these names; tests/test_monitoring.py checks that every one they use exists.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    kind: str  # gauge | counter
    help: str
    labels: tuple[str, ...] = ()


# Every metric this endpoint can expose, by sample name (counters end in _total).
METRICS: dict[str, Spec] = {
    "cryptoflow_database_up": Spec("gauge", "1 if Postgres answered this scrape's queries, else 0."),
    "cryptoflow_scrape_duration_seconds": Spec(
        "gauge", "Seconds the latest round of metrics queries took (served from cache between rounds)."
    ),
    "cryptoflow_scrape_section_failed": Spec(
        "gauge",
        "1 if the latest round's queries for this section failed (see the log), else 0.",
        ("section",),
    ),
    "cryptoflow_pipeline_runs_total": Spec(
        "counter", "Finished runs recorded in ops.pipeline_runs.", ("source", "status")
    ),
    "cryptoflow_pipeline_runs_in_progress": Spec(
        "gauge", "Runs with status 'running' in ops.pipeline_runs.", ("source",)
    ),
    "cryptoflow_pipeline_rows_loaded_total": Spec(
        "counter", "Rows delivered to raw by finished runs (sum of rows_raw).", ("source",)
    ),
    "cryptoflow_pipeline_retries_total": Spec("counter", "HTTP retries of finished runs.", ("source",)),
    "cryptoflow_pipeline_requests_total": Spec("counter", "HTTP requests of finished runs.", ("source",)),
    "cryptoflow_pipeline_rate_limited_total": Spec(
        "counter", "Rate-limit waits (HTTP 429) of finished runs.", ("source",)
    ),
    "cryptoflow_pipeline_last_run_timestamp_seconds": Spec(
        "gauge",
        "When the latest finished run of the source ended (Unix time; DLQ replays and dev transforms excluded).",
        ("source",),
    ),
    "cryptoflow_pipeline_last_run_duration_seconds": Spec(
        "gauge", "Duration of the latest finished run of the source.", ("source",)
    ),
    "cryptoflow_pipeline_last_run_failed": Spec(
        "gauge",
        "1 if the latest finished run of the source failed, else 0 (DLQ replays and dev transforms excluded).",
        ("source",),
    ),
    "cryptoflow_pipeline_last_success_timestamp_seconds": Spec(
        "gauge",
        "When the latest successful run of the source ended (Unix time; DLQ replays and dev transforms excluded).",
        ("source",),
    ),
    "cryptoflow_pipeline_last_success_records_per_second": Spec(
        "gauge", "rows_raw / duration_s of the latest successful run of the source.", ("source",)
    ),
    "cryptoflow_end_to_end_latency_seconds": Spec(
        "gauge",
        "Seconds from the newest candle's close to the moment it was in gold (latest successful prod transform).",
    ),
    "cryptoflow_table_newest_timestamp_seconds": Spec(
        "gauge", "Newest value of the table's time column (Unix time).", ("table",)
    ),
    "cryptoflow_table_age_seconds": Spec(
        "gauge", "Seconds since the newest value of the table's time column.", ("table",)
    ),
    "cryptoflow_alerts_via_alertmanager": Spec(
        "gauge",
        "1 if alerts.route is alertmanager (its rules page for failed runs and checks), 0 if the pipeline posts.",
    ),
    "cryptoflow_freshness_threshold_seconds": Spec(
        "gauge", "Configured maximum age of the table's newest row (checks.freshness_*_hours).", ("table",)
    ),
    "cryptoflow_null_ratio": Spec(
        "gauge", "Share of NULLs in the column over the table's newest 24 hours.", ("table", "column")
    ),
    "cryptoflow_null_ratio_window_rows": Spec(
        "gauge", "Rows in the table's newest 24 hours (the null ratios' denominator).", ("table",)
    ),
    "cryptoflow_dq_checks": Spec(
        "gauge", "Checks of the latest data-quality run of the layer, by outcome.", ("layer", "outcome")
    ),
    "cryptoflow_dq_failures": Spec(
        "gauge", "Checks that failed or errored in the latest data-quality run of the layer.", ("layer",)
    ),
    "cryptoflow_dq_check_failed": Spec(
        "gauge",
        "1 if the check failed or errored in the latest run of its layer, else 0.",
        ("layer", "check"),
    ),
    "cryptoflow_dq_last_run_timestamp_seconds": Spec(
        "gauge", "When the latest data-quality run of the layer checked (Unix time).", ("layer",)
    ),
    "cryptoflow_dead_letters_pending": Spec(
        "gauge", "Records in raw.dead_letter not replayed yet.", ("source",)
    ),
}
