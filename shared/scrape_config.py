"""`scrape_configs` in tripwire.yml: Prometheus' scrape_config and relabel_config, validated at load.

The models accept what prometheus.yml accepts for static targets (the keys people copy from it) and refuse the
rest by name. Differences, each deliberate:
- Secrets come only from files (`authorization.credentials_file`, `bearer_token_file`,
  `basic_auth.password_file`); a literal `credentials`, `bearer_token` or `password` is refused, as every
  secret in tripwire.yml is. Files are read at every scrape (so rotation works), relative to the config file.
- A job's `scrape_interval` defaults to `global.scrape_interval`, which is 15s in tripwire (Prometheus: 1m).
- Static targets of a job without `relabel_configs` must be `host:port` (Prometheus also takes a bare host,
  and appends no port since 3.0); with relabeling, a target is checked once relabeled, as in Prometheus.
- Label names follow the legacy rules (`[a-zA-Z_][a-zA-Z0-9_]*`), as every name on tripwire's streams does.
- A job without `scrape_protocols` asks for the text format first, OpenMetrics after it (see
  DEFAULT_SCRAPE_PROTOCOLS); `PrometheusProto` is refused, as tripwire cannot read it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.durations import Duration, format_duration
from shared.events import LABEL_NAME_RE
from shared.matchers import compile_go

# Tripwire's defaults when a job (or a model built in code) names no interval/timeout and no global applies.
DEFAULT_SCRAPE_INTERVAL = 15.0
DEFAULT_SCRAPE_TIMEOUT = 10.0

RelabelAction = Literal[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
]
_ACTIONS: tuple[str, ...] = get_args(RelabelAction)
# Actions whose result is written to `target_label`.
_NEEDS_TARGET = {"replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"}
# Prometheus' check for a `target_label` (replace) or a labelmap `replacement` that uses $1 / ${name}.
_TEMPLATED_LABEL = re.compile(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$", re.ASCII)
# Go (1.22+) also spells a named group `(?<name>...)`; Python only knows `(?P<name>...)`.
_GO_NAMED_GROUP = re.compile(r"(?<!\\)\(\?<(?=[A-Za-z_])")
_TARGET = re.compile(r"(?:\[[0-9A-Fa-f:.%a-zA-Z]+\]|[^\s/:\[\]@?#]+):(\d{1,5})")
_BYTES = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?")
_BYTE_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}

DEFAULT_REGEX = "(.*)"
DEFAULT_SEPARATOR = ";"
DEFAULT_REPLACEMENT = "$1"

ScrapeProtocol = Literal[
    "PrometheusText0.0.4", "PrometheusText1.0.0", "OpenMetricsText0.0.1", "OpenMetricsText1.0.0"
]
# What a job asks targets for when it names no scrape_protocols. Prometheus 3 asks for OpenMetrics first;
# tripwire asks for the text format first, because prometheus-client's OpenMetrics parser enforces rules
# Prometheus' does not (a histogram's _count equal to its +Inf bucket, counters never negative, families not
# interleaved...), and a target that breaks one for a moment, as a histogram read while it is observed
# does, would report up 0 and lose its samples. The text parser is as lenient as Prometheus'.
DEFAULT_SCRAPE_PROTOCOLS: tuple[ScrapeProtocol, ...] = (
    "PrometheusText1.0.0",
    "PrometheusText0.0.4",
    "OpenMetricsText1.0.0",
    "OpenMetricsText0.0.1",
)


def _known_protocols(value: Any) -> Any:
    """Refuse the protocol Prometheus knows but tripwire cannot read by name, and repeats, as Prometheus."""
    if isinstance(value, list):
        if "PrometheusProto" in value:
            raise ValueError(
                "PrometheusProto is not supported: tripwire reads the text and OpenMetrics formats "
                f"({', '.join(get_args(ScrapeProtocol))})"
            )
        repeated = sorted({p for p in value if isinstance(p, str) and value.count(p) > 1})
        if repeated:
            raise ValueError(f"duplicated protocol in scrape_protocols: {', '.join(repeated)}")
    return value


def _scalar_text(value: Any) -> Any:
    """YAML reads `regex: true` or `replacement: 8080` as a bool or a number; Prometheus (Go's YAML into a
    string field) takes the text. So do we, for the string fields people write such values in."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_scalar_text)]


def _label_name(value: str) -> str:
    if not LABEL_NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "label_name",
            "{name} is not a valid label name: must match [a-zA-Z_][a-zA-Z0-9_]*",
            {"name": repr(value)},
        )
    return value


