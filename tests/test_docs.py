"""`build_docs`: the static model documentation built from the loaded SQLMesh context (no data needed)."""

from __future__ import annotations

import re
import shutil
from html import unescape
from pathlib import Path

import pytest

from pipelines import sqlmesh_context, transform
from pipelines.docs import build_docs
from pipelines.runtime import db

RAW = {"raw.binance_klines", "raw.coingecko_markets", "raw.fear_greed", "ops.pairs"}  # the external sources
SILVER = {
    "silver.stg_binance__ohlcv",
    "silver.stg_coingecko__markets",
    "silver.stg_alternative_me__fear_greed",
    "silver.int_pair_snapshots_daily",
    "silver.int_crypto_daily",
}
GOLD = {
    "gold.dim_crypto",
    "gold.dim_pair",
    "gold.dim_date",
    "gold.fct_market_ranks",
    "gold.fct_prices",
    "gold.fct_daily_summary",
    "gold.fct_market_sentiment",
    "gold.mart_market_overview",
    "gold.mart_market_totals",
}


def links(html: str) -> set[str]:
    return set(re.findall(r'href="([^"#/]+)\.html"', html)) - {"index", "lineage"}


def lineage_of(page: str, direction: str) -> set[str]:
    span = re.search(rf'<span class="{direction}">(.*?)</span>', page).group(1)
    return links(span)


def column_rows(page: str) -> dict[str, str]:
    rows = re.findall(
        r"<tr><td><code>([^<]+)</code></td><td><code>[^<]*</code></td><td>([^<]*)</td></tr>", page
    )
    return {unescape(col): unescape(desc).strip() for col, desc in rows}


def test_site_lists_every_model_with_columns_and_lineage(make_settings, tmp_path: Path):
    settings = make_settings(sandbox={"enabled": True})
    index = build_docs(settings, tmp_path / "site")
    site = index.parent
    html = index.read_text()

    assert links(html) == RAW | SILVER | GOLD
    sections = dict(re.findall(r'<h2 id="(\w+)">.*?</h2>(.*?)</table>', html, re.S))
    assert {layer: links(body) for layer, body in sections.items()} == {
        "raw": RAW,
        "silver": SILVER,
        "gold": GOLD,
    }
    assert "synthetic" in html
    assert "Hourly prices with OHLCV, every indicator" in html  # the model's description

    ctx = transform.context(settings)
    for model in ctx.models.values():
        name = f"{model.schema_name}.{model.view_name}"
        page = (site / f"{name}.html").read_text()
        columns = {c: t.sql(dialect="postgres") for c, t in (model.columns_to_types or {}).items()}
        assert columns, name
        rows = column_rows(page)
        assert list(rows) == list(columns), name
        if not model.kind.is_external:
            assert all(rows.values()), (
                f"{name}: columns without description {[c for c, d in rows.items() if not d]}"
            )
            assert "<h2>SQL</h2>" in page

    prices = (site / "gold.fct_prices.html").read_text()
    assert lineage_of(prices, "upstream") == {
        "silver.int_crypto_daily",
        "silver.stg_binance__ohlcv",
    }  # the coin as of the hour comes from int_crypto_daily, not from dim_crypto's current row
    assert lineage_of(prices, "downstream") == {"gold.mart_market_overview"}
    assert column_rows(prices)["close"] == "USDT"
    assert "accepted_range(column := change_24h, min_v := -1, max_v := 100)" in prices
    assert "@unique_grain(open_time, symbol)" in prices  # the grain: a unique index
    ohlcv = (site / "silver.stg_binance__ohlcv.html").read_text()
    assert lineage_of(ohlcv, "upstream") == {"raw.binance_klines"}
    assert "gold.fct_prices" in lineage_of(ohlcv, "downstream")

    lineage = (site / "lineage.html").read_text()
    svg = re.search(r"<svg .*?</svg>", lineage, re.S).group(0)
    assert links(svg) == RAW | SILVER | GOLD  # every box is a link to its page
    assert 'data-from="silver.stg_binance__ohlcv" data-to="gold.fct_prices"' in svg
    assert 'data-from="gold.fct_prices" data-to="gold.mart_market_overview"' in svg
    for page in site.glob("*.html"):  # offline: no script, nothing fetched
        text = page.read_text()
        assert "<script" not in text
        assert not re.search(r'(src|href)="https?:', text), page.name


def test_a_column_without_description_fails_the_build(make_settings, tmp_path: Path):
    from sqlmesh import Context

    settings = make_settings()
    project = tmp_path / "project"
    shutil.copytree(sqlmesh_context.PROJECT_DIR, project, ignore=shutil.ignore_patterns(".cache", "logs"))
    model = project / "models" / "staging" / "stg_binance__ohlcv.sql"
    source = model.read_text()
    assert " /* traded value in USDT */" in source
    model.write_text(source.replace(" /* traded value in USDT */", ""))
    db.ensure_database(settings)  # the (empty) test database the config points at
    ctx = Context(paths=str(project), config=sqlmesh_context.sqlmesh_config(settings))

    with pytest.raises(ValueError, match=r"silver\.stg_binance__ohlcv\.quote_volume"):
        build_docs(settings, tmp_path / "site", context=ctx)
    assert not (tmp_path / "site").exists()
