"""Rules that must keep one home, and the copies that cannot (SQL a model must spell out, the documented
config): each copy is held to its home here, so none drifts unseen."""

from __future__ import annotations

import datetime as dt
import re

import yaml

from pipelines import restatement, sqlmesh_context
from pipelines.settings import BinanceSource

MODELS = sqlmesh_context.PROJECT_DIR / "models"
# the hourly models that read raw's hours by time range: their lookback is the trailing re-fetch's reach
LOOKBACK_48 = ("staging/stg_binance__ohlcv.sql", "intermediate/int_crypto_daily.sql", "marts/fct_prices.sql")


def test_the_models_lookback_is_the_trailing_re_fetch():
    """A revised candle the hourly run re-fetches (restate_hours back) flows through silver and gold in the
    same run because these models reprocess that many hours before their new ones."""
    restate_hours = BinanceSource().restate_hours
    for name in LOOKBACK_48:
        found = re.search(r"^\s+lookback (\d+),?$", (MODELS / name).read_text(), re.MULTILINE)
        assert found is not None and int(found.group(1)) == restate_hours, name


def test_the_documented_config_says_the_default_restate_window():
    documented = yaml.safe_load((sqlmesh_context.PROJECT_DIR.parent / "config.yaml").read_text())
    assert documented["sources"]["binance"]["restate_hours"] == BinanceSource().restate_hours


def test_fct_prices_reach_is_what_a_restatement_covers():
    """fct_prices reads this many hours before its range (its 30-day windows): a changed hour changes the
    indicators of as many hours after it, which is how far restatement.py restates."""
    reads = r"open_time BETWEEN @start_ts::TIMESTAMPTZ - INTERVAL '(\d+) hours' AND @end_ts"
    found = re.findall(reads, (MODELS / "marts" / "fct_prices.sql").read_text())
    assert found == [str(restatement.GOLD_REACH // dt.timedelta(hours=1))]
