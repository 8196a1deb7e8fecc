"""Market Sentiment: Fear & Greed (with its bands) against BTC, market-wide volume, and breadth."""

from __future__ import annotations

import datetime as dt

import dashboard_queries as q
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

DEFAULT_DAYS = 365
# alternative.me's classification bands
FNG_BANDS = [
    (0, 25, "Extreme Fear", "rgba(211,47,47,0.14)"),
    (25, 46, "Fear", "rgba(245,124,0,0.12)"),
    (46, 55, "Neutral", "rgba(158,158,158,0.12)"),
    (55, 76, "Greed", "rgba(124,179,66,0.14)"),
    (76, 100, "Extreme Greed", "rgba(46,125,50,0.16)"),
]

ctx = q.page_context()
st.title("Market sentiment")

missing = q.missing_gold(ctx.url, ctx.schema, q.SENTIMENT_TABLES)
if missing:
    st.info(
        f"No sentiment data yet: {', '.join(missing)} missing or empty. Load data with `cryptoflow run` "
        "(or `cryptoflow demo` for the offline sandbox) and this page fills in.",
        icon=":material/hourglass_empty:",
    )
    st.stop()

bounds = q.load_sentiment_bounds(ctx.url, ctx.schema).iloc[0]
first, last = bounds.first_day, bounds.last_day
picked = st.date_input(
    "Date range (UTC)",
    value=(max(first, last - dt.timedelta(days=DEFAULT_DAYS - 1)), last),
    min_value=first,
    max_value=last,
    key="sentiment_range",
)
if not isinstance(picked, tuple | list) or len(picked) != 2:
    st.info("Pick the end of the date range.", icon=":material/date_range:")
    st.stop()
days = q.load_sentiment(ctx.url, ctx.schema, *picked)
if days.empty:
    st.info(f"No sentiment rows between {picked[0]} and {picked[1]}.", icon=":material/search_off:")
    st.stop()
st.caption(f"{len(days):,} days · as of {days['day'].max()} (UTC day) · environment `{ctx.schema}`")

st.subheader("Fear & Greed against BTC")
fng = make_subplots(specs=[[{"secondary_y": True}]])
for low, high, label, colour in FNG_BANDS:
    fng.add_hrect(
        y0=low,
        y1=high,
        fillcolor=colour,
        line_width=0,
        annotation_text=label,
        annotation_position="top left",
        annotation_font_size=10,
    )
fng.add_trace(
    go.Scatter(
        x=days["day"],
        y=days["fng_value"],
        name="Fear & Greed",
        mode="lines",
        line={"color": "#6a1b9a"},
        text=days["fng_label"],
    ),
    secondary_y=False,
)
fng.add_trace(
    go.Scatter(
        x=days["day"], y=days["btc_close"], name="BTC close (USDT)", mode="lines", line={"color": "#f7931a"}
    ),
    secondary_y=True,
)
fng.update_yaxes(range=[0, 100], title_text="Fear & Greed", secondary_y=False)
fng.update_yaxes(title_text="BTC (USDT)", secondary_y=True, showgrid=False)
fng.update_layout(height=420, margin={"l": 10, "r": 10, "t": 20, "b": 10}, legend={"orientation": "h"})
st.plotly_chart(fng, key="fng_chart")

# A historical window can hold days with no market snapshot (volume) or no tracked pair (breadth): NULLs.
volume_24h = pd.to_numeric(days["total_volume_24h_usd"], errors="coerce")
advancers = pd.to_numeric(days["advancers"], errors="coerce")
decliners = pd.to_numeric(days["decliners"], errors="coerce")

left, right = st.columns(2)
with left:
    st.subheader("Market volume (24 h, all coins)")
    if volume_24h.notna().any():
        volume = go.Figure(
            go.Scatter(
                x=days["day"],
                y=volume_24h,
                mode="lines+markers" if volume_24h.notna().sum() < 3 else "lines",
                fill="tozeroy",
                name="Volume 24 h (USD)",
            )
        )
        volume.update_layout(height=320, margin={"l": 10, "r": 10, "t": 20, "b": 10})
        st.plotly_chart(volume, key="volume_chart")
    else:
        st.info(
            "No market snapshot falls on these days: CoinGecko's free API gives only the present, so market "
            "totals exist from the pipeline's first snapshot on (Overview shows the latest).",
            icon=":material/info:",
        )
with right:
    st.subheader("Breadth: advancers vs decliners")
    if advancers.notna().any() or decliners.notna().any():
        breadth = go.Figure()
        breadth.add_trace(go.Bar(x=days["day"], y=advancers, name="Advancers", marker_color="#0a8f3c"))
        breadth.add_trace(
            go.Bar(
                x=days["day"],
                y=-decliners,
                name="Decliners",
                marker_color="#d32f2f",
                customdata=decliners,
                hovertemplate="%{customdata}",
            )
        )
        breadth.update_layout(
            barmode="relative",
            height=320,
            margin={"l": 10, "r": 10, "t": 20, "b": 10},
            legend={"orientation": "h"},
        )
        st.plotly_chart(breadth, key="breadth_chart")
    else:
        st.info("No tracked pair has a complete day in this range.", icon=":material/info:")
