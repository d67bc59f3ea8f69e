"""A real OpenTelemetry SDK (OTLP/HTTP, protobuf) reports request counts and error logs to the collector; an
error-rate rule over the counter fires end to end (real processes: collector, evaluator, notifier, a webhook).
OTLP/JSON bodies are covered in tests/collector/test_otlp.py (the Python exporter only speaks protobuf)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.e2e.system import System
from tests.fakes.webhook import FakeWebhook
from tests.polling import eventually

pytestmark = pytest.mark.e2e

RULES = """\
groups:
  - name: checkout
    rules:
      - alert: CheckoutErrorRate
        expr: >
          sum by (job) (rate(http_requests_total{status="500"}[30s]))
            / sum by (job) (rate(http_requests_total[30s])) > 0.05
        labels: {severity: page}
      - alert: CheckoutErrorLogs
        expr: sum by (service) (log_events_total{service="checkout", level="error"}) > 0
"""


async def test_an_otel_sdk_counter_and_logs_trip_an_error_rate_rule(
    tmp_path: Path, redis_server, webhook: FakeWebhook
):
    routing = {
        "route": {"receiver": "hook", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url}]}],
    }
    system = System(tmp_path, redis_server.url, f"e2e-{uuid.uuid4().hex[:8]}", RULES, routing)
    async with system.running():
        resource = Resource.create({"service.name": "checkout", "service.instance.id": "pod-1"})
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=system.url("collector", "/v1/metrics")), export_interval_millis=250
        )
        meters = MeterProvider(resource=resource, metric_readers=[reader])
        logs = LoggerProvider(resource=resource)
        logs.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=system.url("collector", "/v1/logs")))
        )
        logger = logs.get_logger("checkout.payments")
        requests = meters.get_meter("checkout").create_counter("http.requests")
        try:

            def fired() -> set[str]:
                return {a["labels"]["alertname"] for d in webhook.delivered for a in d["alerts"]}

            async def traffic() -> set[str]:
                # 8% errors, as a bad release would: counters are cumulative, the SDK exports every 250 ms.
                requests.add(92, {"status": "200"})
                requests.add(8, {"status": "500"})
                await asyncio.to_thread(
                    logger.emit, severity_number=SeverityNumber.ERROR, body="payment provider timeout"
                )
                return fired() >= {"CheckoutErrorRate", "CheckoutErrorLogs"}

            await eventually(traffic, timeout=60, interval=0.25, what="both rules to fire")
        finally:
            await asyncio.to_thread(meters.shutdown)
            await asyncio.to_thread(logs.shutdown)
        rate_alert = next(
            a
            for d in webhook.delivered
            for a in d["alerts"]
            if a["labels"]["alertname"] == "CheckoutErrorRate"
        )
        assert rate_alert["labels"]["job"] == "checkout"  # service.name -> job
