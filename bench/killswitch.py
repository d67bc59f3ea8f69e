"""Kill-switch speed, end to end over a real Redis (started here, persistence off), in one run:

- latency: from XADD of an alert entry on the alerts stream to tripwire's OpenFeature provider, in ANOTHER
  process, reporting the alert's flag off (p50/p99 over 50 trials; target p99 <= 1 s). The notifier is the
  real service in this process (stream consumer, group timers with group_wait 0, guardrails and decision in
  Redis, the built-in flag store's atomic write + pub/sub); the app process polls its flags every millisecond
  through the OpenFeature client, as an app checks a flag per request.
- raw baseline, same run: a flag written straight to the store (FlagStore.set) to the same app process
  seeing it: the pub/sub floor under the kill switch.

Usage: python bench/killswitch.py [--trials 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import yaml
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ingest import start_redis  # noqa: E402

from services.notifier.app import build  # noqa: E402
from shared.clock import SystemClock  # noqa: E402
from shared.config import Config  # noqa: E402
from shared.flag_store import FlagStore  # noqa: E402
from shared.jsonlog import configure_logging  # noqa: E402
from shared.streams import Keys, append_batch  # noqa: E402

# The app: OpenFeature with tripwire's provider, reporting each watched flag once it reads off.
APP = """
import sys, time
from openfeature import api
from shared.openfeature_provider import TripwireProvider
url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
api.set_provider(TripwireProvider(url, prefix=prefix))
client = api.get_client()
print("ready", flush=True)
flags = [f"{kind}-{i}" for kind in ("bench", "raw") for i in range(count)]
seen = set()
deadline = time.time() + 600
while len(seen) < len(flags) and time.time() < deadline:
    for flag in flags:
        if flag not in seen and not client.get_boolean_value(flag, default_value=True):
            seen.add(flag)
            print(flag, repr(time.time()), flush=True)
    time.sleep(0.001)
api.shutdown()
"""


def notifier_config(url: str, prefix: str, trials: int) -> Config:
    workdir = Path(tempfile.mkdtemp(prefix="tripwire-bench-kill-"))
    routing = {
        "route": {"receiver": "rollback", "group_by": ["flag"], "group_wait": "0s", "group_interval": "5m"},
        "receivers": [
            {
                "name": "rollback",
                "flag_off_configs": [
                    {"provider": "builtin", "flag": "{{ .CommonLabels.flag }}", "max_flips": trials + 1}
                ],
            }
        ],
    }
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(routing))
    return Config.model_validate(
        {
            "redis": {"url": url, "prefix": prefix},
            "alerting": {"config_file": str(workdir / "alertmanager.yml")},
            "streams": {"consumer_name": "bench"},
            "notifier": {"startup_wait": "0s"},
            "log": {"level": "warning"},
        }
    )


async def seen_off(app: asyncio.subprocess.Process, flag: str) -> float:
    assert app.stdout is not None
    line = await asyncio.wait_for(app.stdout.readline(), 10)
    name, at = line.decode().split()
    assert name == flag, (name, flag)
    return float(at)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    configure_logging("bench", "error", "text")  # each flip logs a warning: not what is measured
    url, proc, _ = start_redis()
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    keys = Keys(prefix)
    redis = Redis.from_url(url)
    app_process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", APP, url, prefix, str(args.trials), cwd=REPO, stdout=asyncio.subprocess.PIPE
    )
    notifier = build(notifier_config(url, prefix, args.trials))
    await notifier.service.start()
    try:
        assert app_process.stdout is not None
        assert (await app_process.stdout.readline()).strip() == b"ready"
        latencies = []
        for trial in range(args.trials):
            flag = f"bench-{trial}"
            now = time.time()
            alert = {
                "labels": {"alertname": "BenchErrorRate", "flag": flag},
                "startsAt": now,
                "endsAt": now + 3600,
            }
            sent = time.time()
            await append_batch(redis, keys.alerts, "alerts", orjson.dumps([alert]), "bench", 100_000)
            latencies.append(await seen_off(app_process, flag) - sent)
        store = FlagStore(redis, keys, SystemClock())
        raw = []
        for trial in range(args.trials):
            flag = f"raw-{trial}"
            sent = time.time()
            await store.set(flag, False, actor="bench", reason="raw baseline")
            raw.append(await seen_off(app_process, flag) - sent)
    finally:
        await notifier.service.stop()
        await redis.aclose()
        app_process.kill()
        await app_process.wait()
        if proc is not None:
            proc.terminate()

    def figures(values: list[float]) -> str:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        p50, worst = statistics.median(ordered) * 1000, ordered[-1] * 1000
        return f"p50 {p50:.1f} ms, p99 {p99 * 1000:.1f} ms, max {worst:.1f} ms"

    print(
        f"alert entry -> OpenFeature provider in another process sees the flag off ({args.trials} trials): "
        f"{figures(latencies)}   (target p99 <= 1000 ms)"
    )
    print(f"raw baseline, FlagStore.set -> the same provider sees it: {figures(raw)}")


if __name__ == "__main__":
    asyncio.run(main())
