"""SQLMesh configuration: the gateway resolves the same Postgres as `cryptoflow` (embedded or configured).

Analysts run plain `sqlmesh plan dev` / `sqlmesh plan` in this folder. The cryptoflow config file is
./../config.yaml, or the one named by CRYPTOFLOW_CONFIG.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from sqlmesh.core.config import Config, GatewayConfig, ModelDefaultsConfig
from sqlmesh.core.config.connection import PostgresConnectionConfig

from pipelines import db
from pipelines.settings import load_settings

os.environ.setdefault("SQLMESH__DISABLE_ANONYMIZED_ANALYTICS", "true")

_settings = load_settings(
    os.environ.get("CRYPTOFLOW_CONFIG") or Path(__file__).resolve().parent.parent / "config.yaml"
)
if _settings.database.embedded:
    db.start_embedded(_settings)  # no-op when it is already running
_url = urlsplit(db.writer_url(_settings))
_host = parse_qs(_url.query).get("host", [_url.hostname or "localhost"])[0]
_connection = PostgresConnectionConfig(
    host=_host,
    port=_url.port or 5432,
    user=unquote(_url.username or ""),
    password=unquote(_url.password or ""),
    database=_url.path.lstrip("/"),
    concurrent_tasks=2,
    application_name="cryptoflow-sqlmesh",
)

config = Config(
    gateways={"cryptoflow": GatewayConfig(connection=_connection, test_connection=_connection)},
    default_gateway="cryptoflow",
    model_defaults=ModelDefaultsConfig(dialect="postgres", start="2019-01-01", cron="@hourly"),
    physical_table_naming_convention="hash_md5",  # Postgres truncates identifiers at 63 characters
    disable_anonymized_analytics=True,
)
