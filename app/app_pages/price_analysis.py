"""Price Analysis: candlesticks with MA 7d / MA 30d / VWAP, volume and volatility for one symbol."""

from __future__ import annotations

import datetime as dt

import dashboard_queries as q
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

DEFAULT_SYMBOL = "BTCUSDT"
DEFAULT_DAYS = 90
GRAINS = ["Hourly", "Daily"]

ctx = q.page_context()
st.title("Price analysis")

missing = q.missing_gold(ctx.url, ctx.schema, q.PRICE_TABLES)
if missing:
    st.info(
        f"No prices yet: {', '.join(missing)} missing or empty. Load data with `cryptoflow run` "
        "(or `cryptoflow demo` for the offline sandbox) and this page fills in.",
        icon=":material/hourglass_empty:",
    )
    st.stop()

symbols = q.load_symbols(ctx.url, ctx.schema).set_index("symbol")
names = list(symbols.index)
left, middle, right = st.columns([2, 3, 2])
symbol = left.selectbox(
    "Symbol", names, index=names.index(DEFAULT_SYMBOL) if DEFAULT_SYMBOL in names else 0, key="symbol"
)
# the daily summary covers complete UTC days; the hourly candles of the current day come after them
first, last = symbols.loc[symbol, "first_day"], symbols.loc[symbol, "last_day"] + dt.timedelta(days=1)
picked = middle.date_input(
    "Date range (UTC)",
    value=(max(first, last - dt.timedelta(days=DEFAULT_DAYS - 1)), last),
    min_value=first,
    max_value=last,
    key="date_range",
)
grain = right.segmented_control("Grain", GRAINS, default="Hourly", required=True, key="grain")
if not isinstance(picked, tuple | list) or len(picked) != 2:
    st.info("Pick the end of the date range.", icon=":material/date_range:")
    st.stop()
start, end = picked

if grain == "Daily":
    prices = q.load_prices_daily(ctx.url, ctx.schema, symbol, start, end)
    x, vol_cols = "day", {"volatility": "realised (day)"}
else:
    prices = q.load_prices_hourly(ctx.url, ctx.schema, symbol, start, end)
    x = "open_time"
    vol_cols = {"volatility_24h": "24 h", "volatility_7d": "7 d", "volatility_30d": "30 d"}
if prices.empty:
    st.info(f"No {grain.lower()} rows for {symbol} between {start} and {end}.", icon=":material/search_off:")
    st.stop()

newest = prices[x].max()
st.caption(
    f"{len(prices):,} {grain.lower()} rows · as of {newest:%Y-%m-%d %H:%M} UTC"
    if grain == "Hourly"
    else f"{len(prices):,} daily rows · as of {newest} (UTC day)",
)

figure = make_subplots(
    rows=3,
    cols=1,
    shared_xaxes=True,
    row_heights=[0.6, 0.2, 0.2],
    vertical_spacing=0.06,
    subplot_titles=(f"{symbol} ({grain.lower()})", "Volume", "Volatility (annualised)"),
)
figure.add_trace(
    go.Candlestick(
        x=prices[x],
        open=prices["open"],
        high=prices["high"],
        low=prices["low"],
        close=prices["close"],
        name="OHLC",
    ),
    row=1,
    col=1,
)
vwap = "vwap" if grain == "Daily" else "vwap_24h"
for column, label, colour in (
    ("ma_7d", "MA 7d", "#1565c0"),
    ("ma_30d", "MA 30d", "#6a1b9a"),
    (vwap, "VWAP", "#ef6c00"),
):
    line = {"width": 1.3, "color": colour}
    figure.add_trace(
        go.Scatter(x=prices[x], y=prices[column], name=label, mode="lines", line=line), row=1, col=1
    )
figure.add_trace(go.Bar(x=prices[x], y=prices["volume"], name="Volume", marker_color="#7f8c9d"), row=2, col=1)
for column, label in vol_cols.items():
    figure.add_trace(
        go.Scatter(x=prices[x], y=prices[column], name=f"Vol {label}", mode="lines"), row=3, col=1
    )
figure.update_layout(
    height=720,
    xaxis_rangeslider_visible=False,
    margin={"l": 10, "r": 10, "t": 40, "b": 10},
    legend={"orientation": "h", "y": -0.05},
)
figure.update_yaxes(tickformat=".0%", row=3, col=1)
st.plotly_chart(figure, key="price_chart")

st.download_button(
    "Download these rows as CSV",
    prices.to_csv(index=False).encode(),
    file_name=f"{symbol}_{grain.lower()}_{start}_{end}.csv",
    mime="text/csv",
    icon=":material/download:",
    key="download_csv",
)
with st.expander("Rows"):
    st.dataframe(prices, hide_index=True, key="price_rows")
