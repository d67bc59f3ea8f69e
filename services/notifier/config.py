"""The routing file: Alertmanager's configuration format (alertmanager.yml).

The whole of a valid Alertmanager file loads, so `tripwire routes test` works on any of them: `global`
(`resolve_timeout`, `slack_api_url`, `pagerduty_url` used), `route` (every key), `inhibit_rules` (matchers
checked), `time_intervals`, `mute_time_intervals`, `templates`, and `receivers` of any integration. The
notifier delivers through `slack_configs`, `pagerduty_configs`, `webhook_configs` and tripwire's own
`console_configs`; it refuses to start, naming what is missing, when a routed receiver uses another
integration or writes a secret as a literal, so a config never half-applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from services.notifier.matchers import Matcher, MatcherError, parse_matcher
from services.notifier.secrets import is_env_reference
from services.notifier.templates import Template, TemplateError
from services.notifier.time_intervals import TimeInterval
from shared.durations import FROM_FILE, Duration
from shared.yamlfile import ConfigError, ConfigErrors, Document, load_yaml

_UNSUPPORTED_INTEGRATIONS = (
    "email_configs",
    "opsgenie_configs",
    "pushover_configs",
    "victorops_configs",
    "wechat_configs",
    "sns_configs",
    "telegram_configs",
    "webex_configs",
    "discord_configs",
    "msteams_configs",
    "msteamsv2_configs",
    "jira_configs",
    "rocketchat_configs",
    "incidentio_configs",
    "mattermost_configs",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WebhookConfig(Strict):
    url: str | None = None
    url_file: Path | None = None
    send_resolved: bool = True
    max_alerts: int = Field(default=0, ge=0)
    timeout: Duration = 10.0
    retry_deadline: Duration = Field(
        default=60.0, description="give up retrying 5xx/connection errors after this"
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            # Not the value itself: webhook URLs often carry their secret in the path.
            scheme = value.partition(":")[0] if ":" in value else "no scheme"
            raise ValueError(f"webhook url must be http:// or https:// (got {scheme[:10]!r})")
        return value


class ConsoleConfig(Strict):
    send_resolved: bool = True


class Delivery(Strict):
    """Tripwire's delivery knobs, shared by the Slack and PagerDuty integrations."""

    timeout: Duration = Field(default=10.0, description="one HTTP request")
    retry_deadline: Duration = Field(
        default=60.0, description="stop retrying 429/5xx/connection errors after this (then DLQ + next flush)"
    )


class SlackConfig(Delivery):
    """Alertmanager's slack_configs, two ways: an incoming webhook (`api_url` / `api_url_file`), or a bot
    token (`token` / `token_file`, Alertmanager's `app_token`) posting with chat.postMessage to `channel`,
    which can update the group's message when it resolves. Secrets: `*_file` or `${ENV}` references."""

    send_resolved: bool = False  # Alertmanager's default for Slack
    api_url: str | None = None
    api_url_file: Path | None = None
    token: str | None = Field(default=None, alias="app_token")
    token_file: Path | None = Field(default=None, alias="app_token_file")
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None
    icon_url: str | None = None
    title: str | None = Field(default=None, description="template: overrides the header")
    text: str | None = Field(default=None, description="template: overrides the alert listing")
    # Tripwire's: Slack allows about one message per second per channel, with short bursts.
    rate_limit: float = Field(default=1.0, gt=0, description="messages per second per channel or webhook")
    burst: int = Field(default=3, ge=1)
    max_alerts_listed: int = Field(default=10, ge=1, le=40)
    # Alertmanager's attachment-era fields: accepted so its files load, not used by the Block Kit message.
    color: str | None = None
    title_link: str | None = None
    pretext: str | None = None
    footer: str | None = None
    fallback: str | None = None
    callback_id: str | None = None
    image_url: str | None = None
    thumb_url: str | None = None
    link_names: bool | None = None
    short_fields: bool | None = None
    mrkdwn_in: list[str] | None = None
    fields: list[dict[str, Any]] | None = None
    actions: list[dict[str, Any]] | None = None
    http_config: dict[str, Any] | None = None
    message_text: str | None = None
    update_message: bool | None = None

    def uses_bot_token(self) -> bool:
        return self.token is not None or self.token_file is not None


