"""alternative.me Fear & Greed as a dlt source: full history first (limit=0), then only the newest days."""

from __future__ import annotations

from collections.abc import Iterator

import dlt
import pyarrow as pa

from pipelines.http import ApiClient
from pipelines.sources.common import ExtractSink, observed_fields
from pipelines.sources.fear_greed.helpers import fetch_fng, fng_to_arrow
from pipelines.sources.fear_greed.settings import PRIMARY_KEY, TABLE


@dlt.source(name="fear_greed")
def fear_greed_source(
    client: ApiClient, limit: int, load_id: str, sink: ExtractSink
) -> dlt.sources.DltResource:
    return fear_greed(client, limit, load_id, sink)


@dlt.resource(name=TABLE, primary_key=list(PRIMARY_KEY), write_disposition="merge")
def fear_greed(client: ApiClient, limit: int, load_id: str, sink: ExtractSink) -> Iterator[pa.Table]:
    items = fetch_fng(client, limit)
    sink.pages += 1
    sink.fetched_rows += len(items)
    sink.fields = observed_fields(items)
    table, rejected = fng_to_arrow(items, load_id)
    sink.rejected.extend(rejected)
    if table.num_rows:
        yield sink.keep(table)
