"""CoinGecko market snapshots as a dlt source, kept as history by snapshot time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import dlt
import pyarrow as pa

from pipelines.http import ApiClient
from pipelines.sources.coingecko.helpers import fetch_markets, markets_to_arrow
from pipelines.sources.coingecko.settings import PRIMARY_KEY, TABLE
from pipelines.sources.common import ExtractSink, observed_fields


@dlt.source(name="coingecko")
def coingecko_source(
    client: ApiClient, coins: int, per_page: int, snapshot_ts: dt.datetime, load_id: str, sink: ExtractSink
) -> dlt.sources.DltResource:
    return markets(client, coins, per_page, snapshot_ts, load_id, sink)


# merge_key: a load replaces every stored row of its snapshot_ts in one transaction (dlt's delete-insert),
# so a snapshot re-taken within its hour never mixes with the earlier one
@dlt.resource(name=TABLE, primary_key=list(PRIMARY_KEY), merge_key="snapshot_ts", write_disposition="merge")
def markets(
    client: ApiClient, coins: int, per_page: int, snapshot_ts: dt.datetime, load_id: str, sink: ExtractSink
) -> Iterator[pa.Table]:
    """One snapshot of the top `coins` by market cap, stamped with the run's snapshot hour."""
    raw = fetch_markets(client, coins, per_page)
    sink.pages += 1
    sink.fetched_rows += len(raw)
    sink.fields = observed_fields(raw)
    table, rejected = markets_to_arrow(raw, snapshot_ts, load_id)
    sink.rejected.extend(rejected)
    if table.num_rows:
        yield sink.keep(table)
