"""The collector service: events in over HTTP (the JSON API, OTLP/HTTP) and from Prometheus scrapes, one batch
entry per request or scrape out onto the streams."""

from __future__ import annotations

from services.collector.api import add_routes
from services.collector.body_budget import BodyBudget
from services.collector.otlp import add_otlp_routes
from services.collector.publish import Publisher
from services.collector.scrape import start_scraping
from services.collector.validation_pool import validation_pool_for
from shared.clock import Clock, SystemClock
from shared.config import Config
from shared.service import Service


def build(config: Config, clock: Clock | None = None) -> Service:
    service = Service("collector", config, clock or SystemClock(), decode_bodies_in_handlers=True)
    publisher = Publisher(
        service.redis,
        config.streams.maxlen,
        config.collector.retry_after,
        config.collector.max_in_flight,
        registry=service.registry,
        remember_ids_for=config.collector.request_id_ttl,
    )
    collector = config.collector
    # One budget for both receivers: what bounds the collector's memory is all the bodies it holds.
    budget = BodyBudget(
        collector.max_buffered_bytes, collector.max_body_bytes, collector.retry_after, service.registry
    )
    # One pool for both receivers too: what bounds the CPU work admitted is all of it.
    pool = validation_pool_for(service)
    add_routes(service, publisher, budget, pool)
    add_otlp_routes(service, publisher, budget=budget, pool=pool)
    start_scraping(service, publisher)
    return service


async def run(config: Config) -> None:
    service = build(config)
    await service.run(config.collector.listen, service.start)
