"""config.yaml (+ documented environment overrides) -> one validated Settings object.

This is the only module that reads the environment. Every other module receives a `Settings`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from pipelines.redaction import redact

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
DEFAULT_CONFIG = Path("config.yaml")
ENV_PREFIX = "CRYPTOFLOW__"
# Single-key environment overrides, e.g. CRYPTOFLOW__DATABASE__URL or CRYPTOFLOW__SANDBOX__ENABLED.
# Secrets have their own conventional names and never live in config.yaml.
SECRET_ENV = {
    "database_password": "CRYPTOFLOW_DB_PASSWORD",
    "reader_password": "CRYPTOFLOW_READER_PASSWORD",
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "coingecko_api_key": "COINGECKO_API_KEY",
    "slack_webhook_url": "CRYPTOFLOW_SLACK_WEBHOOK_URL",
    "smtp_password": "CRYPTOFLOW_SMTP_PASSWORD",
}


class ConfigError(Exception):
    """A configuration value is invalid; the message names the key, the value and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def validate_symbol(symbol: str) -> str:
    """Return the symbol if it matches ^[A-Z0-9]{2,20}$, else raise ValueError (checked before any use)."""
    if not isinstance(symbol, str) or not SYMBOL_PATTERN.match(symbol):
        raise ValueError(
            f"invalid symbol {symbol!r}: symbols are 2-20 upper-case letters or digits, like BTCUSDT"
        )
    return symbol


class Universe(_Strict):
    mode: Literal["pinned", "top_n"] = "pinned"
    symbols: list[str] = Field(default_factory=list)
    top_n: int = Field(50, ge=1, le=250)
    quote_asset: str = "USDT"
    stablecoins: list[str] = Field(
        default_factory=lambda: ["USDT", "USDC", "DAI", "FDUSD", "TUSD", "USDE", "BUSD", "USDD", "PYUSD"]
    )
    # pair -> the pair that replaced it when the exchange migrated the coin (shown in gold.dim_pair)
    successors: dict[str, str] = Field(default_factory=lambda: {"MATICUSDT": "POLUSDT", "FTMUSDT": "SUSDT"})

    @field_validator("successors")
    @classmethod
    def _successors_valid(cls, value: dict[str, str]) -> dict[str, str]:
        for old, new in value.items():
            validate_symbol(old)
            validate_symbol(new)
        return value

    @field_validator("symbols")
    @classmethod
    def _symbols_valid(cls, value: list[str]) -> list[str]:
        for symbol in value:
            validate_symbol(symbol)
        if len(set(value)) != len(value):
            raise ValueError("symbols must not repeat")
        return value

    @model_validator(mode="after")
    def _pinned_needs_symbols(self) -> Universe:
        if self.mode == "pinned" and not self.symbols:
            raise ValueError("mode 'pinned' needs a non-empty symbols list (or use mode: top_n)")
        return self


class Backfill(_Strict):
    days: int = Field(1095, ge=1, le=3650)
    # where a backfill's candles come from: the public kline archive, REST for what it lacks (auto); the
    # archive alone; or the REST API alone
    source: Literal["auto", "archive", "rest"] = "auto"


class HttpSource(_Strict):
    base_url: str
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_base_s: float = Field(0.5, ge=0, le=60)
    backoff_max_s: float = Field(30.0, ge=0, le=600)
    calls_per_minute: int = Field(1200, ge=1, le=100000)
    # a 429 asking to wait longer than this fails the run at once instead of sleeping with the lock held
    max_retry_after_s: float = Field(120, ge=1, le=3600)
    # one request, connect to last byte, at most this long (timeout_s bounds each socket read: a server
    # dripping a byte at a time would pass that forever); a response larger than max_response_mb fails
    request_deadline_s: float = Field(120, gt=0, le=3600)
    max_response_mb: float = Field(64, gt=0, le=4096)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL like https://api.binance.com")
        return value.rstrip("/")


