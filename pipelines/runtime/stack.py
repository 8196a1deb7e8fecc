"""The docker-compose topology as native processes on one machine, configured from docker-compose.yml itself.

docker-compose.yml is the one source of the services' settings: what each container gets (`environment`,
with .env's values interpolated as compose does) is what the same program gets here, with the compose
network's names rewritten to this machine's addresses (`postgres:5432` -> `127.0.0.1:<port>`) and the
image's paths to the checkout's. Nothing is restated here, so the configuration users deploy is the one the
native run (`make stack-test`) tests. The servers come from Debian's packages (`make tools`): PostgreSQL 15,
Redis; moto stands in for MinIO; Airflow and Celery come from the lock. Every address is 127.0.0.1 on a free
port; every process started is stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.runtime.compose_spec import ROOT, compose, env_file, environment

if TYPE_CHECKING:
    from pipelines.runtime.stack_monitoring import AlertWebhook

MARK = "CRYPTOFLOW_STACK_PROCESS"  # in every native process's environment: <stack folder>:<service>
IMAGE_ROOT = "/opt/cryptoflow"  # the Dockerfile's WORKDIR: the checkout here


def _postgres_bin() -> Path:
    """Debian's PostgreSQL server: 15 (Debian 12's) when installed, else the newest there is."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    preferred = [p for p in found if p.parts[-3] == "15"]
    return (preferred or found or [Path("/usr/lib/postgresql/15/bin/postgres")])[-1].parent


PG_BIN = _postgres_bin()


def worker_hostname() -> str:
    """Airflow's [core] hostname_callable for the native stack's Celery workers: each is a machine of its own
    in compose (its container's hostname), here one name per worker process (CRYPTOFLOW_STACK_HOST)."""
    return os.environ.get("CRYPTOFLOW_STACK_HOST") or socket.gethostname()


def native_environment(
    service: dict[str, Any], addresses: dict[str, tuple[str, int]], ports: dict[str, int]
) -> dict[str, str]:
    """A service's compose environment for a native process: `<service>:<container port>` (in URLs, DSNs,
    host:port values) becomes the address that service listens on here, and the image's paths the
    checkout's. `addresses`: compose service name -> (host, port) here; `ports`: its container port."""
    return {name: rewrite(value, addresses, ports) for name, value in environment(service).items()}


def rewrite(value: str, addresses: dict[str, tuple[str, int]], ports: dict[str, int]) -> str:
    """One compose value for a native process: `<service>:<container port>` -> its address here, the image's
    paths -> the checkout's."""
    for other, (host, port) in addresses.items():
        value = re.sub(rf"(?<![\w.-]){re.escape(other)}:{ports[other]}(?![\d])", f"{host}:{port}", value)
    return value.replace(f"{IMAGE_ROOT}/", f"{ROOT}/")


