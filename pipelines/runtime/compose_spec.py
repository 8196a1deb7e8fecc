"""docker-compose.yml as compose reads it: .env files, variable interpolation (${VAR:-default}, ${VAR:?error}
...) and each service's environment. The native stack (stack.py) and the compose tests read the topology
through these, so the configuration users deploy is the one that is tested."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR; $$ is a literal $
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class ComposeRefuses(ValueError):
    """compose would not start: a required variable (${VAR:?...}) is missing."""


def env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """NAME=value lines of an .env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path.name}: not NAME=value: {line!r}")
            if name in values:
                raise ValueError(f"{path.name}: {name} twice")
            values[name] = value
    return values


def referenced_vars(value: Any) -> set[str]:
    """The variables compose interpolates: in every string value of the parsed file (not in comments)."""
    if isinstance(value, dict):
        return set().union(*map(referenced_vars, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(referenced_vars, value)) if value else set()
    if not isinstance(value, str):
        return set()
    return {m.group(1) or m.group(4) for m in _VAR.finditer(value) if m.group(0) != "$$"}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """What compose does to every string of the file after parsing it, with `env` as .env."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1) or m.group(4), m.group(2), m.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            return (current if current else arg) if op == ":-" else (arg if current is None else current)
        if op in (":?", "?"):
            if current is None or (op == ":?" and not current):
                raise ComposeRefuses(f"compose would refuse to start: {name}: {arg}")
            return current
        if op == ":+":
            return arg if current else ""
        return current or ""

    return _VAR.sub(one, value)


def raw_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded  # SafeLoader resolves the `<<` merge keys like compose


def compose(env: dict[str, str]) -> dict[str, Any]:
    """docker-compose.yml as compose sees it with `env` as its .env."""
    interpolated: dict[str, Any] = interpolate(raw_compose(), env)
    return interpolated


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}