class BinanceSource(HttpSource):
    base_url: str = "https://api.binance.com"
    # Binance meters request weight, not calls; this only caps raw requests (its RAW_REQUESTS limit is 61000/5m).
    calls_per_minute: int = Field(10000, ge=1, le=100000)
    weight_limit_per_minute: int = Field(6000, ge=10)
    weight_budget: float = Field(0.8, gt=0, le=1.0)
    # every process loading into this database shares that budget (ops.request_weight): workers side by side
    # never pass it together
    shared_weight_budget: bool = True
    # every incremental run re-fetches this many trailing closed hours, so candles the exchange revised
    # after their close reach raw (ops.revisions); 48 matches the models' lookback
    restate_hours: int = Field(48, ge=1, le=720)
    concurrency: int = Field(4, ge=1, le=32)


class BinanceArchiveSource(HttpSource):
    """Binance's public kline archive (monthly and daily zips with SHA-256 sidecars): backfills read it first."""

    base_url: str = "https://data.binance.vision"
    calls_per_minute: int = Field(6000, ge=1, le=100000)  # the archive is a CDN: no request weight
    concurrency: int = Field(8, ge=1, le=32)
    timeout_s: float = Field(30.0, gt=0, le=300)


class CoinGeckoSource(HttpSource):
    base_url: str = "https://api.coingecko.com"
    calls_per_minute: int = Field(30, ge=1, le=10000)
    per_page: int = Field(250, ge=1, le=250)
    snapshot_coins: int = Field(100, ge=1, le=1000)


class FearGreedSource(HttpSource):
    base_url: str = "https://api.alternative.me"
    calls_per_minute: int = Field(30, ge=1, le=10000)


class Sources(_Strict):
    binance: BinanceSource = Field(default_factory=BinanceSource)
    binance_archive: BinanceArchiveSource = Field(default_factory=BinanceArchiveSource)
    coingecko: CoinGeckoSource = Field(default_factory=CoinGeckoSource)
    fear_greed: FearGreedSource = Field(default_factory=FearGreedSource)


class Database(_Strict):
    url: str = ""
    embedded_dir: str = ".cryptoflow/pg"
    name: str = "cryptoflow"
    writer_role: str = "cryptoflow_writer"
    reader_role: str = "cryptoflow_reader"
    lock_wait_s: float = Field(0, ge=0, le=86400)
    # every pipeline session: no statement runs longer, no lock (table, row or advisory) is waited for longer
    statement_timeout_s: float = Field(900, gt=0, le=86400)
    lock_timeout_s: float = Field(60, gt=0, le=86400)
    # a database behind this code's schema is migrated by any command (true), or refused until `cryptoflow
    # db migrate` (false); unset: true in embedded mode, false on a configured server (back it up first)
    auto_migrate: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^postgres(ql)?://", value):
            raise ValueError("must be empty (embedded Postgres) or a postgresql://user:password@host/db URL")
        return value

    @property
    def embedded(self) -> bool:
        return not self.url

    @property
    def migrates_itself(self) -> bool:
        return self.embedded if self.auto_migrate is None else self.auto_migrate


class Storage(_Strict):
    bronze_url: str = ".cryptoflow/bronze"
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"

    @field_validator("bronze_url")
    @classmethod
    def _bronze(cls, value: str) -> str:
        if not value:
            raise ValueError("must be a local folder or s3://bucket/prefix")
        if "://" in value and not value.startswith("s3://"):
            raise ValueError("must be a local folder or s3://bucket/prefix")
        return value.rstrip("/")

    @property
    def is_s3(self) -> bool:
        return self.bronze_url.startswith("s3://")


class Sandbox(_Strict):
    enabled: bool = False
    port: int = Field(8765, ge=0, le=65535)
    seed: int = 42
    # false: the market is as unkind as the real one (listings, a delisting and migration, outages,
    # revised candles); true: every pair trades forever and nothing is revised
    calm: bool = False


class Checks(_Strict):
    freshness_ohlcv_hours: float = Field(2, gt=0)
    freshness_markets_hours: float = Field(26, gt=0)
    spike_return_threshold: float = Field(0.25, gt=0)
    expected_market_coins: int = Field(100, ge=1)


