"""Overview: the latest snapshot's top 10 by market cap with a 7-day sparkline, and market totals."""

from __future__ import annotations

import dashboard_queries as q
import pandas as pd
import streamlit as st

SPARKLINE_DAYS = 7
NO_PAIR = "—"  # a coin without a pair the pipeline knows (USDT itself, coins off the universe)

ctx = q.page_context()
st.title("Market overview")

missing = q.missing_gold(ctx.url, ctx.schema, q.OVERVIEW_TABLES)
if missing:
    st.info(
        f"No market data yet: {', '.join(missing)} missing or empty. Load data with `cryptoflow run` "
        "(or `cryptoflow demo` for the offline sandbox) and this page fills in.",
        icon=":material/hourglass_empty:",
    )
    st.stop()

top10 = q.load_top10(ctx.url, ctx.schema)
totals = q.load_market_totals(ctx.url, ctx.schema)
snapshot = top10["snapshot_ts"].max()
st.caption(f"As of the market snapshot of {snapshot:%Y-%m-%d %H:%M} UTC · environment `{ctx.schema}`")


def _money(value: float | None) -> str:
    return "n/a" if pd.isna(value) else f"${value / 1e9:,.1f} B"


t = totals.iloc[0] if not totals.empty else pd.Series(dtype=object)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Total market cap", _money(t.get("total_market_cap_usd")), help=f"UTC day {t.get('day')}")
c2.metric("24 h volume", _money(t.get("total_volume_24h_usd")), help=f"UTC day {t.get('day')}")
dominance = t.get("btc_dominance")
c3.metric(
    "BTC dominance", "n/a" if pd.isna(dominance) else f"{dominance:.1%}", help=f"UTC day {t.get('day')}"
)
fng = t.get("fng_value")
c4.metric(
    "Fear & Greed",
    "n/a" if pd.isna(fng) else f"{fng:.0f} · {t.get('fng_label')}",
    help=f"UTC day {t.get('fng_day')}",
)

sparks = q.load_sparklines(ctx.url, ctx.schema, tuple(top10["symbol"].dropna()), SPARKLINE_DAYS)
table = top10.merge(sparks, on="symbol", how="left")
table["change_pct"] = table["change_24h"] * 100
table["symbol"] = table["symbol"].fillna(NO_PAIR)


def _colour(value: object) -> str:
    if not isinstance(value, int | float) or value != value:  # NaN
        return ""
    return "color: #0a8f3c" if value > 0 else "color: #d32f2f" if value < 0 else ""


styled = table[
    [
        "position",
        "coin_name",
        "symbol",
        "price_usd",
        "change_pct",
        "market_cap_usd",
        "volume_24h_usd",
        "closes",
    ]
].style.map(_colour, subset=["change_pct"])
st.subheader("Top 10 by market cap")
st.dataframe(
    styled,
    hide_index=True,
    key="top10",
    column_config={
        "position": st.column_config.NumberColumn("#", width="small"),
        "coin_name": "Coin",
        "symbol": "Pair",
        "price_usd": st.column_config.NumberColumn("Price (USD)", format="$%.4g"),
        "change_pct": st.column_config.NumberColumn("24 h change", format="%+.2f%%"),
        "market_cap_usd": st.column_config.NumberColumn("Market cap", format="compact"),
        "volume_24h_usd": st.column_config.NumberColumn("Volume 24 h", format="compact"),
        "closes": st.column_config.LineChartColumn(f"Last {SPARKLINE_DAYS} days (daily close)"),
    },
)
