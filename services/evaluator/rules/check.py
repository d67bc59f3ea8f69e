"""`tripwire rules check FILE…`: validate rule files as `promtool check rules` does.

Every file is loaded with the evaluator's own loader (schema, PromQL, templates), so a file that passes here
loads in the evaluator. Each file prints `Checking FILE`, then `  SUCCESS: N rules found` or `  FAILED:` and
every error of the file. The duplicate-rules lint (promtool's default) reports rules with the same name and
labels; it is a warning unless `--lint-fatal` is given.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from services.evaluator.rules.alerting import AlertingRule
from services.evaluator.rules.files import load_rule_files
from services.evaluator.rules.group import RuleGroup
from shared.yamlfile import ConfigError, ConfigErrors

# promtool's exit codes (cmd/promtool/main.go).
SUCCESS_EXIT = 0
FAILURE_EXIT = 1
LINT_EXIT = 3

LINT_NONE = "none"
LINT_DUPLICATE_RULES = "duplicate-rules"
LINT_ALL = "all"
LINT_CHOICES = (LINT_ALL, LINT_DUPLICATE_RULES, LINT_NONE)

# Only the rule-file defaults matter here; the interval does not change what is valid.
_DEFAULT_INTERVAL = 60.0


@dataclass(frozen=True)
class Duplicate:
    """A rule name and label set that occurs more than once in one file."""

    name: str
    labels: tuple[tuple[str, str], ...]
    count: int


def find_duplicates(groups: list[RuleGroup]) -> list[Duplicate]:
    """Rules (recording or alerting) of one file sharing name and labels (group labels included), as
    promtool's duplicate-rules lint finds them; ordered by name, then labels."""
    seen: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for group in groups:
        for rule in group.rules:
            if isinstance(rule, AlertingRule):
                # Alert labels are templates: compare their source text, as promtool does.
                labels = {key: template.source for key, template in rule.labels.items()}
            else:
                labels = dict(rule.labels)
            seen[(rule.name, tuple(sorted(labels.items())))] += 1
    return [Duplicate(name, labels, n) for (name, labels), n in sorted(seen.items()) if n > 1]


def _duplicates_message(duplicates: list[Duplicate]) -> str:
    lines = [f"{len(duplicates)} duplicate rule(s) found."]
    for dup in duplicates:
        lines.append(f"    Metric: {dup.name}")
        lines.append("    Label(s):" + ("" if dup.labels else " none"))
        lines.extend(f"        {name}: {value}" for name, value in dup.labels)
    lines.append("    Might cause inconsistency while recording expressions")
    return "\n".join(lines)


def report(out: TextIO, err: TextIO, header: str, lines: list[str]) -> None:
    """A section header and its lines on stderr, after what stdout holds so far (FAILED, WARNING)."""
    out.flush()  # keep the report in order when both streams go to one terminal
    print(header, file=err)
    for line in lines:
        print(line, file=err)
    err.flush()


def check_file(
    path: Path,
    lint: str = LINT_DUPLICATE_RULES,
    lint_fatal: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Check one rule file, printing promtool's report; returns 0 (ok), 1 (errors) or 3 (fatal lint)."""
    out = out or sys.stdout
    err = err or sys.stderr
    print(f"Checking {path}", file=out)
    try:
        groups = load_rule_files([path], _DEFAULT_INTERVAL)
    except ConfigErrors as exc:
        report(out, err, "  FAILED:", [str(error) for error in exc.errors])
        groups = None
    except ConfigError as exc:
        report(out, err, "  FAILED:", [str(exc)])
        groups = None
    except Exception as exc:  # a loader bug must still name the file, never print a traceback
        report(
            out, err, "  FAILED:", [f"{path}: unexpected error while loading: {type(exc).__name__}: {exc}"]
        )
        groups = None
    if groups is None:
        print(file=out)
        return FAILURE_EXIT
    count = sum(len(group.rules) for group in groups)
    duplicates = find_duplicates(groups) if lint in (LINT_DUPLICATE_RULES, LINT_ALL) else []
    if duplicates and lint_fatal:
        report(out, err, "  FAILED:", [f"lint error: {_duplicates_message(duplicates)}"])
        print(file=out)
        return LINT_EXIT
    if duplicates:
        report(out, err, f"  WARNING: {_duplicates_message(duplicates)}", [])
    print(f"  SUCCESS: {count} rules found", file=out)
    print(file=out)
    return SUCCESS_EXIT


def check_rules(paths: list[Path], lint: str = LINT_DUPLICATE_RULES, lint_fatal: bool = False) -> int:
    """Check every file (all of them, even after a failure); the exit code as promtool's: 1 if any file has
    errors, else 3 if a fatal lint fired, else 0."""
    codes = [check_file(path, lint, lint_fatal) for path in paths]
    if FAILURE_EXIT in codes:
        return FAILURE_EXIT
    if LINT_EXIT in codes:
        return LINT_EXIT
    return SUCCESS_EXIT
