"""The shared base of the local HTTP fakes: an aiohttp app on 127.0.0.1 that logs every request, injects
failures ("fail the next N calls"), hangs calls (effect applied, answer never sent) and can rate-limit.

A vendor fake subclasses `FakeServer` and lists its routes; each route handler is a plain function that
validates a `Call` and returns either a `Reply` (an error: nothing happened) or an `Accept` (valid: its
`apply()` performs the effect and builds the success reply). Keeping the effect separate is what lets the
base refuse a valid call with an injected failure (no effect) or hang it (effect applied, no answer).

Run fakes in the test's own event loop (`await fake.start()`), in a background thread
(`serve_in_thread(fake)`) or in their own process for a demo: `python -m tests.fakes.http slack-api
pagerduty=8090` prints one JSON line `{"slack-api": {"url": ..., "endpoint": ...}, ...}` and serves until
interrupted (always `-m`: run as a script, this file would shadow the stdlib `http` package).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

T = TypeVar("T")

HOST = "127.0.0.1"
# Vendors cap bodies themselves (PagerDuty 512 KB); aiohttp's default 1 MB cap would answer its own 413
# before the fake could log the call and answer like the vendor.
MAX_BODY = 16 * 1024 * 1024
_SECRET_HEADERS = {"authorization", "x-api-key", "cookie"}


@dataclass
class Request:
    """One request the fake received, with the status it answered (0: hung, never answered)."""

    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None  # the body parsed as JSON, None when it is not JSON
    status: int
    # Query string and form-encoded body fields (Slack Web API calls like conversations.history use them).
    params: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Failed assertions print requests: never print a token, even a fake one.
        headers = {k: ("<redacted>" if k.lower() in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        return (
            f"Request(at={self.at:.3f}, method={self.method!r}, path={self.path!r}, status={self.status}, "
            f"headers={headers!r}, json={self.json!r}, params={self.params!r}, body_len={len(self.body)})"
        )


@dataclass
class Call:
    """What a route handler sees: the parsed request."""

    method: str
    path: str
    match: dict[str, str]  # the route's path variables
    headers: Mapping[str, str]
    body: bytes
    json: Any | None
    json_ok: bool  # the body parsed as JSON (`json` is None for a literal `null` too)
    params: dict[str, str]  # query string + form-encoded body
    content_type: str


@dataclass
class Reply:
    """An HTTP answer: a dict/list body is sent as JSON, a str as text/plain, None as an empty body."""

    status: int
    body: str | dict[str, Any] | list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        headers = dict(self.headers)
        # An injected header set may carry its own Content-Type; aiohttp refuses both at once.
        explicit = any(k.lower() == "content-type" for k in headers)
        if isinstance(self.body, (dict, list)):
            if explicit:
                return web.Response(status=self.status, body=orjson.dumps(self.body), headers=headers)
            return web.Response(
                status=self.status,
                body=orjson.dumps(self.body),
                headers=headers,
                content_type="application/json",
                charset="utf-8",
            )
        if self.body is None:
            return web.Response(status=self.status, headers=headers)
        if explicit:
            return web.Response(status=self.status, text=self.body, headers=headers)
        return web.Response(status=self.status, text=self.body, headers=headers, content_type="text/plain")


@dataclass
class Accept:
    """A valid call: `apply()` performs its effect (store the message, open the incident) and returns the
    success reply. The base calls it unless the call is refused by an injected failure."""

    apply: Callable[[], Reply]


Outcome = Reply | Accept
Handler = Callable[[Call], Outcome]


@dataclass
class Failure:
    """One injected answer, queued by `fail_next`."""

    status: int
    headers: dict[str, str]
    body: str | dict[str, Any] | None


class FakeServer:
    """Base of the vendor fakes: `await fake.start()` binds 127.0.0.1 on a free port (or `port`), `url` is
    its origin, `requests` logs every call with the status answered. Subclasses override `routes()`."""

    def __init__(self, *, host: str = HOST, port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""  # "http://127.0.0.1:PORT" once started
        self.requests: list[Request] = []
        # Public so a test can `fake.failures.clear()` when the vendor is "healthy again".
        self.failures: list[Failure] = []
        self._hang = 0
        self._hang_method: str | None = None
        self._released: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._rate: float | None = None
        self._burst = 1.0
        self._tokens = 0.0
        self._refilled = 0.0

    # -- what subclasses provide ----------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, aiohttp path pattern, handler) triples; unmatched requests go to `unknown_route`."""
        return []

    def unknown_route(self, call: Call) -> Outcome:
        """The answer for a path no route matches (still logged, so a wrong URL shows in `requests`)."""
        return Reply(404, "not found")

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        """The body of an injected failure when `fail_next` was given none."""
        return "injected failure"

    def rate_limited(self, retry_after: int) -> Reply:
        """The answer when `rate_limit` is exceeded."""
        return Reply(429, "rate limited", {"Retry-After": str(retry_after)})

    def record(self, request: Request) -> None:
        """Log one request; subclasses may keep a log of their own as well."""
        self.requests.append(request)

    # -- fault injection ------------------------------------------------------------------------------------

    def fail_next(
        self,
        count: int,
        status: int = 503,
        headers: dict[str, str] | None = None,
        body: str | dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `count` valid calls with `status` (and `headers`, `body`; a dict body is JSON)
        instead of processing them. Validation runs first: an invalid call still gets its own 400."""
        self.failures.extend(Failure(status, dict(headers or {}), body) for _ in range(count))

    def hang_next(self, count: int = 1, method: str | None = None) -> None:
        """Process the next `count` calls (of `method` only, when given) fully (logged with status 0, effect
        applied as if the vendor did the work) but never answer them until `stop()`: the caller's timeout or
        crash is what ends them."""
        self._hang += count
        self._hang_method = method

    def rate_limit(self, per_second: float | None, burst: float = 1.0) -> None:
        """Answer 429 + Retry-After past `per_second` calls/s (token bucket of `burst`); None turns it off."""
        self._rate = per_second
        self._burst = max(burst, 1.0)
        self._tokens = self._burst
        self._refilled = time.monotonic()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
        """Poll `predicate()` until truthy (e.g. `lambda: len(fake.requests) >= 2`); TimeoutError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last value: {value!r})")
            await asyncio.sleep(0.01)

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> Self:
        """Bind and serve; returns self so `fake = await FakeX().start()` reads naturally."""
        self._loop = asyncio.get_running_loop()
        self._released = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, self._endpoint(handler))
        app.router.add_route("*", "/{tail:.*}", self._endpoint(self.unknown_route))
        # A short shutdown grace: stop() releases hung calls itself, nothing else should linger.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        """Drop hung calls' connections and close the server. Works from any loop: a fake served by
        `serve_in_thread` is stopped in its own thread."""
        loop = self._loop
        if self._thread is not None and loop is not None and loop is not asyncio.get_running_loop():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop_here(), loop))
            await asyncio.to_thread(self._join_thread)
            return
        await self._stop_here()

    async def _stop_here(self) -> None:
        if self._released is not None:
            self._released.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def _join_thread(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._thread = None
        self._loop = None

    # -- request handling -----------------------------------------------------------------------------------

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.StreamResponse:
            return await self._serve(request, handler)

        return serve

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        at = time.monotonic()
        raw = await request.read()
        call = _parse(request, raw)
        limited = self._take_token()
        if limited is not None:
            outcome: Outcome = self.rate_limited(limited)
        else:
            outcome = handler(call)
        hang = self._hang > 0 and self._hang_method in (None, call.method)
        if hang:
            self._hang -= 1
        if isinstance(outcome, Accept):
            if not hang and self.failures:
                failure = self.failures.pop(0)
                body = failure.body if failure.body is not None else self.failure_body(failure.status)
                reply = Reply(failure.status, body, failure.headers)
            else:
                reply = outcome.apply()
        else:
            reply = outcome
        self.record(
            Request(
                at=at,
                method=call.method,
                path=call.path,
                headers=dict(call.headers),
                body=raw,
                json=call.json,
                status=0 if hang else reply.status,
                params=call.params,
            )
        )
        if hang:
            await self._hold(request)
        return reply.response()

    async def _hold(self, request: web.Request) -> None:
        """Keep a hung call open until stop(), then drop its connection without an answer."""
        assert self._released is not None
        await self._released.wait()
        if request.transport is not None:
            request.transport.close()
        # Unwinds the handler without writing a response; aiohttp treats it like a client that went away.
        raise asyncio.CancelledError

    def _take_token(self) -> int | None:
        """None when the call may pass the rate limit, else the Retry-After seconds to answer."""
        if self._rate is None:
            return None
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self._tokens) / self._rate))


def _parse(request: web.Request, raw: bytes) -> Call:
    params = dict(request.query)
    content_type = request.content_type
    if content_type == "application/x-www-form-urlencoded" and raw:
        # Slack Web API methods without JSON bodies send their arguments form-encoded.
        params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    parsed: Any | None = None
    json_ok = False
    if raw:
        try:
            parsed = orjson.loads(raw)
            json_ok = True
        except orjson.JSONDecodeError:
            pass
    return Call(
        method=request.method,
        path=request.path,
        match=dict(request.match_info),
        headers=request.headers,
        body=raw,
        json=parsed,
        json_ok=json_ok,
        params=params,
        content_type=content_type,
    )


def serve_in_thread(fake: FakeServer, timeout: float = 10.0) -> FakeServer:
    """Start `fake` in a daemon thread with its own event loop (for demos, benchmarks and sync code);
    returns once it listens, `fake.url` filled. Stop it with `stop_in_thread(fake)` or `await fake.stop()`."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"fake-{type(fake).__name__}", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(timeout)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        loop.close()
        raise
    fake._thread = thread
    return fake


