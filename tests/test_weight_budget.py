"""The exchange's request-weight budget shared across processes (pipelines/runtime/weight_budget.py): two
processes, four threads each, fetch from the sandbox at once; the sandbox's own weight accounting (per
calendar minute, as Binance counts it per IP) shows the two together never pass limit x weight_budget."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.runtime import db
from pipelines.sandbox import SandboxServer

pytestmark = pytest.mark.slow  # the second process waits for the next minute of the budget

LIMIT, SHARE, REQUESTS = 200, 0.5, 30  # allowance 100 weight a minute; each process wants 30 x 2 = 60
FETCH = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from pipelines.ingest.binance import binance_client
from pipelines.settings import load_settings

client = binance_client(load_settings(sys.argv[1], environ={}))
params = {"symbol": "BTCUSDT", "interval": "1h", "limit": 1}
with ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda _: client.get_raw("/api/v3/klines", params), range(int(sys.argv[2]))))
print(json.dumps({"requests": client.stats.requests, "rate_limited": client.stats.rate_limited}))
"""


def test_two_processes_share_one_weight_budget_and_never_pass_it(make_settings, tmp_path):
    with SandboxServer(weight_limit=LIMIT * 10) as sandbox:  # the exchange would allow far more
        settings = make_settings(
            sources={"binance": {"weight_limit_per_minute": LIMIT, "weight_budget": SHARE}}
        )
        db.ensure_database(settings)
        config = tmp_path / "config.json"
        config.write_text(
            json.dumps(
                {
                    "database": {
                        "embedded_dir": str(settings.path(settings.database.embedded_dir)),
                        "name": settings.database.name,
                    },
                    "sources": {
                        "binance": {
                            "base_url": f"{sandbox.url}/binance",
                            "weight_limit_per_minute": LIMIT,
                            "weight_budget": SHARE,
                        }
                    },
                }
            )
        )

        def fetch(_: int) -> dict:
            out = subprocess.run(
                [sys.executable, "-c", FETCH, str(config), str(REQUESTS)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(fetch, range(2)))
    assert results == [{"requests": REQUESTS, "rate_limited": 0}] * 2  # no 429, no retry
    assert sandbox.weight_rejections == 0
    assert sandbox.peak_weight <= LIMIT * SHARE  # the two processes together, in every minute
    with db.connect(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), sum(used), max(used) FROM ops.request_weight WHERE api = 'binance'")
        minutes, used, most = cur.fetchone()
    assert used == 2 * REQUESTS * 2 and most <= LIMIT * SHARE and minutes >= 2  # 120 weight: two minutes


def test_the_limit_the_exchange_reports_binds_every_process_from_its_first_request(make_settings):
    """exchangeInfo says 100 a minute while config says 6,000: the run that heard it lowers its own budget,
    and a process that has not yet heard the exchange (its first request is the exchangeInfo call itself) is
    held to it too, instead of to 80% of 6,000."""
    from pipelines.runtime.weight_budget import RESERVE, SECONDS_LEFT, SharedWeightBudget

    settings = make_settings()
    db.ensure_database(settings)
    heard = SharedWeightBudget(settings, "binance", 6000, 0.8)
    fresh = SharedWeightBudget(settings, "binance", 6000, 0.8)
    one = {"api": "binance", "weight": 1, "limit": 6000, "share": 0.8}  # what `fresh` asks next
    try:
        if (left := fresh._execute(SECONDS_LEFT, {})[0]) < 5:  # all of it inside one minute
            time.sleep(left + 0.1)
        heard.exchange_reports(100)  # allowance 80
        assert heard.limit == 100
        minutes = {fresh.reserve(20)[1] for _ in range(4)}  # 80: the allowance, no wait
        assert len(minutes) == 1 and fresh.limit == 6000
        assert fresh._execute(RESERVE, one) is None  # 81 > 80: refused in this minute, whoever asks
        heard.exchange_reports(6000)  # the exchange raised it again: the configured limit binds
        assert fresh._execute(RESERVE, one) == (minutes.pop(),)
    finally:
        heard.close()
        fresh.close()
