"""The offline API sandbox: real HTTP on 127.0.0.1 (urllib, no mocks) against the real wire formats."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.sandbox import SandboxServer, kline_wire
from pipelines.sandbox import markets as mk
from pipelines.sandbox.binance_api import invalid_row_kind

HOUR = 3_600_000
DAY = 86_400_000
NOW = 1_780_001_234_567  # 2026-05-28T20:47:14.567Z: mid-hour, so the newest bar is open
NOW_HOUR = NOW // HOUR * HOUR
DEC8 = re.compile(r"^\d+\.\d{8}$")


def call(url: str, method: str = "GET", body: Any = None, timeout: float = 10) -> tuple[int, Any, bytes]:
    """(status, headers, body) of one request; HTTP errors are answers too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def get_json(url: str) -> tuple[int, Any, Any]:
    status, headers, body = call(url)
    return status, headers, json.loads(body)


def klines_url(srv: SandboxServer, symbol: str = "BTCUSDT", interval: str = "1h", **params: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"symbol": symbol, "interval": interval, **params}.items())
    return f"{srv.binance_url}/api/v3/klines?{query}"


def all_hourly(srv: SandboxServer, symbol: str, start: int, end: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    while True:
        _, _, page = get_json(klines_url(srv, symbol, startTime=start, endTime=end, limit=1000))
        rows += page
        if len(page) < 1000:
            return rows
        start = page[-1][0] + 1


@pytest.fixture(scope="module")
def srv():
    with SandboxServer(seed=42, now_ms=NOW) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest):
    yield
    if "srv" in request.fixturenames:
        server = request.getfixturevalue("srv")
        server.clear_faults()
        server.set_now(NOW)


def test_serve_prints_a_synthetic_banner_and_serves() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = f"from pipelines.sandbox import serve; serve(port={port}, seed=3)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        banner = [proc.stdout.readline() for _ in range(6)]
        text = "".join(banner)
        assert "SYNTHETIC" in text and "Ctrl-C" in banner[-1]
        for base in ("binance", "coingecko", "alternative"):
            assert f"http://127.0.0.1:{port}/{base}" in text
        status, headers, body = call(f"http://127.0.0.1:{port}/binance/api/v3/ping")
        assert (status, body, headers["X-Sandbox"]) == (200, b"{}", "synthetic")
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


# ---- catalogue and series -------------------------------------------------------------------------


def test_catalogue_has_realistic_universe() -> None:
    catalogue = json.loads((Path(mk.__file__).parent / "coins.json").read_text())
    # every coin of the catalogue but the 3 stablecoins has its USDT pair, in the catalogue's order
    pairs = [f"{c['base']}USDT" for c in catalogue if c["cg_id"] not in {"tether", "usd-coin", "dai"}]
    assert pairs == mk.SYMBOLS
    assert len(mk.SYMBOLS) == len(set(mk.SYMBOLS)) == len(catalogue) - 3 == 68
    assert all(s.endswith("USDT") for s in mk.SYMBOLS)
    stables = [c for c in mk.COINS if c.stable]
    assert {c.cg_id for c in stables} == {"tether", "usd-coin", "dai"}
    assert not {c.symbol for c in stables} & set(mk.SYMBOLS)
    levels = {
        "BTCUSDT": (5_000, 300_000),
        "ETHUSDT": (300, 15_000),
        "BNBUSDT": (30, 2_000),
        "SOLUSDT": (15, 800),
    }
    for symbol, (low, high) in levels.items():
        closes = mk.klines(symbol, "1d", now_ms=NOW)["close"]
        assert closes.min() > low and closes.max() < high, symbol
    assert mk.klines("SHIBUSDT", "1d", now_ms=NOW)["close"].max() < 1e-3


def test_ohlc_invariants_every_symbol_every_hour() -> None:
    market = mk.market(42)
    for symbol in mk.SYMBOLS:
        bars = market.bars(symbol, "1h", None, None, NOW)
        o, h, lo, c, v, q, n, tb, tq = bars.data
        lot = 10**bars.lot_decimals
        assert len(bars.open_time) == (NOW - mk.T0_MS) // HOUR + 1  # every hour from 2019-01-01 to now
        assert (np.diff(bars.open_time) == HOUR).all() and bars.open_time[0] == mk.T0_MS
        assert (o[1:] == c[:-1]).all(), symbol  # open = previous close
        assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (lo > 0).all(), symbol
        assert (v > 0).all() and (q > 0).all() and (n > 0).all(), symbol
        vwap = q / (v / lot)  # both in 1e-8 units
        assert ((vwap >= lo) & (vwap <= h)).all(), symbol
        assert (tb <= v).all() and (tq <= q).all() and (tb >= 0).all(), symbol
        r = np.diff(np.log(c.astype(float)))
        assert 0.004 < r.std() < 0.02, symbol


