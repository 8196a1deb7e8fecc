"""The benchmark's report: every timed figure read as a multiple of the same run's COPY, and each issue-15
target (set for a machine whose COPY takes 4 s) scaled by that COPY. Arithmetic only: no timing here."""

from __future__ import annotations

from pipelines.bench import ratios_to_copy


def test_figures_are_ratios_to_the_runs_own_copy_and_targets_scale_with_it():
    results = {
        "copy_reference_s": 8.0,  # a machine twice as slow as the targets' reference
        "backfill_s": 44.0,
        "raw_load_s": 10.0,
        "transform_full_s": 60.0,
        "transform_incremental_s": 10.4,
        "airflow_latency_s": 50.0,
        "dashboard_query_ms_max": 280.0,
        "archive_backfill_s": None,  # not measured: no ratio
    }
    out = ratios_to_copy(results)
    assert {k: v for k, v in out.items() if k.endswith("_vs_copy")} == {
        "backfill_vs_copy": 5.5,
        "raw_load_vs_copy": 1.25,
        "transform_full_vs_copy": 7.5,
        "transform_incremental_vs_copy": 1.3,
        "airflow_latency_vs_copy": 6.25,
        "dashboard_query_max_vs_copy": 0.035,
    }
    assert out["targets_scaled_to_this_copy"] == {
        "transform_full_s": 64.0,
        "transform_incremental_s": 10.0,
        "airflow_latency_s": 60.0,
        "dashboard_query_ms_max": 300.0,
    }
    assert out["targets_met"] == {
        "transform_full_s": True,
        "transform_incremental_s": False,  # 10.4 s > 5 s x 8/4
        "airflow_latency_s": True,
        "dashboard_query_ms_max": True,
    }


def test_without_a_copy_reference_there_are_no_ratios():
    assert ratios_to_copy({"transform_full_s": 60.0}) == {}
