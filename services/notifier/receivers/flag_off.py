"""The kill-switch receiver (`flag_off_configs`): a firing alert routed here turns a feature flag off.

Per notification: render the flag (a template, e.g. `{{ .CommonLabels.flag }}`), take the group's
longest-firing alert as the trigger, decide within the guardrails (killswitch.DecisionLog: once per delivery,
atomically), then carry the decision out: read the flag, turn it off unless it already is, read it back. Every
decision, taken or refused, is audited on tripwire:audit and announced to the `notify` receivers. Resolved
alerts never turn a flag back on: only a human does (the Slack "Re-enable flag" button, or the flag API).

Crash safety: the decision id is derived from the delivery's id, which survives a restart (the dispatcher's
intent), so a delivery replayed after a crash finds the decision it took and only finishes it; the flip itself
reads the flag first, so a flip that reached the vendor before the crash is recorded as done, not repeated.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from services.notifier.config import FlagOffConfig
from services.notifier.flag_providers import FlagProvider, FlagTarget, ProviderError, ProviderRefused
from services.notifier.killswitch import Decision, DecisionLog, Guardrails, Trigger
from services.notifier.nflog import Intent
from services.notifier.notification import Notification
from services.notifier.receivers import Deferred, DeliveryError
from services.notifier.receivers.delivery import Attempt, Journal, deliver
from services.notifier.templates import TemplateError, render
from shared.alerts import Alert, from_unix
from shared.clock import Clock

log = logging.getLogger(__name__)

# Announce(receiver names, notification): tell the `notify` receivers (wired to the dispatcher).
Announce = Callable[[list[str], Notification], Awaitable[None]]
# Outcomes a human must look at now: the announcement is critical.
PAGE = {"refused_breaker", "refused_by_provider", "failed", "flip_unconfirmed", "bad_flag", "abandoned"}
REENABLE_OUTCOMES = {"flipped", "flip_unconfirmed"}  # the only decisions a human may undo from Slack
REENABLE_ANNOTATION = "tripwire_reenable"


class FlagOffIntegration:
    kill_switch = True  # announcements are never delivered to a kill switch

    def __init__(
        self,
        index: int,
        config: FlagOffConfig,
        *,
        receiver: str,
        provider: FlagProvider,
        decisions: DecisionLog | None,
        clock: Clock,
        announce: Announce | None = None,
        external_url: str = "",
    ) -> None:
        self.name = f"flag_off[{index}]"
        # Resolutions are delivered only to settle a flip still retrying; they never turn a flag back on.
        self.send_resolved = True
        self.config = config
        self.receiver = receiver
        self.provider = provider
        self.decisions = decisions
        self.clock = clock
        self.announce = announce
        self.external_url = external_url
        self.rails = Guardrails(
            config.min_firing_for, config.dry_run, config.cooldown, config.max_flips, config.max_flips_window
        )
        self.rng = random.Random()

    @property
    def actor(self) -> str:
        return f"tripwire:{self.receiver}/{self.name}"

    async def notify(self, notification: Notification, journal: Journal) -> None:
        if self.decisions is None:
            raise DeliveryError(f"{self.name}: no decision log (the kill switch needs Redis)", permanent=True)
        firing = notification.firing
        now = self.clock.now()
        if not firing:
            # Resolved: never a reason to turn anything on. A flip still retrying is abandoned (and said so).
            for decision in await self.decisions.pending(notification.group_key):
                decision.reason += "; the alert resolved before the flip succeeded"
                await self._finish(decision, "abandoned", {}, now)
            return
        draft = self._draft(notification, firing, now)
        if not draft.flag:
            if await self.decisions.get(draft.id) is not None:
                return  # refused and audited before this replay
            draft.action, draft.reason = "refused", f"the flag template {self.config.flag!r} rendered empty"
            await self._finish(draft, "bad_flag", {}, now)
            return
        decision = await self.decisions.decide(draft, self.rails, now)
        if decision.action == "wait":
            raise Deferred(decision.reason, until=decision.trigger.starts_at + self.rails.min_firing_for)
        if decision.done:  # replayed after a crash: already carried out; make sure it was announced
            await self._announce(decision)
            return
        if decision.action == "refused":
            outcome = "refused_breaker" if decision.reason.startswith("breaker") else "refused"
            await self._finish(decision, outcome, {}, now)
        elif decision.action == "dry_run":
            await self._finish(decision, "dry_run", {}, now)
        else:
            await self._flip(decision, journal)

    def _draft(self, notification: Notification, firing: list[Alert], now: float) -> Decision:
        data = notification.template_data()
        flag = self.render(self.config.flag, data)
        environment = self.render(self.config.environment, data) or None
        project = self.render(self.config.project, data) or None
        first = min(firing, key=lambda a: (a.starts_at, a.fingerprint))
        trigger = Trigger(
            fingerprint=first.fingerprint,
            alertname=first.name,
            starts_at=first.starts_at.timestamp(),
            value=first.annotations.get("value") or first.labels.get("value") or "",
            labels=first.labels,
        )
        # One decision per firing episode of the group's trigger and flag: built from what any replay sees
        # again (not from a delivery id that may not have been saved), so a restart, a repeat_interval
        # re-send or a human's re-enable while the alert still fires never takes a second decision.
        key = "\x00".join(
            (self.actor, notification.group_key, trigger.fingerprint, f"{trigger.starts_at:.3f}", flag)
        )
        key += f"\x00{project}\x00{environment}"
        return Decision(
            id=hashlib.sha256(key.encode()).hexdigest()[:24],
            action="wait",
            reason="",
            flag=flag,
            environment=environment,
            project=project,
            provider=self.provider.name,
            receiver=self.receiver,
            integration=self.name,
            group_key=notification.group_key,
            trigger=trigger,
            at=now,
        )

    def render(self, template: str | None, data: Any) -> str:
        """A template of this receiver's config rendered on `data` ("" when it fails, logged)."""
        if not template:
            return ""
        try:
            return render(template, data).strip()
        except TemplateError as exc:
            log.error("kill-switch template failed", extra={"integration": self.actor, "error": str(exc)})
            return ""

    async def _flip(self, decision: Decision, journal: Journal) -> None:
        target = FlagTarget(decision.flag, decision.environment, decision.project)
        comment = f"tripwire kill switch: {decision.reason} (decision {decision.id})"
        result: dict[str, Any] = {}

        async def attempt() -> Attempt:
            try:
                before = await self.provider.read(target)
                if before.enabled is False:
                    result.update(outcome="already_off", response={"read": before.response})
                    return Attempt.ok()
                response = await self.provider.turn_off(target, comment=comment, actor=self.actor)
                after = await self.provider.read(target)
                outcome = "flip_unconfirmed" if after.enabled is True else "flipped"
                result.update(outcome=outcome, response={"turn_off": response, "read_back": after.enabled})
                return Attempt.ok()
            except ProviderRefused as exc:
                result.update(outcome="refused_by_provider", response={"status": exc.status, **exc.response})
                return Attempt.ok()  # carried out as far as it can be: a human must act
            except ProviderError as exc:
                if exc.retryable:
                    return Attempt.retry(str(exc), retry_after=exc.retry_after)
                return Attempt.refused(str(exc))

        try:
            await deliver(
                self.name,
                attempt,
                clock=self.clock,
                deadline=self.clock.now() + self.config.retry_deadline,
                journal=journal,
                rng=self.rng,
            )
        except DeliveryError as exc:
            if exc.permanent:
                await self._finish(decision, "failed", {"error": str(exc)}, self.clock.now())
            else:
                # Not finished: the next flush replays this delivery and takes up the same decision.
                await self.decisions.record(
                    decision, "retrying", self.actor, {"error": str(exc)}, self.clock.now()
                )
            raise
        await self._finish(decision, result["outcome"], result["response"], self.clock.now())

    async def _finish(self, decision: Decision, outcome: str, response: dict[str, Any], now: float) -> None:
        await self.decisions.finish(decision, outcome, response, self.actor, now)
        log.log(
            logging.ERROR if outcome in PAGE else logging.WARNING,
            "kill switch decision",
            extra={
                "decision": decision.id,
                "outcome": outcome,
                "flag": decision.flag,
                "provider": decision.provider,
                "reason": decision.reason,
                "alert": decision.trigger.alertname,
            },
        )
        await self._announce(decision)

    async def _announce(self, decision: Decision) -> None:
        if self.announce is None or not self.config.notify:
            return
        await self.announce(list(self.config.notify), announcement(decision, self.external_url))

    async def has_unfinished(self, group_key: str) -> bool:
        """A flip decided for this group and not finished (retrying): the dispatcher then tells us of the
        group even when there is nothing new to notify."""
        return self.decisions is not None and bool(await self.decisions.pending(group_key))

    async def reconcile(self, group_key: str, intent: Intent) -> bool:
        # Replaying is safe: the decision is found by the same id and a flip reads the flag first.
        return False

    async def close(self) -> None:
        return None


