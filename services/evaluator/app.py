"""The evaluator service: metrics and logs in from the streams, rule groups on ticks, alerts out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.evaluator.api import add_routes
from services.evaluator.evaluation import EvaluationMetrics, Evaluator
from services.evaluator.housekeeping import Housekeeper, HousekeepingMetrics
from services.evaluator.ingest import IngestMetrics, Ingestor
from services.evaluator.lease import Lease, LeaseLost
from services.evaluator.log_metrics import LogMetrics
from services.evaluator.reload import ReloadMetrics, RuleReloader
from services.evaluator.replay import replay_tail
from services.evaluator.rules.files import load_rule_files
from services.evaluator.rules.group import EvalContext, history_needed
from services.evaluator.series import SeriesLimits, SeriesStore
from services.evaluator.state import StateStore
from shared.clock import Clock, SystemClock
from shared.config import Config, rule_file_paths
from shared.service import Service
from shared.streams import EVALUATOR_GROUP, Keys, entry_order

log = logging.getLogger(__name__)

EXIT_LEASE_LOST = 75  # EX_TEMPFAIL: try again (as a standby)


@dataclass
class EvaluatorApp:
    service: Service
    evaluator: Evaluator
    ingestor: Ingestor
    reloader: RuleReloader
    lease: Lease | None = None

    async def start(self) -> None:
        """Wait to be the active replica (when a lease is configured), then recover and run."""
        if self.lease is not None:
            self.service.waiting_for = "standby: another evaluator holds the lease"
            await self.lease.acquire()
            self.evaluator.state.fence = self.lease.value
        await self.service.start(before_consumers=self._recover)

    async def evaluate(self) -> None:
        """The evaluation loop; losing the lease stops the process (its supervisor restarts it, a standby)."""
        try:
            await self.evaluator.run()
        except LeaseLost as exc:
            self._lost(exc)

    async def keep_lease(self) -> None:
        assert self.lease is not None
        try:
            await self.lease.keep()
        except LeaseLost as exc:
            self._lost(exc)

    def _lost(self, exc: LeaseLost) -> None:
        log.error("no longer the active evaluator; stopping", extra={"reason": str(exc)})
        self.service.request_stop(EXIT_LEASE_LOST)

    async def _recover(self) -> None:
        """Before consuming: restore alert state, then rebuild the series windows from the stream tails."""
        config = self.service.config
        keys = Keys(config.redis.prefix)
        restored = await self.evaluator.restore()
        window = self.evaluator.store.retention
        replayed = 0
        for stream, kind in ((keys.metrics, "metrics"), (keys.logs, "logs")):
            replayed += await replay_tail(
                self.service.redis, self.ingestor, stream, kind, EVALUATOR_GROUP, window
            )
            newest = await self.service.redis.xrevrange(stream, count=1)
            if newest:
                self.ingestor.targets[stream] = entry_order(newest[0][0])
        log.info("recovered", extra={"alerts_restored": restored, "entries_replayed": replayed})


def build(config: Config, clock: Clock | None = None) -> EvaluatorApp:
    """Wire the evaluator; raises ConfigErrors if any rule file is invalid (nothing starts then)."""
    clock = clock or SystemClock()
    service = Service("evaluator", config, clock)
    keys = Keys(config.redis.prefix)
    groups = load_rule_files(rule_file_paths(config), config.global_.evaluation_interval)
    if not groups:
        log.warning(
            "no rule groups loaded; check rule_files in the config", extra={"rule_files": config.rule_files}
        )
    limits = SeriesLimits(
        max_series=config.evaluator.max_series,
        max_series_per_metric=config.evaluator.max_series_per_metric,
        max_samples_per_series=config.evaluator.max_samples_per_series,
    )
    store = SeriesStore(retention=history_needed(groups, config.evaluator.lookback), limits=limits)
    ingestor = Ingestor(
        store=store,
        now=clock.now,
        metrics=IngestMetrics(service.registry),
        log_metrics=LogMetrics(config.log_metrics),
    )
    evaluator = Evaluator(
        groups=groups,
        store=store,
        state=StateStore(service.redis, keys, config.streams.maxlen),
        clock=clock,
        ctx=EvalContext(
            lookback=config.evaluator.lookback,
            resend_delay=config.evaluator.resend_delay,
            external_labels=config.global_.external_labels,
            external_url=config.evaluator.external_url,
            subquery_step=config.global_.evaluation_interval,
            outage_tolerance=config.evaluator.for_outage_tolerance,
            grace_period=config.evaluator.for_grace_period,
        ),
        metrics=EvaluationMetrics(service.registry),
        caught_up=ingestor.caught_up,
        catch_up_timeout=config.evaluator.catch_up_timeout,
    )
    service.consume(keys.metrics, EVALUATOR_GROUP, ingestor.handler(keys.metrics, "metrics"))
    service.consume(keys.logs, EVALUATOR_GROUP, ingestor.handler(keys.logs, "logs"))
    lease = None
    if config.evaluator.lease_ttl > 0:
        lease = Lease(
            service.redis,
            keys,
            config.evaluator.lease_ttl,
            config.streams.consumer_name,
            registry=service.registry,
        )
        service.on_stop(lease.release)
    reloader = RuleReloader(config, evaluator, clock, ReloadMetrics(service.registry))
    service.add_loop("rule-file-watch", reloader.watch)
    service.on_sighup(lambda: reloader.reload("sighup"))
    add_routes(service.web, evaluator, clock.now, config.evaluator.lookback, reloader, config.admin_token)
    log.info("rules loaded", extra={"groups": len(groups), "rules": sum(len(g.rules) for g in groups)})
    app = EvaluatorApp(service, evaluator, ingestor, reloader, lease)
    service.add_loop("evaluation", app.evaluate)
    if lease is not None:
        service.add_loop("lease", app.keep_lease)
    housekeeper = Housekeeper(
        service.redis,
        [keys.metrics, keys.logs],
        EVALUATOR_GROUP,
        lambda: store.retention,
        HousekeepingMetrics(service.registry),
        maxlen=config.streams.maxlen,
    )
    service.add_loop("stream-housekeeping", housekeeper.run)
    return app


async def run(config: Config) -> None:
    app = build(config)
    await app.service.run(config.evaluator.listen, app.start)