class Retention(_Strict):
    """How long `cryptoflow maintain` (the maintenance_daily DAG) keeps what would otherwise grow forever.
    History is kept whole: settled gaps, applied revisions, pair status spells, schema changes, migrations."""

    runs_days: int = Field(90, ge=1)  # ops.pipeline_runs, finished (each source's newest run stays)
    checks_days: int = Field(90, ge=1)  # ops.dq_results (the newest check run stays)
    alerts_days: int = Field(90, ge=1)  # ops.alerts_sent, and incidents resolved that long ago
    dlt_packages_days: int = Field(7, ge=0)  # dlt's completed load packages under .cryptoflow/dlt
    airflow_days: int = Field(30, ge=1)  # `airflow db clean`: task instances, runs, logs in its metadata


class Alerts(_Strict):
    # Who pages for a failed run and a failing check (freshness included): one route, never both.
    # slack: the pipeline posts incidents itself (the embedded default: no Prometheus). alertmanager: it posts
    # none, and monitoring/alerts.yml's rules do (they read this from cryptoflow_alerts_via_alertmanager).
    route: Literal["slack", "alertmanager"] = "slack"
    email_to: list[str] = Field(default_factory=list)
    email_from: str = "cryptoflow@localhost"
    smtp_host: str = ""
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_user: str = ""
    smtp_starttls: bool = False
    # a login over a connection without TLS sends the password in the clear: only for a trusted local relay
    smtp_allow_plaintext_login: bool = False

    @model_validator(mode="after")
    def _login_needs_tls(self) -> Alerts:
        if self.smtp_user and not (self.smtp_starttls or self.smtp_allow_plaintext_login):
            raise ValueError(
                "smtp_user is set but smtp_starttls is false: the password would cross the network in the "
                "clear. Set alerts.smtp_starttls: true (or smtp_allow_plaintext_login: true for a trusted "
                "local relay)"
            )
        return self


