"""SQLMesh configuration: the gateway is the same Postgres as `cryptoflow` (embedded or configured).

Analysts run plain `sqlmesh plan dev` / `sqlmesh plan` in this folder with the project's .venv active (it
installs `pipelines`). The cryptoflow config file is ../config.yaml, or the one CRYPTOFLOW_CONFIG names.
"""

import os
from pathlib import Path

from pipelines.runtime import db
from pipelines.settings import load_settings
from pipelines.transform import sqlmesh_config

_settings = load_settings(
    os.environ.get("CRYPTOFLOW_CONFIG") or Path(__file__).resolve().parent.parent / "config.yaml"
)
db.ensure_database(_settings)  # starts the embedded server when it is not running; no-op otherwise
config = sqlmesh_config(_settings)
