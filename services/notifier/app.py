"""The notifier service: alerts in from the alerts stream, routed, deduplicated and delivered."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.notifier.alert_store import AlertStore
from services.notifier.api import V2Api
from services.notifier.config import RoutingConfig, load_routing, shown_config
from services.notifier.dispatcher import Dispatcher, DispatchMetrics, Receiver
from services.notifier.flag_providers.factory import build_provider
from services.notifier.flags_api import register_flag_api
from services.notifier.health import IntegrationHealth
from services.notifier.inhibition import Inhibitor
from services.notifier.killswitch import DecisionLog
from services.notifier.nflog import NotifierState
from services.notifier.notification import Notification
from services.notifier.receivers import DeliveryError, Integration
from services.notifier.receivers.console import ConsoleIntegration
from services.notifier.receivers.delivery import RateLimits
from services.notifier.receivers.flag_off import FlagOffIntegration
from services.notifier.receivers.pagerduty import PagerDutyIntegration
from services.notifier.receivers.slack import SlackIntegration
from services.notifier.receivers.webhook import WebhookIntegration
from services.notifier.reload import RoutingReloader
from services.notifier.routing import Route
from services.notifier.silences import SilenceStore
from services.notifier.slack_actions import SlackActions
from shared.alerts import Alert
from shared.clock import Clock, SystemClock
from shared.codec import PoisonEntry, decode_entry
from shared.config import Config, ingest_credentials
from shared.consumers import Acker, EntriesFailed, Entry
from shared.flag_store import FlagStore
from shared.reloading import ReloadMetrics
from shared.service import Service
from shared.streams import NOTIFIER_GROUP, Keys, append_batch
from shared.webapp import error_response, json_response, require_token
from shared.yamlfile import ConfigError, ConfigErrors

log = logging.getLogger(__name__)

# How long a stopping notifier waits for Slack re-enables already clicked (within docker's 10 s grace).
SLACK_DRAIN_TIMEOUT = 3.0

BACKLOG_POLL = 0.05

_ALERT = TypeAdapter(Alert)
DEFAULT_ROUTING = {
    "route": {"receiver": "console"},
    "receivers": [{"name": "console", "console_configs": [{}]}],
}


@dataclass
class NotifierApp:
    service: Service
    dispatcher: Dispatcher
    integrations: list[Integration] = field(default_factory=list)

    async def handle(self, entries: list[Entry], acker: Acker) -> None:
        failures: dict[bytes, str] = {}
        for entry in entries:
            try:
                batch = decode_entry(entry.fields)
            except PoisonEntry as exc:
                await acker.dead_letter(entry, str(exc))
                continue
            alerts: list[Alert] = []
            bad: list[tuple[int, str]] = []
            for i, item in enumerate(batch.items):
                try:
                    alerts.append(_ALERT.validate_python(item))
                except ValidationError as exc:
                    bad.append((i, "; ".join(e["msg"] for e in exc.errors(include_url=False))))
            if bad:
                await acker.dead_letter_items(entry, bad, batch.items)
            try:
                await self.dispatcher.dispatch(entry.id.decode(), alerts)
            except DeliveryError as exc:
                failures[entry.id] = str(exc)
                continue
            await acker.ack(entry.id)
        if failures:
            raise EntriesFailed(failures)


def routes_in_use(tree: Route) -> set[str]:
    used = {tree.receiver}
    for child in tree.routes:
        used |= routes_in_use(child)
    return used


@dataclass
class ReceiverDeps:
    """What integrations are built with: one HTTP session, the clock, the notifier state (Slack message refs),
    the per-destination rate limits (shared across reloads) and the links messages carry."""

    session: aiohttp.ClientSession
    clock: Clock
    state: NotifierState | None = None
    limits: RateLimits | None = None
    external_url: str = ""
    silence_url: str | None = None
    # The kill switch: decisions and audit, the built-in flag store, and who announces its decisions.
    decisions: DecisionLog | None = None
    flag_store: FlagStore | None = None
    dispatcher: Dispatcher | None = None  # set once built (the kill switch announces through it)

    async def announce(self, receivers: list[str], notification: Notification) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.announce(receivers, notification)


def build_receivers(routing: RoutingConfig, deps: ReceiverDeps) -> dict[str, Receiver]:
    """Integrations per receiver; a routed receiver using an integration we cannot deliver to, or a literal
    secret, is an error (ConfigErrors with file:line)."""
    if routing.templates:
        log.warning(
            "template files are not read: write templates inline in title/text/description",
            extra={"file": routing.file},
        )
    tree = Route.build(routing.route)
    used = routes_in_use(tree)
    limits = deps.limits or RateLimits(deps.clock)
    receivers: dict[str, Receiver] = {}
    problems: list[ConfigError] = []
    for config in routing.receivers:
        unsupported = config.unsupported()
        if unsupported and config.name in used:
            raise ConfigError(
                f"receiver {config.name!r} uses {', '.join(unsupported)}, "
                "which the notifier cannot deliver to yet (supported: slack_configs, pagerduty_configs, "
                "webhook_configs, console_configs)",
                routing.file,
            )
        # Every receiver, routed or not: a literal secret in the file is refused wherever it is.
        problems.extend(routing.delivery_problems.get(config.name, []))
        integrations: list[Integration] = [
            WebhookIntegration(i, hook, deps.session, deps.clock)
            for i, hook in enumerate(config.webhook_configs)
        ]
        integrations += [
            SlackIntegration(
                i,
                slack,
                receiver=config.name,
                state=deps.state,
                session=deps.session,
                clock=deps.clock,
                limits=limits,
                silence_url=deps.silence_url,
            )
            for i, slack in enumerate(config.slack_configs)
        ]
        integrations += [
            PagerDutyIntegration(i, pager, deps.session, deps.clock, deps.external_url)
            for i, pager in enumerate(config.pagerduty_configs)
        ]
        integrations += [ConsoleIntegration(i, c.send_resolved) for i, c in enumerate(config.console_configs)]
        integrations += [
            FlagOffIntegration(
                i,
                flag_off,
                receiver=config.name,
                provider=build_provider(flag_off, deps.session, deps.flag_store),
                decisions=deps.decisions,
                clock=deps.clock,
                announce=deps.announce,
                external_url=deps.external_url,
            )
            for i, flag_off in enumerate(config.flag_off_configs)
        ]
        receivers[config.name] = Receiver(config.name, integrations)
    if problems:
        raise ConfigErrors(problems)
    return receivers


def check_secrets(receivers: dict[str, Receiver], health: IntegrationHealth) -> None:
    """Say at start (and reload) which integrations cannot read their secret, instead of at the first alert:
    logged as an error and listed as unhealthy on /readyz until they deliver."""
    for receiver in receivers.values():
        for integration in receiver.integrations:
            check = getattr(integration, "secrets_problem", None)
            problem = check() if check is not None else None
            if problem:
                log.error(
                    "integration cannot read its secret; its sends will fail until this is fixed",
                    extra={"receiver": receiver.name, "integration": integration.name, "problem": problem},
                )
                health.refused(receiver.name, integration.name, problem)


async def wait_for_backlog(redis: Redis, stream: str, give_up_after: float) -> bool:
    """Hold the first flush until every alert entry already in the stream has been handled, so that an
    inhibiting alert further down the backlog is known before its targets would be sent (Alertmanager
    #4064). Gives up after `give_up_after` seconds of real time, loudly. Returns whether it caught up."""
    if give_up_after <= 0:
        return False  # configured off
    started = time.monotonic()
    while time.monotonic() - started < give_up_after:
        try:
            groups = await redis.xinfo_groups(stream)
        except RedisError:
            groups = []
        info = next((g for g in groups if g["name"] in (NOTIFIER_GROUP, NOTIFIER_GROUP.encode())), None)
        if info is not None and not info["lag"] and not info["pending"]:
            return True
        await asyncio.sleep(BACKLOG_POLL)
    log.warning("alerts backlog not read in time; sending anyway", extra={"waited_seconds": give_up_after})
    return False


def register_kill_switch(
    service: Service, config: Config, app: NotifierApp, deps: ReceiverDeps, flag_store: FlagStore
) -> None:
    """The kill switch's HTTP side: the built-in flag store's API, and Slack's "Re-enable flag" clicks."""
    register_flag_api(service.web, flag_store, config.admin_token)
    assert deps.decisions is not None
    slack_actions = SlackActions(
        lambda: config.slack_signing_secret.get_secret_value() if config.slack_signing_secret else None,
        deps.decisions,
        lambda: [i for i in app.integrations if isinstance(i, FlagOffIntegration)],
        deps.session,
        deps.clock,
    )
    service.web.router.add_post("/slack/actions", slack_actions.handle)
    # A click is answered at once and re-enabled in the background: finish those before the session they
    # answer Slack through is closed (closers run last registered first).
    service.on_close(functools.partial(slack_actions.drain, within=SLACK_DRAIN_TIMEOUT))


def build(config: Config, clock: Clock | None = None) -> NotifierApp:
    """Wire the notifier; raises ConfigErrors/ConfigError if the routing file is invalid."""
    clock = clock or SystemClock()
    service = Service("notifier", config, clock)
    keys = Keys(config.redis.prefix)
    if config.alerting.config_file is None:
        log.warning("alerting.config_file not set; every alert goes to the console receiver")
        routing = RoutingConfig.model_validate(DEFAULT_ROUTING)
    else:
        routing = load_routing(config.alerting.config_file)
    session = aiohttp.ClientSession()
    service.on_close(session.close)  # after HTTP drains: Slack re-enables answer through it
    state = NotifierState(service.redis, keys)
    external_url = config.notifier.external_url.rstrip("/")
    deps = ReceiverDeps(
        session,
        clock,
        state,
        RateLimits(clock),
        external_url,
        config.notifier.silence_url or f"{external_url}/#/silences/new",
        decisions=DecisionLog(service.redis, keys),
        flag_store=(flag_store := FlagStore(service.redis, keys, clock)),
    )
    receivers = build_receivers(routing, deps)
    health = IntegrationHealth(service.registry)
    service.details.append(health.details)
    check_secrets(receivers, health)
    silences = SilenceStore(service.redis, keys)
    dispatcher = Dispatcher(
        tree=Route.build(routing.route),
        receivers=receivers,
        state=state,
        clock=clock,
        external_url=config.notifier.external_url,
        resolve_timeout=routing.global_.resolve_timeout,
        metrics=DispatchMetrics(service.registry),
        silences=silences,
        alert_store=(alert_store := AlertStore(service.redis, keys)),
        inhibitor=(inhibitor := Inhibitor.from_config(routing)),
        intervals=routing.intervals(),
        health=health,
        claim_lease=config.notifier.claim_lease,
    )
    deps.dispatcher = dispatcher

    async def publish(items: list[dict[str, object]]) -> str:
        return await append_batch(
            service.redis,
            keys.alerts,
            "alerts",
            orjson.dumps(items),
            f"api-{uuid.uuid4().hex[:12]}",
            config.streams.maxlen,
        )

    names = [r.name for r in routing.receivers]
    api = V2Api(
        silences, alert_store, inhibitor, dispatcher.tree, names, publish, clock, shown_config(routing)
    )
    api.register(service.web, config.admin_token, ingest_credentials(config))
    app = NotifierApp(service, dispatcher, [i for r in receivers.values() for i in r.integrations])
    register_kill_switch(service, config, app, deps, flag_store)
    service.consume(keys.alerts, NOTIFIER_GROUP, app.handle)

    async def flush_loop() -> None:
        await wait_for_backlog(service.redis, keys.alerts, config.notifier.startup_wait)
        await dispatcher.run()

    service.add_loop("group-flush", flush_loop)
    if config.alerting.config_file is not None:

        async def apply(new: RoutingConfig) -> None:
            new_receivers = build_receivers(new, deps)  # ConfigError(s): keep the running config
            tree, new_inhibitor = Route.build(new.route), Inhibitor.from_config(new)
            dispatcher.replace(tree, new_receivers, new_inhibitor, new.intervals())
            dispatcher.resolve_timeout = new.global_.resolve_timeout
            api.replace(new_inhibitor, tree, [r.name for r in new.receivers], shown_config(new))
            app.integrations = [i for r in new_receivers.values() for i in r.integrations]
            health.retain({(r.name, i.name) for r in new_receivers.values() for i in r.integrations})
            check_secrets(new_receivers, health)

        reloader = RoutingReloader(
            Path(config.alerting.config_file), apply, clock, ReloadMetrics(service.registry, "routing")
        )
        service.add_loop("routing-file-watch", reloader.watch)
        service.on_sighup(lambda: reloader.reload("sighup"))

        async def reload_endpoint(_request: web.Request) -> web.Response:
            errors = await reloader.reload("api")
            if errors:
                message = "routing not reloaded; the previous routing keeps running"
                return error_response(400, "bad_data", message, errors=errors)
            return json_response({"status": "success"})

        service.web.router.add_post("/-/reload", require_token(config.admin_token, "admin")(reload_endpoint))
    return app


async def run(config: Config) -> None:
    app = build(config)
    await app.service.run(config.notifier.listen, app.service.start)