LabelName = Annotated[str, AfterValidator(_label_name)]


def compile_regex(pattern: str) -> re.Pattern[str]:
    """A relabel regex (RE2 syntax) compiled as Prometheus compiles it: `^(?s:pattern)$`. Callers use
    `fullmatch`, which is the anchoring; `(?s)` lets `.` match newlines. Raises re.error."""
    return compile_go(_GO_NAMED_GROUP.sub("(?P<", pattern), dotall=True)


def _target(value: str) -> str:
    if not _TARGET.fullmatch(value) or not 0 < int(value.rpartition(":")[2]) <= 65535:
        raise PydanticCustomError(
            "scrape_target",
            "target {target} must be host:port (e.g. localhost:9100 or [::1]:9100), without a scheme or a "
            "path: set scheme and metrics_path on the job instead",
            {"target": repr(value)},
        )
    return value


def _byte_size(value: Any) -> int:
    """`body_size_limit` as Prometheus writes it (`10MB`, base 2), or a plain number of bytes."""
    if isinstance(value, bool):
        raise PydanticCustomError("byte_size", "expected a size such as 10MB")
    if isinstance(value, int):
        if value < 0:
            raise PydanticCustomError("byte_size", "size must not be negative")
        return value
    if isinstance(value, str) and (m := _BYTES.fullmatch(value.strip())):
        unit = (m.group(2) or "B").replace("i", "")
        return int(m.group(1)) * _BYTE_UNITS[unit]
    raise PydanticCustomError("byte_size", "expected a size such as 10MB, 512KiB or a number of bytes")


ByteSize = Annotated[int, BeforeValidator(_byte_size)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _refuse_literal(value: object, key: str, instead: str) -> None:
    if value is not None:
        raise ValueError(
            f"{key} must not be written in a config file: secrets are read only from files, use {instead}"
        )


class RelabelConfig(_Model):
    """One relabel_config step (Prometheus semantics; applied by services.collector.relabel)."""

    source_labels: list[LabelName] | None = None
    separator: Text = DEFAULT_SEPARATOR
    regex: Text = DEFAULT_REGEX
    modulus: int = Field(default=0, ge=0)
    target_label: Text = ""
    replacement: Text = DEFAULT_REPLACEMENT
    action: RelabelAction = "replace"

    _pattern: re.Pattern[str] = PrivateAttr()

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lower() not in _ACTIONS:
                raise PydanticCustomError(
                    "relabel_action",
                    "unknown relabel action {action} (one of: {known})",
                    {"action": repr(value), "known": ", ".join(_ACTIONS)},
                )
            return value.lower()  # Prometheus accepts any case
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            compile_regex(value)
        except re.error as exc:
            raise PydanticCustomError(
                "relabel_regex", "invalid regex {regex}: {error}", {"regex": repr(value), "error": str(exc)}
            ) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RelabelConfig:
        # The checks and wording of Prometheus' relabel.Config.Validate.
        action, target = self.action, self.target_label
        if action == "hashmod" and self.modulus == 0:
            raise ValueError("relabel configuration for hashmod requires non-zero modulus")
        if action in _NEEDS_TARGET and not target:
            raise ValueError(f"relabel configuration for {action} action requires 'target_label' value")
        if action == "replace" and not (
            _TEMPLATED_LABEL.fullmatch(target) if "$" in target else LABEL_NAME_RE.fullmatch(target)
        ):
            raise ValueError(f"{target!r} is invalid 'target_label' for {action} action")
        if action in _NEEDS_TARGET - {"replace"} and not LABEL_NAME_RE.fullmatch(target):
            raise ValueError(f"{target!r} is invalid 'target_label' for {action} action")
        if action in {"lowercase", "uppercase", "keepequal", "dropequal"} and self.replacement != "$1":
            raise ValueError(f"'replacement' can not be set for {action} action")
        if action == "labelmap" and not _TEMPLATED_LABEL.fullmatch(self.replacement):
            raise ValueError(f"{self.replacement!r} is invalid 'replacement' for {action} action")
        if action in {"keepequal", "dropequal"} and (
            self.regex != DEFAULT_REGEX or self.modulus or self.separator != DEFAULT_SEPARATOR
        ):
            raise ValueError(
                f"{action} action requires only 'source_labels' and 'target_label', and no other fields"
            )
        if action in {"labeldrop", "labelkeep"} and (
            self.source_labels is not None
            or target
            or self.modulus
            or self.separator != DEFAULT_SEPARATOR
            or self.replacement != DEFAULT_REPLACEMENT
        ):
            raise ValueError(f"{action} action requires only 'regex', and no other fields")
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._pattern = compile_regex(self.regex)

    @property
    def pattern(self) -> re.Pattern[str]:
        """The compiled regex; use `fullmatch` (Prometheus anchors every relabel regex)."""
        return self._pattern


class StaticConfig(_Model):
    # Checked as host:port by the job unless it relabels (see ScrapeConfig._consistent).
    targets: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    labels: dict[LabelName, Text] = Field(default_factory=dict)


class Authorization(_Model):
    type: str = "Bearer"
    credentials_file: Path | None = None
    # Declared only to refuse it with a useful message instead of "unknown field".
    credentials: Any = Field(default=None, exclude=True)

    @field_validator("credentials")
    @classmethod
    def _no_literal(cls, value: Any) -> Any:
        _refuse_literal(value, "authorization.credentials", "authorization.credentials_file")
        return value

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value.lower() == "basic":
            raise ValueError('authorization type cannot be set to "basic", use "basic_auth" instead')
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"authorization type {value!r} must be one word, e.g. Bearer")
        return value