DEFAULT_SEVERITY_MAP = {
    "critical": "critical",
    "page": "critical",
    "fatal": "critical",
    "high": "error",
    "error": "error",
    "major": "error",
    "warning": "warning",
    "warn": "warning",
    "minor": "warning",
    "info": "info",
    "low": "info",
    "none": "info",
}


class PagerdutyConfig(Delivery):
    """Alertmanager's pagerduty_configs for Events API v2 (`routing_key` / `routing_key_file`)."""

    send_resolved: bool = True
    routing_key: str | None = None
    routing_key_file: Path | None = None
    service_key: str | None = None  # Events API v1: accepted so Alertmanager files load, refused to deliver
    service_key_file: Path | None = None
    url: str = "https://events.pagerduty.com/v2/enqueue"
    client: str = "tripwire"
    client_url: str = Field(default="", description="template; default: the notifier's external URL")
    description: str | None = Field(default=None, description="template: the summary (≤ 1024 chars)")
    severity: str | None = Field(default=None, description="template; default: the severity label")
    severity_map: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))
    default_severity: str = "error"
    source: str | None = Field(default=None, description="template; default: the client")
    component: str = "{{ or .CommonLabels.component .CommonLabels.service }}"
    group: str = "{{ or .CommonLabels.group .CommonLabels.job }}"
    class_: str = Field(default="{{ .CommonLabels.alertname }}", alias="class")
    details: dict[str, str] = Field(default_factory=dict, description="templates, added to custom_details")
    links: list[dict[str, str]] = Field(default_factory=list)
    images: list[dict[str, str]] = Field(default_factory=list)
    http_config: dict[str, Any] | None = None

    @field_validator("severity_map")
    @classmethod
    def _pagerduty_severities(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted({v for v in value.values() if v not in PAGERDUTY_SEVERITIES})
        if bad:
            raise ValueError(f"severity_map values must be one of {PAGERDUTY_SEVERITIES}, not {bad}")
        return value

    @field_validator("default_severity")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in PAGERDUTY_SEVERITIES:
            raise ValueError(f"default_severity must be one of {PAGERDUTY_SEVERITIES}")
        return value


PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")


FLAG_PROVIDERS = ("builtin", "unleash", "launchdarkly", "flagsmith", "webhook")
_DEFAULT_FLAG_URLS = {
    "launchdarkly": "https://app.launchdarkly.com",
    "flagsmith": "https://api.flagsmith.com",
}


class FlagOffConfig(Strict):
    """tripwire's kill switch as a receiver integration: when a routed alert fires, turn `flag` off (never on)
    with `provider`, within guardrails. Every decision, taken or refused, is audited on tripwire:audit and
    told to the `notify` receivers."""

    provider: str
    flag: str = Field(min_length=1, description="template, e.g. '{{ .CommonLabels.flag }}'")
    environment: str | None = Field(default=None, description="template; the vendor's environment (key)")
    project: str | None = Field(default=None, description="template; LaunchDarkly/Unleash project")
    url: str | None = Field(default=None, description="the vendor's API base (webhook: the full URL)")
    token: str | None = None  # ${ENV} reference only
    token_file: Path | None = None
    signing_secret: str | None = None  # webhook provider: ${ENV} reference only
    signing_secret_file: Path | None = None
    # Guardrails.
    min_firing_for: Duration = Field(
        default=0.0, description="act only on an alert firing at least this long"
    )
    dry_run: bool = Field(default=False, description="decide, audit and notify, but do not flip")
    cooldown: Duration = Field(default=3600.0, description="after a flip of a flag, refuse to flip it again")
    max_flips: int = Field(
        default=3, ge=1, description="flips by this notifier per window, all flags together"
    )
    max_flips_window: Duration = Field(default=3600.0, gt=0)
    notify: list[str] = Field(default_factory=list, description="receivers told of every decision")
    timeout: Duration = 10.0
    retry_deadline: Duration = 60.0
    send_resolved: bool = Field(
        default=False, description="ignored: resolved alerts never turn a flag back on"
    )

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        if value not in FLAG_PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(FLAG_PROVIDERS)}")
        return value

    def base_url(self) -> str | None:
        return self.url or _DEFAULT_FLAG_URLS.get(self.provider)


