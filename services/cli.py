"""The `tripwire` command."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.config import Config, load_config
from shared.yamlfile import ConfigError, ConfigErrors

SERVICES = ("collector", "evaluator", "notifier")


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=os.environ.get("TRIPWIRE_CONFIG"),
        help="tripwire.yml (default: $TRIPWIRE_CONFIG, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tripwire", description="Event-driven alerting on Redis Streams.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run Redis and all three services locally; Ctrl-C stops everything")
    _config_arg(up)
    up.add_argument("--demo", action="store_true", help="also run a traffic generator that trips an alert")
    up.add_argument(
        "--data-dir", type=Path, default=Path(".tripwire"), help="where a spawned Redis keeps data"
    )
    up.add_argument(
        "--embedded-redis",
        action="store_true",
        help="use the in-process Redis emulation even if redis-server is installed",
    )

    for name in SERVICES:
        service = sub.add_parser(name, help=f"run the {name} in the foreground (what containers run)")
        _config_arg(service)

    send = sub.add_parser("send", help="post events to a collector (demos, smoke tests)")
    send_sub = send.add_subparsers(dest="what", required=True, metavar="WHAT")
    metric = send_sub.add_parser("metric", help="post one metric sample")
    metric.add_argument("name")
    metric.add_argument("value", type=float)
    metric.add_argument("labels", nargs="*", metavar="LABEL=VALUE")
    metric.add_argument("--kind", choices=("sample", "increment"), default="sample")
    metric.add_argument("--timestamp", help="Unix seconds or RFC 3339 (default: receive time)")
    logp = send_sub.add_parser("log", help="post one log event")
    logp.add_argument("service")
    logp.add_argument("level")
    logp.add_argument("message")
    logp.add_argument("labels", nargs="*", metavar="LABEL=VALUE")
    logp.add_argument("--timestamp")
    for p in (metric, logp):
        p.add_argument("--url", default=os.environ.get("TRIPWIRE_COLLECTOR_URL", "http://127.0.0.1:9400"))
        p.add_argument("--token", default=None, help="bearer token (default: $TRIPWIRE_INGEST_TOKEN)")
    _rules_parser(sub)
    _routes_parser(sub)
    config = sub.add_parser("config", help="check tripwire.yml and the files it names (as promtool does)")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="WHAT")
    check = config_sub.add_parser(
        "check", help="validate tripwire.yml, its rule files, routing file, scrape jobs and secret files"
    )
    check.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=os.environ.get("TRIPWIRE_CONFIG"),
        metavar="FILE",
        help="tripwire.yml (default: $TRIPWIRE_CONFIG, else built-in defaults)",
    )
    check.add_argument(
        "--syntax-only",
        action="store_true",
        help="check tripwire.yml alone: read none of the files it names (rules, routing, secrets)",
    )
    check.add_argument(
        "--skip-secrets",
        action="store_true",
        help="check everything but secrets: no token, password, credentials or TLS file, no secret env var",
    )

    receivers = sub.add_parser("receivers", help="test a receiver of an Alertmanager routing file")
    receivers_sub = receivers.add_subparsers(dest="receivers_command", required=True, metavar="WHAT")
    test = receivers_sub.add_parser(
        "test", help="send a clearly marked test notification through every integration of one receiver"
    )
    test.add_argument("name", metavar="NAME", help="the receiver's name")
    test.add_argument(
        "-c",
        "--config.file",
        dest="routing_file",
        type=Path,
        metavar="FILE",
        required=True,
        help="alertmanager.yml",
    )
    test.add_argument(
        "--external-url", default="http://localhost:9402", help="the notifier URL the message links to"
    )
    return parser


def _routes_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`tripwire routes test|show`: amtool's `config routes test|show`, its output and exit codes."""
    routes = sub.add_parser("routes", help="show or test an Alertmanager routing tree (as amtool does)")
    routes_sub = routes.add_subparsers(dest="routes_command", required=True, metavar="WHAT")
    for name, help_text in (
        ("show", "print the routing tree"),
        ("test", "print the receivers a label set is routed to; or check a file of cases (--cases)"),
    ):
        command = routes_sub.add_parser(name, help=help_text)
        command.add_argument(
            "-c", "--config.file", dest="routing_file", type=Path, metavar="FILE", help="alertmanager.yml"
        )
    test = routes_sub.choices["test"]
    test.add_argument("labels", nargs="*", metavar="LABEL=VALUE")
    test.add_argument(
        "--verify.receivers",
        dest="verify",
        metavar="A,B",
        help="expected receivers, comma-separated; exit 1 if they differ",
    )
    test.add_argument("--tree", action="store_true", help="also print the routes the alert walks through")
    test.add_argument(
        "--cases", type=Path, metavar="FILE.yml", help="a YAML list of {labels, receivers[, config]} to check"
    )