def test_python_helpers_match_the_wire(srv: SandboxServer) -> None:
    start = mk.T0_MS + 20_000 * HOUR + 123
    _, _, body = call(klines_url(srv, "ETHUSDT", startTime=start, limit=1000))
    rows = json.loads(body)
    assert rows == mk.klines_rows("ETHUSDT", "1h", start, None, NOW, 42, 1000)
    arr = mk.klines("ETHUSDT", "1h", start, None, NOW, 42, 1000)
    for i, name in enumerate(mk.KLINE_DTYPE.names):
        col = [r[i] for r in rows]
        assert arr[name].tolist() == ([float(x) for x in col] if isinstance(col[0], str) else col)
    # The numpy formatter and the per-row reference formatter produce the same bytes.
    bars = mk.market(42).bars("SHIBUSDT", "1d", None, None, NOW, 1000)
    assert mk.klines_json(bars) == json.dumps(mk.rows_from_bars(bars), separators=(",", ":")).encode()


def test_page_formatting_never_goes_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full page is formatted by the numpy path, never row by row: the per-row reference formatter (the
    fallback for negative values only) is not called. No timing here: speed is for `cryptoflow bench`."""
    bars = mk.market(42).bars("BTCUSDT", "1h", mk.T0_MS, None, NOW, 1000)
    expected = json.dumps(mk.rows_from_bars(bars), separators=(",", ":")).encode()

    def per_row(*args: Any) -> None:
        raise AssertionError("klines_json formatted the page row by row")

    monkeypatch.setattr(kline_wire, "rows_from_bars", per_row)
    assert len(bars.open_time) == 1000
    assert mk.klines_json(bars) == expected


# ---- Binance klines ---------------------------------------------------------------------------------


def test_klines_shape_matches_real_rows(srv: SandboxServer, fixtures_dir: Path) -> None:
    real = json.loads((fixtures_dir / "binance" / "klines_1h_BTCUSDT_24rows_pretty.json").read_text())
    status, headers, body = call(klines_url(srv, limit=24))
    assert status == 200 and headers["X-Sandbox"] == "synthetic"
    assert headers["Content-Type"].startswith("application/json")
    ours = json.loads(body)
    assert b" " not in body and len(ours) == 24
    for mine, theirs in zip(ours, real, strict=True):
        assert len(mine) == len(theirs) == 12
        assert [type(x) for x in mine] == [type(x) for x in theirs]
        assert all(DEC8.match(mine[i]) for i in (1, 2, 3, 4, 5, 7, 9, 10))
        assert mine[6] - mine[0] == theirs[6] - theirs[0] == HOUR - 1 and mine[11] == "0"


def test_klines_paging_rules(srv: SandboxServer) -> None:
    _, _, latest = get_json(klines_url(srv))  # no startTime: the most recent 500 bars
    assert len(latest) == 500 and latest[-1][0] == NOW_HOUR
    assert latest[-1][6] > NOW >= latest[-1][0]  # the newest bar is still open
    assert [r[0] for r in latest] == list(range(NOW_HOUR - 499 * HOUR, NOW_HOUR + 1, HOUR))

    off_grid = mk.T0_MS + 1000 * HOUR + 1
    _, _, page = get_json(klines_url(srv, startTime=off_grid, endTime=off_grid + 10 * HOUR, limit=1000))
    assert [r[0] for r in page] == [mk.T0_MS + (1001 + i) * HOUR for i in range(10)]  # endTime inclusive

    _, _, early = get_json(klines_url(srv, startTime=0, limit=3))
    assert [r[0] for r in early] == [mk.T0_MS, mk.T0_MS + HOUR, mk.T0_MS + 2 * HOUR]
    _, _, future = get_json(klines_url(srv, startTime=NOW + DAY))
    assert future == []
    _, _, end_only = get_json(klines_url(srv, endTime=mk.T0_MS + 99 * HOUR, limit=10))
    assert [r[0] for r in end_only] == [mk.T0_MS + h * HOUR for h in range(90, 100)]


def test_klines_are_deterministic_across_windows_servers_and_clocks(srv: SandboxServer) -> None:
    start = mk.T0_MS + 30_000 * HOUR
    _, _, a = get_json(klines_url(srv, "SOLUSDT", startTime=start, limit=1000))
    _, _, b = get_json(klines_url(srv, "SOLUSDT", startTime=start + 400 * HOUR + 5, limit=1000))
    _, _, c = get_json(klines_url(srv, "SOLUSDT", endTime=start + 999 * HOUR, limit=7))
    assert a[401:] == b[:599] and a[-7:] == c  # off-grid startTime: the first bar at or after it
    with SandboxServer(seed=42, now_ms=NOW) as twin, SandboxServer(seed=7, now_ms=NOW) as other:
        for path in (
            "/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1000",
            "/binance/api/v3/klines?symbol=PEPEUSDT&interval=1d&startTime=0&limit=1000",
            "/binance/api/v3/exchangeInfo",
            "/coingecko/api/v3/coins/markets?vs_currency=usd",
            "/alternative/fng/?limit=0",
        ):
            assert call(srv.url + path)[2] == call(twin.url + path)[2], path
        other_rows = get_json(other.url + "/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=5")[2]
        assert (
            other_rows != get_json(srv.url + "/binance/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=5")[2]
        )
    # A later clock adds bars but never changes a closed one.
    srv.set_now(NOW + 30 * DAY)
    _, _, later = get_json(klines_url(srv, "SOLUSDT", startTime=start, limit=1000))
    assert later == a


def test_open_bar_is_partial_then_final(srv: SandboxServer) -> None:
    _, _, rows = get_json(klines_url(srv, "ETHUSDT", limit=3))
    partial = rows[-1]
    assert partial[0] == NOW_HOUR and partial[6] == NOW_HOUR + HOUR - 1 > NOW
    srv.set_now(NOW_HOUR + HOUR + 5_000)  # the hour has closed
    _, _, later = get_json(klines_url(srv, "ETHUSDT", limit=4))
    final = later[-2]
    assert later[:2] == rows[:2] and final[0] == partial[0] and final[6] < srv.now()
    assert final[1] == partial[1]  # same open
    assert Decimal(partial[5]) < Decimal(final[5]) and partial[8] < final[8]
    assert Decimal(partial[2]) <= Decimal(final[2]) and Decimal(partial[3]) >= Decimal(final[3])
    assert later[-1][0] == NOW_HOUR + HOUR and later[-1][6] > srv.now()  # a new open bar
    # The partial close lies between the open and the final close.
    lo, hi = sorted((Decimal(final[1]), Decimal(final[4])))
    assert lo <= Decimal(partial[4]) <= hi


def test_clock_control_over_http(srv: SandboxServer) -> None:
    target = mk.T0_MS + 1000 * HOUR + 1800_000
    assert call(srv.url + "/__sandbox/clock", "POST", {"now_ms": target})[0] == 200
    _, _, state = get_json(srv.url + "/__sandbox/state")
    assert state["now_ms"] == target and state["clock"] == "frozen" and state["data"] == "synthetic"
    _, _, rows = get_json(klines_url(srv, limit=1))
    assert rows[0][0] == mk.T0_MS + 1000 * HOUR
    call(srv.url + "/__sandbox/clock", "POST", {"now_ms": None})
    real_hour = int(time.time() * 1000) // HOUR * HOUR
    _, _, rows = get_json(klines_url(srv, limit=1))
    assert rows[0][0] in (real_hour, real_hour + HOUR)
    assert get_json(srv.url + "/__sandbox/state")[2]["clock"] == "real"


@pytest.mark.parametrize("interval,hours", [("1d", 24), ("4h", 4)])
def test_aggregated_intervals_equal_hourly_aggregation(interval: str, hours: int) -> None:
    with SandboxServer(seed=42, now_ms=NOW, calm=True) as srv:  # revisions touch hourly candles only
        _aggregation_matches(srv, interval, hours)


def _aggregation_matches(srv: SandboxServer, interval: str, hours: int) -> None:
    span = hours * HOUR
    start = (NOW - 40 * DAY) // span * span
    _, _, bars = get_json(klines_url(srv, "DOGEUSDT", interval, startTime=start, limit=1000))
    hourly = all_hourly(srv, "DOGEUSDT", start, NOW)
    assert bars[-1][0] <= NOW < bars[-1][6]  # the current period is open and includes the partial hour
    by_bar: dict[int, list[list[Any]]] = {}
    for row in hourly:
        by_bar.setdefault(row[0] // span * span, []).append(row)
    assert [b[0] for b in bars] == sorted(by_bar)
    for bar in bars:
        group = by_bar[bar[0]]
        assert bar[1] == group[0][1] and bar[4] == group[-1][4]
        assert Decimal(bar[2]) == max(Decimal(r[2]) for r in group)
        assert Decimal(bar[3]) == min(Decimal(r[3]) for r in group)
        for i in (5, 7, 9, 10):
            assert Decimal(bar[i]) == sum(Decimal(r[i]) for r in group)
        assert bar[8] == sum(r[8] for r in group) and bar[6] == bar[0] + span - 1


def test_klines_error_bodies(srv: SandboxServer) -> None:
    cases = {
        klines_url(srv, "NOPEUSDT"): {"code": -1121, "msg": "Invalid symbol."},
        klines_url(srv, interval="7m"): {"code": -1120, "msg": "Invalid interval."},
        f"{srv.binance_url}/api/v3/klines?interval=1h": {
            "code": -1102,
            "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        },
        klines_url(srv, limit=1001): {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."},
        klines_url(srv, startTime="abc"): {
            "code": -1100,
            "msg": "Illegal characters found in parameter 'startTime'; legal range is '^[0-9]{1,20}$'.",
        },
    }
    for url, expected in cases.items():
        status, headers, body = get_json(url)
        assert (status, body) == (400, expected), url
        assert headers["X-Sandbox"] == "synthetic" and "X-MBX-USED-WEIGHT-1M" in headers
    status, headers, _ = call(f"{srv.url}/binance/api/v3/nope")
    assert status == 404 and headers["X-Sandbox"] == "synthetic"


# ---- exchangeInfo, ping, weight ----------------------------------------------------------------------


def test_exchange_info_shape(srv: SandboxServer, fixtures_dir: Path) -> None:
    real = json.loads((fixtures_dir / "binance" / "exchangeInfo_2021-03-24_resaved.json").read_text())
    _, _, info = get_json(f"{srv.binance_url}/api/v3/exchangeInfo")
    assert set(info) == set(real) and info["serverTime"] == NOW
    assert {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000} in info[
        "rateLimits"
    ]
    real_keys = set(real["symbols"][0])
    assert all(set(s) == real_keys for s in info["symbols"])
    status = {s["symbol"]: s["status"] for s in info["symbols"]}
    # at NOW the migrated pairs are gone (-1121) and their successors trade (sandbox/events.py)
    assert {s for s in mk.SYMBOLS if s not in status} == {"MATICUSDT", "FTMUSDT"}
    assert all(status[s] == "TRADING" for s in mk.SYMBOLS if s not in {"MATICUSDT", "FTMUSDT"})
    assert sorted(s for s, st in status.items() if st == "BREAK") == ["BCCUSDT", "VENUSDT"]
    assert {s["symbol"] for s in info["symbols"] if s["quoteAsset"] != "USDT"} == {"ETHBTC", "BNBBTC"}
    assert not {"USDTUSDT", "USDCUSDT", "DAIUSDT"} & set(status)
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert (btc["baseAsset"], btc["quoteAsset"]) == ("BTC", "USDT")
    one = get_json(f"{srv.binance_url}/api/v3/exchangeInfo?symbol=ETHUSDT")[2]["symbols"]
    two = get_json(f'{srv.binance_url}/api/v3/exchangeInfo?symbols=["BTCUSDT","SOLUSDT"]')[2]["symbols"]
    assert [s["symbol"] for s in one] == ["ETHUSDT"] and [s["symbol"] for s in two] == ["BTCUSDT", "SOLUSDT"]
    assert get_json(f"{srv.binance_url}/api/v3/exchangeInfo?symbol=XYZ")[0:3:2] == (
        400,
        {"code": -1121, "msg": "Invalid symbol."},
    )
    assert call(f"{srv.binance_url}/api/v3/ping")[0::2] == (200, b"{}")


def _fresh_minute(margin: float = 6.0) -> None:
    """Weight windows are calendar minutes of the real clock: don't start a count just before one ends."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


