"""Binance klines: paging plans, page fetch, and the page -> Arrow parser with validation.

The hot path turns a page (a JSON list of 12-field lists) into Arrow columns directly: no per-row dicts.
A page that does not fit the fast path (odd shapes, non-numeric strings) is parsed row by row so that
only the bad rows go to the dead letter queue.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines.http import ApiClient, ApiError, MalformedResponse
from pipelines.sources.binance.settings import (
    DECIMAL_FIELDS,
    DECIMAL_TYPE,
    EXCHANGE_INFO_PATH,
    INTERVAL_MS,
    KLINES_PATH,
    KLINES_SCHEMA,
    MAX_PAGE,
    PRICE_FIELDS,
    ROW_FIELDS,
)
from pipelines.sources.common import Rejected

_CSV_READ = pacsv.ReadOptions(column_names=list(ROW_FIELDS), use_threads=False)
_CSV_TYPES = pacsv.ConvertOptions(
    column_types={
        **{name: DECIMAL_TYPE for name in DECIMAL_FIELDS},
        "open_time": pa.int64(),
        "close_time": pa.int64(),
        "trades": pa.int64(),
        "ignore": pa.string(),
    },
    strings_can_be_null=False,
    quoted_strings_can_be_null=False,
)
_NUMERIC = re.compile(r"^-?\d{1,28}(\.\d{1,8})?$")
_FIELD_INDEX = {name: i for i, name in enumerate(ROW_FIELDS)}


@dataclass
class ParsedPage:
    table: pa.Table
    rejected: list[Rejected] = field(default_factory=list)
    open_skipped: int = 0
    parse_s: float = 0.0


@dataclass(frozen=True)
class ExchangeInfo:
    server_time_ms: int
    trading: frozenset[str]
    weight_limit: int | None
    statuses: dict[str, str] = field(default_factory=dict)  # every listed symbol -> TRADING, BREAK, ...
    from_api: bool = True  # False: made up without the API (it answered 451), no statuses to trust


def fetch_exchange_info(client: ApiClient) -> ExchangeInfo:
    body = client.get_json(EXCHANGE_INFO_PATH)
    if not isinstance(body, dict) or "symbols" not in body or "serverTime" not in body:
        raise MalformedResponse(f"binance: exchangeInfo without symbols/serverTime: {str(body)[:200]}")
    weight = next(
        (
            int(r["limit"])
            for r in body.get("rateLimits", [])
            if r.get("rateLimitType") == "REQUEST_WEIGHT" and r.get("interval") == "MINUTE"
        ),
        None,
    )
    statuses = {
        s["symbol"]: str(s.get("status"))
        for s in body["symbols"]
        if isinstance(s, dict) and isinstance(s.get("symbol"), str)
    }
    trading = frozenset(symbol for symbol, state in statuses.items() if state == "TRADING")
    return ExchangeInfo(int(body["serverTime"]), trading, weight, statuses)


def first_candle_ms(client: ApiClient, symbol: str, interval: str) -> int | None:
    """Open time of the pair's first candle on the exchange (klines from time 0, one row), None if none."""
    body = client.get_json(KLINES_PATH, {"symbol": symbol, "interval": interval, "startTime": 0, "limit": 1})
    if not isinstance(body, list):
        raise MalformedResponse(f"binance: klines for {symbol} is not a list: {str(body)[:200]}")
    if not body or not isinstance(body[0], list) or type(body[0][0]) is not int:
        return None
    return int(body[0][0])


