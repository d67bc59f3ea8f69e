"""Ingest throughput: samples/s through the collector's POST /api/v1/metrics, next to raw redis-py XADD.

Everything runs in one go on this machine, against one Redis the script starts (persistence off, so both
paths measure software, not the disk), or TRIPWIRE_REDIS_URL:

- collector: the real service as a subprocess; an aiohttp client posts pre-encoded 1,000-sample requests
  with a few in flight, like several instrumented apps would;
- raw, pipelined: redis-py XADD of the very entries the collector writes (same bytes), 50 per pipeline;
- raw, one by one: one XADD round trip per entry, which is what one request costs the collector at minimum;
- raw, concurrent: one XADD per request with as many connections as the collector has requests in flight:
  the baseline for the issue's target (JSON path >= 0.8x of it);
- raw, one entry per sample: what a producer writing the stream itself without batching would do (1,000
  XADDs per request, pipelined per request), for the first 30 requests: context, not the target's baseline;
- bare HTTP: bench/bare_http_ingest.py, an aiohttp handler that XADDs each body unparsed: the ceiling of
  any ingest path in Python on aiohttp on this machine, HTTP's own cost next to raw XADD;
- decoding alone: orjson.loads of each body in this process, one core, nothing else (no HTTP, no checks,
  no encoding, no Redis): a floor on what any JSON path costs, however it is served. Times the machine's
  cores, it bounds how close to raw XADD a JSON path could get here with every core parsing;
- OTLP: the same samples as OTLP/HTTP protobuf (`ExportMetricsServiceRequest`) to POST /v1/metrics, when
  the collector serves that route (skipped with a note while it answers 404).

Usage: python bench/ingest.py [--requests 300] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.collector.ingest import METRICS, parse_body  # noqa: E402
from services.local_redis import free_port, redis_server_binary, spawn_redis_server, wait_until_ready  # noqa: E402
from shared.codec import encode_batch  # noqa: E402

BATCH = 1000
TARGET_RATIO = 0.8  # the target: JSON path >= 0.8x raw XADD of the same data, same connections
OTLP_PATH = "/v1/metrics"


def _sample_fields(seed: int, i: int) -> tuple[dict[str, str], float]:
    """The labels and timestamp of sample `i` of request `seed` (shared by the JSON and OTLP bodies)."""
    labels = {
        "service": f"svc-{(seed + i) % 20}",
        "route": f"/api/v1/items/{i % 50}",
        "method": ("GET", "POST", "PUT")[i % 3],
        "status": ("200", "200", "200", "404", "500")[i % 5],
    }
    return labels, time.time() + i / 1000


def make_request(seed: int) -> bytes:
    """A realistic 1,000-sample request: increments of an HTTP counter over services, routes and codes."""
    samples = []
    for i in range(BATCH):
        labels, ts = _sample_fields(seed, i)
        sample = {"name": "http_requests_total", "labels": labels, "value": 1, "kind": "increment"}
        samples.append({**sample, "timestamp": ts})
    return orjson.dumps({"samples": samples})


def make_otlp_request(seed: int) -> bytes:
    """The same 1,000 samples as one OTLP delta Sum with 1,000 data points, serialized as protobuf."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "http_requests_total"
    metric.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    metric.sum.is_monotonic = True
    for i in range(BATCH):
        labels, ts = _sample_fields(seed, i)
        point = metric.sum.data_points.add()
        point.time_unix_nano = int(ts * 1e9)
        point.start_time_unix_nano = point.time_unix_nano - 1_000_000_000
        point.as_int = 1
        point.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in labels.items())
    return request.SerializeToString()


def start_redis(own: bool = False) -> tuple[str, subprocess.Popen[bytes] | None, Path | None]:
    """TRIPWIRE_REDIS_URL's Redis, or (always with `own`) one of the bench's own, persistence off."""
    if not own and (url := os.environ.get("TRIPWIRE_REDIS_URL")):
        return url, None, None
    binary = redis_server_binary()
    if binary is None:
        raise SystemExit("bench: install redis-server or set TRIPWIRE_REDIS_URL")
    directory = Path(tempfile.mkdtemp(prefix="tripwire-bench-"))
    port = free_port()
    proc = spawn_redis_server(binary, port, directory, persistent=False)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until_ready(url, process=proc)
    return url, proc, directory


def start_collector(
    redis_url: str, prefix: str, redis: str = "", collector: str = "", log_level: str = "warning"
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The collector as a subprocess on a free port; `redis` and `collector` are more YAML lines for those
    sections (each `  key: value\n`)."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tripwire-bench-collector-"))
    config = workdir / "tripwire.yml"
    config.write_text(
        f"redis:\n  url: {redis_url}\n  prefix: {prefix}\n{redis}"
        f"collector:\n  listen: 127.0.0.1:{port}\n  max_items: 10000\n{collector}log:\n  level: {log_level}\n"
    )
    command = [sys.executable, "-m", "services.cli", "collector", "-c", str(config)]
    return _serve(command, port, workdir), f"http://127.0.0.1:{port}", workdir


