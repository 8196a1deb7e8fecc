"""SQLMesh configuration: the gateway is the same Postgres as `cryptoflow` (embedded or configured).

Analysts run plain `sqlmesh plan dev` / `sqlmesh plan` in this folder with the project's .venv active (it
installs `pipelines`). The cryptoflow config file is ../config.yaml, or the one CRYPTOFLOW_CONFIG names.

Loading this file starts nothing: with the embedded database, start it once with `cryptoflow db start` (it
stays up; `cryptoflow demo`, `ingest` and `transform` start it too). When it is not running, loading fails
with that instruction.
"""

import os
from pathlib import Path

from pipelines.settings import load_settings
from pipelines.sqlmesh_context import sqlmesh_config

config = sqlmesh_config(
    load_settings(
        os.environ.get("CRYPTOFLOW_CONFIG") or Path(__file__).resolve().parent.parent / "config.yaml"
    )
)