def _rules_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`tripwire rules check|test`: promtool's `check rules` and `test rules`, its output and exit codes."""
    rules = sub.add_parser("rules", help="check rule files, or run rule unit tests (as promtool does)")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="WHAT")
    check = rules_sub.add_parser("check", help="validate rule files (schema, PromQL, templates, lint)")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument(
        "--lint",
        choices=("all", "duplicate-rules", "none"),
        default="duplicate-rules",
        help="lint checks to run (default: duplicate-rules)",
    )
    check.add_argument(
        "--lint-fatal", action="store_true", help="make lint findings fatal (exit 3, as promtool)"
    )
    test = rules_sub.add_parser("test", help="run rule unit tests (promtool's test file format)")
    test.add_argument("files", nargs="+", type=Path, metavar="FILE")
    test.add_argument(
        "--run",
        action="append",
        metavar="REGEX",
        help="only run test groups whose name matches; may be repeated (patterns are OR-ed)",
    )


def load_or_exit(path: Path | None) -> Config:
    """Load the config, or print every problem (file:line: message) and exit 2."""
    try:
        return load_config(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"tripwire: config error: {error}", file=sys.stderr)
    except ConfigError as exc:
        print(f"tripwire: config error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def run_service(name: str, config: Config) -> None:
    from services.up import exit_with_supervisor
    from shared.jsonlog import configure_logging

    exit_with_supervisor()
    configure_logging(name, config.log.level, config.log.format)
    if name == "collector":
        from services.collector.app import run
    elif name == "evaluator":
        from services.evaluator.app import run
    else:
        from services.notifier.app import run
    try:
        asyncio.run(run(config))
    except ConfigError as exc:  # a rule or routing file that is wrong at start: say where, do not trace back
        print(f"tripwire {name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"tripwire {name}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        listen = getattr(config, name).listen
        print(
            f"tripwire {name}: cannot listen on {listen}: the address is in use (is a {name} already "
            f"running? set {name}.listen or TRIPWIRE_{name.upper()}_LISTEN)",
            file=sys.stderr,
        )
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command in SERVICES:
        run_service(args.command, load_or_exit(args.config))
    elif args.command == "up":
        from services.up import up

        raise SystemExit(
            up(args.config, demo=args.demo, data_dir=args.data_dir, embedded=args.embedded_redis)
        )
    elif args.command == "send":
        from services.send import send

        raise SystemExit(asyncio.run(send(args)))
    elif args.command == "rules":
        raise SystemExit(run_rules(args))
    elif args.command == "routes":
        raise SystemExit(run_routes(args))
    elif args.command == "config":
        from services.config_check import check_config

        raise SystemExit(
            check_config(args.file, syntax_only=args.syntax_only, skip_secrets=args.skip_secrets)
        )
    elif args.command == "receivers":
        from services.notifier.receiver_testing import send_test

        out, code = asyncio.run(send_test(args.routing_file, args.name, args.external_url))
        print(out, end="", file=sys.stdout if code == 0 else sys.stderr)
        raise SystemExit(code)


def run_routes(args: argparse.Namespace) -> int:
    """`tripwire routes test|show`; returns the exit code (1 on any error or mismatch, as amtool)."""
    from services.notifier import route_testing

    try:
        if args.routes_command == "test" and args.cases is not None:
            out, code = route_testing.run_cases(args.cases, args.routing_file)
            print(out, end="")
            return code
        if args.routing_file is None:
            print("tripwire: error: -c/--config.file FILE is required", file=sys.stderr)
            return 1
        tree = route_testing.load_tree(args.routing_file)
        if args.routes_command == "show":
            print(route_testing.show(tree), end="")
            return 0
        labels = route_testing.parse_labels(args.labels)
        verify = args.verify.split(",") if args.verify is not None else None
        out, code = route_testing.test(tree, labels, verify, args.tree)
        print(out, end="")
        return code
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"tripwire: {error}", file=sys.stderr)
    except (ConfigError, route_testing.LabelsError) as exc:
        print(f"tripwire: error: {exc}", file=sys.stderr)
    return 1


def run_rules(args: argparse.Namespace) -> int:
    """`tripwire rules check|test`; returns the exit code."""
    if args.rules_command == "check":
        from services.evaluator.rules.check import check_rules

        return check_rules(args.files, lint=args.lint, lint_fatal=args.lint_fatal)
    from services.evaluator.rules.unittest import run_unit_tests

    return run_unit_tests(args.files, run=args.run)


if __name__ == "__main__":
    main()