def stop_in_thread(fake: FakeServer, timeout: float = 10.0) -> None:
    """Stop a fake started by `serve_in_thread` from synchronous code (not from inside its own loop)."""
    loop = fake._loop
    if loop is None or fake._thread is None:
        return
    asyncio.run_coroutine_threadsafe(fake._stop_here(), loop).result(timeout)
    fake._join_thread()


def _make(name: str, port: int) -> tuple[FakeServer, Callable[[], str]]:
    """The fake called `name` and how to read the URL a client is configured with, once started."""
    # Imported here: the vendor modules import this one.
    from tests.fakes.pagerduty import FakePagerDuty
    from tests.fakes.slack import FakeSlackApi, FakeSlackWebhook
    from tests.fakes.webhook import FakeWebhook

    if name == "slack-webhook":
        hook = FakeSlackWebhook(port=port)
        return hook, lambda: hook.webhook_url
    if name == "slack-api":
        api = FakeSlackApi(port=port)
        return api, lambda: api.base_url
    if name == "pagerduty":
        pagerduty = FakePagerDuty(port=port)
        return pagerduty, lambda: pagerduty.enqueue_url
    if name == "webhook":
        webhook = FakeWebhook(port=port)
        return webhook, lambda: webhook.url
    raise SystemExit(f"unknown fake {name!r}; choose from slack-webhook, slack-api, pagerduty, webhook")


async def _serve_forever(specs: list[str]) -> None:
    fakes: dict[str, FakeServer] = {}
    endpoints: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, port = spec.partition("=")
        fake, endpoint = _make(name, int(port or 0))
        fakes[name] = await fake.start()
        endpoints[name] = {"url": fake.url, "endpoint": endpoint()}
    # One JSON line the demo script can parse: where each fake listens and the URL to give its client.
    sys.stdout.write(orjson.dumps(endpoints).decode() + "\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        for fake in fakes.values():
            await fake.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.fakes.http slack-webhook slack-api=8081 pagerduty`: serve fakes until interrupted."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "fakes", nargs="+", help="slack-webhook | slack-api | pagerduty | webhook, =PORT optional"
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop the demo's fakes
        asyncio.run(_serve_forever(args.fakes))


if __name__ == "__main__":
    main()
