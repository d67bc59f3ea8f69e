"""tripwire.yml: the system's configuration, modelled on prometheus.yml.

Precedence, highest first: `TRIPWIRE_*` environment variables, the YAML file, the defaults below.
Environment names: `TRIPWIRE_<SECTION>_<KEY>` for a key inside a section (`TRIPWIRE_REDIS_URL`,
`TRIPWIRE_GLOBAL_EVALUATION_INTERVAL`, `TRIPWIRE_COLLECTOR_LISTEN`) and `TRIPWIRE_<KEY>` for a top-level key
(`TRIPWIRE_RULE_FILES`, `TRIPWIRE_INGEST_TOKEN`). An unknown `TRIPWIRE_*` variable is reported, since it is
almost always a typo; an empty one counts as unset.

Secrets (the ingest and admin tokens, the Redis password) come only from the environment or from files named
by `*_file` keys; a secret written as a literal in the YAML file is refused.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.durations import FROM_FILE, Duration
from shared.events import LABEL_NAME_RE, METRIC_NAME_RE
from shared.matchers import compile_go
from shared.scrape_config import ScrapeConfigs, check_global_timeout
from shared.yamlfile import ConfigError, ConfigErrors, Document, describe_error, load_yaml

log = logging.getLogger(__name__)

ENV_PREFIX = "TRIPWIRE_"
# Variables that are read elsewhere, not config keys.
# TRIPWIRE_SUPERVISOR_PID: set by `tripwire up` for its children (services/cli.py), not a setting.
_ENV_NOT_CONFIG = {"TRIPWIRE_CONFIG", "TRIPWIRE_SUPERVISOR_PID"}
# slack_signing_secret: Slack signs its interactive requests (the kill switch's "Re-enable flag" button).
_SECRET_KEYS = {"ingest_token", "admin_token", "slack_signing_secret"}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _listen(value: object) -> str:
    if not isinstance(value, str):  # `listen: 9400` is an int to YAML: say what to write, not "a string"
        raise ValueError(f"listen address {value!r} must be a host:port string (e.g. 0.0.0.0:9400)")
    _host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {value!r} must be host:port (e.g. 0.0.0.0:9400)")
    return value


ListenAddress = Annotated[str, BeforeValidator(_listen)]


class GlobalConfig(Section):
    evaluation_interval: Duration = 15.0
    scrape_interval: Duration = 15.0
    scrape_timeout: Duration = 10.0
    external_labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> GlobalConfig:
        # As Prometheus: a written timeout longer than the interval is an error; the default one is cut
        # to the interval, and jobs inherit it so (a job at 1m under a global 5s interval times out at 5s).
        if "scrape_timeout" in self.model_fields_set:
            check_global_timeout(self.scrape_timeout, self.scrape_interval)
        else:
            _derive(self, "scrape_timeout", min(self.scrape_timeout, self.scrape_interval))
        return self


class RedisConfig(Section):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field(default="tripwire", pattern=r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)*$")
    password_file: Path | None = None
    connect_timeout: Duration = 2.0
    socket_timeout: Duration = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"redis url must start with redis://, rediss:// or unix://, got {value!r}")
        return value


class StreamsConfig(Section):
    """How every service reads and trims streams."""

    maxlen: int = Field(default=1_000_000, ge=1000, description="approximate MAXLEN cap per stream")
    read_count: int = Field(default=100, ge=1, le=10_000, description="entries per XREADGROUP")
    claim_idle: Duration = Field(default=60.0, description="idle time before another consumer re-claims")
    reclaim_interval: Duration = 10.0
    max_deliveries: int = Field(default=5, ge=1, description="deliveries before an entry goes to the DLQ")
    consumer_name: str = Field(default_factory=socket.gethostname, min_length=1)


class HttpConfig(Section):
    """Every service's HTTP server (shared/connection_limit.py)."""

    idle_timeout: Duration = Field(
        default=75.0,
        gt=0,
        description="a connection is closed when it has not sent a whole request's headers this long after "
        "it opened or was last answered: idle keep-alive connections and slow headers alike",
    )
    body_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="longest a request body may take to arrive on the evaluator's and notifier's endpoints "
        "(past it, 408); the collector's ingest has collector.body_timeout",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="connections open at once; past it, a new one is answered 503 with Retry-After and "
        "closed. Default: half the open-file limit (raised to its hard limit at start), at most 10,000",
    )


