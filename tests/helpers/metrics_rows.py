"""Known rows for the Prometheus endpoint, the endpoint itself on a free port, and a scrape parsed with
prometheus_client's own parser (tests/test_metrics.py, tests/test_monitoring.py)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from pipelines.ops import metrics_server
from pipelines.runtime import db


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label pairs -> value}; asserts HTTP 200."""
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        text = response.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: v for key, v in samples.get(name, {}).items()}


@contextlib.contextmanager
def endpoint(settings, cache_s: float = 0):
    server = metrics_server.start(settings, "127.0.0.1", 0, cache_s=cache_s)
    try:
        yield server
    finally:
        server.stop()


def insert_run(
    cur,
    run_id,
    source,
    command,
    status,
    started,
    duration,
    *,
    rows=0,
    retries=0,
    requests=0,
    limited=0,
    details=None,
) -> None:
    finished = None if status == "running" else started + dt.timedelta(seconds=duration)
    cur.execute(
        "INSERT INTO ops.pipeline_runs (run_id, source, command, started_at, finished_at, duration_s, status, "
        "rows_raw, retries, requests, rate_limited, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            run_id,
            source,
            command,
            started,
            finished,
            duration,
            status,
            rows,
            retries,
            requests,
            limited,
            json.dumps(details or {}),
        ),
    )


T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=3)
H = dt.timedelta(hours=1)
S = dt.timedelta(seconds=1)
NEWEST_CLOSE = T0 + 2 * H - dt.timedelta(milliseconds=1)  # raw.binance_klines
NEWEST_SNAPSHOT = T0 + 90 * dt.timedelta(minutes=1)  # raw.coingecko_markets
GOLD_NEWEST = T0 + H  # gold.fct_prices open_time
# gold.fct_prices rows: 2 symbols x 30 hours; hour index h = 0 (oldest) .. 29 (GOLD_NEWEST)
GOLD_ROWS = [
    (
        symbol,
        GOLD_NEWEST - (29 - h) * H,
        100 + h,  # close: never NULL
        None if h == 0 else 5,  # volume: NULL only outside the newest 24 hours
        None if h < 9 else 0.01,  # change_24h: NULL in h 6, 7, 8 of the window, per symbol
        None if symbol == "ETHUSDT" and h in (10, 20, 29) else 101.5,  # ma_7d
    )
    for symbol in ("BTCUSDT", "ETHUSDT")
    for h in range(30)
]


