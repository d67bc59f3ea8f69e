"""The shell every tripwire service runs in.

A `Service` owns the Redis client and FastStream broker, the Prometheus registry, the HTTP server with
`/healthz`, `/readyz` and `/metrics`, the stream consumers and any background loops, and stops all of them
cleanly on SIGTERM or SIGINT. A service's own `app.py` adds its routes, consumers and loops, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from redis.exceptions import RedisError

from shared.clock import Clock
from shared.config import Config
from shared.connection import BROKER_LOGGER, redis_broker, redis_client
from shared.connection_limit import ConnectionLimit, default_max_connections, raise_open_file_limit
from shared.consumers import ConsumerMetrics, EntryHandler, GroupConsumer
from shared.counted_log import CountedLog
from shared.tasks import cancel_and_wait
from shared.webapp import BODIES_ENCODED, BODY_TIMEOUT, json_response, refused_bodies, unmatched_as_json

log = logging.getLogger(__name__)

ACCEPT_FAILED = "socket.accept() out of system resource"
ACCEPT_LOG_EVERY = 60.0

# How long a stopping service lets HTTP requests in flight finish; under docker's 10 s grace before SIGKILL.
HTTP_DRAIN_TIMEOUT = 5.0

ReadinessCheck = Callable[[], list[str]]


def _quiet_fetch_errors(record: logging.LogRecord) -> bool:
    if record.getMessage().startswith("Message fetch error") and record.levelno >= logging.WARNING:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(BROKER_LOGGER).isEnabledFor(logging.DEBUG)
    return True


class Service:
    def __init__(
        self, name: str, config: Config, clock: Clock, *, decode_bodies_in_handlers: bool = False
    ) -> None:
        self.name = name
        self.config = config
        self.clock = clock
        self.registry = CollectorRegistry()
        self.redis = redis_client(config)
        self.broker = redis_broker(config, self.registry, name)
        self.consumers: list[GroupConsumer] = []
        self.checks: list[ReadinessCheck] = []
        # Extra facts for /readyz that do not make the service unready (e.g. a receiver refusing us).
        self.details: list[Callable[[], dict[str, object]]] = []
        self._consumer_metrics = ConsumerMetrics(self.registry)
        self._loops: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._on_sighup: list[Callable[[], Awaitable[object]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        # Shown by /readyz until the service has started (e.g. a standby waiting for a lease).
        self.waiting_for = "starting"
        self._stop_requested = asyncio.Event()
        self.exit_code = 0
        self.connections: ConnectionLimit | None = None  # while serving
        self._up = Gauge(
            "tripwire_up", "1 once the service has started its consumers and loops.", registry=self.registry
        )
        # Routes that need more (the collector's ingest) read the body themselves with their own limit.
        # With decode_bodies_in_handlers, aiohttp leaves compressed bodies as sent and shared.webapp.read_body
        # decodes them under its limit: aiohttp would also decompress, on the event loop, every byte of a
        # body a handler refused (it drains up to 10 s of it), which made a 4 MB gzip bomb cost 3 CPU-s.
        # That drain, which lets a client still sending read its answer, is cut to 2 s of raw bytes.
        ingest_handler = {"auto_decompress": False, "lingering_time": 2.0}
        self.web = web.Application(
            middlewares=[unmatched_as_json, refused_bodies],
            client_max_size=4 * 1024 * 1024,
            handler_args=ingest_handler if decode_bodies_in_handlers else None,
        )
        self.web[BODIES_ENCODED] = decode_bodies_in_handlers
        self.web[BODY_TIMEOUT] = config.http.body_timeout
        self.web.router.add_get("/healthz", self._healthz)
        self.web.router.add_get("/readyz", self._readyz)
        self.web.router.add_get("/metrics", self._metrics)

    # Composition -----------------------------------------------------------------------------------------
    def consume(self, stream: str, group: str, handler: EntryHandler) -> GroupConsumer:
        """Subscribe `handler` to `stream` in consumer group `group` (see shared.consumers)."""
        consumer = GroupConsumer(
            broker=self.broker,
            redis=self.redis,
            stream=stream,
            group=group,
            handler=handler,
            config=self.config.streams,
            clock=self.clock,
            metrics=self._consumer_metrics,
        )
        self.consumers.append(consumer)
        return consumer

    def add_loop(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """A background coroutine started after the consumers; readiness fails if it ever returns."""
        self._loops.append((name, loop))

    def on_sighup(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Run `callback` (e.g. a config reload) whenever the process gets SIGHUP."""
        self._on_sighup.append(callback)

    def on_stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run `cleanup` when the service stops, after consumers and loops have ended and while HTTP requests
        in flight may still be finishing (release a lease here: a standby should not wait for them)."""
        self._cleanups.append(cleanup)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run `closer` when the service stops, once HTTP requests in flight have finished, just before Redis
        is closed: for what request handlers use (an HTTP client session). Closers run last registered first,
        so one may still use what an earlier one closes."""
        self._closers.append(closer)

    # Lifecycle -------------------------------------------------------------------------------------------
    async def start(self, before_consumers: Callable[[], Awaitable[None]] | None = None) -> None:
        """Connect (waiting for Redis if it is not up yet), run `before_consumers`, then start consuming."""
        await self._wait_for_redis()
        if before_consumers is not None:
            await before_consumers()
        for consumer in self.consumers:
            await consumer.prepare()
        if self.consumers:
            await self.broker.start()
        for consumer in self.consumers:
            consumer.start_background()
        for name, loop in self._loops:
            self._tasks.append(asyncio.create_task(self._supervised(name, loop), name=name))
        self._started = True
        self._up.set(1)
        log.info("service started", extra={"redis_prefix": self.config.redis.prefix})

    async def _wait_for_redis(self) -> None:
        delay = 0.1
        before = self.waiting_for
        while True:
            try:
                await self.redis.ping()
                self.waiting_for = before
                return
            except RedisError as exc:
                log.warning("waiting for redis: %s", exc)
                # /readyz names the cause; the address and the error text stay in the log.
                self.waiting_for = f"waiting for redis ({type(exc).__name__}; see the log)"
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background loop crashed", extra={"loop": name})
            raise

    async def stop(self) -> None:
        """Stop the loops and consumers, run the on_stop and on_close hooks, close Redis."""
        await self._stop_work()
        await self._close()

    async def _stop_work(self) -> None:
        self._up.set(0)
        # FastStream closes its connections under a read still in flight and logs that as an error with a
        # traceback; during our own shutdown it is expected, so it is logged at DEBUG instead.
        logging.getLogger(BROKER_LOGGER).addFilter(_quiet_fetch_errors)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        # One step failing must not skip the rest: a lease left unreleased keeps the standby waiting.
        await _each_step("stopping a consumer", [consumer.stop for consumer in self.consumers])
        await _each_step("stopping the broker", [self.broker.stop] if self.consumers else [])
        await _each_step("an on_stop hook", self._cleanups)

    async def _close(self) -> None:
        # Last registered first: a closer may use what an earlier one closes.
        await _each_step("an on_close hook", list(reversed(self._closers)))
        await self.redis.aclose()
        log.info("service stopped")

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[int]:
        """Serve HTTP on host:port (0 picks a free port, yielded) while the service runs."""
        http = self.config.http
        runner = web.AppRunner(
            self.web,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=HTTP_DRAIN_TIMEOUT,
            keepalive_timeout=http.idle_timeout,
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        accept_errors = AcceptErrors()
        loop.set_exception_handler(accept_errors)
        assert runner.server is not None
        max_connections = http.max_connections or default_max_connections()
        limit = ConnectionLimit(runner.server, max_connections, self.registry)
        # Our own listener rather than aiohttp's TCPSite, whose protocol factory cannot be wrapped; stopping
        # it is all TCPSite.stop does, and runner.cleanup() then drains the requests in flight as before.
        server = await loop.create_server(limit, host, port, backlog=128)
        self.connections = limit
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            await runner.cleanup()
            accept_errors.flush()
            limit.refusals.flush()

    async def run(self, listen: str, start: Callable[[], Awaitable[None]]) -> None:
        """Serve and run until SIGTERM or SIGINT, then stop everything cleanly."""
        host, _, port = listen.rpartition(":")
        stop = self._stop_requested
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        pending: set[asyncio.Task[object]] = set()

        def hangup() -> None:
            for callback in self._on_sighup:
                task = asyncio.ensure_future(callback())
                pending.add(task)  # keep a reference until it is done
                task.add_done_callback(pending.discard)

        if self._on_sighup:
            loop.add_signal_handler(signal.SIGHUP, hangup)
        try:
            raise_open_file_limit()  # before serving: the default http.max_connections follows it
            async with self.serving(host, int(port)) as bound:
                assert self.connections is not None
                log.info(
                    "listening",
                    extra={
                        "address": f"{host}:{bound}",
                        "max_connections": self.connections.limit,
                        "idle_timeout": self.config.http.idle_timeout,
                    },
                )
                starting = asyncio.create_task(start())
                stopped = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if starting.done() and starting.exception():
                        stopped.cancel()
                        raise starting.exception()  # type: ignore[misc]
                    await stopped
                    await cancel_and_wait([starting])
                finally:
                    # Loops, consumers and leases first (also when start failed, say after taking the lease),
                    # while HTTP may still be finishing requests: a lease held through a slow request kept
                    # the standby waiting.
                    await self._stop_work()
        finally:
            # Leaving `serving` stopped taking requests and gave those in flight HTTP_DRAIN_TIMEOUT to
            # finish: only now is Redis closed. Closed under a request, Redis failed its XADD, and the client
            # was told 503 for a batch Redis may have stored.
            await self._close()
        if self.exit_code:
            raise SystemExit(self.exit_code)

    def request_stop(self, exit_code: int = 0) -> None:
        """Stop as on SIGTERM, then exit with `exit_code` (non-zero: the supervisor should restart us)."""
        self.exit_code = self.exit_code or exit_code
        self._stop_requested.set()

    # Health ----------------------------------------------------------------------------------------------
    async def problems(self) -> list[str]:
        """Why the service is not ready (empty when it is)."""
        if not self._started:
            return [self.waiting_for]
        problems: list[str] = []
        try:
            async with asyncio.timeout(1.0):
                await self.redis.ping()
        except (RedisError, TimeoutError) as exc:
            problems.append(f"redis unreachable: {exc or type(exc).__name__}")
        for consumer in self.consumers:
            problems.extend(consumer.problems())
        problems.extend(f"{t.get_name()} loop has stopped" for t in self._tasks if t.done())
        for check in self.checks:
            problems.extend(check())
        return problems

    async def _healthz(self, _request: web.Request) -> web.Response:
        return json_response({"status": "ok", "service": self.name})

    async def _readyz(self, _request: web.Request) -> web.Response:
        problems = await self.problems()
        details: dict[str, object] = {}
        for detail in self.details:
            details.update(detail())
        body: dict[str, object] = {"service": self.name, **({"details": details} if details else {})}
        if problems:
            return json_response({"status": "unavailable", **body, "problems": problems}, 503)
        return json_response({"status": "ready", **body})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


async def _each_step(what: str, steps: list[Callable[[], Awaitable[object]]]) -> None:
    """Await every step in turn; one that fails is logged and the next still runs."""
    for step in steps:
        try:
            await step()
        except Exception:
            log.exception("%s failed while stopping", what)


class AcceptErrors:
    """The event loop's exception handler: asyncio reports every accept() that fails for want of file
    descriptors or memory with a full traceback, which flooded the log with 300,000 lines a minute when
    idle connections had used up the descriptors. Those are logged once a minute with how many there were
    (`flush()` at stop logs the rest); anything else goes to the default handler."""

    def __init__(self, every: float = ACCEPT_LOG_EVERY, now: Callable[[], float] = time.monotonic) -> None:
        self.failures = CountedLog(
            log,
            "cannot accept connections: out of file descriptors or memory (http.max_connections above what "
            "the open-file limit allows, or descriptors held elsewhere)",
            "failed_accepts",
            every,
            now,
        )

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        self.failures.note(error=str(context.get("exception")))

    def flush(self) -> None:
        self.failures.flush()
