"""Offline, deterministic imitation of the Binance, CoinGecko and alternative.me APIs - SYNTHETIC data.

    with SandboxServer(seed=42, now_ms=None, weight_limit=6000) as srv:   # port=0: a free port
        srv.binance_url      # {url}/binance     -> GET /api/v3/klines, /api/v3/exchangeInfo, /api/v3/ping
        srv.coingecko_url    # {url}/coingecko   -> GET /api/v3/coins/markets
        srv.fear_greed_url   # {url}/alternative -> GET /fng/
        srv.set_now(ms)      # freeze the clock (None = real clock); the bar containing now is open
        srv.set_fault("klines", "429", times=2, symbol="ETHUSDT", retry_after=1)

Faults (route: klines, exchangeInfo, ping, time, markets, fng; times=None lasts until cleared, N = the next
N matching requests; symbol= only on klines):
    "429" / "418" (retry_after)   status + Retry-After + the API's error body (Binance -1003 messages)
    "451", "500", "502", "503"    that status with the API's short body (502: an nginx HTML page)
    "slow" (delay=2.0)            the normal answer after a delay
    "drip" (every_s=0.5, chunk=64)  the normal answer, `chunk` bytes every `every_s` s (a slow-drip server)
    "oversized" (bytes=100000000) the normal answer padded with whitespace to `bytes` bytes (still valid JSON)
    "timeout" (delay=30.0)        wait, then close the connection without any response
    "truncated" (content_length="full"|"truncated")  200, half the body; "full" declares the whole length
                                  and closes (IncompleteRead), "truncated" declares the half (bad JSON)
    "malformed"                   200 with an HTML page instead of JSON
    "invalid_rows" (every=97, rows=None)  klines: bar n = open_time // interval_ms is hit when n % every == 0
                                  (or its open_time is in rows); n % 3 == 0 -> open negated, 1 -> high and
                                  low swapped, 2 -> close "abc" (binance_api.invalid_row_kind says which)
    "early_bar"                   klines: the answer starts one bar before startTime (the start rounded down)
    "duplicate_rows" (every=1)    klines: bars with n % every == 0 appear twice in a row
    "missing_hours" (start_ms, end_ms)  klines: an outage - hours with open time in [start_ms, end_ms] do not
                                  exist (1h rows absent, longer bars aggregate the remaining hours)
    "schema_drift" (add_field, drop_field, string_numbers, float_ints)  markets: a field added (a number per
                                  coin), one dropped, numbers as numeric strings, integers as floats
    "replay" (body)               markets, fng: answer 200 with exactly this body (a saved real response)

Besides faults, the market itself is unkind by default (sandbox/events.py): pairs list inside the horizon,
MATICUSDT and FTMUSDT go BREAK and are removed (-1121) as their successors start, exchange-wide outage
hours, one pair's halt, and closed candles revised a day after their close. SandboxServer(calm=True) (or
`cryptoflow sandbox --calm`) serves every pair trading forever with nothing revised.
The same controls over HTTP: POST/DELETE /__sandbox/faults, POST /__sandbox/clock, GET /__sandbox/state.

Where things live: server.py (HTTP, routing, weights, control routes), binance_api.py, coingecko_api.py and
fear_greed_api.py (each API's answers), faults.py (the fault catalogue above), markets.py (the data as
served; built from coins.py + coins.json, bars.py, series.py, events.py, kline_wire.py) and feeds.py
(CoinGecko and Fear & Greed data).
"""

from .server import SandboxServer, serve

__all__ = ["SandboxServer", "serve"]
