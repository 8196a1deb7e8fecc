"""Smoke test of the docker-compose stack, for CI where a container engine runs (.github/workflows/tests.yml).
Standard library only: it runs with the runner's python3, outside the image.

  python3 docker/smoke.py env > .env          .env.example with a fresh secret for every change-me value and
                                              the offline sandbox as the exchange
  python3 docker/smoke.py check URL PASSWORD  Airflow at URL (api-server, simple auth manager's `admin`):
                                              every DAG of airflow/dags is listed, and a run of
                                              ingest_market_data_daily succeeds

Exits 1 with one line saying what is wrong.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAGS = {
    "backfill_historical",
    "daily_digest",
    "data_quality",
    "ingest_market_data_daily",
    "ingest_ohlcv_hourly",
    "maintenance_daily",
    "transform_sqlmesh",
}
SMOKE_DAG = "ingest_market_data_daily"  # two API calls to the sandbox, bronze on MinIO, raw in Postgres
TIMEOUT_S = 600


def env_file(example: Path = ROOT / ".env.example") -> str:
    lines = []
    for line in example.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            if "change-me" in value:
                value = secrets.token_hex(16)  # letters and digits: safe in every URL and DSN
            if name == "CRYPTOFLOW__SANDBOX__ENABLED":
                value = "true"  # no internet needed: the APIs' offline sandbox
            line = f"{name}={value}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class Airflow:
    def __init__(self, url: str, password: str) -> None:
        self.url, self.token = url.rstrip("/"), ""
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password})[
            "access_token"
        ]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")


def check(url: str, password: str, timeout_s: float = TIMEOUT_S) -> str:
    """'' when the stack passes, else what is wrong."""
    deadline = time.monotonic() + timeout_s
    try:
        api = Airflow(url, password)
        while True:  # the dag-processor parses the DAG files after the start
            listed = {d["dag_id"] for d in api.call("GET", "/api/v2/dags?limit=100")["dags"]}
            if listed >= DAGS or time.monotonic() > deadline:
                break
            time.sleep(5)
        if missing := DAGS - listed:
            return f"DAGs not listed after {timeout_s:.0f} s: {sorted(missing)} (import errors: see the dag-processor's log)"
        api.call("PATCH", f"/api/v2/dags/{SMOKE_DAG}", {"is_paused": False})
        run = api.call("POST", f"/api/v2/dags/{SMOKE_DAG}/dagRuns", {"logical_date": None})["dag_run_id"]
        while True:
            state = api.call("GET", f"/api/v2/dags/{SMOKE_DAG}/dagRuns/{run}")["state"]
            if state in ("success", "failed") or time.monotonic() > deadline:
                break
            time.sleep(5)
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        return f"Airflow at {url} did not answer as expected: {exc}"
    return "" if state == "success" else f"{SMOKE_DAG} run {run} ended {state!r} (the task logs say why)"


def main(argv: list[str]) -> int:
    if argv[:1] == ["env"] and len(argv) == 1:
        sys.stdout.write(env_file())
        return 0
    if argv[:1] == ["check"] and len(argv) == 3:
        problem = check(argv[1], argv[2])
        print(problem or f"smoke test passed: {len(DAGS)} DAGs listed, {SMOKE_DAG} succeeded")
        return 1 if problem else 0
    print("usage: smoke.py env | smoke.py check URL PASSWORD", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
