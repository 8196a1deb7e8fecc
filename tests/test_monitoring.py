"""monitoring/: Prometheus, its alert rules (with promtool's own unit tests) and Alertmanager, checked by the
real tools, and every metric the rules use checked against what a real endpoint exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from helpers.metrics_rows import endpoint, populate, scrape

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
RULES = yaml.safe_load((MONITORING / "alerts.yml").read_text())
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
METRIC = re.compile(r"\b(cryptoflow_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(cryptoflow_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail(
            "promtool not found: `make test` installs it with `apt-get install -y --no-install-recommends "
            "prometheus` (Debian/Ubuntu); install it the same way to run these tests"
        )
    return path


def run(*args: str) -> None:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )


def test_prometheus_config_is_valid():
    run(promtool(), "check", "config", "monitoring/prometheus.yml")


def test_alert_rules_are_valid():
    run(promtool(), "check", "rules", "monitoring/alerts.yml")


def test_alert_rules_unit_tests_pass():
    run(promtool(), "test", "rules", "monitoring/alerts_test.yml")


def test_alertmanager_config_is_valid():
    amtool = shutil.which("amtool")
    if not amtool:
        pytest.skip("amtool not installed (apt-get install prometheus-alertmanager)")
    run(amtool, "check-config", "monitoring/alertmanager.yml")


def test_prometheus_scrapes_the_endpoint_and_sends_to_alertmanager():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "cryptoflow"]
    assert job["static_configs"] == [{"targets": ["localhost:9108"]}]
    interval = job.get("scrape_interval", config["global"]["scrape_interval"])
    assert interval in ("15s", "20s", "30s")
    assert config["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["localhost:9093"]}]}]


def test_alertmanager_routes_everything_to_a_local_webhook_grouped_by_alertname():
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    assert config["route"]["group_by"] == ["alertname"]
    (receiver,) = [r for r in config["receivers"] if r["name"] == config["route"]["receiver"]]
    (webhook,) = receiver["webhook_configs"]
    assert webhook["url"].startswith(("http://localhost:", "http://127.0.0.1:"))
    names = {rule["alert"] for rule in ALERTS}
    for inhibit in config.get("inhibit_rules", []):  # inhibitions name alerts that exist
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            pattern = re.fullmatch(r'alertname\s*=~?\s*"([^"]+)"', matcher).group(1)
            assert {n for n in names if re.fullmatch(pattern, n)}, matcher


def test_every_alert_has_for_severity_annotations_and_a_unit_test():
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())
    tested = {
        case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if case["exp_alerts"]
    }
    silent = {
        case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"] if not case["exp_alerts"]
    }
    for rule in ALERTS:
        assert "for" in rule, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    names = {rule["alert"] for rule in ALERTS}
    assert tested == names  # each alert is shown firing on bad series ...
    assert silent == names  # ... and silent (still pending, or healthy series only)


def test_every_metric_the_rules_use_is_exposed_by_a_real_endpoint(make_settings):
    """A misspelled metric or label in a rule would never fire: compare with a real scrape of known rows."""
    settings = make_settings()
    populate(settings)
    with endpoint(settings) as server:
        exposed = scrape(server.url)
        body = urllib.request.urlopen(server.url, timeout=30).read()
    labels_of = {name: {k for key in samples for k, _ in key} for name, samples in exposed.items()}

    referenced: set[str] = set()
    for rule in ALERTS:
        text = " ".join([rule["expr"], *rule["annotations"].values()])
        used = set(METRIC.findall(text))
        referenced |= used
        assert used <= set(exposed), (
            f"{rule['alert']} uses metrics the endpoint does not expose: {used - set(exposed)}"
        )
        for name, matchers in SELECTOR.findall(text):
            unknown = set(MATCHER.findall(matchers)) - labels_of[name] - {"job", "instance"}
            assert not unknown, f"{rule['alert']}: {name} has no label(s) {unknown}"
        allowed = set().union(*(labels_of[n] for n in used)) | {"job", "instance"}
        for label in re.findall(r"\$labels\.(\w+)", text):
            assert label in allowed, f"{rule['alert']}: $labels.{label} is not a label of {used}"
    assert {
        "cryptoflow_database_up",
        "cryptoflow_pipeline_last_run_failed",
        "cryptoflow_pipeline_last_success_timestamp_seconds",
        "cryptoflow_alerts_via_alertmanager",
        "cryptoflow_dq_failures",
    } <= referenced

    # and promtool's own linter accepts the exposition
    result = subprocess.run([promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
