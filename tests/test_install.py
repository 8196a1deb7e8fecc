"""Installs are wheel-only: every package the lock installs has a wheel for each supported platform.

A slim image has no compiler and no pg_config, and a laptop may lack libpq headers: one sdist in the lock
for a platform we support means `uv sync` compiles there (or fails). The lock is resolved here for Linux
x86_64, Linux aarch64 and macOS arm64 by evaluating each requirement's markers, exactly as uv would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parent.parent
UV = shutil.which("uv") or str(ROOT / ".cryptoflow/tools/bin/uv")

# What `packaging` needs to evaluate a marker, and which wheel platform tags install, per target.
PLATFORMS = {
    "linux-x86_64": (
        {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
        },
        re.compile(r"^(any|manylinux.*_x86_64|linux_x86_64)$"),
    ),
    "linux-aarch64": (
        {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "aarch64",
            "os_name": "posix",
        },
        re.compile(r"^(any|manylinux.*_aarch64|linux_aarch64)$"),
    ),
    "macos-arm64": (
        {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "platform_machine": "arm64",
            "os_name": "posix",
        },
        re.compile(r"^(any|macosx_\d+_\d+_(arm64|universal2))$"),
    ),
}
PYTHON = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
INTERPRETERS = {"cp311", "py3", "py311"}


def _requirements(*extra: str) -> list[tuple[str, str]]:
    """(name, marker) of every package `uv sync --frozen` installs, dev group included."""
    out = subprocess.run(
        [UV, "export", "--frozen", "--no-hashes", "--no-emit-project", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    reqs = []
    for line in out.splitlines():
        if not line or line.startswith(("#", " ", "-e")):
            continue
        spec, _, marker = line.partition(";")
        reqs.append((canonicalize_name(spec.split("==")[0].strip()), marker.strip()))
    return reqs


def _installable(wheel: str, platform_tags: re.Pattern) -> bool:
    """Whether pip/uv on CPython 3.11 of that platform would take this wheel."""
    for tag in parse_wheel_filename(wheel)[3]:
        if not platform_tags.match(tag.platform):
            continue
        if tag.interpreter in INTERPRETERS:
            return True
        abi3 = re.fullmatch(r"cp3(\d+)", tag.interpreter)
        if tag.abi == "abi3" and abi3 and int(abi3.group(1)) <= 11:
            return True
    return False


def needs_build(platform: str, reqs: list[tuple[str, str]], lock: dict) -> list[str]:
    env, platform_tags = PLATFORMS[platform]
    by_name = {canonicalize_name(p["name"]): p for p in lock["package"]}
    missing = []
    for name, marker in reqs:
        if marker and not Marker(marker).evaluate({**PYTHON, **env, "extra": ""}):
            continue
        wheels = [w["url"].rsplit("/", 1)[-1] for w in by_name[name].get("wheels", [])]
        if not any(_installable(w, platform_tags) for w in wheels):
            missing.append(name)
    return sorted(missing)


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_the_lock_installs_from_wheels_only(platform):
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert needs_build(platform, _requirements(), lock) == []


def test_the_checker_catches_an_sdist_only_package():
    """A lock that holds psycopg2 (sdist only on Linux, as sqlmesh[postgres] pulled it) must fail."""
    lock = {
        "package": [
            {"name": "psycopg2", "sdist": {"url": "https://example.invalid/psycopg2-2.9.13.tar.gz"}},
            {
                "name": "pgserver",
                "wheels": [{"url": "x/pgserver-0.1.4-cp311-cp311-manylinux_2_17_x86_64.whl"}],
            },
            {"name": "six", "wheels": [{"url": "x/six-1.16.0-py2.py3-none-any.whl"}]},
        ]
    }
    reqs = [("psycopg2", ""), ("pgserver", ""), ("six", "")]
    assert needs_build("linux-x86_64", reqs, lock) == ["psycopg2"]
    assert needs_build("linux-aarch64", reqs, lock) == ["pgserver", "psycopg2"]


def test_installs_forbid_source_builds():
    """The Makefile and the Dockerfile both run uv in no-build mode, so a future sdist fails loudly."""
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert all(
        "--no-build" in line for line in makefile.splitlines() if "uv) sync" in line or "$(UV) sync" in line
    )
    syncs = [line for line in dockerfile.splitlines() if "uv sync" in line]
    assert syncs and all("--no-build" in line for line in syncs)
