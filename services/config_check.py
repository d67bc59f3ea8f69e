"""`tripwire config check [FILE]`: validate tripwire.yml and every file it names, as
`promtool check config` does, without connecting to Redis or starting anything.

Everything goes through the services' own loaders, so what passes here loads at start. What a service would
refuse at start is an error, and so is what it would start with but only log: a scrape target it skips, a
credentials or TLS file a scrape job cannot read, a receiver whose secret cannot be read. CI runs this before
a deploy, and those are mistakes all the same.

Secrets are often there only where the services run: `--skip-secrets` checks everything else (the CI of a
config repository), reading no secret, credential or TLS file and no secret environment variable.
`--syntax-only` checks tripwire.yml alone and reads none of the files it names, as promtool's flag does.

Output follows promtool: `Checking FILE`, then `  SUCCESS: …` or `  FAILED:` and every problem (on stderr);
each rule file and the routing file get their own section. Exit 1 if anything failed, else 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

import aiohttp

from services.collector.scrape import (
    ScrapeFailed,
    ScrapeLimits,
    authorization_for,
    scrapable_targets,
    tls_context_for,
    with_resolved_paths,
)
from services.evaluator.rules.check import FAILURE_EXIT, SUCCESS_EXIT, check_file, report
from shared.config import Config, load_config, rule_file_matches, rule_file_paths
from shared.yamlfile import ConfigError, ConfigErrors


def _load(
    path: Path | None, environ: Mapping[str, str], read_secrets: bool
) -> tuple[Config | None, list[str]]:
    try:
        return load_config(path, environ, read_secrets=read_secrets), []
    except ConfigErrors as exc:
        return None, [str(error) for error in exc.errors]
    except ConfigError as exc:
        return None, [str(exc)]


def scrape_problems(config: Config, secrets: bool = True) -> tuple[int, list[str]]:
    """How many targets the collector would scrape, and what in scrape_configs it would skip or fail on
    (with `secrets`, its credentials and TLS files too)."""
    limits = ScrapeLimits.from_config(config)
    now = time.time()
    count = 0
    problems: list[str] = []
    for job in (with_resolved_paths(job, config.resolve) for job in config.scrape_configs):
        targets, skipped = scrapable_targets(job, limits, now)
        count += len(targets)
        problems += [f"scrape job {job.job_name!r}: {problem}" for problem in skipped]
        if not secrets:
            continue
        try:
            authorization_for(job)
        except ScrapeFailed as exc:
            problems.append(f"scrape job {job.job_name!r}: {exc.reason}")
        if isinstance(tls := tls_context_for(job), ScrapeFailed):
            problems.append(f"scrape job {job.job_name!r}: {tls.reason}")
    return count, problems


def _file_problems(config: Config) -> list[str]:
    """The secret files the services read later rather than at load."""
    try:
        config.redis_password()
    except ConfigError as exc:
        return [str(exc)]
    return []


async def routing_problems(path: Path, external_url: str, secrets: bool = True) -> tuple[str, list[str]]:
    """What the notifier would refuse or flag in its routing file (with `secrets`, the receivers' secrets it
    cannot read): a summary, and the problems."""
    from services.notifier.app import ReceiverDeps, build_receivers
    from services.notifier.config import load_routing
    from services.notifier.receivers.delivery import RateLimits
    from shared.clock import SystemClock

    try:
        routing = load_routing(path)
        clock = SystemClock()
        async with aiohttp.ClientSession() as session:
            receivers = build_receivers(
                routing, ReceiverDeps(session, clock, None, RateLimits(clock), external_url)
            )
    except ConfigErrors as exc:
        return "", [str(error) for error in exc.errors]
    except ConfigError as exc:
        return "", [str(exc)]
    problems = [
        f"receiver {receiver.name!r}, {integration.name}: {problem}"
        for receiver in receivers.values()
        for integration in receiver.integrations
        if secrets
        and (check := getattr(integration, "secrets_problem", None)) is not None
        and (problem := check())
    ]
    summary = f"{len(routing.receivers)} receivers, {len(routing.inhibit_rules)} inhibit rules"
    return summary, problems


def _shown(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when it is under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_config(
    path: Path | None,
    *,
    syntax_only: bool = False,
    skip_secrets: bool = False,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check tripwire.yml (None: the built-in defaults) and, unless `syntax_only`, every file it names (but no
    secret with `skip_secrets`); prints promtool's report and returns the exit code (0 ok, 1 anything
    failed)."""
    out = out or sys.stdout
    err = err or sys.stderr
    environ = os.environ if environ is None else environ
    # The loaders log what a running service would (a TLS file it cannot load, say): the report says it.
    if not logging.getLogger().handlers:
        logging.getLogger().addHandler(logging.NullHandler())
    name = str(path) if path is not None else "<defaults>"
    print(f"Checking {name}", file=out)
    config, problems = _load(path, environ, read_secrets=not (syntax_only or skip_secrets))
    if config is None:
        report(out, err, "  FAILED:", problems)
        print(file=out)
        return FAILURE_EXIT
    if syntax_only:
        print(f" SUCCESS: {name} is valid tripwire config file syntax", file=out)
        print(file=out)
        return SUCCESS_EXIT
    targets, problems = scrape_problems(config, secrets=not skip_secrets)
    if not skip_secrets:
        problems += _file_problems(config)
    if problems:
        report(out, err, "  FAILED:", problems)
    else:
        for pattern in config.rule_files:
            if not rule_file_matches(config, pattern):
                print(f"  WARNING: rule_files pattern {pattern!r} matches no file", file=out)
        print(f"  SUCCESS: {len(rule_file_paths(config))} rule files found", file=out)
        print(f"  SUCCESS: {targets} scrape targets in {len(config.scrape_configs)} jobs", file=out)
        print(f" SUCCESS: {name} is valid tripwire config file syntax", file=out)
    print(file=out)
    return _check_named_files(config, skip_secrets, out, err, failed=bool(problems))


def _check_named_files(config: Config, skip_secrets: bool, out: TextIO, err: TextIO, failed: bool) -> int:
    """Each rule file, then the routing file, in sections of their own; the exit code of the whole check."""
    codes = [check_file(Path(_shown(rule_file)), out=out, err=err) for rule_file in rule_file_paths(config)]
    if config.alerting.config_file is not None:
        routing = config.alerting.config_file
        print(f"Checking {_shown(routing)}", file=out)
        summary, problems = asyncio.run(
            routing_problems(routing, config.notifier.external_url, secrets=not skip_secrets)
        )
        if problems:
            report(out, err, "  FAILED:", problems)
            failed = True
        else:
            print(f"  SUCCESS: {summary}", file=out)
        print(file=out)
    return FAILURE_EXIT if failed or FAILURE_EXIT in codes else SUCCESS_EXIT