class Orchestration(_Strict):
    """How Airflow runs the pipeline's tasks (airflow/dags/)."""

    retries: int = Field(3, ge=0, le=20)
    retry_delay_s: float = Field(60, gt=0)
    retry_max_delay_s: float = Field(900, gt=0)
    # a task waits this long for a running step of its kind (below the shortest task timeout, 20 min)
    lock_wait_s: float = Field(900, ge=0, le=86400)
    backfill_batch_size: int = Field(10, ge=1, le=500)
    # backfill_historical's batches running at the same time (on as many Celery workers): they share the
    # exchange's request weight (sources.binance.shared_weight_budget) and take the raw load one at a time
    backfill_concurrency: int = Field(2, ge=1, le=32)
    ohlcv_schedule: str = "0 * * * *"  # cron, UTC: as each hour closes (close_grace_s later)
    close_grace_s: float = Field(5, ge=0, le=600)  # the hourly ingest starts this long after the close
    market_data_schedule: str = "10 0 * * *"  # after the Fear & Greed index's daily update at 00:00 UTC
    digest_schedule: str = "0 7 * * *"
    maintenance_schedule: str = "30 3 * * *"  # maintenance_daily: `cryptoflow maintain` (retention.*)

    @field_validator("ohlcv_schedule", "market_data_schedule", "digest_schedule", "maintenance_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not re.fullmatch(r"(\S+\s+){4}\S+|@(hourly|daily|weekly|monthly)", value.strip()):
            raise ValueError("must be a 5-field cron expression (UTC), e.g. '1 * * * *', or @hourly/@daily")
        return value.strip()


class Services(_Strict):
    """The long-running processes `cryptoflow up` starts on this machine."""

    airflow_home: str = ".cryptoflow/airflow"
    airflow_port: int = Field(18080, ge=1, le=65535)
    metrics_port: int = Field(9108, ge=1, le=65535)
    dashboard_port: int = Field(8501, ge=1, le=65535)


class Secrets(_Strict):
    """Credentials from the environment only; repr hides them so they never reach a log line."""

    database_password: str = Field("", repr=False)
    reader_password: str = Field("", repr=False)  # database.reader_role's, on a configured server
    aws_access_key_id: str = Field("", repr=False)
    aws_secret_access_key: str = Field("", repr=False)
    coingecko_api_key: str = Field("", repr=False)
    slack_webhook_url: str = Field("", repr=False)
    smtp_password: str = Field("", repr=False)


class Settings(_Strict):
    universe: Universe = Field(default_factory=lambda: Universe(mode="top_n"))
    interval: Literal["1h"] = "1h"
    backfill: Backfill = Field(default_factory=Backfill)
    sources: Sources = Field(default_factory=Sources)
    database: Database = Field(default_factory=Database)
    storage: Storage = Field(default_factory=Storage)
    sandbox: Sandbox = Field(default_factory=Sandbox)
    checks: Checks = Field(default_factory=Checks)
    retention: Retention = Field(default_factory=Retention)
    alerts: Alerts = Field(default_factory=Alerts)
    orchestration: Orchestration = Field(default_factory=Orchestration)
    services: Services = Field(default_factory=Services)
    secrets: Secrets = Field(default_factory=Secrets)
    project_dir: Path = Field(default_factory=Path.cwd)

    def path(self, relative: str) -> Path:
        """Resolve a configured path against the project directory."""
        p = Path(relative)
        return p if p.is_absolute() else self.project_dir / p

    @property
    def state_dir(self) -> Path:
        return self.path(".cryptoflow")

    def with_sandbox(self, url: str) -> Settings:
        """A copy whose sources (the three APIs and the kline archive) point at a sandbox served at url (e.g. http://127.0.0.1:8765)."""
        sources = self.sources.model_copy(
            update={
                "binance": self.sources.binance.model_copy(update={"base_url": f"{url}/binance"}),
                "binance_archive": self.sources.binance_archive.model_copy(
                    update={"base_url": f"{url}/archive"}
                ),
                "coingecko": self.sources.coingecko.model_copy(update={"base_url": f"{url}/coingecko"}),
                "fear_greed": self.sources.fear_greed.model_copy(update={"base_url": f"{url}/alternative"}),
            }
        )
        return self.model_copy(update={"sources": sources})


def _describe_allowed(error: ErrorDetails) -> str:
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    if error.get("type") == "extra_forbidden":
        return "unknown key (check the spelling; README lists every key)"
    if error.get("type") == "literal_error":
        return msg.replace("Input should be", "allowed:")
    return msg


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" = {value!r}"
        lines.append(redact(f"{source}: {key}{shown}: {_describe_allowed(error)}"))
    return "\n".join(lines)


def _coerce_env(raw: str) -> Any:
    """Parse an environment value as YAML so numbers, booleans and lists work (`[BTCUSDT, ETHUSDT]`)."""
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def _apply_env_overrides(data: dict[str, Any], environ: dict[str, str]) -> list[str]:
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys or keys[0] == "secrets":
            continue
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(keys)} is not a section that can be overridden")
        node[keys[-1]] = _coerce_env(raw)
        applied.append(".".join(keys))
    return applied


def load_settings(
    config_file: str | Path | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Load config.yaml, apply CRYPTOFLOW__SECTION__KEY overrides and secrets, validate once.

    Raises ConfigError with one line per bad key (never a pydantic traceback).
    """
    environ = dict(os.environ if environ is None else environ)
    path = Path(config_file or environ.get("CRYPTOFLOW_CONFIG") or DEFAULT_CONFIG)
    if config_file is not None and not path.exists():
        raise ConfigError(f"{path}: config file not found (pass --config FILE or create config.yaml)")
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (universe, sources, ...)")
        data = loaded
    _apply_env_overrides(data, environ)
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    data["secrets"] = {key: environ.get(env, "") for key, env in SECRET_ENV.items()}
    data.setdefault("project_dir", str(path.resolve().parent if path.exists() else Path.cwd()))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None
