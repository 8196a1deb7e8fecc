"""README's configuration reference names every key the settings accept (a key nobody can find is a key
nobody can use)."""

from __future__ import annotations

import re
from pathlib import Path

from pipelines.settings import Settings

README = Path(__file__).resolve().parent.parent / "README.md"


def keys(model, prefix: str = ""):
    for name, field in model.model_fields.items():
        if name in ("secrets", "project_dir"):  # secrets come from the environment (own paragraph)
            continue
        if hasattr(field.annotation, "model_fields"):
            yield from keys(field.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def test_every_config_key_is_in_the_configuration_reference():
    text = README.read_text()
    section = text[text.index("## Configuration") : text.index("## Where the data goes")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    missing = []
    for key in keys(Settings):
        top, leaf = key.split(".")[0], key.split(".")[-1]
        # a row names it in full (`sources.binance.concurrency`), or starts with its section and lists the
        # leaf (`orchestration.retries`, `retry_delay_s`), or uses a wildcard for the middle (`sources.*.timeout_s`)
        found = any(
            f"`{key}`" in row
            or (f"`{top}." in row.split("|")[1] and re.search(rf"`(?:[\w.*]+\.)?{re.escape(leaf)}`", row))
            for row in rows
        )
        if not found:
            missing.append(key)
    assert missing == [], f"add these keys to README's Configuration table: {missing}"


def test_every_soda_check_is_listed_with_what_it_protects():
    """README's table of checks lists exactly the Soda checks of audits/*.yml, layer by layer, in order."""
    import yaml

    text = README.read_text()
    root = README.parent / "audits"
    names = [
        (layer, (cfg or {}).get("name", expr))
        for layer in ("raw", "silver", "gold")
        for checks in yaml.safe_load((root / f"{layer}.yml").read_text()).values()
        for check in checks
        for expr, cfg in check.items()
    ]
    assert len(names) == 20
    section = text[text.index("## Data quality") : text.index("## Orchestration")]
    rows = [
        [c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if line.startswith("| ")
    ]
    listed = [(layer, name) for layer, table, name, _ in rows[1:] if table != "every raw table"]
    assert listed == names
