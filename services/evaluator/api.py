"""The evaluator's HTTP API, in Prometheus HTTP API shapes: /api/v1/alerts and /api/v1/rules."""

from __future__ import annotations

from aiohttp import web

from services.evaluator.evaluation import Evaluator
from services.evaluator.rules.alerting import AlertRecord, AlertState
from services.evaluator.rules.recording import RecordingRule
from shared.alerts import from_unix
from shared.durations import format_duration
from shared.webapp import json_response


def _alert_json(record: AlertRecord) -> dict[str, object]:
    data: dict[str, object] = {
        "labels": record.labels,
        "annotations": record.annotations,
        "state": record.state.value,
        "activeAt": from_unix(record.active_at).isoformat().replace("+00:00", "Z"),
        "value": f"{record.value:e}",
    }
    if record.keep_firing_since is not None:
        data["keepFiringSince"] = from_unix(record.keep_firing_since).isoformat().replace("+00:00", "Z")
    return data


def add_routes(app: web.Application, evaluator: Evaluator) -> None:
    async def alerts(_request: web.Request) -> web.Response:
        active = [
            _alert_json(record)
            for group in evaluator.groups
            for rule in group.alerting_rules
            for record in rule.active.values()
            if record.state != AlertState.INACTIVE
        ]
        return json_response({"status": "success", "data": {"alerts": active}})

    async def rules(_request: web.Request) -> web.Response:
        groups = []
        for group in evaluator.groups:
            group_rules = []
            for rule in group.rules:
                if isinstance(rule, RecordingRule):
                    group_rules.append(
                        {
                            "type": "recording",
                            "name": rule.name,
                            "query": rule.expr.text,
                            "labels": rule.labels,
                            "health": rule.health,
                            "lastError": rule.last_error,
                        }
                    )
                    continue
                active = [_alert_json(r) for r in rule.active.values() if r.state != AlertState.INACTIVE]
                states = {r.state for r in rule.active.values()}
                state = (
                    "firing"
                    if AlertState.FIRING in states
                    else "pending"
                    if AlertState.PENDING in states
                    else "inactive"
                )
                group_rules.append(
                    {
                        "type": "alerting",
                        "name": rule.name,
                        "query": rule.expr.text,
                        "duration": rule.hold,
                        "keepFiringFor": rule.keep_firing_for,
                        "labels": {k: t.source for k, t in rule.labels.items()},
                        "annotations": {k: t.source for k, t in rule.annotations.items()},
                        "alerts": active,
                        "health": rule.health,
                        "lastError": rule.last_error,
                        "state": state,
                    }
                )
            groups.append(
                {
                    "name": group.name,
                    "file": group.file,
                    "interval": group.interval,
                    "intervalText": format_duration(group.interval),
                    "limit": group.limit,
                    "rules": group_rules,
                }
            )
        return json_response({"status": "success", "data": {"groups": groups}})

    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_get("/api/v1/rules", rules)