def test_weight_headers_and_429_over_the_limit() -> None:
    with SandboxServer(now_ms=NOW, weight_limit=10) as small:
        _fresh_minute()
        used = [int(call(klines_url(small, limit=1))[1]["X-MBX-USED-WEIGHT-1M"]) for _ in range(5)]
        assert used == [2, 4, 6, 8, 10]
        status, headers, body = call(klines_url(small, limit=1))
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
        assert json.loads(body) == {
            "code": -1003,
            "msg": "Too much request weight used; current limit is 10 request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
        }
        assert call(f"{small.binance_url}/api/v3/ping")[0] == 429  # every weighted route is refused now
    with SandboxServer(now_ms=NOW) as other:
        _fresh_minute()
        steps = [
            int(call(f"{other.binance_url}/api/v3/{p}")[1]["X-MBX-USED-WEIGHT-1M"])
            for p in ("ping", "exchangeInfo")
        ]
        assert steps == [1, 21] and other.used_weight == 21
        assert (
            "X-MBX-USED-WEIGHT-1M"
            not in call(f"{other.coingecko_url}/api/v3/coins/markets?vs_currency=usd")[1]
        )


# ---- faults --------------------------------------------------------------------------------------


def test_fault_429_times_then_recovery_and_symbol_filter(srv: SandboxServer) -> None:
    srv.set_fault("klines", "429", times=2, symbol="ETHUSDT", retry_after=3)
    assert call(klines_url(srv, "BTCUSDT", limit=1))[0] == 200  # other symbols are untouched
    for _ in range(2):
        status, headers, body = call(klines_url(srv, "ETHUSDT", limit=1))
        assert status == 429 and headers["Retry-After"] == "3" and json.loads(body)["code"] == -1003
        assert "X-MBX-USED-WEIGHT-1M" in headers
    assert call(klines_url(srv, "ETHUSDT", limit=1))[0] == 200
    assert srv.faults == []


