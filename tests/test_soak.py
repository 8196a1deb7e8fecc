"""`cryptoflow soak --days 2`: 48 hourly cycles on the sandbox clock with the seven faults and the daily
maintenance, on a deployment of its own. The report's figures are the benchmark's business; what must hold
here: every fault happened and was survived, each incident paged exactly once, bronze holds one file per
table per closed day, and raw, bronze and gold are exact at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import soak
from pipelines.runtime import migrations

pytestmark = pytest.mark.slow  # 48 real cycles: ingest, transform, checks each


def test_a_two_day_soak_stays_exact_and_pages_once_per_incident(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "cryptoflow"), "soak", "--days", "2", "--json", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    report = json.loads(out.read_text())
    assert done.returncode == 0, (report["targets"], report["failures"], done.stderr[-3000:])
    assert report["cycles"] == 48
    assert {f["fault"] for f in report["faults"]} == set(soak.FAULTS)
    assert report["exact"] is True and report["exact_details"]["gold_differences"] == []
    assert report["bronze_files_per_closed_day_max"] == 1
    # the storm fails one ingest run: one incident, one page (and one "recovered" after it); the S3 endpoint's
    # hour fails that hour's ingest and the three bronze reconciliations (each an incident with its page);
    # the outage hour is the exchange's own gap (a known gap, paging nobody); the killed run is recovered by
    # the next; the delisted pair's hours after its halt are no gap at all
    reconciliations = [
        f"bronze rows equal raw rows per load id ({t})"
        for t in ("binance_klines", "coingecko_markets", "fear_greed")
    ]
    assert report["incident_names"] == ["run:ingest ohlcv", "run:ingest ohlcv", *reconciliations]
    assert report["alerts_sent"] == report["incidents"] == 5
    assert report["known_gaps"] == {"exchange_outage": 3}  # the hour, for each of the 3 pairs
    assert report["abandoned_runs"] == 1
    cycles = {f["fault"]: f["cycle"] for f in report["faults"]}
    assert [(f["cycle"], f["step"]) for f in report["failures"]] == [
        (cycles["429_storm"], "ingest ohlcv"),
        (cycles["s3_gone"], "ingest ohlcv"),
        (cycles["s3_gone"], "check"),
    ]
    s3_failure = report["failures"][1]["error"]
    assert s3_failure.startswith(
        "LakeUnavailable: the bronze lake at s3://soak-bronze/lake cannot be reached"
    )
    assert report["delisted"] == {"symbol": "SOLUSDT", "status": "BREAK", "spells": ["TRADING", "BREAK"]}
    assert report["revisions"] > 2 * 30  # the burst: every trading pair's last 30 closed hours, restated
    assert report["ops_rows"]["schema_migrations"] == len(migrations.available())
    assert report["db_bytes"]["end"] > report["db_bytes"]["start"] > 0
