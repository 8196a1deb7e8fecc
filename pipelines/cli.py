"""The `cryptoflow` command: parse arguments, call one function, print. Nothing imports this module."""

from __future__ import annotations

# ruff: noqa: E402  (the Ctrl-C handler below is installed before the slower imports)
import os
import signal
import sys
from types import FrameType

INTERRUPTED = "interrupted; nothing half-written was kept (re-run to resume)"


def _interrupted_while_starting(_signum: int, _frame: FrameType | None) -> None:
    sys.stderr.write(INTERRUPTED + "\n")
    os._exit(130)


if __name__ == "__main__":  # `python -m pipelines.cli`: a Ctrl-C while the imports below load exits cleanly
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse
import contextlib
import datetime as dt
import json
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.cli_args import log_options, parser
from pipelines.cli_output import print_summary, progress_bar
from pipelines.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from pipelines.sandbox.server import SandboxServer

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


@contextlib.contextmanager
def _maybe_sandbox(settings: Settings, enabled: bool) -> Iterator[Settings]:
    """With --sandbox (or sandbox.enabled), point every source at an in-process sandbox."""
    if not (enabled or settings.sandbox.enabled):
        yield settings
        return
    from pipelines.sandbox import SandboxServer

    with SandboxServer(port=0, seed=settings.sandbox.seed, calm=settings.sandbox.calm) as server:
        print(f"sandbox: synthetic market data served at {server.url} (not real prices)", file=sys.stderr)
        yield sandboxed(settings, server)


def sandboxed(settings: Settings, server: SandboxServer) -> Settings:
    """A copy of settings whose sources point at a running SandboxServer."""
    return settings.with_sandbox(server.url)


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.runtime import db, embedded, schema

    if args.action == "migrate":
        from pipelines.upgrade import migrate_all

        for line in migrate_all(settings, _config_file(args)):
            print(line)
        return 0
    if not settings.database.embedded:
        if args.action == "url":
            print(db.reader_url(settings) if args.reader else db.writer_url(settings))
        else:
            print(
                f"database.url is set: using {db.redact(settings.database.url)}; no embedded server to {args.action}"
            )
            if args.action == "start":
                schema.ensure_schema(settings)
        return 0
    if args.action == "start":
        status = embedded.start(settings)
        print(f"embedded Postgres running (pid {status.pid}), data in {status.datadir}")
    elif args.action == "stop":
        print("stopped" if embedded.stop(settings) else "not running")
    elif args.action == "status":
        status = embedded.status(settings)
        print(f"running (pid {status.pid}), data in {status.datadir}" if status.running else "not running")
        return 0 if status.running else 3
    else:
        print(db.reader_url(settings) if args.reader else db.writer_url(settings))
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import ingest
    from pipelines.ops import slack

    steps = {
        "ohlcv": ingest.ingest_ohlcv,
        "markets": ingest.ingest_markets,
        "fear-greed": ingest.ingest_fear_greed,
    }
    chosen = list(steps) if args.what == "all" else [args.what]
    with _maybe_sandbox(settings, args.sandbox) as active:
        for name in chosen:
            with slack.alerting(settings, f"ingest {name}"):
                print_summary(steps[name](active, command=f"ingest {name}"))
    return 0


def cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import ingest
    from pipelines.ops import slack

    source = args.source or settings.backfill.source
    with _maybe_sandbox(settings, args.sandbox) as active, slack.alerting(settings, "backfill"):
        update, stop = progress_bar("klines pages" if source == "rest" else "archive files | candles")
        try:
            summary = ingest.ingest_ohlcv(
                active,
                symbols=args.symbols,
                since=args.since,
                until=args.until,
                days=args.days,
                command="backfill",
                progress=update,
                source=source,
                shared=args.shared,
            )
        finally:
            stop()
    print_summary(summary)
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import ingest
    from pipelines.ops import slack

    with _maybe_sandbox(settings, args.sandbox) as active, slack.alerting(settings, "verify"):
        found = ingest.verify_klines(
            active, since=args.since, until=args.until, symbols=args.symbols, apply=args.apply
        )
        lo, hi = found.window
        print(f"verify {lo:%Y-%m-%d %H:%M} .. {hi:%Y-%m-%d %H:%M} UTC (candle open times, both included):")
        for symbol, at, diff in found.changed:
            cols = ", ".join(f"{k} {v['old']} -> {v['new']}" for k, v in sorted(diff.items()))
            print(f"  changed   {symbol:<12} {at:%Y-%m-%d %H:%M}  {cols}")
        for symbol, at in found.missing_in_raw:
            print(f"  not in raw {symbol:<11} {at:%Y-%m-%d %H:%M}  (the exchange has it)")
        for symbol, at in found.missing_on_exchange:
            print(f"  not on exchange {symbol:<6} {at:%Y-%m-%d %H:%M}  (raw has it)")
        print(
            f"{len(found.changed)} changed, {len(found.missing_in_raw)} missing in raw, "
            f"{len(found.missing_on_exchange)} missing on the exchange, {found.details['unchanged']} equal"
        )
        if args.apply and (found.changed or found.missing_in_raw):
            from pipelines.restatement import restate_pending

            seconds, window = restate_pending(settings, execution_time=_exchange_now(active))
            if window is None:  # gold had not processed those hours yet: its next run takes them as they are
                print("applied: raw and bronze restated (ops.revisions); gold takes them in its next run")
            else:
                span = f"{window[0]:%Y-%m-%d %H:%M} .. {window[1]:%Y-%m-%d %H:%M} UTC"
                print(
                    f"applied: raw and bronze restated (ops.revisions), gold restated over {span} in {seconds:.1f} s"
                )
        elif not args.apply and (found.changed or found.missing_in_raw):
            print("run again with --apply to restate raw, bronze and gold")
    return 0


def _exchange_now(settings: Settings) -> dt.datetime:
    """The exchange's clock: SQLMesh must not run ahead of it (a sandbox's clock can be frozen)."""
    from pipelines.orchestration import exchange_now_ms

    return dt.datetime.fromtimestamp(exchange_now_ms(settings) / 1000, dt.UTC)


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    args.what = "all"
    cmd_ingest(settings, args)
    args.env = "prod"
    cmd_transform(settings, args)
    args.layer = None
    return cmd_check(settings, args)


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import quality
    from pipelines.ops import slack

    with slack.alerting(settings, "check"):  # the scan itself broke; failing checks alert below
        run = quality.run_checks(settings, tuple(args.layer or quality.LAYERS))
    print(quality.render(run))
    for sent in slack.notify_check_run(settings, run):
        print(sent)
    return 1 if run.failed else 0


