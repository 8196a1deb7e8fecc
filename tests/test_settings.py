"""config.yaml validation: each invalid value gives one clear message naming the key, value and what is allowed."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_repo_config_is_valid():
    settings = load_settings(REPO / "config.yaml", environ={})
    assert settings.universe.mode == "pinned" and len(settings.universe.symbols) == 50
    assert settings.database.embedded and settings.storage.bronze_url == ".cryptoflow/bronze"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "universe: {mode: pinned, symbols: [btcusdt]}",
            "universe.symbols = ['btcusdt']: invalid symbol 'btcusdt'",
        ),
        ("universe: {mode: pinned, symbols: [BTC-USDT]}", "invalid symbol 'BTC-USDT'"),
        ("universe: {mode: pinned, symbols: []}", "mode 'pinned' needs a non-empty symbols list"),
        ("universe: {mode: best}", "universe.mode = 'best': allowed: 'pinned' or 'top_n'"),
        (
            "sources: {binance: {timeout_s: -1}}",
            "sources.binance.timeout_s = -1: Input should be greater than 0",
        ),
        ("sources: {binance: {timeout_s: abc}}", "sources.binance.timeout_s = 'abc'"),
        (
            "sources: {coingecko: {base_url: ftp://x}}",
            "sources.coingecko.base_url = 'ftp://x': must be an http(s) URL",
        ),
        (
            "database: {url: mysql://x}",
            "database.url = 'mysql://x': must be empty (embedded Postgres) or a postgresql",
        ),
        (
            "storage: {bronze_url: 'gs://bucket'}",
            "storage.bronze_url = 'gs://bucket': must be a local folder or s3://",
        ),
        ("backfill: {days: 0}", "backfill.days = 0: Input should be greater than or equal to 1"),
        ("interval: 5m", "interval = '5m': allowed: '1h'"),
        ("sourcse: {}", "sourcse: unknown key"),
    ],
)
def test_invalid_values_name_key_value_and_rule(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    message = str(info.value)
    assert expected in message
    assert len(message.splitlines()) == 1
    assert "Traceback" not in message


def test_env_overrides_single_keys_and_secrets_stay_hidden(tmp_path):
    path = write(tmp_path, "universe: {mode: pinned, symbols: [BTCUSDT]}")
    env = {
        "CRYPTOFLOW__DATABASE__URL": "postgresql://u@db:5432/x",
        "CRYPTOFLOW__SANDBOX__ENABLED": "true",
        "CRYPTOFLOW__UNIVERSE__SYMBOLS": "[ETHUSDT, SOLUSDT]",
        "CRYPTOFLOW__SOURCES__BINANCE__CONCURRENCY": "8",
        "CRYPTOFLOW_DB_PASSWORD": "s3cret-pw",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    settings = load_settings(path, environ=env)
    assert settings.database.url == "postgresql://u@db:5432/x"
    assert settings.sandbox.enabled is True
    assert settings.universe.symbols == ["ETHUSDT", "SOLUSDT"]
    assert settings.sources.binance.concurrency == 8
    assert settings.secrets.database_password == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings) and "aws-secret" not in repr(settings)


def test_env_override_is_validated_too(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match=r"sources.binance.concurrency = 0"):
        load_settings(path, environ={"CRYPTOFLOW__SOURCES__BINANCE__CONCURRENCY": "0"})


def test_cli_prints_one_clear_message_not_a_traceback(tmp_path):
    path = write(tmp_path, "universe: {mode: pinned, symbols: [BTCUSDT, 'bad!']}")
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--config", str(path), "db", "status"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "invalid symbol 'bad!'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_a_config_error_never_prints_a_password(tmp_path, capsys, monkeypatch):
    from pipelines import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRYPTOFLOW__DATABASE__URL", "postgresql+psycopg2://w:S3cret@db/x")
    assert cli.main(["db", "status"]) == 2
    err = capsys.readouterr().err
    assert "database.url = 'postgresql+psycopg2://w:***@db/x'" in err
    assert "S3cret" not in err


def test_redact_covers_url_libpq_and_webhook_forms():
    from pipelines.runtime.db import redact

    assert redact("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db?host=/run&password=S3cret&sslmode=require") == (
        "postgresql://u@h/db?host=/run&password=***&sslmode=require"
    )
    assert redact("host=db user=w password=S3cret dbname=x") == "host=db user=w password=*** dbname=x"
    assert redact("bad URL 'https://hooks.slack.com/services/T01/B02/abcDEF'") == (
        "bad URL 'https://hooks.slack.com/services/***'"
    )
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    # unencoded "@" and "/" in a URL password, an escaped quote in a libpq quoted value
    assert (
        redact("url postgresql://u:p@ss/w:rd@h:5432/db failed") == "url postgresql://u:***@h:5432/db failed"
    )
    assert redact("host=db password='a\\'b c' dbname=x") == "host=db password=*** dbname=x"
    assert redact("host=db password='S3cret") == "host=db password=***"


@pytest.mark.parametrize("days", ["0", "-3", "ten"])
def test_backfill_days_must_be_at_least_one(days, capsys):
    """`--days 0` once meant the whole 3-year horizon: now it is refused before anything runs."""
    from pipelines import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["backfill", "--days", days])
    assert exited.value.code == 2
    assert f"argument --days: {days!r} is not a number of days (1 or more)" in capsys.readouterr().err


def test_every_table_rule_comes_from_the_catalogue():
    """One description per table: the ingest engine, the checks, the metrics, the digest, the dashboard and
    the DAGs read the catalogue, so a threshold or a key changes in one place."""
    from pipelines import catalog, orchestration, quality
    from pipelines.ops import metrics
    from pipelines.sources.binance import settings as bn
    from pipelines.sources.coingecko import settings as cg
    from pipelines.sources.fear_greed import settings as fg

    settings = load_settings(
        environ={}, overrides={"checks": {"freshness_ohlcv_hours": 3, "freshness_markets_hours": 30}}
    )
    assert [(s.TABLE, s.PRIMARY_KEY) for s in (bn, cg, fg)] == [(t.name, t.key) for t in catalog.RAW]
    assert metrics.freshness_thresholds(settings) == {
        "raw.binance_klines": 3 * 3600,
        "raw.coingecko_markets": 30 * 3600,
        "raw.fear_greed": 48 * 3600,
        "gold.fct_prices": 4 * 3600,
    }
    variables = quality._variables(settings, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert {k: v for k, v in variables.items() if k.startswith("FRESHNESS")} == {
        "FRESHNESS_OHLCV": "180m",
        "FRESHNESS_OHLCV_SILVER": "240m",
        "FRESHNESS_OHLCV_GOLD": "240m",
        "FRESHNESS_MARKETS": "1800m",
    }
    assert orchestration.ASSETS == {
        "raw.binance_klines": "cryptoflow://raw/binance_klines",
        "raw.coingecko_markets": "cryptoflow://raw/coingecko_markets",
        "raw.fear_greed": "cryptoflow://raw/fear_greed",
        "gold": "cryptoflow://gold",
    }
    # the dashboard's view: the age of the moment the data covers up to (a daily row: its day's end)
    assert {t.name: t.threshold_h(settings) for t in catalog.TABLES if t.schema == "gold"} == {
        "fct_prices": 3,
        "fct_daily_summary": 27,
        "fct_market_sentiment": 30,
        "mart_market_overview": 30,
    }


def test_page_limit_is_no_longer_a_setting(tmp_path):
    """It was validated and documented but never read: an old config naming it gets a clear error."""
    path = write(tmp_path, "sources: {binance: {page_limit: 500}}")
    with pytest.raises(ConfigError, match=r"sources.binance.page_limit"):
        load_settings(path, environ={})
