"""The Prometheus endpoint against the session's real embedded Postgres: known rows in, the real HTTP endpoint
scraped with urllib, parsed with prometheus_client's own parser, values compared with what the rows say."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers.metrics_rows import (
    GOLD_NEWEST,
    GOLD_ROWS,
    NEWEST_CLOSE,
    NEWEST_SNAPSHOT,
    T0,
    H,
    S,
    by_label,
    endpoint,
    insert_run,
    populate,
    scrape,
    value,
)

from pipelines.ops import metrics
from pipelines.ops.metric_catalog import METRICS
from pipelines.runtime import db

ROOT = Path(__file__).resolve().parent.parent
DEAD_URL = "postgresql://x:s3cret@127.0.0.1:1/x"  # nothing listens on port 1


def execute(settings, sql: str, params=None) -> None:
    with db.cursor(settings) as cur:
        cur.execute(sql, params)


def test_every_metric_is_exact_against_known_rows(make_settings):
    settings = make_settings(checks={"freshness_ohlcv_hours": 3, "freshness_markets_hours": 12})
    populate(settings)
    with endpoint(settings) as server:
        scraped_at = time.time()
        m = scrape(server.url)

    assert set(m) == set(METRICS)  # everything catalogued is exposed, nothing else
    assert value(m, "cryptoflow_database_up") == 1
    assert value(m, "cryptoflow_alerts_via_alertmanager") == 0  # alerts.route: slack (the default)
    assert by_label(m, "cryptoflow_scrape_section_failed", "section") == dict.fromkeys(
        ("pipeline_runs", "data_quality", "dead_letters", "freshness", "null_ratio"), 0
    )

    # runs: finished runs by source and status, zeros for known sources without runs
    assert m["cryptoflow_pipeline_runs_total"] == {
        (("source", s), ("status", st)): n
        for (s, st), n in {
            ("binance", "success"): 2,
            ("binance", "failed"): 1,
            ("coingecko", "success"): 1,
            ("coingecko", "failed"): 1,
            ("fear_greed", "success"): 0,
            ("fear_greed", "failed"): 0,
            ("sqlmesh", "success"): 3,
            ("sqlmesh", "failed"): 2,
            ("binance", "up_for_retry"): 1,
        }.items()
    }
    assert by_label(m, "cryptoflow_pipeline_runs_in_progress", "source") == {
        "binance": 1,
        "coingecko": 0,
        "fear_greed": 0,
        "sqlmesh": 0,
    }
    assert by_label(m, "cryptoflow_pipeline_rows_loaded_total", "source") == {
        "binance": 1000 + 7,
        "coingecko": 100,
        "fear_greed": 0,
        "sqlmesh": 0,
    }
    assert by_label(m, "cryptoflow_pipeline_retries_total", "source")["binance"] == 2 + 3 + 4
    assert by_label(m, "cryptoflow_pipeline_requests_total", "source") == {
        "binance": 10 + 6 + 5,
        "coingecko": 2,
        "fear_greed": 0,
        "sqlmesh": 0,
    }
    assert by_label(m, "cryptoflow_pipeline_rate_limited_total", "source")["binance"] == 1

    # latest finished run (the DLQ replay b3, the running b4 and the try b5 do not count): binance's is the failed b2
    assert by_label(m, "cryptoflow_pipeline_last_run_failed", "source") == {
        "binance": 1,
        "coingecko": 0,
        "sqlmesh": 0,
    }
    assert by_label(m, "cryptoflow_pipeline_last_run_timestamp_seconds", "source") == {
        "binance": (T0 + H + 5 * S).timestamp(),
        "coingecko": (T0 + 1800 * S + 4 * S).timestamp(),
        "sqlmesh": (T0 + 3000 * S + 8 * S).timestamp(),
    }
    assert by_label(m, "cryptoflow_pipeline_last_run_duration_seconds", "source") == {
        "binance": 5.0,
        "coingecko": 4.0,
        "sqlmesh": 8.0,
    }
    assert by_label(m, "cryptoflow_pipeline_last_success_timestamp_seconds", "source") == {
        "binance": (T0 + 20 * S).timestamp(),
        "coingecko": (T0 + 1800 * S + 4 * S).timestamp(),
        "sqlmesh": (T0 + 3000 * S + 8 * S).timestamp(),
    }
    assert by_label(m, "cryptoflow_pipeline_last_success_records_per_second", "source") == {
        "binance": 1000 / 20.0,
        "coingecko": 100 / 4.0,  # a transform loads nothing into raw
    }
    assert value(m, "cryptoflow_end_to_end_latency_seconds") == 123.5

    # data quality: the latest run per layer only
    assert m["cryptoflow_dq_checks"] == {
        (("layer", la), ("outcome", o)): n
        for (la, o), n in {
            ("raw", "pass"): 3,
            ("raw", "warn"): 1,
            ("raw", "fail"): 1,
            ("raw", "error"): 1,
            ("gold", "pass"): 2,
            ("gold", "warn"): 0,
            ("gold", "fail"): 0,
            ("gold", "error"): 0,
        }.items()
    }
    assert by_label(m, "cryptoflow_dq_failures", "layer") == {"raw": 2, "gold": 0}
    assert m["cryptoflow_dq_check_failed"] == {
        (("check", c), ("layer", la)): f
        for la, c, f in [
            ("raw", "raw klines are loaded", 0),
            ("raw", "p2", 0),
            ("raw", "p3", 0),
            ("raw", "spiky returns", 0),
            ("raw", "newest closed candle is fresh (raw)", 1),
            ("raw", "raw scan ran without errors", 1),
            ("gold", "g1", 0),
            ("gold", "g2", 0),
        ]
    }
    assert by_label(m, "cryptoflow_dq_last_run_timestamp_seconds", "layer") == {
        "raw": (T0 + H).timestamp(),
        "gold": (T0 + 2 * H).timestamp(),
    }

    assert by_label(m, "cryptoflow_dead_letters_pending", "source") == {
        "binance": 2,
        "coingecko": 1,
        "fear_greed": 0,
    }

    # freshness: the empty raw.fear_greed has no newest row, hence no sample
    newest = {
        "raw.binance_klines": NEWEST_CLOSE,
        "raw.coingecko_markets": NEWEST_SNAPSHOT,
        "gold.fct_prices": GOLD_NEWEST,
    }
    assert by_label(m, "cryptoflow_table_newest_timestamp_seconds", "table") == pytest.approx(
        {t: ts.timestamp() for t, ts in newest.items()}, abs=1e-3
    )
    ages = by_label(m, "cryptoflow_table_age_seconds", "table")
    assert set(ages) == set(newest)
    for table, ts in newest.items():
        assert ages[table] == pytest.approx(scraped_at - ts.timestamp(), abs=5), table
    assert by_label(m, "cryptoflow_freshness_threshold_seconds", "table") == {
        "raw.binance_klines": 3 * 3600,
        "raw.coingecko_markets": 12 * 3600,
        "raw.fear_greed": 48 * 3600,
        "gold.fct_prices": 4 * 3600,
    }

    # null ratios over gold.fct_prices' newest 24 hours, computed here from the rows themselves
    window = [r for r in GOLD_ROWS if r[1] > GOLD_NEWEST - 24 * H]
    assert value(m, "cryptoflow_null_ratio_window_rows", table="gold.fct_prices") == len(window) == 48
    expected = {
        column: sum(r[i] is None for r in window) / len(window)
        for i, column in enumerate(("close", "volume", "change_24h", "ma_7d"), start=2)
    }
    assert expected == {"close": 0.0, "volume": 0.0, "change_24h": 6 / 48, "ma_7d": 3 / 48}
    assert by_label(m, "cryptoflow_null_ratio", "column") == expected  # columns the view lacks are skipped


def test_fresh_database_answers_without_table_metrics(make_settings):
    settings = make_settings()
    db.ensure_database(settings)
    with endpoint(settings) as server:
        m = scrape(server.url)
    assert value(m, "cryptoflow_database_up") == 1
    assert set(by_label(m, "cryptoflow_scrape_section_failed", "section").values()) == {0}
    assert not [name for name in m if name.startswith(("cryptoflow_table_", "cryptoflow_null_ratio"))]
    assert not [name for name in m if name.startswith(("cryptoflow_pipeline_last_", "cryptoflow_dq_"))]
    assert "cryptoflow_end_to_end_latency_seconds" not in m
    assert set(m["cryptoflow_pipeline_runs_total"].values()) == {0}
    assert by_label(m, "cryptoflow_dead_letters_pending", "source") == {
        "binance": 0,
        "coingecko": 0,
        "fear_greed": 0,
    }
    assert set(by_label(m, "cryptoflow_freshness_threshold_seconds", "table")) == set(
        metrics.FRESHNESS_COLUMNS
    )


@pytest.mark.parametrize("how", ["dead port", "embedded server not running"])
def test_database_down_still_answers_200_with_database_up_0(make_settings, tmp_path, caplog, how):
    if how == "dead port":
        settings = make_settings(database={"url": DEAD_URL})
    else:
        settings = make_settings(database={"embedded_dir": str(tmp_path / "never-started")})
    caplog.set_level(logging.WARNING, logger="pipelines.ops.metrics")
    with endpoint(settings) as server:
        m = scrape(server.url)
        m2 = scrape(server.url)  # a second scrape is as good as the first
    for scraped in (m, m2):
        assert value(scraped, "cryptoflow_database_up") == 0
        assert set(scraped) == {  # what the configuration alone says
            "cryptoflow_database_up",
            "cryptoflow_scrape_duration_seconds",
            "cryptoflow_freshness_threshold_seconds",
            "cryptoflow_alerts_via_alertmanager",
        }
        assert value(scraped, "cryptoflow_alerts_via_alertmanager") == 0  # alerts.route: slack (the default)
    logged = [r.__dict__ for r in caplog.records]
    assert len(logged) == 1  # logged when it goes down, not on every scrape
    assert "s3cret" not in str(logged)
    if how == "dead port":
        # the metrics connect as the reader, on database.url's server (never with the writer's password)
        assert "postgresql://cryptoflow_reader@127.0.0.1:1/x" in logged[0]["error"]


def test_a_broken_table_flags_its_section_and_the_rest_still_reports(make_settings):
    settings = make_settings()
    db.ensure_database(settings)
    execute(settings, "CREATE TABLE raw.fear_greed (ts text)")  # max(ts) is no timestamp: the query fails
    execute(settings, "INSERT INTO raw.fear_greed VALUES ('yesterday')")
    execute(settings, "CREATE TABLE raw.coingecko_markets (snapshot_ts timestamptz)")
    execute(settings, "INSERT INTO raw.coingecko_markets VALUES (%s)", (NEWEST_SNAPSHOT,))
    with endpoint(settings) as server:
        m = scrape(server.url)
    assert value(m, "cryptoflow_database_up") == 1
    assert by_label(m, "cryptoflow_scrape_section_failed", "section") == {
        "pipeline_runs": 0,
        "data_quality": 0,
        "dead_letters": 0,
        "freshness": 1,
        "null_ratio": 0,
    }
    assert by_label(m, "cryptoflow_table_newest_timestamp_seconds", "table") == {
        "raw.coingecko_markets": NEWEST_SNAPSHOT.timestamp()
    }
    assert "cryptoflow_pipeline_runs_total" in m


def test_a_burst_of_scrapes_costs_one_round_of_queries(make_settings):
    settings = make_settings()
    db.ensure_database(settings)
    with endpoint(settings, cache_s=60) as server:
        first = scrape(server.url)
        assert value(first, "cryptoflow_pipeline_runs_total", source="binance", status="success") == 0
        with db.cursor(settings) as cur:
            insert_run(cur, "b1", "binance", "ingest ohlcv", "success", T0, 2.0, rows=5)
        results: list[dict] = []
        threads = [threading.Thread(target=lambda: results.append(scrape(server.url))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8
        for scraped in results:  # all from the cache: the new run is not seen yet
            assert value(scraped, "cryptoflow_pipeline_runs_total", source="binance", status="success") == 0
        assert server.collector.collections == 1

        server.collector.cache_s = 0  # the cache expired
        fresh = scrape(server.url)
        assert value(fresh, "cryptoflow_pipeline_runs_total", source="binance", status="success") == 1
        assert value(fresh, "cryptoflow_pipeline_rows_loaded_total", source="binance") == 5
        assert server.collector.collections == 2


def test_the_endpoint_uses_its_own_registry(make_settings):
    from prometheus_client import REGISTRY

    settings = make_settings(database={"url": DEAD_URL})
    before = {m.name for m in REGISTRY.collect()}
    with endpoint(settings) as server:
        m = scrape(server.url)
    assert not any(
        name.startswith(("python_", "process_")) for name in m
    )  # the default collectors are not in
    assert {m.name for m in REGISTRY.collect()} == before


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_blocks_until_sigterm_then_stops_cleanly(tmp_path):
    port = _free_port()
    code = (
        "from pipelines.ops import metrics_server; from pipelines.settings import load_settings; "
        f"metrics_server.serve(load_settings(environ={{}}, overrides={{'database': {{'url': {DEAD_URL!r}}}}}), "
        f"'127.0.0.1', {port}); print('stopped')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                m = scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the endpoint did not come up"
                time.sleep(0.1)
        assert value(m, "cryptoflow_database_up") == 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped"
    assert "s3cret" not in out + err
    with pytest.raises(OSError):
        scrape(f"http://127.0.0.1:{port}/metrics")
