"""Loading Prometheus rule files: schema, expressions and templates checked up front, every error reported
with `file:line:col` and the group and rule it belongs to, as promtool does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from services.evaluator.promql import PromQLError, compile_expr
from services.evaluator.rules.alerting import AlertingRule
from services.evaluator.rules.group import RuleGroup
from services.evaluator.rules.recording import RecordingRule
from services.evaluator.rules.templates import TemplateError, parse_template
from shared.durations import FROM_FILE, Duration
from shared.events import LABEL_NAME_RE, METRIC_NAME_RE
from shared.yamlfile import ConfigError, ConfigErrors, Document, load_yaml


def _scalar_to_str(value: Any) -> Any:
    # YAML turns `priority: 1` into an int; Prometheus' Go YAML decoding reads it as the string "1".
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return value


ScalarStr = Annotated[str, BeforeValidator(_scalar_to_str)]


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    record: str | None = None
    alert: str | None = None
    expr: ScalarStr
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = 0.0
    # tripwire extension (promtool rejects it): keep a firing alert firing while this expression still
    # returns its series, e.g. fire at > 2%, resolve only below 1.5%.
    keep_firing_while: ScalarStr | None = None
    labels: dict[str, ScalarStr] = Field(default_factory=dict)
    annotations: dict[str, ScalarStr] = Field(default_factory=dict)


class GroupSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    interval: Duration | None = None
    limit: int = Field(default=0, ge=0)
    query_offset: Duration | None = None
    labels: dict[str, ScalarStr] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)


class RuleFileSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[GroupSpec] = Field(default_factory=list)


def load_rule_files(paths: list[Path], default_interval: float) -> list[RuleGroup]:
    """Load and check every file; raises ConfigErrors with every problem of every file."""
    groups: list[RuleGroup] = []
    errors: list[ConfigError] = []
    for path in paths:
        try:
            doc = load_yaml(path)
        except ConfigError as exc:
            errors.append(exc)
            continue
        file_groups, file_errors = _load_document(doc, default_interval)
        groups.extend(file_groups)
        errors.extend(file_errors)
    if errors:
        raise ConfigErrors(errors)
    return groups


def _load_document(doc: Document, default_interval: float) -> tuple[list[RuleGroup], list[ConfigError]]:
    if doc.data is None:
        return [], []
    try:
        spec = RuleFileSpec.model_validate(doc.data, context=FROM_FILE)
    except ValidationError as exc:
        return [], doc.validation_errors(exc, model=RuleFileSpec)
    errors: list[ConfigError] = []
    groups: list[RuleGroup] = []
    seen_groups: set[str] = set()
    for gi, group in enumerate(spec.groups):
        if not group.name:
            errors.append(doc.error(("groups", gi, "name"), "group name must not be empty"))
        if group.name in seen_groups:
            errors.append(
                doc.error(("groups", gi, "name"), f'groupname: "{group.name}" is repeated in the same file')
            )
        seen_groups.add(group.name)
        rules: list[AlertingRule | RecordingRule] = []
        for ri, rule in enumerate(group.rules):
            rule_errors, compiled = _compile_rule(doc, gi, ri, group, rule)
            errors.extend(rule_errors)
            if compiled is not None:
                rules.append(compiled)
        interval = group.interval if group.interval else default_interval
        groups.append(
            RuleGroup(
                group.name,
                doc.file,
                interval,
                rules,
                dict(group.labels),
                group.limit,
                query_offset=group.query_offset or 0.0,
            )
        )
    return groups, errors


def _compile_rule(
    doc: Document, gi: int, ri: int, group: GroupSpec, rule: RuleSpec
) -> tuple[list[ConfigError], AlertingRule | RecordingRule | None]:
    loc = ("groups", gi, "rules", ri)
    name = rule.alert or rule.record or ""
    where = f'group "{group.name}", rule {ri + 1}, "{name}"'
    errors: list[ConfigError] = []

    def fail(field: str, message: str) -> None:
        errors.append(doc.error((*loc, field), f"{where}: {message}"))

    if rule.record is not None and rule.alert is not None:
        fail("record", "only one of 'record' and 'alert' must be set")
    elif rule.record is None and rule.alert is None:
        fail("expr", "one of 'record' or 'alert' must be set")
    elif rule.record is not None:
        if not METRIC_NAME_RE.fullmatch(rule.record):
            fail("record", f"invalid recording rule name: {rule.record}")
        if rule.for_:
            fail("for", "invalid field 'for' in recording rule")
        if rule.keep_firing_for:
            fail("keep_firing_for", "invalid field 'keep_firing_for' in recording rule")
        if rule.keep_firing_while:
            fail("keep_firing_while", "invalid field 'keep_firing_while' in recording rule")
        if rule.annotations:
            fail("annotations", "invalid field 'annotations' in recording rule")
    if rule.alert is not None and not rule.alert.strip():
        fail("alert", "alert name must not be empty")
    expr = None
    try:
        expr = compile_expr(rule.expr)
    except PromQLError as exc:
        fail("expr", str(exc))
    recovery = None
    if rule.keep_firing_while is not None and rule.alert is not None:
        try:
            recovery = compile_expr(rule.keep_firing_while)
        except PromQLError as exc:
            fail("keep_firing_while", str(exc))
    labels = {**group.labels, **rule.labels}
    templates = {}
    for kind, mapping in (("labels", labels), ("annotations", rule.annotations)):
        for key, text in mapping.items():
            if kind == "labels" and (not LABEL_NAME_RE.fullmatch(key) or key == "__name__"):
                fail(kind, f"invalid label name: {key}")
            if rule.record is not None:
                continue
            try:
                templates[(kind, key)] = parse_template(text)
            except TemplateError as exc:
                fail(kind, f"{kind[:-1]} {key!r}: {exc}")
    if errors or expr is None:
        return errors, None
    if rule.record is not None:
        # Recording rule labels are literal (not templated), as in Prometheus.
        return errors, RecordingRule(name=rule.record, expr=expr, labels=dict(labels))
    assert rule.alert is not None
    return errors, AlertingRule(
        name=rule.alert,
        expr=expr,
        hold=rule.for_,
        keep_firing_for=rule.keep_firing_for,
        keep_firing_while=recovery,
        labels={k: templates[("labels", k)] for k in labels},
        annotations={k: templates[("annotations", k)] for k in rule.annotations},
    )
