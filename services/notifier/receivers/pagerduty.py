"""The PagerDuty receiver: Events API v2 over plain aiohttp (the official client is sync and ignores
Retry-After).

One incident per aggregation group, as Alertmanager does it: dedup_key is sha256 of the group key, a trigger
is sent while any alert of the group fires and a resolve once all of them resolved. Because PagerDuty dedups
on that key, replaying a trigger after a crash is harmless, so reconciliation simply sends again.
"""

from __future__ import annotations

import hashlib
import logging
import random
from typing import Any

import aiohttp
import orjson

from services.notifier.config import PagerdutyConfig
from services.notifier.nflog import Intent
from services.notifier.notification import Notification
from services.notifier.receivers.delivery import (
    USER_AGENT,
    Attempt,
    Journal,
    client_error_attempt,
    deliver,
    http_attempt,
    redact,
)
from services.notifier.receivers.slack_message import fallback_text
from services.notifier.secrets import SecretError, expand, read_secret
from services.notifier.templates import TemplateData, TemplateError, render
from shared.alerts import rfc3339
from shared.clock import Clock

log = logging.getLogger(__name__)

SUMMARY_LIMIT = 1024
EVENT_LIMIT = 512 * 1024
DETAIL_ALERTS = 20  # alerts listed in custom_details before "and N more"


