"""A bare HTTP ingest server for bench/ingest.py: the ceiling of any Python ingest path on aiohttp here.

POST /api/v1/metrics reads the body and XADDs it as it came, unparsed and unvalidated, one XADD per request,
then answers 202; GET /readyz answers 200. No JSON parsing, no validation, no limits, no auth: everything the
collector does beyond moving bytes from a socket to Redis is left out, so the gap between this and raw XADD is
the cost of HTTP in Python alone. Not a service: bench/ingest.py starts it as a subprocess.

Usage: python bench/bare_http_ingest.py REDIS_URL STREAM PORT
"""

from __future__ import annotations

import sys

from aiohttp import web
from redis.asyncio import Redis


def main() -> None:
    redis_url, stream, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    redis = Redis.from_url(redis_url)

    async def ingest(request: web.Request) -> web.Response:
        body = await request.read()
        await redis.xadd(stream, {b"__data__": body}, maxlen=1_000_000, approximate=True)
        return web.Response(status=202)

    async def ready(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/api/v1/metrics", ingest)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