class CollectorConfig(Section):
    listen: ListenAddress = "0.0.0.0:9400"
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    body_timeout: Duration = Field(
        default=30.0, description="longest a request body may take to arrive (a slow one holds a connection)"
    )
    max_items: int = Field(default=10_000, ge=1)
    retry_after: Duration = Field(default=1.0, description="Retry-After sent with 503 when Redis is down")
    max_age: Duration = Field(default=3600.0, description="oldest sample timestamp accepted, before now")
    max_skew: Duration = Field(default=600.0, description="newest sample timestamp accepted, after now")
    max_in_flight: int = Field(
        default=64, ge=1, description="appends waiting on Redis at once; past that, ingest answers 503"
    )
    validation_threads: int = Field(
        default=2,
        ge=1,
        le=64,
        description="threads that validate big JSON bodies item by item and decode and map OTLP requests",
    )
    validation_wait: Duration = Field(
        default=5.0,
        gt=0,
        description="longest a request waits for a validation thread; past that, ingest answers 503 (busy)",
    )
    max_labels: int = Field(default=64, ge=1, description="labels per sample or log event")
    # At most the stream schema's own limits (shared/events.py), which the evaluator checks again: these can
    # only tighten them, never promise more than the evaluator will take.
    max_label_name_length: int = Field(default=200, ge=1, le=200)
    max_label_value_length: int = Field(default=4096, ge=1, le=4096)
    max_name_length: int = Field(default=200, ge=1, le=200, description="metric names and log service names")
    rate_limit: float = Field(
        default=0.0, ge=0, description="requests per second per ingest token (or client address); 0: off"
    )
    rate_limit_burst: int = Field(default=100, ge=1)
    otlp_max_samples: int = Field(
        default=200_000,
        ge=1,
        description="samples one OTLP metrics request may map to (a histogram point is one per bucket plus "
        "_sum and _count), stored in entries of at most max_items; max_items counts its data points, as "
        "OTLP exporters batch them (default: 200,000, or max_items if that is more)",
    )
    otlp_max_stored_bytes: int = Field(
        default=128 * 1024 * 1024,
        ge=1024,
        description="bytes one OTLP request may be stored as (estimated before encoding): a point's "
        "attributes are sent once but stored on each of its items (every histogram bucket), so a small body "
        "can stand for far more; past this the request gets 413. A full batch of SDK histograms "
        "(10,000 points, 16 buckets, 10 short attributes) is about 80 MB",
    )
    otlp_metric_suffixes: bool = Field(
        default=True,
        description="OTLP metric names get their unit and type suffixes (http_server_duration_seconds, "
        "as Prometheus' OTLP receiver names them); false: names as sent, sanitised, counters with _total",
    )
    request_id_ttl: Duration = Field(
        default=3600.0,
        ge=1.0,
        description="how long a request's X-Request-Id is remembered, so that a retry is stored once: one "
        "small Redis key per id for this long",
    )
    max_buffered_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="bytes of request data held at once: a body counted as it arrives, then the items it is "
        "stored as and their envelope (about twice the body), until stored or refused; past that, ingest "
        "answers 503 (default: 256 MiB, or 3 x max_body_bytes if that is more)",
    )

    @model_validator(mode="after")
    def _a_full_batch_maps(self) -> CollectorConfig:
        if "otlp_max_samples" not in self.model_fields_set:
            # A config that allowed more items per request before this setting keeps taking them by OTLP.
            _derive(self, "otlp_max_samples", max(self.otlp_max_samples, self.max_items))
        return self

    @model_validator(mode="after")
    def _a_whole_body_fits(self) -> CollectorConfig:
        if "max_buffered_bytes" not in self.model_fields_set:
            # A config written before this setting, with bodies allowed past its default, keeps working: a
            # JSON body is held at twice its size (its items and their envelope), so room for one with some
            # to spare. (One bigger than the budget is still taken, alone.)
            _derive(self, "max_buffered_bytes", max(self.max_buffered_bytes, 3 * self.max_body_bytes))
        elif self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_buffered_bytes ({self.max_buffered_bytes}) must be at least max_body_bytes "
                f"({self.max_body_bytes}), or no body of the largest size could ever be taken"
            )
        if "otlp_max_stored_bytes" not in self.model_fields_set:
            # What one OTLP request holds (its items and their envelope, twice this) stays within the budget.
            _derive(
                self,
                "otlp_max_stored_bytes",
                max(1024, min(self.otlp_max_stored_bytes, self.max_buffered_bytes // 2)),
            )
        return self


def _derive(model: BaseModel, name: str, value: object) -> None:
    """Set a default that follows from other fields without counting it as set by the user (plain assignment
    would add it to `model_fields_set`): a dump of what was set, validated again, derives it again."""
    model.__dict__[name] = value


class EvaluatorConfig(Section):
    listen: ListenAddress = "0.0.0.0:9401"
    external_url: str = "http://localhost:9401"
    lease_ttl: Duration = Field(
        default=10.0, description="evaluator lease: a standby takes over this long after the active one dies"
    )
    lookback: Duration = 300.0
    resend_delay: Duration = 60.0
    for_outage_tolerance: Duration = Field(
        default=3600.0, description="after a longer outage, pending/firing state is not restored"
    )
    for_grace_period: Duration = Field(
        default=600.0, description="a restored pending alert with a long `for` fires no sooner than this"
    )
    catch_up_timeout: Duration = Field(
        default=300.0, description="longest wait at start for the stream backlog before evaluating anyway"
    )
    # Limits that keep one noisy producer from exhausting the evaluator's memory (0 = no limit). What
    # is refused is counted in tripwire_evaluator_samples_dropped{reason=...} and logged.
    max_series: int = Field(default=1_000_000, ge=0, description="series in total; new ones are dropped")
    max_series_per_metric: int = Field(
        default=100_000, ge=0, description="series per metric name; new ones beyond are dropped"
    )
    max_samples_per_series: int = Field(
        default=50_000, ge=0, description="samples one series may hold in the window; newer ones are dropped"
    )


class LogMetricConfig(Section):
    """A counter derived from log events: each event that matches adds 1 to `name{labels}`."""

    name: str
    match: dict[str, str] = Field(
        default_factory=dict, description="equality on service, level, message or a label of the event"
    )
    message_regex: str | None = Field(default=None, description="RE2 syntax, searched for in the message")
    labels: list[str] = Field(
        default_factory=list,
        description="event fields, event labels or named regex groups that become the counter's labels",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not METRIC_NAME_RE.fullmatch(value):
            raise ValueError(f"invalid metric name {value!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")
        if value == "log_events_total":
            raise ValueError("log_events_total is the built-in count of every log event; choose another name")
        return value

    @field_validator("message_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_go(value)
            except re.error as exc:
                raise ValueError(f"invalid message_regex {value!r}: {exc}") from None
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for name in value:
            if not LABEL_NAME_RE.fullmatch(name) or name.startswith("__"):
                raise ValueError(f"invalid label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*, not __*")
        if len(set(value)) != len(value):
            raise ValueError("labels are listed more than once")
        return value


class NotifierConfig(Section):
    listen: ListenAddress = "0.0.0.0:9402"
    external_url: str = "http://localhost:9402"
    startup_wait: Duration = Field(
        default=30.0,
        description="at start, send nothing until the alerts backlog is read (inhibiting alerts known), "
        "at most this long",
    )
    claim_lease: Duration = Field(
        default=15.0,
        gt=0,
        description="a group being flushed is reserved for one replica this long (renewed while it runs); "
        "a crashed replica's in-flight groups are taken over after it",
    )
    silence_url: str | None = Field(
        default=None,
        description="where a message's silence link points, prefilled with the group's matchers; default "
        "external_url + '/#/silences/new' (the Alertmanager UI's page, which works against our API)",
    )


class AlertingConfig(Section):
    config_file: Path | None = None


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Config(Section):
    """The whole of tripwire.yml after env overrides, with secrets resolved and paths made absolute."""

    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    redis: RedisConfig = Field(default_factory=RedisConfig)
    streams: StreamsConfig = Field(default_factory=StreamsConfig)
    rule_files: list[str] = Field(default_factory=list)
    scrape_configs: ScrapeConfigs = Field(default_factory=list)
    log_metrics: list[LogMetricConfig] = Field(default_factory=list)
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    notifier: NotifierConfig = Field(default_factory=NotifierConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    ingest_token_file: Path | None = None
    # One line per client: `<name> <token>` (blank lines and # comments allowed). Each client gets its own
    # ingest rate-limit budget, and its name (never its token) in logs.
    ingest_tokens_file: Path | None = None
    admin_token_file: Path | None = None
    slack_signing_secret_file: Path | None = None
    # Only from the environment (a literal in YAML is refused before validation).
    ingest_token: SecretStr | None = None
    ingest_tokens: dict[str, SecretStr] = Field(default_factory=dict, exclude=True)  # from ingest_tokens_file
    admin_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None

    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    source: str = Field(default="<defaults>", exclude=True)

    @field_validator("log_metrics")
    @classmethod
    def _unique_log_metrics(cls, value: list[LogMetricConfig]) -> list[LogMetricConfig]:
        names = [m.name for m in value]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"log_metrics define {', '.join(dupes)} more than once")
        return value

    def redis_password(self) -> str | None:
        """The Redis password from TRIPWIRE_REDIS_PASSWORD or redis.password_file, if any."""
        if env := os.environ.get("TRIPWIRE_REDIS_PASSWORD"):
            return env
        if self.redis.password_file:
            return read_secret_file(self.redis.password_file, "redis.password_file")
        return None

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, relative to the config file's directory."""
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p


def read_secret_file(path: Path, key: str) -> str:
    """A secret from a file (trailing newline stripped); a missing or empty file is a ConfigError."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{key}: {path} is empty")
    if "\n" in value or "\r" in value:
        # A secret goes into a header or a URL: a line break there is refused by the client, or worse.
        raise ConfigError(f"{key}: {path} holds more than one line")
    return value


def _env_value(raw: str, annotation: Any) -> Any:
    """An environment string as the field wants it: lists and maps as JSON (lists also comma-separated)."""
    text = raw.strip()
    origin = getattr(annotation, "__origin__", None)
    if text.startswith(("[", "{")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            if origin is list:  # said plainly: pydantic would only say "should be a valid list"
                raise ValueError(
                    f"not valid JSON ({exc}); write a JSON list or comma-separated values"
                ) from None
            if origin is dict:
                raise ValueError(f"not valid JSON ({exc}); write a JSON object") from None
            return raw
    if origin is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return raw


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str], list[ConfigError]]:
    """Config overrides from TRIPWIRE_* variables, the names of variables that match no key, and the values
    that cannot be read."""
    overrides: dict[str, Any] = {}
    unknown: list[str] = []
    errors: list[ConfigError] = []
    sections = {
        (field.alias or name): field.annotation
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    top_level = {
        name: field.annotation
        for name, field in Config.model_fields.items()
        if (field.alias or name) not in sections and not field.exclude
    }
    for env_name, raw in sorted(environ.items()):
        if not env_name.startswith(ENV_PREFIX) or env_name in _ENV_NOT_CONFIG:
            continue
        if raw == "":
            continue  # an empty variable counts as unset (compose's ${VAR:-} passes empty strings)
        key = env_name.removeprefix(ENV_PREFIX).lower()
        if key == "redis_password":
            continue  # read lazily by Config.redis_password, never stored in the model
        try:
            if key in top_level:
                overrides[key] = _env_value(raw, top_level[key])
                continue
            for section, model in sections.items():
                field_name = key.removeprefix(section + "_")
                if key.startswith(section + "_") and field_name in model.model_fields:
                    annotation = model.model_fields[field_name].annotation
                    overrides.setdefault(section, {})[field_name] = _env_value(raw, annotation)
                    break
            else:
                unknown.append(env_name)
        except ValueError as exc:
            errors.append(ConfigError(f"{env_name}: {exc}"))
    return overrides, unknown, errors


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _refuse_literal_secrets(doc: Document) -> list[ConfigError]:
    data = doc.data if isinstance(doc.data, dict) else {}
    errors = [
        doc.error(
            (key,),
            f"{key} must not be written in a config file: set {ENV_PREFIX}{key.upper()} or {key}_file",
        )
        for key in (*_SECRET_KEYS, "ingest_tokens")
        if key in data
    ]
    redis = data.get("redis")
    if isinstance(redis, dict):
        if "password" in redis:
            errors.append(
                doc.error(
                    ("redis", "password"),
                    "redis.password must not be written in a config file: "
                    "set TRIPWIRE_REDIS_PASSWORD or redis.password_file",
                )
            )
        url = redis.get("url")
        if isinstance(url, str) and urlsplit(url).password:
            errors.append(
                doc.error(
                    ("redis", "url"),
                    "redis.url must not carry a password in a config file: "
                    "set TRIPWIRE_REDIS_PASSWORD or redis.password_file",
                )
            )
    return errors


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None, *, read_secrets: bool = True
) -> Config:
    """Load tripwire.yml (or defaults when `path` is None), apply TRIPWIRE_* overrides, resolve secrets.

    Raises ConfigErrors listing every problem, each with file:line where it came from the file. With
    `read_secrets=False` the secret files it names are not read (`tripwire config check --syntax-only`).
    """
    environ = os.environ if environ is None else environ
    if path is None:
        doc = Document(data={}, file="<defaults>")
        base_dir = Path.cwd()
    else:
        doc = load_yaml(path)
        base_dir = Path(path).resolve().parent
        if doc.data is None:
            doc.data = {}
        if not isinstance(doc.data, dict):
            raise ConfigErrors([doc.error((), "config file must be a YAML mapping")])
    overrides, unknown, errors = _env_overrides(environ)
    errors[:0] = _refuse_literal_secrets(doc)
    for name in unknown:
        log.warning("ignoring unknown environment variable %s (no such config key)", name)
    merged = _merge(doc.data, overrides)
    try:
        config = Config.model_validate(
            {**merged, "base_dir": base_dir, "source": doc.file}, context=FROM_FILE
        )
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            env_name = _env_name_for(loc, overrides)
            if env_name:
                errors.append(ConfigError(f"{env_name}: {describe_error(err, Config)}"))
            else:
                errors.append(doc.error(loc, describe_error(err, Config)))
        raise ConfigErrors(errors) from None
    if errors:
        raise ConfigErrors(errors)
    _resolve_paths_and_secrets(config, read_secrets)
    return config


def _env_name_for(loc: tuple[Any, ...], overrides: dict[str, Any]) -> str | None:
    """The environment variable a failing value came from, if it came from one."""
    node: Any = overrides
    for depth, part in enumerate(loc):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
        if not isinstance(node, dict):
            return ENV_PREFIX + "_".join(str(p) for p in loc[: depth + 1]).upper()
    return None


def _resolve_paths_and_secrets(config: Config, read_secrets: bool = True) -> None:
    if config.alerting.config_file is not None:
        config.alerting.config_file = config.resolve(config.alerting.config_file)
    if config.redis.password_file is not None:
        config.redis.password_file = config.resolve(config.redis.password_file)
    for key in _SECRET_KEYS:
        file_key = f"{key}_file"
        file_path: Path | None = getattr(config, file_key)
        if file_path is not None:
            file_path = config.resolve(file_path)
            setattr(config, file_key, file_path)
            if read_secrets and getattr(config, key) is None:
                setattr(config, key, SecretStr(read_secret_file(file_path, file_key)))
    if config.ingest_tokens_file is not None:
        config.ingest_tokens_file = config.resolve(config.ingest_tokens_file)
        if read_secrets:
            config.ingest_tokens = read_token_file(config.ingest_tokens_file)


def read_token_file(path: Path) -> dict[str, SecretStr]:
    """`<name> <token>` per line; errors name the line, never the token."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"ingest_tokens_file: cannot read {path}: {exc}") from None
    tokens: dict[str, SecretStr] = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, _, token = text.partition(" ")
        token = token.strip()
        if not token or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", name):
            raise ConfigError(f"{path}:{number}: expected `<name> <token>` with a name of [A-Za-z0-9_.:-]")
        if name in tokens:
            raise ConfigError(f"{path}:{number}: client {name!r} is listed twice")
        tokens[name] = SecretStr(token)
    if not tokens:
        raise ConfigError(f"ingest_tokens_file: {path} lists no tokens")
    return tokens


def ingest_credentials(config: Config) -> dict[str, SecretStr]:
    """Every accepted ingest token by client name (`ingest_token` is the client "default")."""
    tokens = dict(config.ingest_tokens)
    if config.ingest_token is not None:
        tokens.setdefault("default", config.ingest_token)
    return tokens


def rule_file_matches(config: Config, pattern: str) -> list[Path]:
    """The files one `rule_files` glob names, relative to the config file, sorted."""
    p = Path(pattern)
    if p.is_absolute():
        return sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor))))
    return sorted(config.base_dir.glob(pattern))


def rule_file_paths(config: Config) -> list[Path]:
    """Rule files named by `rule_files` globs, relative to the config file, sorted and de-duplicated."""
    found: dict[Path, None] = {}
    for pattern in config.rule_files:
        for match in rule_file_matches(config, pattern):
            found.setdefault(match.resolve(), None)
    return list(found)
