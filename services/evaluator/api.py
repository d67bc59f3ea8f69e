"""The evaluator's HTTP API, in Prometheus HTTP API shapes: /api/v1/alerts, /api/v1/rules, /api/v1/query over
the in-memory window, and POST /-/reload (admin token when configured)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from aiohttp import web
from pydantic import SecretStr

from services.evaluator.evaluation import Evaluator
from services.evaluator.promql.engine import Engine, EvalError
from services.evaluator.promql.nodes import PromQLError, compile_expr
from services.evaluator.promql.values import RangeSeries, Sample, Scalar, String
from services.evaluator.reload import RuleReloader
from services.evaluator.rules.alerting import AlertRecord, AlertState
from services.evaluator.rules.recording import RecordingRule
from shared.alerts import rfc3339
from shared.durations import format_duration
from shared.gofloat import format_go_exponent, format_go_float
from shared.webapp import error_response, json_response, require_token, within_body_timeout


def _alert_json(record: AlertRecord) -> dict[str, object]:
    data: dict[str, object] = {
        "labels": record.labels,
        "annotations": record.annotations,
        "state": record.state.value,
        "activeAt": rfc3339(record.active_at),
        "value": format_go_exponent(record.value),
    }
    if record.keep_firing_since is not None:
        data["keepFiringSince"] = rfc3339(record.keep_firing_since)
    return data


def add_routes(
    app: web.Application,
    evaluator: Evaluator,
    clock_now: Callable[[], float],
    lookback: float,
    reloader: RuleReloader | None = None,
    admin_token: SecretStr | None = None,
) -> None:
    async def alerts(_request: web.Request) -> web.Response:
        active = []
        for group in evaluator.groups:
            async with evaluator.visible(group):  # only states already persisted
                active += [
                    _alert_json(record)
                    for rule in group.alerting_rules
                    for record in rule.active.values()
                    if record.state != AlertState.INACTIVE
                ]
        return json_response({"status": "success", "data": {"alerts": active}})

    async def rules(_request: web.Request) -> web.Response:
        groups = []
        for group in evaluator.groups:
            # Wait out a tick that is persisting this group; the reading below has no await, so no tick
            # can change the group while it runs: only persisted states are shown.
            async with evaluator.visible(group):
                pass
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

    # Subqueries without a step use the evaluation interval here too, so a query agrees with a rule.
    engine = Engine(
        lookback_ms=round(lookback * 1000), subquery_step_ms=round(evaluator.ctx.subquery_step * 1000)
    )

    async def query(request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params.update(
                {k: str(v) for k, v in (await within_body_timeout(request, request.post())).items()}
            )
        text = params.get("query", "")
        if not text:
            return error_response(400, "bad_data", "missing query parameter 'query'")
        try:
            ts = parse_time(params["time"]) if params.get("time") else clock_now()
        except ValueError as exc:
            return error_response(400, "bad_data", f"invalid parameter 'time': {exc}")
        try:
            node = compile_expr(text)
        except PromQLError as exc:
            return error_response(400, "bad_data", str(exc))
        try:
            value = engine.instant(node, evaluator.store, round(ts * 1000))
        except EvalError as exc:
            return error_response(422, "execution", str(exc))
        return json_response({"status": "success", "data": query_result(value, ts)})

    async def reload(_request: web.Request) -> web.Response:
        if reloader is None:
            return error_response(503, "unavailable", "reload is not available")
        outcome = await reloader.reload("api")
        if not outcome.ok:
            return error_response(
                400, "bad_data", "rules not reloaded; the previous rules keep running", errors=outcome.errors
            )
        return json_response({"status": "success", "data": outcome.counts})

    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_get("/api/v1/rules", rules)
    app.router.add_get("/api/v1/query", query)
    app.router.add_post("/api/v1/query", query)
    app.router.add_post("/-/reload", require_token(admin_token, "admin")(reload))


def parse_time(text: str) -> float:
    """A Prometheus API time: Unix seconds (fractions allowed) or RFC 3339."""
    try:
        return float(text)
    except ValueError:
        pass
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def query_result(value: object, ts: float) -> dict[str, object]:
    """The `data` of a Prometheus instant-query response (values as Go's FormatFloat 'f', -1 prints them)."""
    if isinstance(value, Scalar):
        return {"resultType": "scalar", "result": [ts, format_go_float(value.value)]}
    if isinstance(value, String):
        return {"resultType": "string", "result": [ts, value.value]}
    series = value if isinstance(value, list) else []
    if series and isinstance(series[0], RangeSeries):
        return {
            "resultType": "matrix",
            "result": [
                {
                    "metric": s.labels,
                    "values": [
                        [t / 1000, format_go_float(v)] for t, v in zip(s.timestamps, s.values, strict=True)
                    ],
                }
                for s in series
            ],
        }
    return {
        "resultType": "vector",
        "result": [
            {"metric": s.labels, "value": [ts, format_go_float(s.value)]}
            for s in series
            if isinstance(s, Sample)
        ],
    }