def announcement(decision: Decision, external_url: str) -> Notification:
    """A kill-switch decision as a notification for the `notify` receivers: one group per decision and
    outcome, so each is told once (the notification log dedups a replay)."""
    outcome = decision.outcome
    where = " ".join(
        f"{k}={v}" for k, v in (("env", decision.environment), ("project", decision.project)) if v
    )
    verb = {
        "flipped": "Turned OFF",
        "already_off": "Already off:",
        "dry_run": "DRY RUN, would turn off",
        "refused": "Did NOT turn off",
        "refused_breaker": "Did NOT turn off (breaker open)",
        "refused_by_provider": "Provider REFUSED to turn off",
        "failed": "FAILED to turn off",
        "flip_unconfirmed": "Turned off but read back ON:",
        "bad_flag": "Did NOT turn off",
        "abandoned": "Gave up turning off",
    }.get(outcome, outcome)
    summary = f"{verb} flag {decision.flag or '?'} ({decision.provider}{' ' + where if where else ''})"
    annotations = {
        "summary": summary,
        "description": (
            f"{decision.reason}. Triggered by {decision.trigger.alertname}"
            f"{' = ' + decision.trigger.value if decision.trigger.value else ''}; decision {decision.id}."
        ),
    }
    if outcome in REENABLE_OUTCOMES:
        annotations[REENABLE_ANNOTATION] = decision.id  # the Slack message offers the human re-enable
    severity = "critical" if outcome in PAGE else ("warning" if outcome == "flipped" else "info")
    labels = {
        "alertname": "TripwireKillSwitch",
        "flag": decision.flag or "?",
        "outcome": outcome,
        "severity": severity,
        "rule": decision.trigger.alertname,
    }
    alert = Alert(
        labels=labels,
        annotations=annotations,
        startsAt=from_unix(decision.at),
        endsAt=from_unix(decision.at + 86400),
        generatorURL=external_url,
    )
    group_key = f'{{}}:{{killswitch="{decision.id}", outcome="{outcome}"}}'
    return Notification("", group_key, {"flag": decision.flag, "outcome": outcome}, [alert], external_url)
