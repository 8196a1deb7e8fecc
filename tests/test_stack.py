"""The docker-compose topology as native processes (`make stack-test`), configured from docker-compose.yml
itself (pipelines/runtime/stack.py): a real PostgreSQL 15 server prepared by docker/postgres-init.sh, Redis,
moto as MinIO with minio-init's bucket, the metrics endpoint, Prometheus with the compose scrape config and
our rules, Alertmanager paging a local webhook, and Airflow (api-server, scheduler, dag-processor, triggerer,
two Celery workers), each run with exactly the environment compose gives its container; the sandbox is the
exchange. No container engine runs here; this is the configuration users deploy.

One stack serves the scenarios below, in order (module scope: starting Airflow is most of the cost)."""

from __future__ import annotations

import contextlib
import datetime as dt
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
import yaml

from pipelines.bronze import open_lake, read_bronze
from pipelines.runtime import compose_spec as spec
from pipelines.runtime import db, services
from pipelines.runtime import stack as native
from pipelines.runtime import stack_monitoring as monitoring
from pipelines.sandbox import SandboxServer
from pipelines.settings import Settings, load_settings

BIN = Path(sys.executable).parent


def test_compose_environment_becomes_native_addresses_and_paths():
    """One source of settings: a service's native environment is its compose environment, the compose
    network's names swapped for this machine's addresses; nothing else changes."""
    env = spec.env_file()
    services = spec.compose(env)["services"]
    addresses = {
        "postgres": ("127.0.0.1", 40001),
        "redis": ("127.0.0.1", 40002),
        "minio": ("127.0.0.1", 40003),
    }
    ports = {"postgres": 5432, "redis": 6379, "minio": 9000}
    compose_env = spec.environment(services["airflow-scheduler"])
    here = native.native_environment(services["airflow-scheduler"], addresses, ports)
    assert here.keys() == compose_env.keys()
    assert here["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert here["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:40002/0"
    assert here["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://airflow:{env['AIRFLOW_DB_PASSWORD']}@127.0.0.1:40001/airflow"
    )
    assert here["CRYPTOFLOW__STORAGE__S3_ENDPOINT_URL"] == "http://127.0.0.1:40003"
    assert here["CRYPTOFLOW_CONFIG"] == f"{spec.ROOT}/config.yaml"
    changed = {k for k in compose_env if compose_env[k] != here[k]}
    assert changed == {
        "AIRFLOW__CELERY__BROKER_URL",
        "AIRFLOW__CELERY__RESULT_BACKEND",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "CRYPTOFLOW__DATABASE__URL",
        "CRYPTOFLOW__STORAGE__S3_ENDPOINT_URL",
        "CRYPTOFLOW_CONFIG",
        "AIRFLOW__CORE__DAGS_FOLDER",
    }  # the api-server's address is not in `addresses`: left as compose has it
    with pytest.raises(spec.ComposeRefuses, match="CRYPTOFLOW_DB_PASSWORD"):
        spec.compose({k: v for k, v in env.items() if k != "CRYPTOFLOW_DB_PASSWORD"})


HOUR_MS = 3_600_000
SYMBOLS = ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT"]
DAYS = 2  # the first incremental load's depth: what the hourly chain loads
BACKFILL_DAYS = 125  # what backfill_historical loads: three 1,000-candle pages a pair
WEIGHT_LIMIT = 125  # the sandbox exchange's request weight a minute (its exchangeInfo says so; config: 6,000)
ALLOWANCE = int(WEIGHT_LIMIT * 0.8)  # sources.binance.weight_budget
TIME_SCALE = 1 / 10  # the rules' and Alertmanager's durations: a 5-minute `for` fires in 30 s
CHAIN = ("ingest_market_data_daily", "ingest_ohlcv_hourly", "transform_sqlmesh", "data_quality")
WORKERS = {"worker1", "worker2"}


def test_monitoring_durations_scale_and_compose_commands_keep_their_flags():
    """How the native stack runs compose's Prometheus and Alertmanager: their commands with only the paths
    and addresses replaced, and every duration scaled by one factor."""
    assert monitoring.seconds("1h30m") == 5400 and monitoring.seconds("500ms") == 0.5
    assert [monitoring.compress(d, 1 / 10) for d in ("5m", "2h", "30s", "1s")] == ["30s", "720s", "3s", "1s"]
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        monitoring.seconds("5 minutes")
    command = spec.raw_compose()["services"]["prometheus"]["command"]
    assert monitoring.option(command, "--config.file") == "/etc/prometheus/cryptoflow/prometheus.compose.yml"
    here = monitoring.with_options(
        command, {"--config.file": "/tmp/p.yml", "--storage.tsdb.path": "/tmp/data"}
    )
    assert here == ["--config.file=/tmp/p.yml", "--storage.tsdb.path=/tmp/data"]
    assert monitoring.with_options(["x", "--port", "9108", "--host", "h"], {"--port": "1"}) == [
        "x",
        "--port=1",
        "--host",
        "h",
    ]
    with pytest.raises(KeyError, match=r"--web\.listen-address"):
        monitoring.with_options(command, {"--web.listen-address": "127.0.0.1:1"})


def run(
    stack: native.NativeStack, argv: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, env=stack.process_env(env), cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@dataclass
class World:
    sandbox: SandboxServer
    stack: native.NativeStack
    writer: dict[str, str]  # db-init's environment (the pipeline's writer) + the sandbox's addresses
    settings: Settings
    api: services.AirflowApi
    webhook: monitoring.AlertWebhook
    cwd: Path

    def cryptoflow(self, *argv: str, **env: str) -> subprocess.CompletedProcess:
        return run(self.stack, [str(BIN / "cryptoflow"), *argv], {**self.writer, **env}, self.cwd)

    def query(self, sql: str) -> list[tuple]:
        password = self.writer["CRYPTOFLOW_DB_PASSWORD"]
        url = self.settings.database.url
        with contextlib.closing(psycopg2.connect(url, password=password)) as c, c.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()

    def runs(self, dag_id: str) -> list[dict]:
        return self.api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=start_date")[
            "dag_runs"
        ]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100"
        return self.api.call("GET", path)["task_instances"]

    def logs(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace")[-1500:] for p in self.stack.root.glob("*.log")}

    def metric(self, line_start: str) -> float | None:
        host, port = self.stack.addresses["metrics"]
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=20) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(line_start):
                    return float(line.rsplit(" ", 1)[1])
        return None


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    cwd = tmp_path_factory.mktemp("stack")
    # the exchange's clock stands still: every count below is exact whenever the hour turns
    now_ms = int(time.time() * 1000)
    # .env's switch (compose reads it): every DAG starts paused; each scenario unpauses its own
    paused = {"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    with (
        SandboxServer(seed=7, calm=True, now_ms=now_ms, weight_limit=WEIGHT_LIMIT) as sandbox,
        native.native_stack(**paused) as stack,
    ):
        sources = {
            "CRYPTOFLOW__SOURCES__BINANCE__BASE_URL": sandbox.binance_url,
            "CRYPTOFLOW__SOURCES__BINANCE_ARCHIVE__BASE_URL": f"{sandbox.url}/archive",
            "CRYPTOFLOW__SOURCES__COINGECKO__BASE_URL": sandbox.coingecko_url,
            "CRYPTOFLOW__SOURCES__FEAR_GREED__BASE_URL": sandbox.fear_greed_url,
            "CRYPTOFLOW__UNIVERSE__MODE": "pinned",
            "CRYPTOFLOW__UNIVERSE__SYMBOLS": f"[{', '.join(SYMBOLS)}]",
            "CRYPTOFLOW__BACKFILL__DAYS": str(DAYS),
            "CRYPTOFLOW__BACKFILL__SOURCE": "rest",
        }
        writer = {**stack.service_env("db-init"), **sources}  # the x-cryptoflow-env of compose
        done = run(stack, [str(BIN / "cryptoflow"), "db", "start"], writer, cwd)  # db-init's command
        assert done.returncode == 0, done.stderr[-2000:]
        webhook = stack.start_monitoring(time_scale=TIME_SCALE)
        quick = {  # a dead worker's task is failed after 20 s without a heartbeat (default 300), retried in 2
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "CRYPTOFLOW__ORCHESTRATION__RETRY_DELAY_S": "2",
        }
        login = stack.start_airflow(workers=2, extra={**sources, **quick})
        host, port = stack.addresses["airflow-apiserver"]
        settings = load_settings(spec.ROOT / "config.yaml", environ=writer)
        api = services.AirflowApi(settings, login["password"], base=f"http://{host}:{port}")
        native.wait_until(lambda: set(CHAIN) <= api.dag_ids(), "the DAGs to be parsed", timeout_s=180)
        yield World(sandbox, stack, writer, settings, api, webhook, cwd)


def settle(world: World, dag_ids: tuple[str, ...], done: Callable[[], bool], timeout_s: float) -> None:
    """Wait until `done()` and every run of these DAGs (asset-triggered ones included) has succeeded; fail
    with the runs and the stack's logs as soon as one fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [r for dag_id in dag_ids for r in world.runs(dag_id)]
        states = [(r["dag_id"], r["dag_run_id"], r["state"]) for r in runs]
        assert all(state != "failed" for *_, state in states), (states, world.logs())
        if runs and all(state == "success" for *_, state in states) and done():
            return
        assert time.monotonic() < deadline, (f"{dag_ids} did not finish in {timeout_s} s", states)
        time.sleep(3)


@pytest.mark.slow
def test_the_hourly_chain_runs_on_the_celery_workers_into_a_postgres_15_server(world):
    """ingest -> transform -> checks as Airflow schedules them (cron, then asset events), on the two Celery
    workers: exact rows in raw, in bronze on the S3 endpoint and in gold; the checks pass; `cryptoflow
    check` passes on the same server; the dashboard's environment reads as the read-only role."""
    for dag_id in CHAIN:  # the ingest DAGs' latest cron interval runs at once (catchup off)
        world.api.pause(dag_id, False)
    expected = len(SYMBOLS) * DAYS * 24

    def loaded() -> bool:
        gold = world.query("SELECT count(*) FROM gold.fct_prices")[0][0] if world.runs("data_quality") else 0
        return gold == expected and world.runs("data_quality")[-1]["state"] == "success"

    settle(world, CHAIN, loaded, timeout_s=600)
    hosts = {
        ti["hostname"]
        for dag_id in CHAIN
        for r in world.runs(dag_id)
        for ti in world.task_instances(dag_id, r["dag_run_id"])
    }
    assert hosts <= WORKERS and hosts, hosts  # every task ran on a Celery worker
    listening = world.stack.listening()  # every server of the stack, on this machine's loopback only
    assert {
        "postgres",
        "redis",
        "minio",
        "metrics",
        "alertmanager",
        "prometheus",
        "airflow-apiserver",
    } <= set(listening), listening
    assert {ip for addresses in listening.values() for ip, _ in addresses} == {"127.0.0.1"}, listening

    # Debian's server (15 on Debian 12), not the embedded one the other tests use
    assert world.query("SHOW server_version_num")[0][0][:2] == native.PG_BIN.parts[-2]
    assert world.settings.database.url.startswith("postgresql://cryptoflow_writer@127.0.0.1:")
    per_pair = [(s, DAYS * 24, DAYS * 24) for s in SYMBOLS]
    raw = "SELECT symbol, count(*), count(DISTINCT open_time) FROM raw.binance_klines GROUP BY 1 ORDER BY 1"
    assert world.query(raw) == per_pair
    gold = "SELECT symbol, count(*), count(DISTINCT open_time) FROM gold.fct_prices GROUP BY 1 ORDER BY 1"
    assert world.query(gold) == per_pair
    bronze = read_bronze(open_lake(world.settings), "binance_klines")  # in minio-init's bucket
    assert world.settings.storage.bronze_url.startswith("s3://") and bronze.num_rows == expected
    assert world.query("SELECT count(*) FILTER (WHERE outcome IN ('fail', 'error')) FROM ops.dq_results") == [
        (0,)
    ]
    done = world.cryptoflow("check")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])

    # the dashboard's and metrics' containers get the reader's environment: it reads gold, writes nothing
    reader = load_settings(spec.ROOT / "config.yaml", environ=world.stack.service_env("dashboard"))
    from pipelines.dashboard_bench import measure_queries

    assert len(measure_queries(reader, repeats=1)) == 21  # every query of the pages, as the reader, here
    with contextlib.closing(psycopg2.connect(db.reader_url(reader))) as c, c.cursor() as cur:
        cur.execute("SELECT current_user, count(*) FROM gold.fct_prices GROUP BY 1")
        assert cur.fetchall() == [(reader.database.reader_role, expected)]
        with pytest.raises(
            psycopg2.errors.InsufficientPrivilege, match="permission denied for view fct_prices"
        ):
            cur.execute("DELETE FROM gold.fct_prices")  # SELECT only
        c.rollback()
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):  # and read-only by default
            cur.execute("CREATE TEMPORARY TABLE probe AS SELECT 1")