class ReceiverConfig(BaseModel):
    # Integrations we do not deliver to are kept (extra="allow") so routing still works with them.
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    webhook_configs: list[WebhookConfig] = Field(default_factory=list)
    console_configs: list[ConsoleConfig] = Field(default_factory=list)
    slack_configs: list[SlackConfig] = Field(default_factory=list)
    pagerduty_configs: list[PagerdutyConfig] = Field(default_factory=list)
    flag_off_configs: list[FlagOffConfig] = Field(default_factory=list)

    def unsupported(self) -> list[str]:
        return sorted(k for k in (self.model_extra or {}) if k in _UNSUPPORTED_INTEGRATIONS)

    def unknown(self) -> list[str]:
        return sorted(k for k in (self.model_extra or {}) if k not in _UNSUPPORTED_INTEGRATIONS)


def _go_yaml_string(value: Any) -> Any:
    """A scalar as Go's YAML decoder gives it to a string field: `test: 2` is "2", `on: true` is "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


LabelValue = Annotated[str, BeforeValidator(_go_yaml_string)]
LegacyMatch = dict[str, LabelValue]


class RouteConfig(Strict):
    receiver: str | None = None
    matchers: list[str] = Field(default_factory=list)
    match: LegacyMatch = Field(default_factory=dict)
    match_re: LegacyMatch = Field(default_factory=dict)
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    routes: list[RouteConfig] = Field(default_factory=list)


class GlobalConfig(BaseModel):
    model_config = ConfigDict(extra="allow")  # smtp_*, opsgenie_*, ...: Alertmanager's, harmless here
    resolve_timeout: Duration = 300.0
    slack_api_url: str | None = None
    slack_api_url_file: Path | None = None
    pagerduty_url: str | None = None


class InhibitRuleConfig(Strict):
    source_matchers: list[str] = Field(default_factory=list)
    target_matchers: list[str] = Field(default_factory=list)
    source_match: LegacyMatch = Field(default_factory=dict)
    source_match_re: LegacyMatch = Field(default_factory=dict)
    target_match: LegacyMatch = Field(default_factory=dict)
    target_match_re: LegacyMatch = Field(default_factory=dict)
    equal: list[str] = Field(default_factory=list)


class RoutingConfig(Strict):
    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    route: RouteConfig
    receivers: list[ReceiverConfig]
    inhibit_rules: list[InhibitRuleConfig] = Field(default_factory=list)
    time_intervals: list[TimeInterval] = Field(default_factory=list)
    mute_time_intervals: list[TimeInterval] = Field(default_factory=list)
    templates: list[str] = Field(default_factory=list)

    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    file: str = Field(default="", exclude=True)
    # Per receiver name: what keeps it from delivering (a literal secret, Events API v1). Not load errors, so
    # `tripwire routes test` works on any Alertmanager file; the notifier refuses to route to such a receiver.
    delivery_problems: dict[str, list[Any]] = Field(default_factory=dict, exclude=True)

    def intervals(self) -> dict[str, TimeInterval]:
        """Every named time interval (`time_intervals` and the older `mute_time_intervals` section)."""
        return {t.name: t for t in [*self.time_intervals, *self.mute_time_intervals]}

    def receiver(self, name: str) -> ReceiverConfig:
        return next(r for r in self.receivers if r.name == name)


def load_routing(path: Path) -> RoutingConfig:
    """Load and check an alertmanager.yml; raises ConfigErrors listing every problem with file:line."""
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigErrors([doc.error((), "routing config must be a YAML mapping with route and receivers")])
    try:
        config = RoutingConfig.model_validate(
            {**doc.data, "base_dir": Path(path).resolve().parent, "file": str(path)}, context=FROM_FILE
        )
    except ValidationError as exc:
        raise ConfigErrors(doc.validation_errors(exc, model=RoutingConfig)) from None
    errors = _check(config, doc)
    if errors:
        raise ConfigErrors(errors)
    return config


def route_matchers(route: RouteConfig) -> list[Matcher]:
    """All matchers of a route (legacy `match`/`match_re` included), parsed."""
    out: list[Matcher] = []
    for name, value in route.match.items():
        out.append(Matcher.create(name, "=", value))
    for name, value in route.match_re.items():
        out.append(Matcher.create(name, "=~", value))
    for text in route.matchers:
        out.append(parse_matcher(text))
    return out


def _check(config: RoutingConfig, doc: Document) -> list[ConfigError]:
    errors: list[ConfigError] = []
    names: set[str] = set()
    for i, receiver in enumerate(config.receivers):
        if receiver.name in names:
            errors.append(
                doc.error(
                    ("receivers", i, "name"), f'notification config name "{receiver.name}" is not unique'
                )
            )
        names.add(receiver.name)
        for key in receiver.unknown():
            errors.append(
                doc.error(("receivers", i, key), f"receiver {receiver.name!r}: unknown field {key!r}")
            )
        for j, hook in enumerate(receiver.webhook_configs):
            if (hook.url is None) == (hook.url_file is None):
                errors.append(
                    doc.error(
                        ("receivers", i, "webhook_configs", j),
                        f"receiver {receiver.name!r}: exactly one of url and url_file must be set",
                    )
                )
            elif hook.url_file is not None and not hook.url_file.is_absolute():
                hook.url_file = config.base_dir / hook.url_file
        problems = config.delivery_problems.setdefault(receiver.name, [])
        for j, slack in enumerate(receiver.slack_configs):
            errors.extend(
                _check_slack(config, receiver.name, ("receivers", i, "slack_configs", j), slack, doc)
            )
            problems.extend(_slack_secrets(receiver.name, ("receivers", i, "slack_configs", j), slack, doc))
        for j, pager in enumerate(receiver.pagerduty_configs):
            loc = ("receivers", i, "pagerduty_configs", j)
            errors.extend(_check_pagerduty(config, receiver.name, loc, pager, doc))
            problems.extend(_pagerduty_secrets(receiver.name, loc, pager, doc))
        for j, flag_off in enumerate(receiver.flag_off_configs):
            loc = ("receivers", i, "flag_off_configs", j)
            errors.extend(_check_flag_off(config, receiver.name, loc, flag_off, doc))
            problems.extend(_flag_off_secrets(receiver.name, loc, flag_off, doc))
        if not problems:
            del config.delivery_problems[receiver.name]
    for i, rule in enumerate(config.inhibit_rules):
        for key in ("source_matchers", "target_matchers"):
            for j, text in enumerate(getattr(rule, key)):
                try:
                    parse_matcher(text)
                except MatcherError as exc:
                    errors.append(doc.error(("inhibit_rules", i, key, j), str(exc)))
        for key in ("source_match", "source_match_re", "target_match", "target_match_re"):
            for name, value in getattr(rule, key).items():
                try:
                    Matcher.create(name, "=~" if key.endswith("_re") else "=", value)
                except MatcherError as exc:
                    errors.append(doc.error(("inhibit_rules", i, key, name), str(exc)))
    intervals: set[str] = set()
    for section in ("time_intervals", "mute_time_intervals"):
        for i, interval in enumerate(getattr(config, section)):
            if interval.name in intervals:
                errors.append(
                    doc.error((section, i, "name"), f'time interval "{interval.name}" is not unique')
                )
            intervals.add(interval.name)
    if config.route.mute_time_intervals or config.route.active_time_intervals:
        errors.append(doc.error(("route",), "root route must not have any mute or active time intervals"))
    if config.route.receiver is None:
        errors.append(doc.error(("route",), "root route must specify a default receiver"))
    if config.route.matchers or config.route.match or config.route.match_re:
        errors.append(doc.error(("route",), "root route must not have any matchers"))
    errors.extend(_check_route(config.route, ("route",), names, intervals, doc))
    return errors


def _absolute(config: RoutingConfig, path: Path | None) -> Path | None:
    return path if path is None or path.is_absolute() else config.base_dir / path


def _check_slack(
    config: RoutingConfig, name: str, loc: tuple[Any, ...], slack: SlackConfig, doc: Document
) -> list[ConfigError]:
    if slack.api_url is None and slack.api_url_file is None and not slack.uses_bot_token():
        # Alertmanager's global default webhook.
        slack.api_url, slack.api_url_file = config.global_.slack_api_url, config.global_.slack_api_url_file
    slack.api_url_file = _absolute(config, slack.api_url_file)
    slack.token_file = _absolute(config, slack.token_file)
    errors: list[ConfigError] = []
    if slack.api_url is not None and slack.api_url_file is not None:
        errors.append(doc.error(loc, f"receiver {name!r}: at most one of api_url and api_url_file"))
    if slack.token is not None and slack.token_file is not None:
        errors.append(doc.error(loc, f"receiver {name!r}: at most one of token and token_file"))
    if slack.uses_bot_token():
        if not slack.channel:
            errors.append(doc.error(loc, f"receiver {name!r}: a bot token needs a channel to post to"))
        if slack.api_url_file is not None:
            errors.append(
                doc.error(
                    loc, f"receiver {name!r}: with a bot token, api_url is the Web API base, not a file"
                )
            )
    elif slack.api_url is None and slack.api_url_file is None:
        errors.append(
            doc.error(
                loc,
                f"receiver {name!r}: slack needs api_url/api_url_file (incoming webhook) or "
                "token/token_file + channel (bot token), or global.slack_api_url",
            )
        )
    errors.extend(_check_templates(name, loc, {"title": slack.title, "text": slack.text}, doc))
    return errors


def _check_pagerduty(
    config: RoutingConfig, name: str, loc: tuple[Any, ...], pager: PagerdutyConfig, doc: Document
) -> list[ConfigError]:
    if "url" not in pager.model_fields_set and config.global_.pagerduty_url:
        pager.url = config.global_.pagerduty_url.rstrip("/") + "/v2/enqueue"
    pager.routing_key_file = _absolute(config, pager.routing_key_file)
    errors: list[ConfigError] = []
    keys = [pager.routing_key, pager.routing_key_file, pager.service_key, pager.service_key_file]
    if sum(k is not None for k in keys) != 1:
        errors.append(
            doc.error(loc, f"receiver {name!r}: exactly one of routing_key and routing_key_file must be set")
        )
    templates = {
        "description": pager.description,
        "severity": pager.severity,
        "source": pager.source,
        "component": pager.component,
        "group": pager.group,
        "class": pager.class_,
        "client_url": pager.client_url,
        **{f"details.{k}": v for k, v in pager.details.items()},
    }
    errors.extend(_check_templates(name, loc, templates, doc))
    return errors


def _check_flag_off(
    config: RoutingConfig, name: str, loc: tuple[Any, ...], flag_off: FlagOffConfig, doc: Document
) -> list[ConfigError]:
    flag_off.token_file = _absolute(config, flag_off.token_file)
    flag_off.signing_secret_file = _absolute(config, flag_off.signing_secret_file)
    errors: list[ConfigError] = []
    vendor = flag_off.provider != "builtin"
    if vendor and flag_off.token is None and flag_off.token_file is None and flag_off.provider != "webhook":
        errors.append(
            doc.error(loc, f"receiver {name!r}: provider {flag_off.provider} needs token or token_file")
        )
    if flag_off.provider == "webhook":
        if flag_off.url is None:
            errors.append(doc.error(loc, f"receiver {name!r}: the webhook provider needs url"))
        if flag_off.signing_secret is None and flag_off.signing_secret_file is None:
            errors.append(
                doc.error(loc, f"receiver {name!r}: the webhook provider needs signing_secret(_file)")
            )
    if flag_off.provider in ("launchdarkly", "unleash") and not (flag_off.project and flag_off.environment):
        errors.append(doc.error(loc, f"receiver {name!r}: {flag_off.provider} needs project and environment"))
    if flag_off.provider == "flagsmith" and not flag_off.environment:
        errors.append(doc.error(loc, f"receiver {name!r}: flagsmith needs environment (the environment key)"))
    names = {r.name for r in config.receivers}
    for k, other in enumerate(flag_off.notify):
        if other not in names:
            errors.append(doc.error((*loc, "notify", k), f'undefined receiver "{other}" in notify'))
        elif other == name:
            errors.append(doc.error((*loc, "notify", k), "a kill switch cannot notify its own receiver"))
        elif config.receiver(other).flag_off_configs:
            # Its announcement would be a firing alert to that receiver's kill switch: a loop.
            errors.append(
                doc.error(
                    (*loc, "notify", k), f'notify receiver "{other}" has flag_off_configs (a kill switch)'
                )
            )
    templates = {"flag": flag_off.flag, "environment": flag_off.environment, "project": flag_off.project}
    errors.extend(_check_templates(name, loc, templates, doc))
    return errors


def _flag_off_secrets(
    name: str, loc: tuple[Any, ...], flag_off: FlagOffConfig, doc: Document
) -> list[ConfigError]:
    return [
        doc.error((*loc, key), f"receiver {name!r}: use {key}_file or ${{ENV_VAR}} for the {key}")
        for key in ("token", "signing_secret")
        if _literal(getattr(flag_off, key))
    ]


def _check_templates(
    name: str, loc: tuple[Any, ...], fields: dict[str, str | None], doc: Document
) -> list[ConfigError]:
    errors: list[ConfigError] = []
    for key, text in fields.items():
        if text is None:
            continue
        try:
            Template.parse(text, key)
        except TemplateError as exc:
            errors.append(doc.error((*loc, *key.split(".")), f"receiver {name!r}: {key}: {exc}"))
    return errors


def _literal(value: str | None) -> bool:
    return value is not None and not is_env_reference(value)


def _slack_secrets(name: str, loc: tuple[Any, ...], slack: SlackConfig, doc: Document) -> list[ConfigError]:
    problems: list[ConfigError] = []
    if not slack.uses_bot_token() and _literal(slack.api_url):
        problems.append(
            doc.error(
                (*loc, "api_url"),
                f"receiver {name!r}: a Slack webhook URL is a secret: use api_url_file or ${{ENV_VAR}}",
            )
        )
    if _literal(slack.token):
        problems.append(
            doc.error((*loc, "token"), f"receiver {name!r}: use token_file or ${{ENV_VAR}} for the bot token")
        )
    return problems


def _pagerduty_secrets(
    name: str, loc: tuple[Any, ...], pager: PagerdutyConfig, doc: Document
) -> list[ConfigError]:
    problems: list[ConfigError] = []
    if pager.service_key is not None or pager.service_key_file is not None:
        problems.append(
            doc.error(
                loc, f"receiver {name!r}: service_key is Events API v1; tripwire sends v2: use routing_key"
            )
        )
    if _literal(pager.routing_key):
        problems.append(
            doc.error(
                (*loc, "routing_key"), f"receiver {name!r}: use routing_key_file or ${{ENV_VAR}} for the key"
            )
        )
    return problems


def _check_route(
    route: RouteConfig, loc: tuple[Any, ...], receivers: set[str], intervals: set[str], doc: Document
) -> list[ConfigError]:
    errors: list[ConfigError] = []
    if route.receiver is not None and route.receiver not in receivers:
        errors.append(doc.error((*loc, "receiver"), f'undefined receiver "{route.receiver}" used in route'))
    for key in ("group_interval", "repeat_interval"):
        if getattr(route, key) == 0:
            errors.append(doc.error((*loc, key), f"{key} cannot be zero"))  # Alertmanager's check
    for key in ("mute_time_intervals", "active_time_intervals"):
        for i, name in enumerate(getattr(route, key)):
            if name not in intervals:
                errors.append(doc.error((*loc, key, i), f'undefined time interval "{name}" used in route'))
    for i, text in enumerate(route.matchers):
        try:
            parse_matcher(text)
        except MatcherError as exc:
            errors.append(doc.error((*loc, "matchers", i), str(exc)))
    for key, mapping in (("match", route.match), ("match_re", route.match_re)):
        for name, value in mapping.items():
            try:
                Matcher.create(name, "=" if key == "match" else "=~", value)
            except MatcherError as exc:
                errors.append(doc.error((*loc, key, name), str(exc)))
    if route.group_by and "..." in route.group_by and len(route.group_by) > 1:
        errors.append(doc.error((*loc, "group_by"), "cannot have wildcard group_by (`...`) and other labels"))
    for i, child in enumerate(route.routes):
        errors.extend(_check_route(child, (*loc, "routes", i), receivers, intervals, doc))
    return errors


# Fields that carry secrets in Alertmanager's config (webhook URLs often hold a token in their path).
_SECRET_FIELDS = {
    "url",
    "api_url",
    "slack_api_url",
    "webhook_url",
    "routing_key",
    "service_key",
    "api_key",
    "api_secret",
    "token",
    "app_token",
    "bot_token",
    "bearer_token",
    "client_secret",
    "user_key",
    "password",
    "auth_password",
    "smtp_auth_password",
    "smtp_auth_secret",
    "credentials",
    "signing_secret",
}


def masked(data: Any) -> Any:
    """`data` with every secret-carrying field replaced by `<secret>`, as Alertmanager shows its config."""
    if isinstance(data, dict):
        return {k: "<secret>" if k in _SECRET_FIELDS and v else masked(v) for k, v in data.items()}
    if isinstance(data, list):
        return [masked(item) for item in data]
    return data


def shown_config(config: RoutingConfig) -> str:
    """The routing config as YAML for `GET /api/v2/status`, secrets masked."""
    data = config.model_dump(mode="json", by_alias=True, exclude={"base_dir", "file"}, exclude_none=True)
    return yaml.safe_dump(masked(data), sort_keys=False)