def dedup_key(group_key: str) -> str:
    """Alertmanager's: the hex sha256 of the group key, so tripwire and Alertmanager share incidents."""
    return hashlib.sha256(group_key.encode()).hexdigest()


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PagerDutyIntegration:
    def __init__(
        self,
        index: int,
        config: PagerdutyConfig,
        session: aiohttp.ClientSession,
        clock: Clock,
        external_url: str = "",
    ) -> None:
        self.name = f"pagerduty[{index}]"
        self.send_resolved = config.send_resolved
        self.config = config
        self.session = session
        self.clock = clock
        self.external_url = external_url
        self.rng = random.Random()

    def event(self, notification: Notification, routing_key: str) -> dict[str, Any]:
        """The Events v2 body for a notification (trigger while anything fires, else resolve)."""
        key = dedup_key(notification.group_key)
        if notification.status == "resolved":
            return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
        data = notification.template_data()
        summary = self._render("description", self.config.description, data) or fallback_text(notification)
        if notification.test:
            summary = f"[TEST] {summary}"
        payload: dict[str, Any] = {
            "summary": _truncate(summary.strip() or "tripwire alert", SUMMARY_LIMIT),
            "source": self._render("source", self.config.source, data) or self.config.client,
            "severity": self.severity(notification, data),
            "timestamp": rfc3339(self.clock.now()),
            "custom_details": self._details(notification, data),
        }
        for key_name, template in (
            ("component", self.config.component),
            ("group", self.config.group),
            ("class", self.config.class_),
        ):
            value = self._render(key_name, template, data)
            if value:
                payload[key_name] = value
        event: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": key,
            "payload": payload,
            "client": self.config.client,
            "client_url": self._render("client_url", self.config.client_url, data) or self.external_url,
            "links": self._links(notification, data),
        }
        if self.config.images:
            event["images"] = [
                {k: self._render(f"images.{k}", v, data) or "" for k, v in image.items()}
                for image in self.config.images
            ]
        return _within_size(event)

    def severity(self, notification: Notification, data: TemplateData) -> str:
        """PagerDuty's severity: the `severity` template if set, else the alerts' common severity label,
        through `severity_map`; `default_severity` when that gives nothing PagerDuty knows."""
        if self.config.severity is not None:
            raw = self._render("severity", self.config.severity, data) or ""
        else:
            raw = notification.common_labels().get("severity", "")
        return self.config.severity_map.get(raw.strip().lower(), self.config.default_severity)

    def _details(self, notification: Notification, data: TemplateData) -> dict[str, Any]:
        firing, resolved = notification.firing, notification.resolved

        def listed(alerts: list[Any]) -> list[dict[str, Any]]:
            shown = [
                {"labels": a.labels, "annotations": a.annotations, "startsAt": rfc3339(a.starts_at)}
                for a in alerts[:DETAIL_ALERTS]
            ]
            if len(alerts) > DETAIL_ALERTS:
                shown.append({"more": f"and {len(alerts) - DETAIL_ALERTS} more"})
            return shown

        details: dict[str, Any] = {
            "num_firing": len(firing),
            "num_resolved": len(resolved),
            "group_labels": notification.group_labels,
            "firing": listed(firing),
            "resolved": listed(resolved),
        }
        for key, template in self.config.details.items():
            details[key] = self._render(f"details.{key}", template, data) or ""
        return details

    def _links(self, notification: Notification, data: TemplateData) -> list[dict[str, str]]:
        links = [
            {k: self._render(f"links.{k}", v, data) or "" for k, v in link.items()}
            for link in self.config.links
        ]
        first = notification.firing[0] if notification.firing else None
        if first is not None and first.generator_url:
            links.append({"href": first.generator_url, "text": "Source"})
        runbook = notification.common_annotations().get("runbook_url")
        if runbook:
            links.append({"href": runbook, "text": "Runbook"})
        return [link for link in links if link.get("href")]

    def _render(self, key: str, template: str | None, data: TemplateData) -> str | None:
        if not template:
            return None
        try:
            return render(template, data)
        except TemplateError as exc:
            log.warning(
                "pagerduty template failed; using the default", extra={"field": key, "error": str(exc)}
            )
            return None

    def secrets_problem(self) -> str | None:
        """Why the routing key cannot be read now (checked at start and reload), or None."""
        try:
            read_secret(self.config.routing_key, self.config.routing_key_file, "routing_key")
            expand(self.config.url, "url")
        except SecretError as exc:
            return str(exc)
        return None

    async def notify(self, notification: Notification, journal: Journal) -> None:
        try:
            routing_key = read_secret(self.config.routing_key, self.config.routing_key_file, "routing_key")
        except SecretError as exc:
            routing_key, problem = "", str(exc)
        else:
            problem = ""
        body = orjson.dumps(self.event(notification, routing_key))

        async def attempt() -> Attempt:
            if problem:
                return Attempt.retry(problem)  # the operator may fix the file or the environment
            return await self._post(body)

        await deliver(
            self.name,
            attempt,
            clock=self.clock,
            deadline=self.clock.now() + self.config.retry_deadline,
            journal=journal,
            rng=self.rng,
        )

    async def _post(self, body: bytes) -> Attempt:
        try:
            url = expand(self.config.url, "url")
        except SecretError as exc:
            return Attempt.retry(str(exc))
        try:
            async with self.session.post(
                url,
                data=body,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            ) as response:
                text = "" if response.status < 300 else await response.text()
                return http_attempt(
                    response.status, text, response.headers.get("Retry-After"), self.clock.now()
                )
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return client_error_attempt(exc, url)
        except Exception as exc:  # whatever else: a retry, never a crashed flush
            return Attempt.retry(redact(f"{type(exc).__name__}: {exc}", url), uncertain=True)

    async def reconcile(self, group_key: str, intent: Intent) -> bool:
        return False  # a replayed trigger or resolve with the same dedup_key changes nothing at PagerDuty

    async def close(self) -> None:
        return None


def _within_size(event: dict[str, Any]) -> dict[str, Any]:
    """PagerDuty refuses events over 512 KB: shed the per-alert listing, then the rest of custom_details."""
    if len(orjson.dumps(event)) <= EVENT_LIMIT:
        return event
    details = event["payload"]["custom_details"]
    for key in ("resolved", "firing"):
        details[key] = [{"more": f"{details['num_' + key]} alerts left out: the event would exceed 512 KB"}]
        if len(orjson.dumps(event)) <= EVENT_LIMIT:
            return event
    event["payload"]["custom_details"] = {
        "num_firing": details["num_firing"],
        "num_resolved": details["num_resolved"],
        "truncated": "custom_details left out: the event would exceed 512 KB",
    }
    return event