def populate(settings) -> None:
    """Known rows in every table the endpoint reads."""
    db.ensure_database(settings)
    with db.cursor(settings) as cur:
        # binance: success, failed (the latest finished ingest), a DLQ replay (ignored by the last-run gauges), running
        insert_run(
            cur,
            "b1",
            "binance",
            "ingest ohlcv",
            "success",
            T0,
            20.0,
            rows=1000,
            retries=2,
            requests=10,
            limited=1,
        )
        insert_run(cur, "b2", "binance", "ingest ohlcv", "failed", T0 + H, 5.0, retries=3, requests=6)
        insert_run(cur, "b3", "binance", "dlq replay", "success", T0 + 2 * H, 1.0, rows=7)
        insert_run(cur, "b4", "binance", "ingest ohlcv", "running", T0 + 150 * dt.timedelta(minutes=1), 0.0)
        # an Airflow try that will be retried: counted, but not a final outcome
        insert_run(
            cur,
            "b5",
            "binance",
            "ingest ohlcv",
            "up_for_retry",
            T0 + 140 * dt.timedelta(minutes=1),
            2.0,
            retries=4,
            requests=5,
        )
        # coingecko: an old failure, then a success
        insert_run(cur, "c1", "coingecko", "ingest markets", "failed", T0, 2.0, requests=1)
        insert_run(
            cur, "c2", "coingecko", "ingest markets", "success", T0 + 30 * 60 * S, 4.0, rows=100, requests=1
        )
        # sqlmesh (commands as `cryptoflow transform` writes them): s1 is the latest successful prod run with a
        # latency (s4 has none); the newest run, s5, failed, but in dev: it does not make the pipeline failing
        insert_run(
            cur,
            "s1",
            "sqlmesh",
            "transform prod",
            "success",
            T0 + 600 * S,
            30.0,
            details={
                "environment": "prod",
                "latency_s": 123.5,
                "gold_newest_close": NEWEST_CLOSE.isoformat(),
            },
        )
        insert_run(
            cur,
            "s2",
            "sqlmesh",
            "transform dev",
            "success",
            T0 + 1200 * S,
            10.0,
            details={"environment": "dev", "latency_s": 5.0},
        )
        insert_run(
            cur,
            "s3",
            "sqlmesh",
            "transform prod",
            "failed",
            T0 + 2400 * S,
            3.0,
            details={"environment": "prod", "latency_s": 1.0},
        )
        insert_run(
            cur,
            "s4",
            "sqlmesh",
            "transform prod",
            "success",
            T0 + 3000 * S,
            8.0,
            details={"environment": "prod", "latency_s": None},
        )
        insert_run(cur, "s5", "sqlmesh", "transform dev", "failed", T0 + 4000 * S, 1.0)

        dq = [
            ("dq-1", "raw", "old check a", "fail", T0),  # an older run: ignored
            ("dq-1", "raw", "old check b", "pass", T0),
            *[("dq-2", "raw", name, "pass", T0 + H) for name in ("raw klines are loaded", "p2", "p3")],
            ("dq-2", "raw", "spiky returns", "warn", T0 + H),
            ("dq-2", "raw", "newest closed candle is fresh (raw)", "fail", T0 + H),
            ("dq-2", "raw", "raw scan ran without errors", "error", T0 + H),
            ("dq-3", "gold", "g1", "pass", T0 + 2 * H),
            ("dq-3", "gold", "g2", "pass", T0 + 2 * H),
        ]
        for run_id, layer, check, outcome, at in dq:
            cur.execute(
                "INSERT INTO ops.dq_results (run_id, layer, check_name, table_name, level, outcome, checked_at) "
                "VALUES (%s, %s, %s, 't', 'fail', %s, %s)",
                (run_id, layer, check, outcome, at),
            )
        for source, replayed in (
            ("binance", False),
            ("binance", False),
            ("binance", True),
            ("coingecko", False),
        ):
            cur.execute(
                "INSERT INTO raw.dead_letter (source, table_name, payload, reason, load_id, replayed_at) "
                "VALUES (%s, 't', '{}', 'bad', 'l', CASE WHEN %s THEN now() END)",
                (source, replayed),
            )

        cur.execute(
            "CREATE TABLE raw.binance_klines (symbol text, open_time timestamptz, close_time timestamptz)"
        )
        for h in range(3):
            open_time = NEWEST_CLOSE + dt.timedelta(milliseconds=1) - (3 - h) * H
            cur.execute(
                "INSERT INTO raw.binance_klines VALUES ('BTCUSDT', %s, %s)",
                (open_time, open_time + H - dt.timedelta(milliseconds=1)),
            )
        cur.execute("CREATE TABLE raw.coingecko_markets (id text, snapshot_ts timestamptz)")
        cur.execute(
            "INSERT INTO raw.coingecko_markets VALUES ('bitcoin', %s), ('bitcoin', %s)",
            (NEWEST_SNAPSHOT - H, NEWEST_SNAPSHOT),
        )
        cur.execute("CREATE TABLE raw.fear_greed (ts timestamptz, value smallint)")  # exists, but empty

        # gold as SQLMesh builds it: a view over a physical table
        cur.execute("CREATE SCHEMA sqlmesh__gold")
        cur.execute(
            "CREATE TABLE sqlmesh__gold.gold__fct_prices__1 (symbol text, open_time timestamptz, "
            "close numeric(36, 8), volume numeric(36, 8), change_24h double precision, ma_7d double precision)"
        )
        cur.executemany(
            "INSERT INTO sqlmesh__gold.gold__fct_prices__1 VALUES (%s, %s, %s, %s, %s, %s)", GOLD_ROWS
        )
        cur.execute("CREATE VIEW gold.fct_prices AS SELECT * FROM sqlmesh__gold.gold__fct_prices__1")