class BasicAuth(_Model):
    username: Text
    password_file: Path | None = None
    password: Any = Field(default=None, exclude=True)

    @field_validator("password")
    @classmethod
    def _no_literal(cls, value: Any) -> Any:
        _refuse_literal(value, "basic_auth.password", "basic_auth.password_file")
        return value


class TLSConfig(_Model):
    insecure_skip_verify: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TLSConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "tls_config needs both cert_file and key_file for a client certificate, or neither"
            )
        return self


class ScrapeConfig(_Model):
    """One scrape job. After `Config` validation, scrape_interval and scrape_timeout are always set."""

    job_name: Annotated[Text, Field(min_length=1)]
    scrape_interval: Duration | None = None
    scrape_timeout: Duration | None = None
    metrics_path: str = "/metrics"
    scheme: Literal["http", "https"] = "http"
    params: dict[str, list[str]] = Field(default_factory=dict)
    honor_labels: bool = False
    honor_timestamps: bool = True
    static_configs: list[StaticConfig] = Field(default_factory=list)
    relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    sample_limit: int = Field(
        default=0,
        ge=0,
        description="samples per scrape after metric relabeling; more fails the scrape (up 0). "
        "0: collector.max_items, the most one stream batch carries",
    )
    body_size_limit: ByteSize = Field(default=0, description="uncompressed response bytes; 0: no limit")
    label_limit: int = Field(
        default=0, ge=0, description="labels of a sample, __name__ included; more fails the scrape. 0: none"
    )
    label_name_length_limit: int = Field(
        default=0, ge=0, description="bytes of a label name; longer fails the scrape. 0: no limit"
    )
    label_value_length_limit: int = Field(
        default=0, ge=0, description="bytes of a label value; longer fails the scrape. 0: no limit"
    )
    scrape_protocols: Annotated[list[ScrapeProtocol], BeforeValidator(_known_protocols)] = Field(
        default_factory=list,
        description="formats to ask targets for, most preferred first; empty: DEFAULT_SCRAPE_PROTOCOLS",
    )
    enable_compression: bool = Field(default=True, description="ask targets for a gzip-compressed body")
    fallback_scrape_protocol: ScrapeProtocol | None = Field(
        default=None, description="how to parse a response with a missing or unknown Content-Type"
    )
    authorization: Authorization | None = None
    bearer_token_file: Path | None = None
    basic_auth: BasicAuth | None = None
    tls_config: TLSConfig | None = None
    bearer_token: Any = Field(default=None, exclude=True)

    @field_validator("bearer_token")
    @classmethod
    def _no_literal(cls, value: Any) -> Any:
        _refuse_literal(value, "bearer_token", "bearer_token_file (or authorization.credentials_file)")
        return value

    @field_validator("scrape_interval", "scrape_timeout")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("metrics_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"metrics_path {value!r} must start with /")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ScrapeConfig:
        if self.authorization is not None and self.bearer_token_file is not None:
            raise ValueError("at most one of bearer_token_file and authorization may be configured")
        if self.basic_auth is not None and (self.authorization is not None or self.bearer_token_file):
            raise ValueError(
                "at most one of basic_auth, authorization and bearer_token_file may be configured"
            )
        if not self.relabel_configs:
            # Without relabeling a target is the address itself: refuse a typo (a scheme, a path, no port)
            # at load, with its file:line. With relabeling it may be anything the rules turn into an
            # address (the blackbox exporter's `__param_target`), which is checked afterwards, as
            # Prometheus does.
            errors = []
            for i, static in enumerate(self.static_configs):
                for j, target in enumerate(static.targets):
                    try:
                        _target(target)
                    except PydanticCustomError as exc:
                        errors.append(_error(("static_configs", i, "targets", j), str(exc), target))
            if errors:
                raise ValidationError.from_exception_data("ScrapeConfig", errors)
        if self.scrape_interval is not None and self.scrape_timeout is not None:
            try:
                _check_timeout(self.job_name, self.scrape_timeout, self.scrape_interval)
            except ValueError as exc:
                # Raised as a ValidationError so the error points at the scrape_timeout key's line.
                raise ValidationError.from_exception_data(
                    "ScrapeConfig", [_error(("scrape_timeout",), str(exc), self.scrape_timeout)]
                ) from None
        return self

    @property
    def interval(self) -> float:
        """Seconds between scrapes (tripwire's default when built in code without a global section)."""
        return self.scrape_interval if self.scrape_interval is not None else DEFAULT_SCRAPE_INTERVAL

    @property
    def timeout(self) -> float:
        if self.scrape_timeout is not None:
            return self.scrape_timeout
        return min(DEFAULT_SCRAPE_TIMEOUT, self.interval)

    def with_defaults(self, global_interval: float, global_timeout: float) -> ScrapeConfig:
        """The job with interval and timeout filled in as Prometheus does: the job's own, else the global
        ones; an inherited timeout longer than the job's interval is cut to the interval."""
        interval = self.scrape_interval if self.scrape_interval is not None else global_interval
        timeout = self.scrape_timeout if self.scrape_timeout is not None else min(global_timeout, interval)
        return self.model_copy(update={"scrape_interval": interval, "scrape_timeout": timeout})


def check_global_timeout(timeout: float, interval: float) -> None:
    """Refuse a global scrape_timeout longer than the global scrape_interval, at the timeout's key."""
    if timeout > interval:
        message = (
            f"global scrape_timeout {format_duration(timeout)} is greater than global scrape_interval "
            f"{format_duration(interval)}"
        )
        raise ValidationError.from_exception_data(
            "GlobalConfig", [_error(("scrape_timeout",), message, timeout)]
        )


def _check_timeout(job: str, timeout: float, interval: float) -> None:
    if timeout > interval:
        raise ValueError(
            f"scrape_timeout {format_duration(timeout)} is greater than scrape_interval "
            f"{format_duration(interval)} for job {job!r}: a scrape must end before the next one is due"
        )


def resolve_scrape_configs(jobs: list[ScrapeConfig], info: ValidationInfo) -> list[ScrapeConfig]:
    """Validate the list as a whole (unique job names) and fill each job's interval and timeout from
    `global`. Errors point at the offending job's key, so the message carries its file:line."""
    global_config = info.data.get("global_")
    global_interval = getattr(global_config, "scrape_interval", DEFAULT_SCRAPE_INTERVAL)
    global_timeout = getattr(global_config, "scrape_timeout", DEFAULT_SCRAPE_TIMEOUT)
    errors: list[InitErrorDetails] = []
    seen: dict[str, int] = {}
    resolved: list[ScrapeConfig] = []
    for index, job in enumerate(jobs):
        if job.job_name in seen:
            errors.append(
                _error(
                    (index, "job_name"),
                    f"found multiple scrape configs with job name {job.job_name!r} "
                    f"(first at scrape_configs[{seen[job.job_name]}]); job names must be unique",
                    job.job_name,
                )
            )
        seen.setdefault(job.job_name, index)
        filled = job.with_defaults(global_interval, global_timeout)
        try:
            _check_timeout(filled.job_name, filled.timeout, filled.interval)
        except ValueError as exc:
            errors.append(_error((index, "scrape_timeout"), str(exc), filled.scrape_timeout))
        resolved.append(filled)
    if errors:
        # A ValidationError raised here is merged into the caller's, with each loc under `scrape_configs`.
        raise ValidationError.from_exception_data("scrape_configs", errors)
    return resolved


def _error(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("scrape_config", "{message}", {"message": message}), loc=loc, input=value
    )


# The type of `Config.scrape_configs`: the jobs, checked together and with the global defaults applied.
ScrapeConfigs = Annotated[list[ScrapeConfig], AfterValidator(resolve_scrape_configs)]