def cmd_soak(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.soak import run_soak

    if not 1 <= args.pairs <= 5 or args.days < 1:
        raise ConfigError("soak: --days must be at least 1 and --pairs between 1 and 5")
    report = run_soak(settings, args.days, seed=args.seed, pairs=args.pairs)
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0 if all(report["targets"].values()) else 1


def cmd_maintain(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.maintenance import maintain

    for line in maintain(settings, config_file=_config_file(args)):
        print(line)
    return 0


def cmd_digest(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.ops import digest

    ok = digest.send_digest(settings)
    print("digest sent" if ok else "digest not sent (see the log and ops.alerts_sent)")
    return 0 if ok else 1


def cmd_transform(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.ops import slack
    from pipelines.transform import transform

    with slack.alerting(settings, f"transform {args.env}"):
        summary = transform(settings, args.env)
    changed = ", ".join(summary.changed_models) or "none"
    print(
        f"transform '{summary.environment}': plan {summary.plan_s:.1f} s (changed models: {changed}), "
        f"run {summary.run_s:.1f} s"
    )
    return 0


def cmd_sandbox(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.sandbox import serve

    port = settings.sandbox.port if args.port is None else args.port
    serve(
        port=port,
        seed=settings.sandbox.seed if args.seed is None else args.seed,
        calm=settings.sandbox.calm if args.calm is None else args.calm,
    )
    return 0


def _config_file(args: argparse.Namespace) -> Path:

    return Path(
        getattr(args, "config", None) or os.environ.get("CRYPTOFLOW_CONFIG") or "config.yaml"
    ).resolve()


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.runtime import services

    print("starting the stack (the first start migrates Airflow's database: about a minute) ...")
    for line in services.up(settings, _config_file(args)):
        print(line)
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.runtime import services

    stopped = services.down(settings)
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def cmd_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.runtime import dashboard_server as dashboard

    port = settings.services.dashboard_port if args.port is None else args.port
    return dashboard.serve(settings, _config_file(args), port, host=args.host)


def cmd_airflow(settings: Settings, args: argparse.Namespace) -> int:
    import subprocess

    from pipelines.runtime import services

    env = {**os.environ, **services.airflow_env(settings, _config_file(args))}
    return subprocess.call([services.bin_path("airflow"), *args.args], env=env, cwd=settings.project_dir)


def cmd_metrics(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.ops import metrics_server

    port = settings.services.metrics_port if args.port is None else args.port
    print(f"Prometheus metrics on http://{args.host}:{port}/metrics (Ctrl-C to stop)", file=sys.stderr)
    metrics_server.serve(settings, args.host, port)
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines.ingest import dlq

    if args.action == "list":
        rows = dlq.list_dead_letters(settings, args.limit)
        if not rows:
            print("the dead letter queue is empty")
        for row in rows:
            print(f"{row.id:>6}  {row.source:<10} {row.natural_key:<28} {row.reason:<40} load {row.load_id}")
        return 0
    result = dlq.replay(settings, args.ids)
    print(f"replayed {result.replayed} record(s) into raw; {result.still_invalid} still invalid (kept)")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import demo
    from pipelines.ops.observability import configure_logging

    options = log_options(args)
    if options["log_format"] != "json":  # the summary is what the demo shows: the log goes to a file
        options["log_file"] = options["log_file"] or settings.state_dir / "logs" / "demo.log"
        # its warnings read as text beside the summary, on a terminal or in a file (JSON: demo.log)
        configure_logging(**options | {"log_format": "text"}, console_level="WARNING")
        print(f"log: {options['log_file']} (JSON lines; warnings are shown here too)", file=sys.stderr)

    update, stop = progress_bar(
        "archive files | candles" if settings.backfill.source != "rest" else "klines pages"
    )
    demo.run(settings, args.days, update, stop, print_summary)
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from pipelines import bench

    results = bench.run(settings, symbols=args.symbols, days=args.days, stack=args.stack)
    print(bench.render(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


def cmd_docs(settings: Settings, args: argparse.Namespace) -> int:

    from pipelines.docs import build_docs

    started = time.perf_counter()
    index = build_docs(settings, Path(args.out) if args.out else None)
    print(f"model docs written in {time.perf_counter() - started:.1f} s: open {index}")
    return 0


COMMANDS = {
    "db": cmd_db,
    "sandbox": cmd_sandbox,
    "ingest": cmd_ingest,
    "backfill": cmd_backfill,
    "verify": cmd_verify,
    "run": cmd_run,
    "transform": cmd_transform,
    "check": cmd_check,
    "dlq": cmd_dlq,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "docs": cmd_docs,
    "digest": cmd_digest,
    "maintain": cmd_maintain,
    "soak": cmd_soak,
    "metrics": cmd_metrics,
    "up": cmd_up,
    "airflow": cmd_airflow,
    "dashboard": cmd_dashboard,
    "down": cmd_down,
}


def _exit_now(code: int) -> int:
    """Leave at once after an interrupt. Every writer has rolled back and released its lock by now; what is
    left are threads still finishing a request, and library exit hooks that can re-raise the signal (dlt
    delays a Ctrl-C it saw, and the process then died by SIGINT after printing the line): none of them may
    keep the process alive or change its exit code."""

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _interrupted(argv: list[str] | None) -> int:
    print(INTERRUPTED, file=sys.stderr)
    return 130 if argv is not None else _exit_now(130)  # argv given: called in-process, just return


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    try:  # from the first line: a Ctrl-C while the imports below still load is the same one line
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, main handles a Ctrl-C
        args = parser().parse_args(argv)
        from pipelines.ops.observability import configure_logging

        configure_logging(**log_options(args))
        settings = load_settings(getattr(args, "config", None))
        code = COMMANDS[args.command](settings, args)
        if argv is None:  # the process's own command is done: a late Ctrl-C must not kill the exit
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return code
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted(argv)
    except Exception as exc:
        if _caused_by_interrupt(exc):  # e.g. a Ctrl-C during an import, wrapped by Python in a RuntimeError
            return _interrupted(argv)
        from pipelines.errors import user_facing

        message = user_facing(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