def last_closed_open_ms(server_time_ms: int, interval: str) -> int:
    """Open time of the newest candle that has closed at server_time_ms."""
    step = INTERVAL_MS[interval]
    return (server_time_ms // step) * step - step


def plan_pages(start_ms: int, end_ms: int, interval: str, page: int = MAX_PAGE) -> list[tuple[int, int]]:
    """Split [start_ms, end_ms] (open times, inclusive) into grid-aligned windows of at most `page` candles.

    Because the grid is known, every window can be fetched independently and in parallel; an exchange
    outage just makes a window return fewer rows.
    """
    step = INTERVAL_MS[interval]
    start_ms = -(-start_ms // step) * step
    return [(s, min(s + (page - 1) * step, end_ms)) for s in range(start_ms, end_ms + 1, page * step)]


def fetch_klines_page(
    client: ApiClient,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    server_time_ms: int,
    load_id: str,
) -> tuple[int, ParsedPage]:
    """Fetch one grid-aligned page and parse it; returns (rows received, parsed page)."""
    limit = (end_ms - start_ms) // INTERVAL_MS[interval] + 1
    params = {
        "symbol": symbol,
        "interval": interval,
        "startTime": start_ms,
        "endTime": end_ms,
        "limit": limit,
    }
    try:
        return client.get_parsed(
            KLINES_PATH,
            params,
            lambda body: parse_klines_body(body, symbol, interval, server_time_ms, load_id),
        )
    except ApiError as exc:
        if exc.status == 400 and '"code":-1121' in exc.body.replace(" ", ""):
            raise ApiError(
                f"binance: unknown symbol {symbol} (Invalid symbol, code -1121); remove it from universe.symbols",
                400,
                exc.body,
            ) from None
        raise


def parse_klines_body(
    body: bytes, symbol: str, interval: str, server_time_ms: int, load_id: str
) -> tuple[int, ParsedPage]:
    """Bytes of a klines response -> (rows received, parsed page). ValueError if it is not a JSON list.

    Fast path: Binance's compact body is CSV once the row brackets become newlines, and Arrow's CSV
    reader types every column without holding the GIL. A page with anything unusual in it (spaces,
    bad values, odd rows) takes the JSON path, which sorts rows out one by one.
    """
    started = time.perf_counter()
    count, page = _parse_body(body, symbol, interval, server_time_ms, load_id)
    page.parse_s = time.perf_counter() - started
    return count, page


def _parse_body(
    body: bytes, symbol: str, interval: str, server_time_ms: int, load_id: str
) -> tuple[int, ParsedPage]:
    if body.startswith(b"[[") and body.endswith(b"]]"):
        table = _read_kline_csv(body[2:-2].replace(b"],[", b"\n"))
        page = None if table is None else _csv_page(table, symbol, interval, server_time_ms, load_id)
        if table is not None and page is not None:
            return table.num_rows, page
    rows = json.loads(body)
    if not isinstance(rows, list):
        raise MalformedResponse(f"binance: klines for {symbol} is not a list: {str(rows)[:200]}")
    return len(rows), parse_klines(rows, symbol, interval, server_time_ms, load_id)


def _read_kline_csv(csv: bytes) -> pa.Table | None:
    """The 12 kline fields typed by Arrow's CSV reader; None when a value does not fit its type."""
    try:
        return pacsv.read_csv(pa.py_buffer(csv), read_options=_CSV_READ, convert_options=_CSV_TYPES)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _csv_page(
    table: pa.Table, symbol: str, interval: str, server_time_ms: int, load_id: str
) -> ParsedPage | None:
    decimals = {name: table[name] for name in DECIMAL_FIELDS}
    return _finish(
        None,
        symbol,
        interval,
        server_time_ms,
        load_id,
        table["open_time"],
        table["close_time"],
        table["trades"],
        decimals,
        [],
    )


MICROSECOND_TIMES = 10**14  # an open time above this is in microseconds (ms stay below it until 5138 AD)


def parse_klines_csv(
    csv: bytes, symbol: str, interval: str, server_time_ms: int, load_id: str
) -> tuple[int, ParsedPage]:
    """A CSV of the 12 kline fields (Binance's archive files) -> (rows read, parsed page), validated exactly
    as the API's pages are. A header row is skipped; open and close times in microseconds (the archive's
    spot files from 2025 on) become milliseconds. A file with any bad row is parsed row by row, so only the
    bad rows go to the dead letter queue, with the API path's reasons."""
    started = time.perf_counter()
    lines = csv.split(b"\n", 1)
    if lines[0][:1].isalpha():  # a header row ("open_time,open,...")
        csv = lines[1] if len(lines) > 1 else b""
    if not csv.strip():
        return 0, ParsedPage(KLINES_SCHEMA.empty_table(), parse_s=time.perf_counter() - started)
    table = _read_kline_csv(csv)
    if table is not None:
        table = _in_milliseconds(table)
        page = _csv_page(table, symbol, interval, server_time_ms, load_id)
        if page is not None:
            page.parse_s = time.perf_counter() - started
            return table.num_rows, page
    rows = [_csv_row(line) for line in csv.decode("utf-8", "replace").splitlines() if line.strip()]
    page = parse_klines(rows, symbol, interval, server_time_ms, load_id)
    page.parse_s = time.perf_counter() - started
    return len(rows), page


def _in_milliseconds(table: pa.Table) -> pa.Table:
    if table.num_rows == 0 or pc.max(table["open_time"]).as_py() < MICROSECOND_TIMES:
        return table
    for name in ("open_time", "close_time"):
        table = table.set_column(
            table.schema.get_field_index(name), name, pc.divide(table[name], pa.scalar(1000, pa.int64()))
        )
    return table


def _csv_row(line: str) -> list[Any]:
    """One CSV line as the API's JSON row would carry it (integers for times and trades, strings for the
    decimals), so the row-by-row path validates and quotes it like an API row."""
    fields: list[Any] = line.split(",")
    for i in (_FIELD_INDEX["open_time"], _FIELD_INDEX["close_time"], _FIELD_INDEX["trades"]):
        if i < len(fields) and re.fullmatch(r"-?\d{1,20}", fields[i]):
            fields[i] = int(fields[i])
    for i in (_FIELD_INDEX["open_time"], _FIELD_INDEX["close_time"]):
        if i < len(fields) and isinstance(fields[i], int) and fields[i] >= MICROSECOND_TIMES:
            fields[i] //= 1000
    return fields


def _key(symbol: str, row: Any) -> str:
    open_time = row[0] if isinstance(row, list) and row else "?"
    return f"{symbol}@{open_time}"


def parse_klines(
    rows: list[Any], symbol: str, interval: str, server_time_ms: int, load_id: str
) -> ParsedPage:
    """Validate a page of raw kline rows and return the closed, valid candles as an Arrow table."""
    if rows and all(type(r) is list and len(r) == 12 for r in rows):
        try:
            return _parse_fast(rows, symbol, interval, server_time_ms, load_id)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            pass  # some value is not what the API promises: sort rows out one by one
    return _parse_slow(rows, symbol, interval, server_time_ms, load_id)


def _parse_fast(rows: list[Any], symbol: str, interval: str, server_time_ms: int, load_id: str) -> ParsedPage:
    cols = list(zip(*rows, strict=True))
    open_ms = pa.array(cols[0], pa.int64())
    close_ms = pa.array(cols[6], pa.int64())
    trades = pa.array(cols[8], pa.int64())
    decimals = {
        name: pc.cast(pa.array(cols[_FIELD_INDEX[name]], pa.string()), DECIMAL_TYPE)
        for name in DECIMAL_FIELDS
    }
    return _rows_page(
        _finish(rows, symbol, interval, server_time_ms, load_id, open_ms, close_ms, trades, decimals, [])
    )


def _parse_slow(rows: Any, symbol: str, interval: str, server_time_ms: int, load_id: str) -> ParsedPage:
    good: list[list[Any]] = []
    rejected: list[Rejected] = []
    for row in rows if isinstance(rows, list) else []:
        reason = _row_shape_problem(row)
        if reason:
            rejected.append(Rejected(_key(symbol, row), row, reason))
        else:
            good.append(row)
    if not good:
        return ParsedPage(KLINES_SCHEMA.empty_table(), rejected)
    cols = list(zip(*good, strict=True))
    decimals = {
        name: pc.cast(pa.array(cols[_FIELD_INDEX[name]], pa.string()), DECIMAL_TYPE)
        for name in DECIMAL_FIELDS
    }
    return _rows_page(
        _finish(
            good,
            symbol,
            interval,
            server_time_ms,
            load_id,
            pa.array(cols[0], pa.int64()),
            pa.array(cols[6], pa.int64()),
            pa.array(cols[8], pa.int64()),
            decimals,
            rejected,
        )
    )


def _row_shape_problem(row: Any) -> str | None:
    if not isinstance(row, list) or len(row) != 12:
        return f"malformed row: expected a list of 12 fields, got {type(row).__name__} of {len(row) if isinstance(row, list) else '?'}"
    for name in ("open_time", "close_time", "trades"):
        value = row[_FIELD_INDEX[name]]
        if type(value) is not int:
            return f"non-integer {name}: {value!r}"
    for name in DECIMAL_FIELDS:
        value = row[_FIELD_INDEX[name]]
        if not isinstance(value, str) or not _NUMERIC.match(value):
            return f"non-numeric {name}: {value!r}"
    return None


def _rows_page(page: ParsedPage | None) -> ParsedPage:
    """_finish's page of parsed rows: those sort a bad row out one by one, so there is always a page."""
    assert page is not None
    return page


def _finish(
    rows: list[Any] | None,
    symbol: str,
    interval: str,
    server_time_ms: int,
    load_id: str,
    open_ms: pa.Array,
    close_ms: pa.Array,
    trades: pa.Array,
    dec: dict[str, pa.Array],
    rejected: list[Rejected],
) -> ParsedPage | None:
    """Validate typed columns; keep closed, valid candles. With rows=None (the CSV path) a page that has
    any invalid row returns None so the JSON path can quote the offending rows exactly."""
    step = INTERVAL_MS[interval]
    zero = pa.scalar(0, DECIMAL_TYPE)
    # Rules in order of precedence: the first that fails names the reason.
    open_np = open_ms.to_numpy()
    close_np = close_ms.to_numpy()
    rules = [
        ("open_time off the interval grid", pa.array(open_np % step != 0)),
        ("close_time does not match open_time + interval", pa.array(close_np != open_np + step - 1)),
        *((f"non-positive {name}", pc.less_equal(dec[name], zero)) for name in PRICE_FIELDS),
        *(
            (f"negative {name}", pc.less(dec[name], zero))
            for name in ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")
        ),
        ("negative trades", pc.less(trades, 0)),
        ("high < low", pc.less(dec["high"], dec["low"])),
        (
            "open outside [low, high]",
            pc.or_(pc.less(dec["open"], dec["low"]), pc.greater(dec["open"], dec["high"])),
        ),
        (
            "close outside [low, high]",
            pc.or_(pc.less(dec["close"], dec["low"]), pc.greater(dec["close"], dec["high"])),
        ),
    ]
    bad = np.zeros(len(open_np), dtype=bool)
    for reason, mask in rules:
        hits = mask.to_numpy(zero_copy_only=False) & ~bad
        if rows is None:
            if hits.any():
                return None
            continue
        for i in np.flatnonzero(hits):
            rejected.append(Rejected(_key(symbol, rows[i]), rows[i], reason))
        bad |= hits
    is_open = close_np >= server_time_ms
    keep = ~bad & ~is_open
    open_skipped = int((~bad & is_open).sum())
    n = int(keep.sum())
    mask = pa.array(keep)
    table = pa.Table.from_arrays(
        [
            pa.array(np.full(n, symbol, dtype=object), pa.string()),
            pa.array(np.full(n, interval, dtype=object), pa.string()),
            pc.filter(open_ms, mask).cast(pa.timestamp("ms")).cast(KLINES_SCHEMA.field("open_time").type),
            pc.filter(close_ms, mask).cast(pa.timestamp("ms")).cast(KLINES_SCHEMA.field("close_time").type),
            *(pc.filter(dec[name], mask) for name in DECIMAL_FIELDS[:6]),
            pc.filter(trades, mask),
            *(pc.filter(dec[name], mask) for name in DECIMAL_FIELDS[6:]),
            pa.array(np.full(n, load_id, dtype=object), pa.string()),
        ],
        schema=KLINES_SCHEMA,
    )
    return ParsedPage(table, rejected, open_skipped)


def dedupe_candles(table: pa.Table) -> tuple[pa.Table, int]:
    """For one symbol's candles, keep one row per open_time - the last received - sorted by open_time."""
    if table.num_rows == 0:
        return table, 0
    open_ms = pc.cast(table["open_time"], pa.int64()).to_numpy()
    reversed_ms = open_ms[::-1]
    _, first_from_end = np.unique(reversed_ms, return_index=True)  # sorted by open_time
    keep = len(open_ms) - 1 - first_from_end
    dropped = table.num_rows - len(keep)
    if not dropped and np.all(keep[1:] > keep[:-1]):
        return table, 0
    return table.take(pa.array(keep)), dropped
