"""cryptoflow dashboard: the router. Loads settings, picks the gold environment, shows the sandbox banner,
then runs the chosen page (each page in app_pages/ only draws; all SQL is in dashboard_queries.py)."""

from __future__ import annotations

import dashboard_queries as q
import streamlit as st

from pipelines.runtime.db import DatabaseUnavailable
from pipelines.settings import ConfigError

PAGES = [
    st.Page(
        "app_pages/overview.py",
        title="Overview",
        url_path="overview",
        default=True,
    ),
    st.Page(
        "app_pages/price_analysis.py",
        title="Price Analysis",
        url_path="price_analysis",
    ),
    st.Page(
        "app_pages/market_sentiment.py",
        title="Market Sentiment",
        url_path="market_sentiment",
    ),
    st.Page(
        "app_pages/data_quality.py",
        title="Data Quality",
        url_path="data_quality",
    ),
]
ENV_KEY = "environment"

st.set_page_config(
    page_title="cryptoflow", layout="wide"
)  # no page or page_icon icons: a material favicon is fetched from Google
page = st.navigation(PAGES)

try:
    settings = q.app_settings()
    url = q.reader_url(settings)
    schemas = q.environment_schemas(url)
except (ConfigError, DatabaseUnavailable) as exc:
    st.error(f"The dashboard cannot reach its data: {exc}", icon=":material/error:")
    st.stop()

with st.sidebar:
    schema = st.selectbox(
        "Environment",
        schemas or [q.PROD_SCHEMA],
        format_func=q.environment_label,
        key=ENV_KEY,
        help="prod reads `gold`; a SQLMesh dev environment (`cryptoflow transform --env dev`) reads `gold__dev`, "
        "so a model change can be reviewed here before it is promoted.",
    )
    st.caption("Data is cached for up to an hour (gold is rebuilt hourly).")
    if st.button("Reload data now", icon=":material/refresh:", width="stretch"):
        st.cache_data.clear()
        st.rerun()

# sandbox data: the configuration says so, or a pipeline run recorded that it read the offline sandbox
sandbox = settings.sandbox.enabled or int(q.load_sandbox_runs(url)["runs"][0]) > 0
if sandbox:
    st.warning(
        "**Sandbox data**: these markets are synthetic (the offline API sandbox), not real prices.",
    )
st.session_state[q.CONTEXT_KEY] = q.Context(settings, url, q.checked_schema(url, schema), sandbox)
page.run()
