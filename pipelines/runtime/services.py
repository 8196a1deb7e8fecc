"""`cryptoflow up` / `cryptoflow down`: the whole stack on one machine, no Docker.

up starts (or finds running) the embedded Postgres, gives Airflow its own metadata database on it, and
starts as background processes: `airflow standalone` (api-server, scheduler, dag-processor, triggerer;
LocalExecutor), the Prometheus metrics endpoint and, in sandbox mode, the API sandbox. Each one's pid is
kept in .cryptoflow/run/<name>.json and its output in .cryptoflow/logs/<name>.log. down ends exactly
those processes (and their children), and the embedded Postgres if up was the one that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import psutil

from pipelines.http import answers
from pipelines.runtime import db, embedded
from pipelines.settings import Settings

T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = PROJECT_ROOT / "airflow" / "dags"
AIRFLOW_USER = "admin"


class ServiceError(RuntimeError):
    """A service of the stack could not be started (its log says why)."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    health_url: str
    env: dict[str, str]


def bin_path(name: str) -> str:
    """A console script of this environment (the venv's bin dir, next to the running interpreter)."""
    return str(Path(sys.executable).parent / name)


def run_airflow(settings: Settings, config_file: Path | None, *args: str) -> None:
    """`airflow <args>` as `cryptoflow up` runs Airflow (its environment, this deployment's config file);
    ServiceError with its last line when it fails."""
    env = {**os.environ, **airflow_env(settings, config_file or Path("config.yaml").resolve())}
    done = subprocess.run([bin_path("airflow"), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ServiceError(f"`airflow {' '.join(args)}` failed (exit {done.returncode}): {last[0]}")


def _run_dir(settings: Settings) -> Path:
    return settings.state_dir / "run"


def _log_dir(settings: Settings) -> Path:
    return settings.state_dir / "logs"


def airflow_env(settings: Settings, config_file: Path) -> dict[str, str]:
    """The environment `airflow standalone` and every task it runs see."""
    port = settings.services.airflow_port
    home = settings.path(settings.services.airflow_home)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",  # `up` means: run the pipeline
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_USER}:admin",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        # with database.url (an external Postgres) the operator gives Airflow its own metadata database
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        or embedded.airflow_metadata_url(settings),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        # the log servers default to 8793/8794: next to the API port instead, so two stacks can coexist
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 2),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # standalone starts the scheduler (LocalExecutor) beside the api-server, and the scheduler queues the
        # cron DAGs' latest runs at once. A worker that cannot reach the execution API gives up after
        # [workers] execution_api_retries tries (5: about 4-15 s) and Airflow fails the try from outside,
        # without an error. 10 tries wait about 2.5 min on average (over 30 s in all but 1 in 20,000 starts)
        # for an api-server that starts slowly on a busy machine.
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "CRYPTOFLOW_CONFIG": str(config_file),
        # standalone spawns `airflow ...` from PATH: this environment's bin first
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false",
        "SQLMESH__DISABLE_ANONYMIZED_ANALYTICS": "true",
        "PYTHONUNBUFFERED": "1",
    }


def _services(settings: Settings, config_file: Path) -> list[Service]:
    cfg = ["--config", str(config_file)]
    s = settings.services
    found = []
    if settings.sandbox.enabled:
        port = settings.sandbox.port
        found.append(
            Service(
                "sandbox",
                [bin_path("cryptoflow"), *cfg, "sandbox", "--port", str(port)],
                f"http://127.0.0.1:{port}/binance/api/v3/ping",
                {},
            )
        )
    found.append(
        Service(
            "metrics",
            [bin_path("cryptoflow"), *cfg, "metrics", "--port", str(s.metrics_port)],
            f"http://127.0.0.1:{s.metrics_port}/metrics",
            {},
        )
    )
    from pipelines.runtime import dashboard_server as dashboard

    found.append(
        Service(
            "dashboard",
            dashboard.command(settings, s.dashboard_port),
            f"http://127.0.0.1:{s.dashboard_port}/_stcore/health",
            dashboard.env(settings, config_file),
        )
    )
    found.append(
        Service(
            "airflow",
            [bin_path("airflow"), "standalone"],
            f"http://127.0.0.1:{s.airflow_port}/api/v2/monitor/health",
            airflow_env(settings, config_file),
        )
    )
    return found


def _alive(record: dict[str, Any]) -> psutil.Process | None:
    """The recorded process, if it still runs and is the same process (not a recycled pid)."""
    try:
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["create_time"]) < 1 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except (psutil.NoSuchProcess, KeyError):
        pass
    return None