def test_fault_bans_and_server_errors(srv: SandboxServer) -> None:
    srv.set_fault("klines", "418", retry_after=600)
    status, headers, body = call(klines_url(srv))
    msg = json.loads(body)
    assert status == 418 and headers["Retry-After"] == "600" and msg["code"] == -1003
    until = int(re.search(r"IP banned until (\d+)\.", msg["msg"]).group(1))
    assert abs(until - (time.time() + 600) * 1000) < 5000
    srv.set_fault("ping", "451")
    status, _, body = call(f"{srv.binance_url}/api/v3/ping")
    assert status == 451 and "restricted location" in json.loads(body)["msg"]
    for kind in ("500", "502", "503"):
        srv.set_fault("exchangeInfo", kind, times=1)
        status, headers, body = call(f"{srv.binance_url}/api/v3/exchangeInfo")
        assert status == int(kind) and body and headers["X-Sandbox"] == "synthetic"
    assert call(f"{srv.binance_url}/api/v3/exchangeInfo")[0] == 200
    srv.set_fault("markets", "429", times=1)
    status, headers, body = call(f"{srv.coingecko_url}/api/v3/coins/markets?vs_currency=usd")
    assert status == 429 and json.loads(body)["status"]["error_code"] == 429 and "Retry-After" in headers
    srv.set_fault("fng", "503", times=1)
    assert call(f"{srv.fear_greed_url}/fng/")[0] == 503
    assert call(f"{srv.fear_greed_url}/fng/")[0] == 200


