"""The collector service: HTTP ingest in, one batch entry per request out onto the streams."""

from __future__ import annotations

import logging

from services.collector.api import add_routes
from services.collector.otlp import add_otlp_routes
from services.collector.publish import Publisher
from shared.clock import Clock, SystemClock
from shared.config import Config
from shared.service import Service

log = logging.getLogger(__name__)


def build(config: Config, clock: Clock | None = None) -> Service:
    service = Service("collector", config, clock or SystemClock())
    publisher = Publisher(
        service.redis,
        config.streams.maxlen,
        config.collector.retry_after,
        config.collector.max_in_flight,
    )
    add_routes(service, publisher)
    add_otlp_routes(service, publisher)
    if config.scrape_configs:
        log.warning(
            "scrape_configs are not implemented yet; %d scrape job(s) ignored", len(config.scrape_configs)
        )
    return service


async def run(config: Config) -> None:
    service = build(config)
    await service.run(config.collector.listen, service.start)