@pytest.mark.slow
def test_a_500_storm_past_the_retries_shows_in_the_metrics(world):
    """CoinGecko answers 500 to everything: the run gives up after its retries, exits 1 with the HTTP
    error, keeps what was loaded, and the metrics endpoint reports the source's latest run failed
    (the alert it fires is checked at the end, after the other scenarios had time to run)."""
    before = world.query("SELECT count(*) FROM raw.coingecko_markets")
    world.sandbox.set_fault("markets", "500")
    done = world.cryptoflow("ingest", "markets", CRYPTOFLOW__SOURCES__COINGECKO__MAX_RETRIES="1")
    assert done.returncode == 1 and "HTTP 500" in done.stderr, done.stderr[-2000:]
    assert world.query("SELECT count(*) FROM raw.coingecko_markets") == before and before != [(0,)]
    failed = 'cryptoflow_pipeline_last_run_failed{source="coingecko"}'
    native.wait_until(lambda: world.metric(failed) == 1.0, "the failed run in /metrics", timeout_s=30)


@pytest.mark.slow
def test_backfill_batches_share_the_weight_budget_across_workers_and_survive_a_killed_worker(world):
    """backfill_historical, one pair a batch, two batches at a time: they run on both workers, and their
    request weight, reserved in the one budget every process shares, never passes the exchange's allowance
    in any minute (the sandbox counts it, as Binance does per IP) - though the whole needs more than one
    minute's worth. The worker running the first batch is killed (SIGKILL, all its processes) while the
    batch's pages are in flight: Airflow fails the task when its heartbeat stops and retries it on the other worker;
    the rows are exact, once each, in raw and in bronze."""
    victim = SYMBOLS[0]
    world.sandbox.set_fault("klines", "slow", times=1000, symbol=victim, delay=3)  # 3 s a page
    world.api.pause("backfill_historical", False)
    conf = {"days": BACKFILL_DAYS, "symbols": SYMBOLS, "batch_size": 1}
    run_id = world.api.trigger("backfill_historical", conf)

    def pages_served() -> int:
        return next(1000 - f["times_left"] for f in world.sandbox.faults if f["kind"] == "slow")

    def first_batch() -> dict:
        tis = world.task_instances("backfill_historical", run_id)
        return next(ti for ti in tis if ti["task_id"] == "load_batch" and ti["map_index"] == 0)

    native.wait_until(
        lambda: first_batch()["state"] == "running" and pages_served() >= 1, "the first page", 300
    )
    killed = first_batch()["hostname"]
    # in the middle of it: its pages asked for (in parallel, each answered 3 s later), nothing committed
    loaded = f"SELECT count(*) FROM raw.binance_klines WHERE symbol = '{victim}'"
    assert killed in WORKERS and world.query(loaded) == [(DAYS * 24,)], killed
    world.stack.kill(f"airflow-worker-{killed.removeprefix('worker')}")

    settle(world, ("backfill_historical",), lambda: True, timeout_s=600)
    base = f"/api/v2/dags/backfill_historical/dagRuns/{run_id}/taskInstances/load_batch"
    batches = [
        ti for ti in world.task_instances("backfill_historical", run_id) if ti["task_id"] == "load_batch"
    ]
    assert len(batches) == len(SYMBOLS) and {ti["state"] for ti in batches} == {"success"}
    tries = {
        ti["map_index"]: [
            t["hostname"] for t in world.api.call("GET", f"{base}/{ti['map_index']}/tries")["task_instances"]
        ]
        for ti in batches
    }
    [survivor] = WORKERS - {killed}
    assert tries[0] == [killed, survivor], tries  # failed on the dead worker, retried on the other
    assert {h for hosts in tries.values() for h in hosts} == WORKERS  # the batches ran on both

    per_pair = [(s, BACKFILL_DAYS * 24, BACKFILL_DAYS * 24) for s in SYMBOLS]
    raw = "SELECT symbol, count(*), count(DISTINCT open_time) FROM raw.binance_klines GROUP BY 1 ORDER BY 1"
    assert world.query(raw) == per_pair
    bronze = read_bronze(open_lake(world.settings), "binance_klines")
    keys = {
        (s, t) for s, t in zip(bronze["symbol"].to_pylist(), bronze["open_time"].to_pylist(), strict=True)
    }
    assert bronze.num_rows == len(keys) == len(SYMBOLS) * BACKFILL_DAYS * 24  # each candle once

    assert world.sandbox.weight_rejections == 0  # no 429
    assert world.sandbox.peak_weight <= ALLOWANCE, world.sandbox.peak_weight
    [(minutes, used)] = world.query(
        "SELECT count(*), sum(used) FROM ops.request_weight WHERE api = 'binance'"
    )
    assert used > ALLOWANCE and minutes >= 2  # more than a minute's allowance: the budget had to hold it back

    # the history reaches silver and gold: the batches' asset events ran the transform, which restated the hours
    # SQLMesh had processed (empty) before they were loaded; the checks after it pass
    candles = [(s, BACKFILL_DAYS * 24) for s in SYMBOLS]

    def transformed() -> bool:
        for table in ("silver.stg_binance__ohlcv", "gold.fct_prices"):
            if world.query(f"SELECT symbol, count(*) FROM {table} GROUP BY 1 ORDER BY 1") != candles:
                return False
        # the checks ran after the last transform had finished (its ledger row ends before its asset event)
        [(transformed_at,)] = world.query(
            "SELECT max(finished_at) FROM ops.pipeline_runs WHERE source = 'sqlmesh'"
        )
        return dt.datetime.fromisoformat(world.runs("data_quality")[-1]["start_date"]) > transformed_at

    settle(world, ("transform_sqlmesh", "data_quality"), transformed, timeout_s=600)
    failing = (
        "SELECT layer, check_name, diagnostics::text FROM ops.dq_results WHERE outcome IN ('fail', 'error')"
    )
    assert world.query(failing) == []