def _until_taken(server: SandboxServer) -> None:
    """Wait until the live faults are used up: the request they were set for is in the server's hands."""
    deadline = time.monotonic() + 10
    while server.faults:
        assert time.monotonic() < deadline, f"no request took the faults {server.faults}"
        time.sleep(0.01)


def test_fault_slow_and_timeout_do_not_block(srv: SandboxServer) -> None:
    normal = call(klines_url(srv, limit=5))[2]
    srv.set_fault("klines", "slow", times=2, delay=1.0)
    # the answer comes late: a client waiting less than the delay gives up, a patient one gets it unchanged
    with pytest.raises((TimeoutError, urllib.error.URLError), match="timed out"):
        call(klines_url(srv, limit=5), timeout=0.3)
    assert call(klines_url(srv, limit=5))[2] == normal
    assert srv.faults == []

    srv.set_fault("klines", "timeout", times=1, delay=2.0)
    outcome: dict[str, Any] = {}

    def hung() -> None:
        try:
            outcome["answer"] = call(klines_url(srv, limit=5))
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=hung)
    worker.start()
    _until_taken(srv)
    assert call(f"{srv.binance_url}/api/v3/ping")[0] == 200  # others are served meanwhile ...
    assert worker.is_alive()  # ... while the held request still waits
    worker.join(10)
    assert not worker.is_alive()
    # closed without any response: no status, no body (not a client-side timeout either)
    assert isinstance(outcome.get("error"), http.client.RemoteDisconnected), outcome


def test_timeout_fault_does_not_block_stop() -> None:
    """stop() wakes a handler holding a request (default delay 30 s): the client, which would wait 20 s,
    sees the connection closed at once, not its own timeout."""
    server = SandboxServer(now_ms=NOW).start()
    server.set_fault("ping", "timeout", times=1)  # default delay 30 s
    outcome: dict[str, Any] = {}

    def held() -> None:
        try:
            outcome["answer"] = call(f"{server.binance_url}/api/v3/ping", timeout=20)
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=held)
    worker.start()
    try:
        _until_taken(server)
    finally:
        server.stop()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), http.client.RemoteDisconnected), outcome


