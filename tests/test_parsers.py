"""Parsers against every real API response in tests/fixtures/real: exact values and the real quirks."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa
import pytest

from pipelines.sources.binance.helpers import dedupe_candles, fetch_exchange_info, parse_klines
from pipelines.sources.coingecko.helpers import markets_to_arrow
from pipelines.sources.fear_greed.helpers import fng_to_arrow

SNAPSHOT = dt.datetime(2026, 4, 30, 2, tzinfo=dt.UTC)


def load(fixtures_dir, name):
    return json.loads((fixtures_dir / name).read_text())


def test_hourly_klines_exact_values(fixtures_dir):
    rows = load(fixtures_dir, "binance/klines_1h_BTCUSDT_24rows_pretty.json")
    page = parse_klines(rows, "BTCUSDT", "1h", server_time_ms=rows[-1][6] + 1, load_id="L")
    assert page.table.num_rows == 24 and not page.rejected and page.open_skipped == 0
    first = page.table.slice(0, 1).to_pylist()[0]
    assert first["open_time"] == dt.datetime(2026, 2, 11, 6, tzinfo=dt.UTC)  # 1770789600000 ms
    assert first["close_time"] == dt.datetime.fromtimestamp(1770793199.999, dt.UTC)
    assert first["open"] == Decimal("67404.28000000")
    assert first["high"] == Decimal("67491.84000000")
    assert first["quote_volume"] == Decimal("123318157.96347030")  # all 8 decimals kept
    assert first["trades"] == 347146
    assert first["taker_buy_quote_volume"] == Decimal("52509010.05302970")
    assert first["load_id"] == "L"


def test_daily_klines_last_bar_open_is_not_stored(fixtures_dir):
    rows = load(fixtures_dir, "binance/klines_1d_BTCUSDT_2019-09-01_2026-06-06.json")
    saved_at = rows[-1][0] + 3_600_000  # the fixture was saved while its last bar was open
    page = parse_klines(rows, "BTCUSDT", "1d", server_time_ms=saved_at, load_id="L")
    assert page.open_skipped == 1
    assert page.table.num_rows == len(rows) - 1 == 2470
    assert not page.rejected
    last = page.table.slice(page.table.num_rows - 1).to_pylist()[0]
    assert int(last["open_time"].timestamp() * 1000) == rows[-2][0]
    assert last["close"] == Decimal(rows[-2][4])


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        (2, "abc", "non-numeric high: 'abc'"),
        (1, "-5.00000000", "non-positive open"),
        (3, "99999999.00000000", "high < low"),
        (5, "-1.0", "negative volume"),
        (0, 1770789600001, "open_time off the interval grid"),
        (6, 1770793199998, "close_time does not match open_time + interval"),
        (4, "1.00000000", "close outside [low, high]"),
        (8, "12", "non-integer trades: '12'"),
    ],
)
def test_invalid_kline_rows_are_rejected_with_reason(fixtures_dir, field, value, reason):
    rows = load(fixtures_dir, "binance/klines_1h_BTCUSDT_24rows_pretty.json")
    rows[0][field] = value
    page = parse_klines(rows, "BTCUSDT", "1h", server_time_ms=rows[-1][6] + 1, load_id="L")
    assert [r.reason for r in page.rejected] == [reason]
    assert page.rejected[0].payload == rows[0]
    assert page.table.num_rows == 23  # the others still load


def test_malformed_rows_do_not_lose_the_page(fixtures_dir):
    rows = load(fixtures_dir, "binance/klines_1h_BTCUSDT_24rows_pretty.json")
    rows[3] = rows[3][:7]
    rows[4] = {"not": "a list"}
    page = parse_klines(rows, "BTCUSDT", "1h", server_time_ms=rows[-1][6] + 1, load_id="L")
    assert page.table.num_rows == 22
    assert [r.reason.split(":")[0] for r in page.rejected] == ["malformed row", "malformed row"]


def test_duplicates_keep_one_sorted(fixtures_dir):
    rows = load(fixtures_dir, "binance/klines_1h_BTCUSDT_24rows_pretty.json")
    page = parse_klines(rows[10:] + rows + rows[:5], "BTCUSDT", "1h", rows[-1][6] + 1, "L")
    table, dropped = dedupe_candles(page.table)
    assert dropped == 19 and table.num_rows == 24
    opens = [r[0] for r in rows]
    assert [int(t.timestamp() * 1000) for t in table["open_time"].to_pylist()] == opens


def test_exchange_info_real(fixtures_dir, tmp_path):
    body = load(fixtures_dir, "binance/exchangeInfo_2021-03-24_resaved.json")

    class Fixed:  # the parser only needs get_json
        def get_json(self, path, params=None):
            return body

    info = fetch_exchange_info(Fixed())
    assert len(info.trading) == 1000
    assert "BTCUSDT" in info.trading
    assert info.weight_limit == 1200  # the 2021 limit, read from rateLimits
    assert info.server_time_ms == body["serverTime"]


@pytest.mark.parametrize(
    "name",
    ["markets_top100_2023-03-20.json", "markets_top100_2024-06-01.json", "markets_top100_2026-04-30.json"],
)
def test_coingecko_markets_real(fixtures_dir, name):
    coins = load(fixtures_dir, f"coingecko/{name}")
    table, rejected = markets_to_arrow(coins, SNAPSHOT, "L")
    assert table.num_rows == 100 and rejected == []
    rows = table.to_pylist()
    for coin, row in zip(coins, rows, strict=True):
        assert row["id"] == coin["id"]
        assert row["current_price"] == coin["current_price"]
        assert row["max_supply"] == coin["max_supply"]  # nulls stay null
        assert row["market_cap_rank"] == coin["market_cap_rank"]
    assert any(r["max_supply"] is None for r in rows)
    assert any(r["roi"] is not None for r in rows) or name.endswith("2026-04-30.json")


def test_coingecko_exact_bitcoin_2026(fixtures_dir):
    coins = load(fixtures_dir, "coingecko/markets_top100_2026-04-30.json")
    btc = markets_to_arrow(coins, SNAPSHOT, "L")[0].to_pylist()[0]
    assert btc["market_cap"] == 1525711563723.0
    assert btc["ath_date"] == dt.datetime(2025, 10, 6, 18, 57, 42, 558000, tzinfo=dt.UTC)
    assert btc["roi"] is None and btc["snapshot_ts"] == SNAPSHOT


def test_coingecko_extra_fields_are_kept(fixtures_dir):
    coins = load(fixtures_dir, "coingecko/markets_3coins_extra_fields_2026-06-08_pretty.json")
    table, rejected = markets_to_arrow(coins, SNAPSHOT, "L")
    assert table.num_rows == 3 and not rejected
    added = "price_change_percentage_7d_in_currency"
    assert table.schema.field(added).type == pa.float64()
    assert table[added].to_pylist() == [c[added] for c in coins]


def test_coingecko_error_body_is_an_object(fixtures_dir):
    from pipelines.http import ApiError
    from pipelines.sources.coingecko.helpers import fetch_markets

    body = load(fixtures_dir, "coingecko/error_403_2023-03-30.json")

    class Fixed:
        def get_json(self, path, params=None):
            return body

    with pytest.raises(ApiError, match="temporarily unavailable") as info:
        fetch_markets(Fixed(), 100)
    assert info.value.status == 403


def test_coingecko_bad_records_rejected(fixtures_dir):
    coins = load(fixtures_dir, "coingecko/markets_top100_2024-06-01.json")[:3]
    coins[1] = {**coins[1], "current_price": "n/a"}
    coins[2] = {**coins[2], "market_cap": -1}
    table, rejected = markets_to_arrow(coins, SNAPSHOT, "L")
    assert table.num_rows == 1
    assert [r.reason for r in rejected] == ["non-numeric current_price: 'n/a'", "negative market_cap: -1"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fng_limit2_2026-07-10.json", [(1783641600, 23, "Extreme Fear"), (1783728000, 26, "Fear")]),
        ("fng_limit2_2026-07-08.json", None),
        ("fng_limit1_2025-04-23_oneline.json", [(1745366400, 72, "Greed")]),
    ],
)
def test_fear_greed_real(fixtures_dir, name, expected):
    body = load(fixtures_dir, f"feargreed/{name}")
    table, rejected = fng_to_arrow(body["data"], "L")
    assert not rejected and table.num_rows == len(body["data"])
    got = [(int(r["ts"].timestamp()), r["value"], r["value_classification"]) for r in table.to_pylist()]
    assert got == sorted(got)  # stored oldest first, the API sends newest first
    if expected:
        assert got == expected


def test_fear_greed_bad_items(fixtures_dir):
    body = load(fixtures_dir, "feargreed/fng_limit2_2026-07-10.json")
    items = body["data"] + [
        {"value": "abc", "value_classification": "Fear", "timestamp": "1783555200"},
        {"value": "101", "value_classification": "Greed", "timestamp": "1783468800"},
        {"value": "50", "value_classification": "Neutral", "timestamp": "1783468801"},
    ]
    table, rejected = fng_to_arrow(items, "L")
    assert table.num_rows == 2
    assert [r.reason for r in rejected] == [
        "non-numeric value: 'abc'",
        "value out of [0, 100]: '101'",
        "timestamp not at 00:00 UTC: '1783468801'",
    ]


def test_body_fast_path_equals_row_path(fixtures_dir):
    from pipelines.sources.binance.helpers import parse_klines_body

    raw = (fixtures_dir / "binance/klines_1d_BTCUSDT_2019-09-01_2026-06-06.json").read_bytes()
    rows = json.loads(raw)
    compact = json.dumps(rows, separators=(",", ":")).encode()
    now = rows[-1][0] + 3_600_000
    by_rows = parse_klines(rows, "BTCUSDT", "1d", now, "L")
    for body in (compact, raw):  # the compact wire form takes the CSV path, the pretty one the JSON path
        count, page = parse_klines_body(body, "BTCUSDT", "1d", now, "L")
        assert count == 2471 and page.open_skipped == 1
        assert page.table.equals(by_rows.table)


def test_body_with_a_bad_row_still_names_it(fixtures_dir):
    from pipelines.sources.binance.helpers import parse_klines_body

    rows = load(fixtures_dir, "binance/klines_1h_BTCUSDT_24rows_pretty.json")
    rows[5][4] = "-1.00000000"
    body = json.dumps(rows, separators=(",", ":")).encode()
    count, page = parse_klines_body(body, "BTCUSDT", "1h", rows[-1][6] + 1, "L")
    assert count == 24 and page.table.num_rows == 23
    assert [(r.natural_key, r.reason) for r in page.rejected] == [
        (f"BTCUSDT@{rows[5][0]}", "non-positive close")
    ]


@pytest.mark.parametrize("body", [b'[[1,"2"', b"<html>502</html>", b'{"code": -1121}'])
def test_body_that_is_not_a_kline_list_is_malformed(body):
    from pipelines.http import MalformedResponse
    from pipelines.sources.binance.helpers import parse_klines_body

    with pytest.raises((ValueError, MalformedResponse)):
        parse_klines_body(body, "BTCUSDT", "1h", 0, "L")


def test_coingecko_mistyped_text_fields_go_to_dead_letters_and_the_rest_loads(fixtures_dir):
    """A coin whose symbol, name or image is not text is rejected with its reason; the page still loads."""
    coins = load(fixtures_dir, "coingecko/markets_top100_2024-06-01.json")[:5]
    coins[1] = {**coins[1], "symbol": 123}
    coins[2] = {**coins[2], "name": ["Ether"]}
    coins[3] = {**coins[3], "image": {"large": "https://x/y.png"}}
    table, rejected = markets_to_arrow(coins, SNAPSHOT, "L")
    assert table.column("id").to_pylist() == [coins[0]["id"], coins[4]["id"]]
    assert [r.reason for r in rejected] == [
        "non-text symbol: 123",
        "non-text name: ['Ether']",
        "non-text image: {'large': 'https://x/y.png'}",
    ]


def test_fear_greed_unicode_digits_and_absurd_timestamps_are_rejected(fixtures_dir):
    """ "²" passes str.isdigit() but not int(); a timestamp in the year 33658 would overflow a datetime."""
    body = load(fixtures_dir, "feargreed/fng_limit2_2026-07-10.json")
    items = body["data"] + [
        {"value": "²", "value_classification": "Fear", "timestamp": "1783555200"},
        {"value": "40", "value_classification": "Fear", "timestamp": "999999999999"},
        {"value": "40", "value_classification": "Fear", "timestamp": "1400000000"},
    ]
    table, rejected = fng_to_arrow(items, "L")
    assert table.num_rows == 2
    assert [r.reason for r in rejected] == [
        "non-numeric value: '²'",
        "timestamp outside 2018-02-01 .. now: '999999999999'",
        "timestamp outside 2018-02-01 .. now: '1400000000'",
    ]
