"""The docker-compose topology as native processes (`make stack-test`), configured from docker-compose.yml
itself (pipelines/runtime/stack.py): a real PostgreSQL 15 server prepared by docker/postgres-init.sh, Redis,
moto as MinIO with minio-init's bucket, and the pipeline's own services run with exactly the environment
compose gives their containers. No container engine runs here; this is the configuration users deploy."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from pipelines.bronze import open_lake, read_bronze
from pipelines.runtime import services
from pipelines.runtime import stack as native
from pipelines.sandbox import SandboxServer
from pipelines.settings import load_settings

BIN = Path(sys.executable).parent
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
DAYS = 3


def test_compose_environment_becomes_native_addresses_and_paths():
    """One source of settings: a service's native environment is its compose environment, the compose
    network's names swapped for this machine's addresses; nothing else changes."""
    env = native.env_file()
    services = native.compose(env)["services"]
    addresses = {
        "postgres": ("127.0.0.1", 40001),
        "redis": ("127.0.0.1", 40002),
        "minio": ("127.0.0.1", 40003),
    }
    ports = {"postgres": 5432, "redis": 6379, "minio": 9000}
    compose_env = native.environment(services["airflow-scheduler"])
    here = native.native_environment(services["airflow-scheduler"], addresses, ports)
    assert here.keys() == compose_env.keys()
    assert here["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert here["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:40002/0"
    assert here["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        f"postgresql+psycopg2://airflow:{env['AIRFLOW_DB_PASSWORD']}@127.0.0.1:40001/airflow"
    )
    assert here["CRYPTOFLOW__STORAGE__S3_ENDPOINT_URL"] == "http://127.0.0.1:40003"
    assert here["CRYPTOFLOW_CONFIG"] == f"{native.ROOT}/config.yaml"
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
    with pytest.raises(native.ComposeRefuses, match="CRYPTOFLOW_DB_PASSWORD"):
        native.compose({k: v for k, v in env.items() if k != "CRYPTOFLOW_DB_PASSWORD"})


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOFLOW", "AWS_", "AIRFLOW"))}
    return subprocess.run(
        argv, env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.slow
def test_the_compose_settings_run_the_pipeline_on_a_real_postgres_15_server(tmp_path):
    with SandboxServer(seed=7, calm=True) as sandbox, native.native_stack() as stack:
        sources = {
            "CRYPTOFLOW__SOURCES__BINANCE__BASE_URL": sandbox.binance_url,
            "CRYPTOFLOW__SOURCES__BINANCE_ARCHIVE__BASE_URL": f"{sandbox.url}/archive",
            "CRYPTOFLOW__SOURCES__COINGECKO__BASE_URL": sandbox.coingecko_url,
            "CRYPTOFLOW__SOURCES__FEAR_GREED__BASE_URL": sandbox.fear_greed_url,
            "CRYPTOFLOW__UNIVERSE__MODE": "pinned",
            "CRYPTOFLOW__UNIVERSE__SYMBOLS": f"[{', '.join(SYMBOLS)}]",
            "CRYPTOFLOW__BACKFILL__DAYS": str(DAYS),  # the first incremental load's depth
        }
        writer = {**stack.service_env("db-init"), **sources}  # the x-cryptoflow-env of compose
        cryptoflow = str(BIN / "cryptoflow")
        for step in (["db", "start"], ["ingest", "all"], ["transform"], ["check"]):
            done = run([cryptoflow, *step], writer, tmp_path)
            assert done.returncode == 0, (step, done.stdout[-2000:], done.stderr[-3000:])

        settings = load_settings(native.ROOT / "config.yaml", environ=writer)
        assert settings.database.url.startswith("postgresql://cryptoflow_writer@127.0.0.1:")
        with (
            contextlib.closing(
                psycopg2.connect(settings.database.url, password=writer["CRYPTOFLOW_DB_PASSWORD"])
            ) as c,
            c.cursor() as cur,
        ):
            cur.execute("SHOW server_version_num")
            # Debian's server (15 on Debian 12), not the embedded one the other tests use
            assert cur.fetchone()[0][:2] == native.PG_BIN.parts[-2]
            cur.execute("SELECT symbol, count(*) FROM raw.binance_klines GROUP BY 1 ORDER BY 1")
            raw = cur.fetchall()
            cur.execute("SELECT symbol, count(*) FROM gold.fct_prices GROUP BY 1 ORDER BY 1")
            gold = cur.fetchall()
        assert [s for s, _ in raw] == SYMBOLS and raw == gold
        assert all(n == DAYS * 24 for _, n in raw), raw
        bronze = read_bronze(
            open_lake(settings), "binance_klines"
        )  # on the S3 endpoint, in minio-init's bucket
        assert settings.storage.bronze_url.startswith("s3://") and bronze.num_rows == sum(n for _, n in raw)

        # the dashboard's and metrics' containers get the reader's environment: it reads gold, writes nothing
        reader = load_settings(
            native.ROOT / "config.yaml", environ={**stack.service_env("dashboard"), **sources}
        )
        from pipelines.runtime import db

        with contextlib.closing(psycopg2.connect(db.reader_url(reader))) as c, c.cursor() as cur:
            cur.execute("SELECT current_user, count(*) FROM gold.fct_prices GROUP BY 1")
            assert cur.fetchall() == [(reader.database.reader_role, sum(n for _, n in raw))]
            with pytest.raises(
                psycopg2.errors.InsufficientPrivilege, match="permission denied for view fct_prices"
            ):
                cur.execute("DELETE FROM gold.fct_prices")  # SELECT only
            c.rollback()
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):  # and read-only by default
                cur.execute("CREATE TEMPORARY TABLE probe AS SELECT 1")


@pytest.mark.slow
def test_backfill_batches_run_on_two_celery_workers_from_the_compose_settings(tmp_path):
    """Airflow as compose runs it (CeleryExecutor on Redis, api-server, scheduler, dag-processor, triggerer)
    with two Celery workers: backfill_historical's batches run on both, exact rows in raw."""
    import time

    symbols = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT"]
    # .env's switch (compose reads it): the scheduled DAGs stay paused, the workers are the backfill's
    paused = {"AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
    with SandboxServer(seed=7, calm=True) as sandbox, native.native_stack(**paused) as stack:
        sources = {
            "CRYPTOFLOW__SOURCES__BINANCE__BASE_URL": sandbox.binance_url,
            "CRYPTOFLOW__SOURCES__BINANCE_ARCHIVE__BASE_URL": f"{sandbox.url}/archive",
            "CRYPTOFLOW__SOURCES__COINGECKO__BASE_URL": sandbox.coingecko_url,
            "CRYPTOFLOW__SOURCES__FEAR_GREED__BASE_URL": sandbox.fear_greed_url,
            "CRYPTOFLOW__BACKFILL__SOURCE": "rest",
        }
        writer = {**stack.service_env("db-init"), **sources}
        done = run([str(BIN / "cryptoflow"), "db", "start"], writer, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        login = stack.start_airflow(workers=2, extra=sources)
        host, port = stack.addresses["airflow-apiserver"]
        settings = load_settings(native.ROOT / "config.yaml", environ=writer)
        api = services.AirflowApi(settings, login["password"], base=f"http://{host}:{port}")
        native.wait_until(
            lambda: "backfill_historical" in api.dag_ids(), "the DAGs to be parsed", timeout_s=180
        )
        api.pause("backfill_historical", False)
        run_id = api.trigger("backfill_historical", {"days": 2, "symbols": symbols, "batch_size": 1})
        deadline = time.monotonic() + 480
        while (state := api.state("backfill_historical", run_id)) not in ("success", "failed"):
            assert time.monotonic() < deadline, "backfill_historical did not finish"
            time.sleep(3)
        logs = {p.name: p.read_text(errors="replace")[-1500:] for p in stack.root.glob("airflow-*.log")}
        assert state == "success", logs
        tis = api.call("GET", f"/api/v2/dags/backfill_historical/dagRuns/{run_id}/taskInstances?limit=100")
        batches = [ti for ti in tis["task_instances"] if ti["task_id"] == "load_batch"]
        assert len(batches) == len(symbols) and {ti["state"] for ti in batches} == {"success"}
        assert {ti["hostname"] for ti in batches} == {"worker1", "worker2"}  # spread over both workers

        with (
            contextlib.closing(
                psycopg2.connect(settings.database.url, password=writer["CRYPTOFLOW_DB_PASSWORD"])
            ) as c,
            c.cursor() as cur,
        ):
            cur.execute(
                "SELECT symbol, count(*), count(DISTINCT open_time) FROM raw.binance_klines GROUP BY 1 ORDER BY 1"
            )
            assert cur.fetchall() == [(s, 48, 48) for s in sorted(symbols)]