def test_fault_truncated_and_malformed(srv: SandboxServer) -> None:
    full = call(klines_url(srv, limit=50))[2]
    srv.set_fault("klines", "truncated", times=1)  # declares the full length, sends half, closes
    with pytest.raises(http.client.IncompleteRead):
        call(klines_url(srv, limit=50))
    srv.set_fault("klines", "truncated", times=1, content_length="truncated")
    status, _, body = call(klines_url(srv, limit=50))
    assert status == 200 and body == full[: len(full) // 2]
    with pytest.raises(ValueError):
        json.loads(body)
    srv.set_fault("markets", "malformed", times=1)
    status, headers, body = call(f"{srv.coingecko_url}/api/v3/coins/markets?vs_currency=usd")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        json.loads(body)


def test_fault_invalid_rows_are_predictable(srv: SandboxServer) -> None:
    start = mk.T0_MS + 10_000 * HOUR
    clean = get_json(klines_url(srv, startTime=start, limit=1000))[2]
    srv.set_fault("klines", "invalid_rows", symbol="BTCUSDT")
    dirty = get_json(klines_url(srv, startTime=start, limit=1000))[2]
    assert get_json(klines_url(srv, "ETHUSDT", limit=3))[2] == mk.klines_rows(
        "ETHUSDT", "1h", None, None, NOW, limit=3
    )
    kinds = []
    for good, bad in zip(clean, dirty, strict=True):
        kind = invalid_row_kind(good[0], HOUR)
        kinds.append(kind)
        expected = list(good)
        if kind == "negative_open":
            expected[1] = "-" + good[1]
            assert Decimal(bad[1]) < 0
        elif kind == "high_below_low":
            expected[2], expected[3] = good[3], good[2]
            assert Decimal(bad[2]) < Decimal(bad[3])
        elif kind == "non_numeric_close":
            expected[4] = "abc"
        assert bad == expected
        assert (kind is not None) == ((good[0] // HOUR) % 97 == 0)
    assert {"negative_open", "high_below_low", "non_numeric_close"} <= set(kinds)
    srv.set_fault("klines", "invalid_rows", rows=[start + 5 * HOUR])
    dirty = get_json(klines_url(srv, startTime=start, limit=10))[2]
    assert [i for i, (a, b) in enumerate(zip(clean, dirty, strict=False)) if a != b] == [5]


def test_fault_duplicate_rows(srv: SandboxServer) -> None:
    clean = get_json(klines_url(srv, "XRPUSDT", limit=100))[2]
    srv.set_fault("klines", "duplicate_rows", times=1)
    doubled = get_json(klines_url(srv, "XRPUSDT", limit=100))[2]
    assert doubled == [row for row in clean for _ in range(2)]
    assert get_json(klines_url(srv, "XRPUSDT", limit=100))[2] == clean


def test_fault_missing_hours_is_a_persistent_outage() -> None:
    with SandboxServer(seed=42, now_ms=NOW, calm=True) as srv:  # hourly vs daily sums: no revisions
        _missing_hours_persist(srv)


def _missing_hours_persist(srv: SandboxServer) -> None:
    day = (NOW - 10 * DAY) // DAY * DAY
    gap = (day + 5 * HOUR, day + 9 * HOUR)  # five hours without data
    clean_h = get_json(klines_url(srv, "ADAUSDT", startTime=day, limit=24))[2]
    clean_d = get_json(klines_url(srv, "ADAUSDT", "1d", startTime=day, limit=1))[2][0]
    srv.set_fault("klines", "missing_hours", start_ms=gap[0], end_ms=gap[1])
    for _ in range(2):
        hourly = get_json(klines_url(srv, "ADAUSDT", startTime=day, limit=24))[2]
        assert len(hourly) == 24  # the page still holds `limit` rows: it continues past the gap
        assert [r[0] for r in hourly] == [r[0] for r in clean_h if not gap[0] <= r[0] <= gap[1]] + [
            day + (24 + i) * HOUR for i in range(5)
        ]
    daily = get_json(klines_url(srv, "ADAUSDT", "1d", startTime=day, limit=1))[2][0]
    kept = [r for r in clean_h if not gap[0] <= r[0] <= gap[1]]
    assert Decimal(daily[5]) == sum(Decimal(r[5]) for r in kept) < Decimal(clean_d[5])
    assert daily[8] == sum(r[8] for r in kept)
    srv.set_fault("klines", "missing_hours", start_ms=day, end_ms=day + DAY - 1)
    assert get_json(klines_url(srv, "ADAUSDT", "1d", startTime=day, limit=1))[2][0][0] == day + DAY
    srv.clear_faults("klines")
    assert get_json(klines_url(srv, "ADAUSDT", startTime=day, limit=24))[2] == clean_h


def test_fault_revised_is_a_persistent_burst_of_republished_candles() -> None:
    with SandboxServer(seed=42, now_ms=NOW, calm=True) as srv:  # calm: nothing else is revised
        day = (NOW - 3 * DAY) // DAY * DAY
        clean = get_json(klines_url(srv, "ETHUSDT", startTime=day, limit=24))[2]
        srv.set_fault("klines", "revised", start_ms=day + 2 * HOUR, end_ms=day + 4 * HOUR, per_mille=10)
        for _ in range(2):  # it stays: a re-published candle does not change back
            revised = get_json(klines_url(srv, "ETHUSDT", startTime=day, limit=24))[2]
            changed = [b[0] for a, b in zip(clean, revised, strict=True) if a != b]
            assert changed == [day + 2 * HOUR, day + 3 * HOUR, day + 4 * HOUR]
            for a, b in zip(clean, revised, strict=True):
                assert b[1:5] == a[1:5]  # prices never change
                if b[0] in changed:
                    assert Decimal(b[5]) > Decimal(a[5]) and Decimal(b[7]) > Decimal(a[7])
        with pytest.raises(ValueError, match="revised needs int start_ms and end_ms"):
            srv.set_fault("klines", "revised", start_ms=day)


def test_set_lifecycle_delists_one_pair_on_the_servers_date() -> None:
    with SandboxServer(seed=42, now_ms=NOW, calm=True) as srv:
        halted, removed = NOW // HOUR * HOUR - 5 * HOUR, NOW // HOUR * HOUR + 5 * HOUR
        srv.set_lifecycle("SOLUSDT", halted_ms=halted, removed_ms=removed)
        bars = get_json(klines_url(srv, "SOLUSDT", startTime=halted - 3 * HOUR, limit=10))[2]
        assert [r[0] for r in bars] == [halted - 3 * HOUR, halted - 2 * HOUR, halted - HOUR]
        info = get_json(f"{srv.binance_url}/api/v3/exchangeInfo")[2]
        statuses = {s["symbol"]: s["status"] for s in info["symbols"]}
        assert statuses["SOLUSDT"] == "BREAK" and statuses["BTCUSDT"] == "TRADING"
        srv.set_now(removed)
        status, _, body = get_json(klines_url(srv, "SOLUSDT", startTime=halted - 3 * HOUR, limit=10))
        assert (status, body["code"]) == (400, -1121)
        info = get_json(f"{srv.binance_url}/api/v3/exchangeInfo")[2]
        assert "SOLUSDT" not in {s["symbol"] for s in info["symbols"]}


def test_fault_control_over_http_and_validation(srv: SandboxServer) -> None:
    status, _, body = call(
        srv.url + "/__sandbox/faults", "POST", {"route": "ping", "kind": "503", "times": 1}
    )
    assert status == 200 and json.loads(body)["faults"][0]["kind"] == "503"
    assert call(f"{srv.binance_url}/api/v3/ping")[0] == 503
    call(srv.url + "/__sandbox/faults", "POST", {"route": "ping", "kind": "500"})
    assert call(srv.url + "/__sandbox/faults?route=ping", "DELETE")[0] == 200
    assert call(f"{srv.binance_url}/api/v3/ping")[0] == 200
    assert call(srv.url + "/__sandbox/faults", "POST", {"route": "ping", "kind": "boom"})[0] == 400
    for bad in (
        {"route": "markets", "kind": "invalid_rows"},
        {"route": "nope", "kind": "500"},
        {"route": "ping", "kind": "500", "symbol": "BTCUSDT"},
        {"route": "klines", "kind": "missing_hours"},
        {"route": "klines", "kind": "500", "times": 0},
    ):
        with pytest.raises(ValueError):
            srv.set_fault(**bad)


# ---- CoinGecko ----------------------------------------------------------------------------------


def test_coingecko_markets_shape_values_and_paging(srv: SandboxServer, fixtures_dir: Path) -> None:
    real = [
        item
        for name in ("2023-03-20", "2024-06-01", "2026-04-30")
        for item in json.loads((fixtures_dir / "coingecko" / f"markets_top100_{name}.json").read_text())
    ]
    url = f"{srv.coingecko_url}/api/v3/coins/markets?vs_currency=usd&order=market_cap_desc"
    status, headers, items = get_json(url + "&per_page=250")
    assert status == 200 and headers["X-Sandbox"] == "synthetic"
    assert len(items) == len(mk.COINS)
    allowed = {key: {_kind(r[key]) for r in real} for key in real[0]}
    for item in items:
        assert list(item) == list(real[0])  # same fields, same order
        for key, value in item.items():
            assert _kind(value) in allowed[key], (key, value)  # incl. null only where the real feed has nulls
    caps = [i["market_cap"] for i in items]
    assert caps == sorted(caps, reverse=True)
    assert sorted(i["market_cap_rank"] for i in items) == list(range(1, len(items) + 1))
    by_id = {i["id"]: i for i in items}
    assert {"tether", "usd-coin", "dai"} <= set(by_id) and by_id["tether"]["market_cap_rank"] <= 6
    btc = by_id["bitcoin"]
    close = mk.klines("BTCUSDT", "1h", None, None, NOW, 42, 1)["close"][0]
    coin = mk.COIN_BY_ID["bitcoin"]
    assert btc["current_price"] == float(f"{close:.6g}") and btc["market_cap"] == round(
        close * coin.circulating_supply
    )
    last24 = mk.klines("BTCUSDT", "1h", None, None, NOW, 42, 24)
    assert btc["high_24h"] == float(f"{last24['high'].max():.6g}")
    assert btc["total_volume"] == round(last24["quote_volume"].sum())
    assert btc["last_updated"] == "2026-05-28T20:47:14.567Z" and btc["max_supply"] == 21e6
    assert by_id["ethereum"]["max_supply"] is None and isinstance(by_id["ethereum"]["roi"], dict)
    assert (
        by_id["enjincoin"]["total_supply"] is None and by_id["enjincoin"]["fully_diluted_valuation"] is None
    )
    assert by_id["dai"]["high_24h"] is None and by_id["dai"]["price_change_percentage_24h"] is None
    assert sum(i["roi"] is None for i in items) > len(items) // 2

    page2 = get_json(url + "&per_page=10&page=2")[2]
    assert page2 == items[10:20]
    assert get_json(url)[2] == items[:100] and len(get_json(url + "&per_page=1000")[2]) == len(items)
    assert get_json(url + "&per_page=50&page=9")[2] == []
    picked = get_json(url + "&ids=solana,bitcoin,nope")[2]
    assert [i["id"] for i in picked] == ["bitcoin", "solana"]
    extra = get_json(url + "&ids=bitcoin&price_change_percentage=1h,7d")[2][0]
    assert {"price_change_percentage_1h_in_currency", "price_change_percentage_7d_in_currency"} <= set(extra)
    status, _, body = get_json(f"{srv.coingecko_url}/api/v3/coins/markets")
    assert status == 400 and isinstance(body, dict) and "error" in body


def _kind(value: Any) -> str:
    """JSON kind, with CoinGecko's ints and floats both counted as numbers."""
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


# ---- Fear & Greed -------------------------------------------------------------------------------


def test_fng_full_history(srv: SandboxServer, fixtures_dir: Path) -> None:
    status, headers, raw = call(f"{srv.fear_greed_url}/fng/?limit=0&format=json")
    assert status == 200 and headers["X-Sandbox"] == "synthetic"
    real = (fixtures_dir / "feargreed" / "fng_limit2_2026-07-10.json").read_text()
    assert raw.decode().startswith(real[: real.index('"value": "') + 10])  # the API's tab layout
    body = json.loads(raw)
    assert body["name"] == "Fear and Greed Index" and body["metadata"] == {"error": None}
    data = body["data"]
    stamps = [int(d["timestamp"]) for d in data]
    today = NOW // DAY * DAY // 1000
    assert stamps[0] == today and stamps[-1] == 1517443200  # 2018-02-01
    missing = {dt.datetime(2018, 4, d, tzinfo=dt.UTC) for d in (14, 15, 16)} | {
        dt.datetime(2024, 10, 26, tzinfo=dt.UTC)
    }
    expected = [today - i * 86400 for i in range((today - 1517443200) // 86400 + 1)]
    expected = [s for s in expected if dt.datetime.fromtimestamp(s, dt.UTC) not in missing]
    assert stamps == expected
    bands = [(25, "Extreme Fear"), (46, "Fear"), (54, "Neutral"), (75, "Greed"), (100, "Extreme Greed")]
    for i, item in enumerate(data):
        assert all(isinstance(v, str) for v in item.values())
        value = int(item["value"])
        assert 0 <= value <= 100
        assert item["value_classification"] == next(label for top, label in bands if value <= top)
        assert ("time_until_update" in item) == (i == 0)
    assert int(data[0]["time_until_update"]) == (today + 86400) - NOW // 1000
    assert len({d["value_classification"] for d in data}) == 5


def test_fng_limits_and_date_formats(srv: SandboxServer, fixtures_dir: Path) -> None:
    real = json.loads((fixtures_dir / "feargreed" / "fng_limit1_2025-04-23_oneline.json").read_text())
    one = get_json(f"{srv.fear_greed_url}/fng/")[2]
    assert len(one["data"]) == 1 and list(one) == list(real) and list(one["data"][0]) == list(real["data"][0])
    two = get_json(f"{srv.fear_greed_url}/fng/?limit=2")[2]["data"]
    world = get_json(f"{srv.fear_greed_url}/fng/?limit=2&date_format=world")[2]["data"]
    us = get_json(f"{srv.fear_greed_url}/fng/?limit=2&date_format=us")[2]["data"]
    cn = get_json(f"{srv.fear_greed_url}/fng?limit=2&date_format=cn")[2]["data"]  # follows the 301
    assert [d["timestamp"] for d in world] == ["28-05-2026", "27-05-2026"]
    assert [d["timestamp"] for d in us] == ["05-28-2026", "05-27-2026"]
    assert [d["timestamp"] for d in cn] == ["2026-05-28", "2026-05-27"]
    assert [d["value"] for d in world] == [d["value"] for d in two]