@pytest.mark.slow
def test_the_storm_reached_the_webhook_through_prometheus_and_alertmanager_exactly_once(world):
    """The rule (monitoring/alerts.yml, durations scaled by TIME_SCALE) fired on the failed CoinGecko run,
    Alertmanager notified the webhook once, and nothing else paged while the other scenarios ran: no
    endpoint or database down, no failing check, no killed worker's run left failed."""
    native.wait_until(lambda: world.webhook.firing(), "the alert at the webhook", timeout_s=180)
    time.sleep(
        3 * monitoring.seconds(monitoring.compress("30s", TIME_SCALE))
    )  # a few more evaluations and sends
    failing = world.query(
        "SELECT layer, check_name, outcome, measured_value, diagnostics::text FROM ops.dq_results WHERE outcome IN ('fail', 'error')"
    )  # what a CryptoflowDataQualityFailing page would be about
    assert world.webhook.firing() == ["CryptoflowPipelineFailing"], (world.webhook.received, failing)
    [notification] = world.webhook.received
    [alert] = notification["alerts"]
    assert alert["labels"]["source"] == "coingecko" and notification["receiver"] == "cryptoflow-webhook"

    # the rules Prometheus ran are ours, only their durations scaled
    ours = yaml.safe_load((monitoring.MONITORING / "alerts.yml").read_text())
    ran = yaml.safe_load((world.stack.root / "prometheus" / "alerts.yml").read_text())
    for rule, same in zip(ours["groups"][0]["rules"], ran["groups"][0]["rules"], strict=True):
        assert {k: v for k, v in rule.items() if k != "for"} == {k: v for k, v in same.items() if k != "for"}
        assert monitoring.seconds(same["for"]) == max(1, round(monitoring.seconds(rule["for"]) * TIME_SCALE))
