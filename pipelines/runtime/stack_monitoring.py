"""The monitoring services of the compose stack run natively beside a NativeStack: the metrics endpoint,
Alertmanager (every receiver pointed at a local webhook) and Prometheus with our rules, every duration of
the rules and the routing compressible so that a test sees a 5-minute rule fire in seconds."""

from __future__ import annotations

import functools
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipelines.runtime.compose_spec import ROOT
from pipelines.runtime.stack import opens, wait_until

if TYPE_CHECKING:
    from pipelines.runtime.stack import NativeStack

MONITORING = ROOT / "monitoring"

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def seconds(duration: str) -> float:
    """A Prometheus/Alertmanager duration ("1h30m", "30s") in seconds."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def compress(duration: str, time_scale: float) -> str:
    """`duration` made time_scale times as long, in whole seconds (at least 1 s)."""
    return f"{max(1, round(seconds(duration) * time_scale))}s"


def option(argv: list[str], flag: str) -> str:
    """The value of `flag` in a command (`--flag value` or `--flag=value`)."""
    for i, arg in enumerate(argv):
        if arg == flag:
            return argv[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    raise KeyError(f"{flag} is not in {argv}")


def with_options(argv: list[str], values: dict[str, str]) -> list[str]:
    """The command with these flags' values replaced (each must be there, in either form)."""
    out, replaced, skip = [], set(), False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in values:
            replaced.add(flag)
            out.append(f"{flag}={values[flag]}")
            skip = "=" not in arg and i + 1 < len(argv)
        else:
            out.append(arg)
    if missing := set(values) - replaced:
        raise KeyError(f"{sorted(missing)} not in {argv}")
    return out


def _compress_route(route: dict[str, Any], time_scale: float) -> None:
    for key in ("group_wait", "group_interval", "repeat_interval"):
        if key in route:
            route[key] = compress(route[key], time_scale)
    for child in route.get("routes", []):
        _compress_route(child, time_scale)


class AlertWebhook:
    """The receiver Alertmanager notifies here: an HTTP server on 127.0.0.1 keeping every notification
    (the JSON Alertmanager posts: status, alerts with their labels) in `received`."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cryptoflow/alerts"

    def start(self) -> AlertWebhook:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True, name="alert-webhook").start()
        return self

    def firing(self) -> list[str]:
        """The alert names of every firing notification, one entry per alert per notification."""
        return [
            a["labels"]["alertname"] for n in self.received for a in n["alerts"] if a["status"] == "firing"
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_monitoring(stack: NativeStack, time_scale: float = 1.0) -> AlertWebhook:
    """Compose's `metrics` service (its command, its reader environment), Alertmanager with
    monitoring/alertmanager.yml, every receiver pointed at a local webhook (returned: what it was sent),
    and Prometheus with the compose scrape config (monitoring/prometheus.compose.yml) and our rules
    (monitoring/alerts.yml). time_scale < 1 makes every duration of the rules and the routing (`for`,
    scrape and evaluation intervals, group waits and intervals) that many times as long, so that a
    test sees a 5-minute rule fire in seconds; expressions, labels, receivers and routes stay as
    committed."""
    programs = {
        "prometheus": shutil.which("prometheus"),
        "prometheus-alertmanager": shutil.which("prometheus-alertmanager") or shutil.which("alertmanager"),
    }
    if missing := [name for name, path in programs.items() if not path]:
        raise RuntimeError(f"missing {', '.join(missing)} (Debian's packages): run `make tools`")
    found = {name: str(path) for name, path in programs.items()}
    metrics = stack.compose["services"]["metrics"]
    port = stack.listen("metrics", int(option(metrics["command"], "--port")))
    stack.start_process(
        "metrics",
        with_options(metrics["command"], {"--host": "127.0.0.1", "--port": str(port)}),
        stack.process_env(stack.service_env("metrics")),
    )
    webhook = AlertWebhook().start()
    _start_alertmanager(stack, found["prometheus-alertmanager"], webhook, time_scale)
    _start_prometheus(stack, found["prometheus"], time_scale)
    for name in ("metrics", "alertmanager", "prometheus"):
        host, port = stack.addresses[name]
        path = "/metrics" if name == "metrics" else "/-/ready"
        wait_until(functools.partial(opens, f"http://{host}:{port}{path}"), name)
    return webhook


def _start_alertmanager(stack: NativeStack, program: str, webhook: AlertWebhook, time_scale: float) -> None:
    manager = stack.compose["services"]["alertmanager"]
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook.url
    _compress_route(config["route"], time_scale)
    folder = stack.root / "alertmanager"
    folder.mkdir()
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = stack.listen("alertmanager", 9093)
    options = {"--config.file": str(folder / "alertmanager.yml"), "--storage.path": str(folder)}
    stack.start_process(
        "alertmanager",
        [
            program,
            *with_options(manager["command"], options),
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
    )


def _start_prometheus(stack: NativeStack, program: str, time_scale: float) -> None:
    prometheus = stack.compose["services"]["prometheus"]
    config_file = Path(option(prometheus["command"], "--config.file"))
    config = yaml.safe_load((MONITORING / config_file.name).read_text())
    scrape = config["global"]
    for key in ("scrape_interval", "evaluation_interval", "scrape_timeout"):
        scrape[key] = compress(scrape[key], time_scale)
    if seconds(scrape["scrape_timeout"]) > seconds(scrape["scrape_interval"]):
        scrape["scrape_timeout"] = scrape["scrape_interval"]
    targets = [
        static
        for section in (config["alerting"]["alertmanagers"], config["scrape_configs"])
        for entry in section
        for static in entry["static_configs"]
    ]
    for static in targets:
        static["targets"] = [stack.here(t) for t in static["targets"]]
    folder = stack.root / "prometheus"
    folder.mkdir()
    for rules_file in config["rule_files"]:
        rules = yaml.safe_load((MONITORING / rules_file).read_text())
        for group in rules["groups"]:
            if "interval" in group:
                group["interval"] = compress(group["interval"], time_scale)
            for rule in group["rules"]:
                for key in ("for", "keep_firing_for"):
                    if key in rule:
                        rule[key] = compress(rule[key], time_scale)
        (folder / rules_file).write_text(yaml.safe_dump(rules, sort_keys=False))
    (folder / config_file.name).write_text(yaml.safe_dump(config, sort_keys=False))
    port = stack.listen("prometheus", 9090)
    options = {"--config.file": str(folder / config_file.name), "--storage.tsdb.path": str(folder / "data")}
    stack.start_process(
        "prometheus",
        [program, *with_options(prometheus["command"], options), f"--web.listen-address=127.0.0.1:{port}"],
    )