def _records(settings: Settings) -> dict[str, dict[str, Any]]:
    folder = _run_dir(settings)
    if not folder.exists():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def up(settings: Settings, config_file: Path, timeout_s: float = 240, paused: bool = False) -> list[str]:
    """Start what is not running yet; wait until each answers; return the lines to print.

    DAGs start unpaused (`up` means: run the pipeline) unless paused=True."""
    was_running = not settings.database.embedded or embedded.status(settings).running
    db.ensure_database(settings)
    run_dir, log_dir = _run_dir(settings), _log_dir(settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    records = _records(settings)
    state = run_dir / "up.state"
    if not state.exists() or not any(_alive(r) for r in records.values()):  # fresh, or left by a reboot
        state.write_text(json.dumps({"started_db": not was_running}))
    started: list[str] = []
    services = _services(settings, config_file)
    if paused:
        services = [
            Service(
                s.name, s.argv, s.health_url, {**s.env, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True"}
            )
            if s.name == "airflow"
            else s
            for s in services
        ]
    for service in services:
        if service.name in records and _alive(records[service.name]):
            continue
        if service.name == "sandbox" and answers(service.health_url):
            continue  # a sandbox is already serving on sandbox.port (e.g. `cryptoflow sandbox`): use it
        if answers(service.health_url):
            raise ServiceError(
                f"{service.health_url} already answers, but not from a process `cryptoflow up` started: "
                f"stop it or change its port in config.yaml (services.*, sandbox.port)"
            )
        log = _private_log(log_dir / f"{service.name}.log")
        proc = subprocess.Popen(
            service.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **service.env},
            cwd=settings.project_dir,
            start_new_session=True,  # its own process group: `down` ends it and its children
            umask=0o077,  # what it writes (Airflow's generated admin password, its logs) is the user's only
        )
        record = {
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "argv": service.argv,
        }
        (run_dir / f"{service.name}.json").write_text(json.dumps(record))
        started.append(service.name)
    deadline = time.monotonic() + timeout_s
    pending = {s.name: s for s in services}
    problem = None
    while pending and not problem:
        for name, service in list(pending.items()):
            if answers(service.health_url):
                del pending[name]
            elif not _alive(_records(settings).get(name, {})):
                problem = f"{name} exited during start-up: see {log_dir / (name + '.log')}"
        if time.monotonic() > deadline:
            problem = (
                f"{', '.join(pending)} did not answer within {timeout_s:.0f} s: see the logs in {log_dir}"
            )
        time.sleep(0.5)
    if problem:
        _stop(settings, started)  # leave nothing half-started behind; what ran before stays up
        raise ServiceError(problem)
    passwords = settings.path(settings.services.airflow_home) / PASSWORDS_FILE
    if passwords.exists():
        passwords.chmod(0o600)  # one generated before the umask rule was world-readable
    return _describe(settings)


PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"  # Airflow's simple auth manager writes it


def _private_log(path: Path) -> BinaryIO:
    """A service's log, readable by its user only: Airflow prints the admin password into it."""
    path.parent.chmod(0o700)
    log = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    os.fchmod(log.fileno(), 0o600)  # a log made before this rule was world-readable
    return log


def airflow_password(settings: Settings) -> str | None:
    path = settings.path(settings.services.airflow_home) / PASSWORDS_FILE
    if not path.exists():
        return None
    password: str | None = json.loads(path.read_text()).get(AIRFLOW_USER)
    return password


def _describe(settings: Settings) -> list[str]:
    s = settings.services
    lines = [
        f"Airflow     http://127.0.0.1:{s.airflow_port}   login {AIRFLOW_USER} / {airflow_password(settings)}",
        f"metrics     http://127.0.0.1:{s.metrics_port}/metrics",
        f"Postgres    {db.redact(db.writer_url(settings))}",
    ]
    if settings.sandbox.enabled:
        lines.append(f"sandbox     http://127.0.0.1:{settings.sandbox.port}   (synthetic market data)")
    lines.append(f"dashboard   http://127.0.0.1:{s.dashboard_port}")
    lines.append(f"logs        {_log_dir(settings)}/   stop everything with `cryptoflow down`")
    return lines


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, every_s: float = 1.0) -> T:
    """Poll predicate until it returns something truthy (returned); ServiceError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise ServiceError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class AirflowApi:
    """A tiny client of Airflow's REST API (v2) with the simple auth manager's login, for the benchmark,
    the tests and scripts: `api.call("POST", "/api/v2/dags/ingest_ohlcv_hourly/dagRuns", {...})`."""

    def __init__(self, settings: Settings, password: str | None = None, base: str | None = None):
        self.base = base or f"http://127.0.0.1:{settings.services.airflow_port}"  # `base`: another Airflow
        self.token = ""
        login = {"username": AIRFLOW_USER, "password": password or airflow_password(settings)}
        self.token = self.call("POST", "/auth/token", login)["access_token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.call("GET", "/api/v2/dags?limit=100")["dags"]}

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, **({"conf": conf} if conf else {})}
        return str(self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"])

    def state(self, dag_id: str, run_id: str) -> str:
        return str(self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def pause(self, dag_id: str, paused: bool = True) -> None:
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def active_runs(self, dag_id: str = "~") -> int:
        runs = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running&limit=100")
        return int(runs["total_entries"])


def _stop(settings: Settings, names: list[str] | None = None, timeout_s: float = 30) -> list[str]:
    """End recorded services (all, or the named ones): SIGTERM to each one's process group and to every
    descendant (a child may have left the group), SIGKILL after timeout_s. Returns the names stopped."""
    stopped, procs = [], []
    for name, record in _records(settings).items():
        if names is not None and name not in names:
            continue
        proc = _alive(record)
        if proc is not None:
            tree = [proc, *proc.children(recursive=True)]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group `up` created (start_new_session)
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.send_signal(signal.SIGTERM)
            procs += tree
            stopped.append(name)
        (_run_dir(settings) / f"{name}.json").unlink(missing_ok=True)
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return stopped


def down(settings: Settings, timeout_s: float = 30) -> list[str]:
    """End the processes `up` started (their whole process trees), then the embedded Postgres if `up`
    started it. Returns what was stopped."""
    stopped = _stop(settings, timeout_s=timeout_s)
    state = _run_dir(settings) / "up.state"
    if state.exists():
        started_db = json.loads(state.read_text()).get("started_db")
        state.unlink()
        if started_db and settings.database.embedded and embedded.stop(settings):
            stopped.append("postgres")
    return stopped
