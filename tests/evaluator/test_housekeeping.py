"""Stream trimming by age and consumer-lag metrics, on a real Redis."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from services.evaluator.housekeeping import MARGIN, Housekeeper, HousekeepingMetrics
from shared.streams import Keys


async def test_trim_keeps_exactly_the_history_the_rules_need(redis: Redis, keys: Keys):
    seconds, _ = await redis.time()
    now_ms = seconds * 1000
    retention = 600.0
    old = [now_ms - int((retention + MARGIN + 120) * 1000) - i for i in range(200, 0, -1)]
    for ms in old:
        await redis.xadd(keys.metrics, {"f": "old"}, id=f"{ms}-0")
    recent_id = await redis.xadd(keys.metrics, {"f": "recent"}, id=f"{now_ms - int(retention * 1000)}-0")
    await redis.xgroup_create(keys.metrics, "evaluator", id="0")
    registry = CollectorRegistry()
    keeper = Housekeeper(
        redis, [keys.metrics, keys.logs], "evaluator", lambda: retention, HousekeepingMetrics(registry)
    )
    await keeper.trim()
    remaining = [i for i, _ in await redis.xrange(keys.metrics)]
    assert recent_id in remaining  # within the retention: never trimmed
    # MINID ~ trims whole macro nodes only, so a few old entries may survive; most must go.
    assert len(remaining) < 50, len(remaining)
    await keeper.observe_lag()
    lag = registry.get_sample_value("tripwire_stream_consumer_lag", {"stream": keys.metrics})
    assert lag == len(remaining)


async def test_a_stream_at_its_cap_with_less_history_than_the_rules_need_is_an_error(
    redis: Redis, keys: Keys, caplog
):
    # MAXLEN ~ trims oldest first, read or not (helper-45's review: 3,000 accepted requests, 1,005 entries
    # left, none read): a cap that holds less than the rules' window is deleting what they still need.
    seconds, _ = await redis.time()
    now_ms = seconds * 1000
    registry = CollectorRegistry()
    for i in range(100):  # the last 100 seconds, one entry a second
        await redis.xadd(keys.metrics, {"f": "x"}, id=f"{now_ms - (100 - i) * 1000}-0")

    metrics = HousekeepingMetrics(registry)

    def keeper(maxlen: int, retention: float) -> Housekeeper:
        return Housekeeper(redis, [keys.metrics, keys.logs], "evaluator", lambda: retention, metrics, maxlen)

    assert await keeper(maxlen=100, retention=600).observe_history() == [keys.metrics]
    history = registry.get_sample_value("tripwire_stream_history_seconds", {"stream": keys.metrics})
    assert history is not None and 100 <= history < 110
    assert "raise streams.maxlen" in caplog.text
    # Room left under the cap, or the window held: nothing to say.
    assert await keeper(maxlen=1000, retention=600).observe_history() == []
    assert await keeper(maxlen=100, retention=60).observe_history() == []


async def test_the_evaluator_runs_the_history_check_with_its_streams_cap(
    make_config, redis: Redis, keys: Keys
):
    # The wiring: the evaluator's housekeeping loop knows streams.maxlen and checks history every round.
    import asyncio

    from services.evaluator.app import build
    from tests.polling import eventually

    app = build(make_config(streams={"maxlen": 1000, "consumer_name": "test"}))
    try:
        (run,) = [loop for name, loop in app.service._loops if name == "stream-housekeeping"]
        keeper: Housekeeper = run.__self__  # type: ignore[attr-defined]
        assert keeper.maxlen == 1000
        await redis.xadd(keys.metrics, {"f": "x"})
        task = asyncio.create_task(keeper.run())
        try:

            async def measured() -> bool:
                gauge = "tripwire_stream_history_seconds"
                return app.service.registry.get_sample_value(gauge, {"stream": keys.metrics}) is not None

            await eventually(measured, what="the first round's history gauge")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await app.service.redis.aclose()
