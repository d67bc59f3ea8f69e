"""SIGKILL of the notifier between a kill-switch decision and the end of its flip (LaunchDarkly applied the
PATCH, the answer never came back): after the restart, exactly one flip, the decision audited once as done
(real processes, real Redis, the LaunchDarkly fake)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.e2e.system import System
from tests.fakes.flags import FakeLaunchDarkly
from tests.polling import eventually

pytestmark = pytest.mark.e2e

ALERT = {"labels": {"alertname": "HighErrorRate", "service": "checkout", "flag": "new-checkout"}}
LEASE = 2.0


async def test_sigkill_between_decision_and_flip_flips_exactly_once(tmp_path: Path, redis_server):
    ld = await FakeLaunchDarkly(
        token="api-0123", flags={("default", "new-checkout"): {"production": True}}
    ).start()
    (tmp_path / "ld-token").write_text("api-0123")
    flag_off = {
        "provider": "launchdarkly",
        "flag": "{{ .CommonLabels.flag }}",
        "url": ld.url,
        "token_file": str(tmp_path / "ld-token"),
        "project": "default",
        "environment": "production",
    }
    routing = {
        "route": {"receiver": "rollback", "group_by": ["flag"], "group_wait": "0s", "group_interval": "1s"},
        "receivers": [{"name": "rollback", "flag_off_configs": [flag_off]}],
    }
    system = System(
        tmp_path,
        redis_server.url,
        f"e2e-{uuid.uuid4().hex[:8]}",
        "groups: []\n",
        routing,
        overrides={"notifier": {"claim_lease": f"{LEASE:g}s", "startup_wait": "2s"}},
    )
    try:
        async with system.running("notifier"):
            ld.hang_next(1, method="PATCH")  # LaunchDarkly turns the flag off; its answer never arrives
            async with aiohttp.ClientSession() as session:
                response = await session.post(system.url("notifier", "/api/v2/alerts"), json=[ALERT])
                assert response.status == 200

            async def flag_is_off() -> bool:
                return not ld.flag_on("default", "new-checkout", "production")

            await eventually(flag_is_off, timeout=15, what="LaunchDarkly to apply the flip")
            system.kill("notifier")
            system.start("notifier")
            await system.wait_ready("notifier")
            audit_key = f"{system.prefix}:{{audit}}"
            async with Redis.from_url(redis_server.url) as redis:

                async def finished() -> list:
                    entries = await redis.xrange(audit_key)
                    return [e for _, e in entries if e[b"outcome"] in (b"flipped", b"already_off")]

                [done] = await eventually(
                    finished, timeout=20, what="the decision to be finished after restart"
                )
                await asyncio.sleep(LEASE * 2)  # a deliberate window (absence cannot be polled)
                assert len(await finished()) == 1
            assert done[b"outcome"] == b"already_off"  # read first after the restart: no second PATCH
            patches = [r for r in ld.requests if r.method == "PATCH"]
            assert len(patches) == 1, patches
            assert not ld.flag_on("default", "new-checkout", "production")
    finally:
        await ld.stop()
