"""Data Quality: pipeline runs, success rate, freshness per table, latest check results, dead letters, gaps."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import dashboard_queries as q
import pandas as pd
import plotly.express as px
import streamlit as st

# how the page names each class of missing hour (ops.gaps.gap_class)
GAP_CLASSES = {
    "exchange_outage": "exchange outage (every pair)",
    "pair_halt": "pair halt (one pair)",
    "ingest_failure": "ingest failure (re-fetched)",
    "missing": "still missing",
}
RUN_DAYS = 30
# Material icons (in markdown) and coloured text (in tables), not emoji: a machine without an emoji font draws
# emoji as empty boxes. Outcomes failures first.
OUTCOME_ICONS = {
    "fail": ":red[:material/cancel:]",
    "error": ":orange[:material/error:]",
    "warn": ":yellow[:material/warning:]",
    "pass": ":green[:material/check_circle:]",
}
OUTCOME_COLOURS = {"fail": "#d32f2f", "error": "#e65100", "warn": "#9a7000", "pass": "#0a8f3c"}
FRESHNESS_COLOURS = {"fresh": OUTCOME_COLOURS["pass"], "stale": OUTCOME_COLOURS["fail"]}
# A styled table shows the Styler's text in every column without a format of its own (floats with 6 decimals,
# times with microseconds): its times and numbers get the formats an unstyled table shows them with.
TIME_FORMAT = "YYYY-MM-DD HH:mm:ssZ"


def text_colour(colours: dict[str, str]) -> Callable[[object], str]:
    """A Styler function: the cell's text in its value's colour (values without one keep the default)."""
    return lambda value: f"color: {colours[value]}; font-weight: 600" if value in colours else ""


ctx = q.page_context()
st.title("Data quality")
st.caption(
    f"As of {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC (cached up to an hour) · runs of the last {RUN_DAYS} days"
)

summary = q.load_run_summary(ctx.url, RUN_DAYS)
runs = q.load_runs(ctx.url, RUN_DAYS)
st.subheader("Pipeline runs")
if runs.empty:
    st.info(
        f"No pipeline runs in the last {RUN_DAYS} days: nothing has been loaded yet.",
        icon=":material/hourglass_empty:",
    )
else:
    finished = int(summary["runs"].sum())
    succeeded = int(summary["succeeded"].sum())
    c1, c2, c3 = st.columns(3)
    c1.metric("Runs", f"{finished:,}")
    c2.metric("Success rate", f"{succeeded / finished:.1%}" if finished else "n/a")
    c3.metric("Rows to raw", f"{int(summary['rows_raw'].sum()):,}")
    chart = px.scatter(
        runs,
        x="started_at",
        y="duration_s",
        color="status",
        symbol="source",
        size=runs["rows_raw"].clip(lower=1) ** 0.25,
        hover_data=["source", "command", "rows_raw", "error"],
        color_discrete_map={
            "success": "#0a8f3c",
            "failed": "#d32f2f",
            "up_for_retry": "#f57c00",
            "running": "#1565c0",
        },
        labels={"started_at": "started (UTC)", "duration_s": "duration (s)"},
    )
    chart.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 20, "b": 10},
        # above the plot: below it, the legend covers the x axis's title
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    st.plotly_chart(chart, key="runs_chart")
    st.dataframe(
        summary,
        hide_index=True,
        key="run_summary",
        column_config={"success_rate": st.column_config.NumberColumn("success rate", format="percent")},
    )

st.subheader("Freshness")
freshness = q.load_freshness(ctx.url, ctx.schema, q.freshness_thresholds(ctx.settings))
if freshness.empty:
    st.info(f"No gold tables with data in `{ctx.schema}` yet.", icon=":material/hourglass_empty:")
else:
    freshness["status"] = freshness["fresh"].map({True: "fresh", False: "stale"})
    st.dataframe(
        freshness[["table_name", "status", "newest", "age_h", "threshold_h"]].style.map(
            text_colour(FRESHNESS_COLOURS), subset=["status"]
        ),
        hide_index=True,
        key="freshness",
        column_config={
            "newest": st.column_config.DatetimeColumn("newest data (UTC)", format=TIME_FORMAT),
            "age_h": st.column_config.NumberColumn("age (h)", format="%.1f"),
            "threshold_h": st.column_config.NumberColumn("threshold (h)", format="%.0f"),
        },
    )

st.subheader("Latest check results")
checks = q.load_check_results(ctx.url)
if checks.empty:
    st.info("No data-quality checks have run yet (`cryptoflow check`).", icon=":material/hourglass_empty:")
else:
    counts = checks["outcome"].value_counts()
    st.caption(" · ".join(f"{icon} {o}: {int(counts.get(o, 0))}" for o, icon in OUTCOME_ICONS.items()))
    st.dataframe(
        checks.style.map(text_colour(OUTCOME_COLOURS), subset=["outcome"]),
        hide_index=True,
        key="checks",
        column_config={
            "measured_value": st.column_config.NumberColumn(format="plain"),
            "checked_at": st.column_config.DatetimeColumn(format=TIME_FORMAT),
        },
    )

left, right = st.columns(2)
with left:
    st.subheader("Dead letters")
    dead = q.load_dead_letter_runs(ctx.url)
    if dead.empty:
        st.success("No records rejected to the dead letter queue.", icon=":material/check_circle:")
    else:
        st.metric("Rejected records", f"{int(dead['dead_letters'].sum()):,}")
        st.caption("Per run; inspect and replay them with `cryptoflow dlq list` / `cryptoflow dlq replay`.")
        st.dataframe(dead, hide_index=True, key="dead_letters")
with right:
    st.subheader("Known gaps")
    gap_counts = q.load_gap_counts(ctx.url)
    if gap_counts.empty:
        st.success("No missing candle hours recorded.", icon=":material/check_circle:")
    else:
        st.caption(
            " · ".join(
                f"{GAP_CLASSES.get(str(r.gap_class), r.gap_class)}: {r.hours}"
                for r in gap_counts.itertuples()
            )
        )
        st.dataframe(q.load_gaps(ctx.url), hide_index=True, key="gaps")


def table_or_all_clear(title: str, frame: pd.DataFrame, all_clear: str, caption: str, key: str) -> None:
    st.subheader(title)
    if frame.empty:
        st.success(all_clear, icon=":material/check_circle:")
    else:
        st.caption(caption)
        st.dataframe(frame, hide_index=True, key=key)


left, right = st.columns(2)
with left:
    table_or_all_clear(
        "Pairs no longer trading",
        q.load_pairs_not_trading(ctx.url),
        "Every tracked pair trades.",
        "Skipped by every run with one warning; their history stays in raw and gold.",
        "pairs_not_trading",
    )
with right:
    table_or_all_clear(
        "Revised candles",
        q.load_revisions(ctx.url),
        "No candle was revised after its close.",
        "Old and new values of each restated candle (ops.revisions); gold was restated with them.",
        "revisions",
    )