def start_bare_server(redis_url: str, stream: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tripwire-bench-bare-"))
    command = [sys.executable, str(REPO / "bench" / "bare_http_ingest.py"), redis_url, stream, str(port)]
    return _serve(command, port, workdir), f"http://127.0.0.1:{port}", workdir


def _serve(command: list[str], port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start an HTTP server subprocess and wait until its port accepts connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "server.log").open("wb"),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    return proc


async def bench_collector(
    base: str,
    bodies: list[bytes],
    concurrency: int,
    path: str = "/api/v1/metrics",
    content_type: str = "application/json",
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(base + "/readyz") as r:
            assert r.status == 200, await r.text()

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t = time.perf_counter()
                async with session.post(base + path, data=body, headers={"Content-Type": content_type}) as r:
                    if r.status >= 300:
                        raise RuntimeError(f"{path}: HTTP {r.status}: {await r.text()}")
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(bodies) * BATCH / elapsed, latencies


async def otlp_route_status(base: str) -> int:
    """The status POST /v1/metrics answers to an empty protobuf export (404: the route is not there)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            base + OTLP_PATH, data=b"", headers={"Content-Type": "application/x-protobuf"}
        ) as response,
    ):
        return response.status


async def encoded_entries(bodies: list[bytes]) -> list[dict[bytes, bytes]]:
    """The exact entry fields the collector writes for each request body."""
    entries = []
    for i, body in enumerate(bodies):
        accepted = parse_body(METRICS, body, time.time(), 10_000)
        entries.append(await encode_batch("metrics", accepted.items_json, f"bench-{i}"))
    return entries


async def per_sample_entries(bodies: list[bytes]) -> list[list[dict[bytes, bytes]]]:
    """Per request, one stream entry for each of its samples (a batch of one), as the collector encodes it."""
    requests = []
    for i, body in enumerate(bodies):
        items = orjson.loads(parse_body(METRICS, body, time.time(), 10_000).items_json)
        requests.append(
            [await encode_batch("metrics", orjson.dumps([x]), f"bench-{i}-{j}") for j, x in enumerate(items)]
        )
    return requests


def bench_decode_only(bodies: list[bytes]) -> float:
    """Samples/s of orjson.loads alone over the bodies, on this process's one core."""
    started = time.perf_counter()
    for body in bodies:
        orjson.loads(body)
    return len(bodies) * BATCH / (time.perf_counter() - started)


async def bench_raw_per_sample(client: Redis, stream: str, requests: list[list[dict[bytes, bytes]]]) -> float:
    started = time.perf_counter()
    for entries in requests:
        async with client.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, fields, maxlen=1_000_000, approximate=True)
            await pipe.execute()
    return sum(map(len, requests)) / (time.perf_counter() - started)


async def bench_raw_pipelined(
    client: Redis, stream: str, entries: list[dict[bytes, bytes]], per: int
) -> float:
    started = time.perf_counter()
    for i in range(0, len(entries), per):
        async with client.pipeline(transaction=False) as pipe:
            for fields in entries[i : i + per]:
                pipe.xadd(stream, fields, maxlen=1_000_000, approximate=True)
            await pipe.execute()
    return len(entries) * BATCH / (time.perf_counter() - started)


async def bench_raw_single(client: Redis, stream: str, entries: list[dict[bytes, bytes]]) -> float:
    started = time.perf_counter()
    for fields in entries:
        await client.xadd(stream, fields, maxlen=1_000_000, approximate=True)
    return len(entries) * BATCH / (time.perf_counter() - started)


async def bench_raw_concurrent(
    client: Redis, stream: str, entries: list[dict[bytes, bytes]], concurrency: int
) -> float:
    """One XADD per request from `concurrency` workers, i.e. as many connections as requests in flight."""
    pending = iter(entries)

    async def worker() -> None:
        for fields in pending:  # a shared iterator: each entry is written once, by whichever worker is free
            await client.xadd(stream, fields, maxlen=1_000_000, approximate=True)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(entries) * BATCH / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(
    results: dict[str, list[float]], latencies: list[float], otlp_latencies: list[float], concurrency: int
) -> None:
    collector_rate = statistics.median(results["collector"])
    rows = [
        ("collector", "POST /api/v1/metrics (collector)"),
        ("bare", "POST, bare aiohttp handler, no parsing"),
        ("decode", "orjson.loads of the bodies alone, 1 core"),
        ("otlp", "POST /v1/metrics, OTLP protobuf"),
        ("pipelined", "raw redis-py XADD, pipelines of 50"),
        ("single", "raw redis-py XADD, one per entry"),
        ("concurrent", f"raw redis-py XADD, {concurrency} connections"),
        ("per_sample", "raw redis-py XADD, entry per sample"),
    ]
    for name, label in rows:
        if not results[name]:
            continue
        rate = statistics.median(results[name])
        print(f"  {label:<38} {rate:>12,.0f} samples/s   ({collector_rate / rate:.2f}x of this)")
    if not results["otlp"]:
        print(f"  OTLP protobuf: skipped (POST {OTLP_PATH} answers 404: OTLP routes are not registered)")
    print(
        f"  collector request latency: p50 {pct(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {pct(latencies, 0.99) * 1000:.1f} ms"
    )
    if otlp_latencies:
        print(
            f"  OTLP request latency: p50 {pct(otlp_latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {pct(otlp_latencies, 0.99) * 1000:.1f} ms"
        )
    raw = statistics.median(results["concurrent"])
    ratio = collector_rate / raw
    verdict = "met" if ratio >= TARGET_RATIO else "not met"
    print(
        f"  JSON path vs raw XADD, same data and connections: {ratio:.3f}x "
        f"(target >= {TARGET_RATIO}x: {verdict})"
    )
    bare = statistics.median(results["bare"])
    print(
        f"  ceiling, bare aiohttp handler vs raw XADD: {bare / raw:.3f}x; "
        f"the collector reaches {collector_rate / bare:.2f}x of that ceiling"
    )
    decode, cores = statistics.median(results["decode"]), os.cpu_count() or 1
    print(
        f"  floor, decoding the JSON alone vs raw XADD: {decode / raw:.3f}x on one core, "
        f"{decode * cores / raw:.3f}x if all {cores} cores did nothing else"
    )


async def one_round(
    args: argparse.Namespace,
    client: Redis,
    pooled: Redis,
    bases: tuple[str, str],
    data: tuple[list[bytes], list[bytes], list[dict[bytes, bytes]], list[list[dict[bytes, bytes]]]],
    results: dict[str, list[float]],
) -> None:
    """Each path once, in turn: collector, bare HTTP, OTLP, then the raw XADD baselines."""
    base, bare_base = bases
    bodies, otlp_bodies, entries, unbatched = data
    await client.delete("bench:{metrics}", "bench:raw")
    rate, lat = await bench_collector(base, bodies, args.concurrency)
    results["collector"].append(rate)
    results["latency"].extend(lat)
    stored = await client.xlen("bench:{metrics}")
    assert stored == args.requests, f"collector stored {stored} of {args.requests} requests"
    await client.delete("bench:bare")
    rate, _ = await bench_collector(bare_base, bodies, args.concurrency)
    results["bare"].append(rate)
    assert await client.xlen("bench:bare") == args.requests
    if otlp_bodies:
        rate, lat = await bench_collector(
            base, otlp_bodies, args.concurrency, OTLP_PATH, "application/x-protobuf"
        )
        results["otlp"].append(rate)
        results["otlp_latency"].extend(lat)
    await client.delete("bench:raw")
    results["pipelined"].append(await bench_raw_pipelined(client, "bench:raw", entries, 50))
    await client.delete("bench:raw")
    results["single"].append(await bench_raw_single(client, "bench:raw", entries))
    await client.delete("bench:raw")
    results["concurrent"].append(await bench_raw_concurrent(pooled, "bench:raw", entries, args.concurrency))
    await client.delete("bench:raw")
    results["per_sample"].append(await bench_raw_per_sample(client, "bench:raw", unbatched))
    results["decode"].append(bench_decode_only(bodies))


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    redis_url, redis_proc, redis_dir = start_redis()
    collector, base, workdir = start_collector(redis_url, "bench")
    bare, bare_base, bare_workdir = start_bare_server(redis_url, "bench:bare")
    client = Redis.from_url(redis_url)
    # The concurrent baseline's own client, capped at the collector's requests in flight.
    pooled = Redis.from_url(redis_url, max_connections=args.concurrency)
    try:
        bodies = [make_request(i) for i in range(args.requests)]
        entries = await encoded_entries(bodies)
        unbatched = await per_sample_entries(bodies[:30])
        otlp_status = await otlp_route_status(base)
        otlp_bodies = [make_otlp_request(i) for i in range(args.requests)] if otlp_status != 404 else []
        results: dict[str, list[float]] = {
            "collector": [],
            "bare": [],
            "otlp": [],
            "pipelined": [],
            "single": [],
            "concurrent": [],
            "per_sample": [],
            "decode": [],
            "latency": [],
            "otlp_latency": [],
        }
        for _ in range(args.rounds):
            data = (bodies, otlp_bodies, entries, unbatched)
            await one_round(args, client, pooled, (base, bare_base), data, results)
        print(
            f"ingest benchmark: {args.requests} requests x {BATCH} samples "
            f"({sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB JSON each), "
            f"{args.concurrency} in flight, median of {args.rounds} rounds; Redis {redis_url}"
        )
        report(results, results["latency"], results["otlp_latency"], args.concurrency)
    finally:
        await client.aclose()
        await pooled.aclose()
        for proc, directory in ((collector, workdir), (bare, bare_workdir)):
            proc.terminate()
            proc.wait(timeout=15)
            shutil.rmtree(directory, ignore_errors=True)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=15)
        if redis_dir is not None:
            shutil.rmtree(redis_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
