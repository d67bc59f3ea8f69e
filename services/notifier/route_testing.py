"""`tripwire routes test` and `tripwire routes show`: amtool's `config routes` commands, same output and exit
codes, plus a batch mode (`--cases FILE.yml`) that amtool lacks (Alertmanager #5167).

A cases file is a YAML list; each case gives `labels` and the `receivers` expected, in order, and may name
its own `config` (relative to the cases file) instead of the one given with `-c`. With `inhibited`, it also
checks whether the alert is inhibited while the alerts in `firing` fire:

    - labels: {service: database, owner: team-Y}
      receivers: [team-DB-pager]
    - labels: {alertname: Slow, severity: warning, cluster: eu}
      receivers: [team-X-mails]
      firing: [{alertname: Down, severity: critical, cluster: eu}]
      inhibited: true
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.notifier.config import LabelValue, load_routing
from services.notifier.inhibition import Inhibitor
from services.notifier.matchers import MatcherError, matchers_string, parse_matcher
from services.notifier.routing import Route
from shared.alerts import Alert
from shared.yamlfile import ConfigErrors, load_yaml

VERIFY_FAILED = "WARNING: Expected receivers did not match resolved receivers."


class LabelsError(ValueError):
    """Command-line labels that are not key=value pairs."""


def parse_labels(args: list[str]) -> dict[str, str]:
    """`key=value` arguments (values may be quoted, as in amtool) as a label set."""
    labels: dict[str, str] = {}
    for arg in args:
        try:
            matcher = parse_matcher(arg)
        except MatcherError as exc:
            raise LabelsError(f"Failed to parse labels: {exc}") from None
        if matcher.op != "=":
            raise LabelsError("Failed to parse labels: labels must be specified as key=value pairs")
        labels[matcher.name] = matcher.value
    return labels


def load_tree(path: Path) -> Route:
    """The routing tree of an Alertmanager-format file (raises ConfigErrors with file:line)."""
    return Route.build(load_routing(path).route)


def receivers_for(tree: Route, labels: dict[str, str]) -> list[str]:
    """The receivers an alert with `labels` goes to, in routing order (as amtool prints them)."""
    return [route.receiver for route in tree.match(labels)]


def _slug(route: Route, show_continue: bool, show_receiver: bool) -> str:
    text = matchers_string(route.matchers) if route.matchers else "default-route"
    if route.continue_ and show_continue:
        text += "  continue: true"
    if show_receiver:
        text += f"  receiver: {route.receiver}"
    return text


@dataclass
class _Node:
    text: str
    children: list[_Node]


def _draw(root: _Node) -> str:
    """A tree as the treeprint package draws it (what amtool uses): a "." root, then box-drawing branches."""
    lines = ["."]

    def walk(node: _Node, prefix: str, last: bool) -> None:
        lines.append(f"{prefix}{'└── ' if last else '├── '}{node.text}")
        # treeprint's continuation bar is "│", two no-break spaces and a space, not four plain columns.
        inner = prefix + ("    " if last else "│\u00a0\u00a0 ")
        for i, child in enumerate(node.children):
            walk(child, inner, i == len(node.children) - 1)

    walk(root, "", True)
    return "\n".join(lines) + "\n"


def show(tree: Route) -> str:
    """`amtool config routes show`: the whole tree with continue flags and receivers."""

    def node(route: Route) -> _Node:
        return _Node(_slug(route, True, True), [node(child) for child in route.routes])

    return "Routing tree:\n" + _draw(node(tree)) + "\n"


def matching_tree(tree: Route, labels: dict[str, str]) -> str:
    """`amtool config routes test --tree`: the routes an alert walks through; the leaves show receivers."""

    def node(route: Route) -> _Node:
        children = []
        for child in route.routes:
            if all(m.matches(labels) for m in child.matchers):
                children.append(node(child))
                if not child.continue_:
                    break
        return _Node(_slug(route, False, not children), children)

    return "Matching routes:\n" + _draw(node(tree)) + "\n\n"


def test(tree: Route, labels: dict[str, str], verify: list[str] | None, with_tree: bool) -> tuple[str, int]:
    """`amtool config routes test`: output and exit code (1 when --verify.receivers does not match)."""
    out = matching_tree(tree, labels) if with_tree else ""
    receivers = receivers_for(tree, labels)
    out += ",".join(receivers) + "\n"
    if verify is not None and verify != receivers:
        return out + VERIFY_FAILED + "\n", 1
    return out, 0


def _firing(labels: dict[str, str]) -> Alert:
    return Alert(labels=labels, startsAt=datetime.now(UTC))


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: dict[str, LabelValue]
    receivers: list[str] = Field(min_length=1)
    config: str | None = None
    # Optional: other alerts firing at the same time, and whether this one should then be inhibited.
    firing: list[dict[str, LabelValue]] = Field(default_factory=list)
    inhibited: bool | None = None


def run_cases(cases_file: Path, default_config: Path | None) -> tuple[str, int]:
    """Check every case of a cases file; one line per failing case (file:line), then a summary."""
    doc = load_yaml(cases_file)
    if not isinstance(doc.data, list):
        raise ConfigErrors([doc.error((), "a cases file is a YAML list of {labels, receivers[, config]}")])
    trees: dict[Path, Route] = {}
    lines: list[str] = []
    failed = 0
    errors = []
    cases: list[tuple[int, Case]] = []
    for i, raw in enumerate(doc.data):
        try:
            cases.append((i, Case.model_validate(raw)))
        except ValidationError as exc:
            errors.extend(doc.validation_errors(exc, base=(i,), model=Case))
    if errors:
        raise ConfigErrors(errors)
    for i, case in cases:
        if case.config is not None:
            path = cases_file.parent / case.config
        elif default_config is not None:
            path = default_config
        else:
            missing = "this case names no config, and no -c/--config.file was given"
            raise ConfigErrors([doc.error((i,), missing)])
        if path not in trees:
            routing = load_routing(path)
            trees[path] = (Route.build(routing.route), Inhibitor.from_config(routing))
        tree, inhibitor = trees[path]
        line, _ = doc.position((i,))
        got = receivers_for(tree, dict(case.labels))
        problems = []
        if got != case.receivers:
            problems.append(f"went to {','.join(got)}, expected {','.join(case.receivers)}")
        if case.inhibited is not None:
            sources = [_firing(labels) for labels in case.firing]
            inhibited = bool(inhibitor.inhibited_by(dict(case.labels), sources))
            if inhibited != case.inhibited:
                problems.append(f"{'was' if inhibited else 'was not'} inhibited, expected the opposite")
        if problems:
            failed += 1
            lines.append(f"FAIL {cases_file}:{line}: {dict(case.labels)} " + "; ".join(problems))
    lines.append(f"{len(cases) - failed}/{len(cases)} routing cases passed")
    return "\n".join(lines) + "\n", 1 if failed else 0