AIRFLOW_IMAGE_HOME = "/opt/airflow"  # the Dockerfile's AIRFLOW_HOME


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def opens(url: str) -> bool:
    """Whether url answers 2xx (urlopen raises otherwise, which wait_until takes as not yet)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=20):
        return True


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come up within {timeout_s:.0f} s")
        time.sleep(0.2)


@dataclass
class NativeStack:
    """Postgres 15, Redis and an S3 endpoint (moto) started as processes, each on a free 127.0.0.1 port,
    prepared as the compose stack's one-shot services prepare theirs (docker/postgres-init.sh, minio-init's
    bucket); then, on demand, Airflow with Celery workers (start_airflow). `env`: the .env values (generated
    secrets by default: .env.example's, change-me replaced)."""

    env: dict[str, str] = field(default_factory=dict)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cryptoflow-stack-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    container_ports: dict[str, int] = field(
        default_factory=lambda: {"postgres": 5432, "redis": 6379, "minio": 9000}
    )

    webhook: AlertWebhook | None = None

    def __post_init__(self) -> None:
        defaults = env_file()
        for name, value in defaults.items():
            if "change-me" in value:  # a real secret per run, like a user's .env
                defaults[name] = f"s{os.urandom(12).hex()}"
        self.env = {**defaults, **self.env}
        self.compose = compose(self.env)

    def service_env(self, name: str) -> dict[str, str]:
        return native_environment(self.compose["services"][name], self.addresses, self.container_ports)

    def process_env(self, service_env: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
        """A native process's environment: this machine's (without its cryptoflow/AWS/Airflow settings), the
        service's compose environment, the venv's programs first on PATH, then `extra`."""
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOFLOW", "AWS_", "AIRFLOW"))},
            **service_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **(extra or {}),
        }

    def listen(self, name: str, container_port: int) -> int:
        """A free 127.0.0.1 port for compose service `name` (whose container listens on container_port)."""
        port = free_port()
        self.addresses[name] = ("127.0.0.1", port)
        self.container_ports[name] = container_port
        return port

    def start_process(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        # a mark its children inherit, also those that lead process groups of their own (Airflow's tasks)
        env = {**(os.environ if env is None else env), MARK: f"{self.root}:{name}"}
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        return proc

    def _server_user(self) -> list[str]:
        """PostgreSQL refuses to run as root: as root (a CI container), the server runs as an unprivileged
        user (pgserver's, else nobody) that owns the stack's folder."""
        if os.geteuid() != 0:
            return []
        import pwd

        for user in ("pgserver", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(user)
                for path in (self.root, *self.root.rglob("*")):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
                return [shutil.which("runuser") or "runuser", "-u", user, "--"]
        raise RuntimeError("PostgreSQL cannot run as root and no unprivileged user was found")

    def start_postgres(self) -> None:
        """initdb + postgres (PostgreSQL 15), then docker/postgres-init.sh with the postgres service's env,
        as the official image runs it on an empty volume."""
        data, port = self.root / "pg", free_port()
        superuser = self.service_env("postgres")
        pwfile = self.root / "pwfile"
        pwfile.write_text(superuser["POSTGRES_PASSWORD"] + "\n")
        as_user = self._server_user()
        subprocess.run(
            [
                *as_user,
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                superuser["POSTGRES_USER"],
                "--pwfile",
                str(pwfile),
                "-A",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--locale",
                "C.UTF-8",
            ],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        self.start_process(
            "postgres",
            [
                *as_user,
                str(PG_BIN / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.root),
                "-c",
                "fsync=off",
            ],
        )
        self.addresses["postgres"] = ("127.0.0.1", port)
        ready = [
            str(PG_BIN / "pg_isready"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            superuser["POSTGRES_USER"],
        ]
        wait_until(lambda: subprocess.run(ready, capture_output=True).returncode == 0, "postgres")
        init = {
            **os.environ,
            **superuser,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(port),
            "PGPASSWORD": superuser["POSTGRES_PASSWORD"],
            "PATH": f"{PG_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        subprocess.run(
            ["bash", str(ROOT / "docker" / "postgres-init.sh")], env=init, check=True, capture_output=True
        )

    def start_redis(self) -> None:
        port = free_port()
        self.start_process(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
        )
        self.addresses["redis"] = ("127.0.0.1", port)

        def pong() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_until(pong, "redis")

    def start_s3(self) -> None:
        """moto as MinIO, with what minio-init makes: the bucket of CRYPTOFLOW__STORAGE__BRONZE_URL."""
        import urllib.request

        import boto3

        port = free_port()
        self.start_process(
            "minio", [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        )
        self.addresses["minio"] = ("127.0.0.1", port)
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2), "moto")
        init = self.service_env("minio-init")
        bucket = init["CRYPTOFLOW__STORAGE__BRONZE_URL"].removeprefix("s3://").split("/", 1)[0]
        boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id=init["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=init["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=bucket)

    def airflow_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The compose services' Airflow environment (x-airflow-env), here: its home in the stack's folder,
        the api-server on its port; what only one machine needs (the scheduler's health server) on a free
        port of 127.0.0.1."""
        env = self.service_env("airflow-scheduler")
        home = self.root / "airflow"
        host, port = self.addresses["airflow-apiserver"]
        env = {k: v.replace(f"{AIRFLOW_IMAGE_HOME}/", f"{home}/") for k, v in env.items()}
        return (
            self.process_env(env)
            | {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__API__HOST": host,
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://{host}:{port}",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",  # compose: 0.0.0.0, in its box
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipelines.runtime.stack.worker_hostname",
                # one machine plays several: one task at a time per worker (compose: one worker per machine)
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
                **(extra or {}),
            }
        )

    def start_airflow(self, workers: int = 2, extra: dict[str, str] | None = None) -> dict[str, str]:
        """airflow-init's command, then the api-server, scheduler, dag-processor, triggerer and `workers`
        Celery workers with compose's commands and environment. Returns the admin's login."""
        import urllib.request

        self.addresses["airflow-apiserver"] = ("127.0.0.1", free_port())
        self.container_ports["airflow-apiserver"] = 8080
        env = self.airflow_env(extra)
        (self.root / "airflow" / "auth").mkdir(parents=True, exist_ok=True)
        init = self.compose["services"]["airflow-init"]
        init_env = {
            **env,
            "AIRFLOW_ADMIN_PASSWORD": self.service_env("airflow-init")["AIRFLOW_ADMIN_PASSWORD"],
        }
        subprocess.run(init["command"], env=init_env, check=True, capture_output=True, timeout=600)
        # one machine: the api-server reads task logs from the one logs folder, so the triggerer and the
        # workers serve none (Airflow's log server listens on every interface, its address is not settable)
        no_log_server = {"airflow-triggerer": ["--skip-serve-logs"]}
        for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
            self.start_process(
                name, [*self.compose["services"][name]["command"], *no_log_server.get(name, [])], env
            )
        worker = self.compose["services"]["airflow-worker"]["command"]
        for n in range(1, workers + 1):
            self.start_process(
                f"airflow-worker-{n}",
                [*worker, "--celery-hostname", f"worker{n}@%h", "--skip-serve-logs"],
                {**env, "CRYPTOFLOW_STACK_HOST": f"worker{n}"},
            )
        host, port = self.addresses["airflow-apiserver"]
        health = f"http://{host}:{port}/api/v2/monitor/health"
        wait_until(lambda: urllib.request.urlopen(health, timeout=5), "the Airflow api-server", timeout_s=180)
        return {"username": "admin", "password": init_env["AIRFLOW_ADMIN_PASSWORD"]}

    def start_monitoring(self, time_scale: float = 1.0) -> AlertWebhook:
        """Compose's metrics service, Alertmanager and Prometheus beside this stack (runtime/stack_monitoring.py)."""
        from pipelines.runtime.stack_monitoring import start_monitoring

        self.webhook = start_monitoring(self, time_scale)
        return self.webhook

    def here(self, value: str) -> str:
        """A compose value (`metrics:9108`, a URL) with the compose names of what runs here rewritten."""
        return rewrite(value, self.addresses, self.container_ports)

    def listening(self) -> dict[str, set[tuple[str, int]]]:
        """Every TCP address the stack's processes (and theirs) listen on, by service."""
        import psutil

        owner: dict[int, str] = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                children = psutil.Process(proc.pid).children(recursive=True)
                for pid in {proc.pid, *self.marked(name), *(child.pid for child in children)}:
                    owner[pid] = name
        found: dict[str, set[tuple[str, int]]] = {}
        for conn in psutil.net_connections(kind="tcp"):
            # a listening socket always has its address (an empty tuple otherwise)
            if conn.status == psutil.CONN_LISTEN and conn.pid in owner and conn.laddr:
                found.setdefault(owner[conn.pid], set()).add((conn.laddr.ip, conn.laddr.port))
        return found

    def marked(self, name: str) -> list[int]:
        """The pids of every process started as `name` and its descendants that still run (Linux: /proc)."""
        mark = f"{MARK}={self.root}:{name}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if mark in (entry / "environ").read_bytes().split(b"\0"):
                        pids.append(int(entry.name))
        return pids

    def kill(self, name: str) -> None:
        """SIGKILL `name` and everything it started, at once: the machine it stands for is gone."""
        for pid in [self.procs[name].pid, *self.marked(name)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def stop(self) -> None:
        """Every process this stack started, by its pid (each leads its own process group: the server behind
        runuser too): SIGTERM, then SIGKILL after 10 s; then what they started in groups of their own."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for name in self.procs:
            for pid in self.marked(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.webhook is not None:
            self.webhook.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def native_stack(**env: str) -> Iterator[NativeStack]:
    missing = [
        p
        for p, found in (
            ("postgresql", (PG_BIN / "postgres").exists()),
            ("redis-server", shutil.which("redis-server")),
        )
        if not found
    ]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)} (Debian's packages): run `make tools`")
    stack = NativeStack(env=dict(env))
    try:
        stack.start_postgres()
        stack.start_redis()
        stack.start_s3()
        yield stack
    finally:
        stack.stop()
