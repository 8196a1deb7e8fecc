"""What a transform says: how fresh gold is and how late its newest candle arrived, a failure's models and
audits with sample rows, and the demo's picture of gold."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines.runtime import db
from pipelines.settings import Settings


def gold_newest_close(settings: Settings, environment: str = "prod") -> dt.datetime | None:
    """Close time of the newest candle in gold.fct_prices (of that environment); None before the first build."""
    schema = "gold" if environment == "prod" else f"gold__{environment}"
    with db.cursor(settings) as cur:
        cur.execute("SELECT to_regclass(%s)", (f"{schema}.fct_prices",))
        if db.one(cur)[0] is None:
            return None
        cur.execute(f'SELECT max(open_time) FROM "{schema}".fct_prices')
        newest = db.one(cur)[0]
    return None if newest is None else newest.astimezone(dt.UTC) + dt.timedelta(hours=1)


def latency(before: dt.datetime | None, after: dt.datetime | None, now: dt.datetime) -> dict[str, Any]:
    """End-to-end latency of the newest candle this run brought into gold: from its close to now."""
    if after is None or (before is not None and after <= before):
        return {}  # nothing new reached gold: no latency to report
    latency = (now - after).total_seconds()
    return {"gold_newest_close": after.isoformat(), "latency_s": round(latency, 3)}


def failure_message(settings: Settings, environment: str, headline: str, samples: int = 5) -> str:
    """Name each failed model and audit, with a few of the offending rows (the audit query, re-run)."""

    from sqlmesh.core.console import get_console
    from sqlmesh.utils.errors import AuditError, NodeAuditsErrors

    lines = [f"{headline} (environment '{environment}')"]
    for failure in getattr(get_console(), "failures", []):
        audits = [e for e in _causes(failure) if isinstance(e, AuditError)]
        audits += [a for e in _causes(failure) if isinstance(e, NodeAuditsErrors) for a in e.errors]
        if not audits:
            lines.append(f"- {failure}: {failure.__cause__}")
        for audit in audits:
            lines.append(
                f"- model {audit.model_name}: audit '{audit.audit_name}' failed for {audit.count} row(s)"
            )
            lines += _sample_rows(settings, audit.sql(dialect="postgres"), samples)
    return "\n".join(lines)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__
    return chain


def _sample_rows(settings: Settings, audit_sql: str, samples: int) -> list[str]:
    """A few of the rows an audit query returns (a courtesy: the failure itself is already reported)."""
    try:
        with db.cursor(settings) as cur:
            cur.execute(f"SELECT * FROM ({audit_sql}) AS failed LIMIT {samples}")
            names = [d.name for d in cur.description or ()]
            return [f"    {dict(zip(names, row, strict=True))}" for row in cur.fetchall()]
    except Exception as exc:
        return [f"    (sample rows unavailable: {exc})"]


def describe_gold(settings: Settings, symbol: str = "BTCUSDT", rows: int = 5) -> str:
    """Row counts of the gold tables and the newest rows of one symbol from fct_prices."""
    lines = ["gold tables (synthetic sandbox data):"]
    with db.cursor(settings) as cur:
        for table in ("fct_prices", "fct_daily_summary", "fct_market_sentiment", "dim_crypto", "dim_date"):
            cur.execute(f"SELECT count(*) FROM gold.{table}")
            lines.append(f"  gold.{table:<22} {db.one(cur)[0]:>12,} rows")
        cur.execute(
            "SELECT open_time, close, change_24h, ma_7d, vwap_24h, volatility_30d, fng_label FROM gold.fct_prices "
            "WHERE symbol = %s ORDER BY open_time DESC LIMIT %s",
            (symbol, rows),
        )
        sample = cur.fetchall()
    lines += ["", f"newest {symbol} rows of gold.fct_prices:"]
    lines.append(
        f"  {'open_time (UTC)':<17} {'close':>14} {'chg 24h':>8} {'MA 7d':>12} {'VWAP 24h':>12} {'vol 30d':>8}  F&G"
    )
    for open_time, close, change, ma, vwap, vol, label in sample:
        lines.append(
            f"  {open_time:%Y-%m-%d %H:%M} {close:>14.4f} {_pct(change):>8} {ma:>12.4f} {vwap:>12.4f} "
            f"{_pct(vol, signed=False):>8}  {label or ''}"
        )
    return "\n".join(lines)


def _pct(value: float | None, signed: bool = True) -> str:
    return "" if value is None else f"{value * 100:{'+' if signed else ''}.2f}%"
