"""HTTP pieces every service shares: JSON errors, bearer-token checks and size-limited bodies."""

from __future__ import annotations

import asyncio
import hmac
import zlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import orjson
from aiohttp import ClientPayloadError, HttpVersion11, hdrs, web
from aiohttp.web_protocol import RequestPayloadError
from pydantic import SecretStr

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An error in the Prometheus HTTP API shape: {"status": "error", "errorType": ..., "error": ...}."""
    return json_response(
        {"status": "error", "errorType": error_type, "error": message, **extra}, status, headers
    )


@web.middleware
async def unmatched_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A path no route takes (404) or a method a path does not (405), answered in the API's JSON error
    shape with what would have worked, instead of aiohttp's plain text."""
    unmatched = request.match_info.http_exception
    if unmatched is None:
        return await handler(request)
    return error_response(unmatched.status, *unmatched_reason(request, unmatched.headers.get("Allow")))


def unmatched_reason(request: web.Request, allowed: str | None) -> tuple[str, str, dict[str, str]]:
    """Why `request` matched no route, as (error type, message, headers): 405 when `allowed` names the
    methods its path takes, else 404 (the caller picks the status and the body's shape)."""
    path = request.path if len(request.path) <= 200 else request.path[:200] + "..."
    if allowed is not None:
        message = f"{request.method} is not allowed on {path} (allowed: {allowed or 'none'})"
        return "method_not_allowed", message, {"Allow": allowed}
    return "not_found", f"no endpoint {request.method} {path}", {}


# The name of the client whose token a request carried (set by require_token; never the token itself).
CLIENT = web.RequestKey("tripwire_client", str)


def token_client(authorization: str, tokens: dict[str, SecretStr]) -> str | None:
    """Which client's token an `Authorization` header carries (None: none of them). The scheme is
    case-insensitive and may be followed by more than one space (RFC 9110 11.4: `1*SP`). Every token is
    compared in constant time, so neither a token nor which one matched leaks through timing."""
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    # aiohttp hands over bytes that are not UTF-8 as surrogates: they must compare unequal, not raise.
    given = credentials.lstrip(" ").encode("utf-8", "surrogateescape")
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(given, token.get_secret_value().encode()):
            found = name
    return found


def require_token(token: SecretStr | dict[str, SecretStr] | None, realm: str) -> Callable[[Handler], Handler]:
    """Wrap a handler so it needs `Authorization: Bearer <token>` when a token is configured (or one of
    several clients' tokens: the request then carries the client's name as `request[CLIENT]`)."""

    def decorate(handler: Handler) -> Handler:
        tokens = token if isinstance(token, dict) else ({"default": token} if token is not None else {})
        if not tokens:
            return handler

        async def checked(request: web.Request) -> web.StreamResponse:
            client = token_client(request.headers.get("Authorization", ""), tokens)
            if client is None:
                return error_response(
                    401,
                    "unauthorized",
                    f"a valid bearer token is required for the {realm} API",
                    headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
                )
            request[CLIENT] = client
            return await handler(request)

        return checked

    return decorate


# The errorType of each status a body is refused with.
BODY_ERROR_TYPES = {400: "bad_data", 408: "timeout", 413: "too_large", 415: "unsupported_media_type"}


class BodyRefused(Exception):
    """Why `read_body` refused a request body; `status` is the HTTP status that says so."""

    status = 400


class BodyTooLarge(BodyRefused):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes")
        self.limit = limit


class BadBody(BodyRefused):
    """The body could not be read as sent (e.g. `Content-Encoding: gzip` over bytes that are not gzip)."""


class UnsupportedEncoding(BadBody):
    """A Content-Encoding we do not decode (the body would be read as if it were plain)."""

    status = 415


# The codings a body may come in: brotli and zstd would need optional packages, so are not promised.
DECODED_ENCODINGS = frozenset({"identity", "gzip", "deflate"})
# Whether the app's request bodies reach handlers as sent (aiohttp's auto_decompress off), for read_body to
# decode (see shared.service.Service).
BODIES_ENCODED = web.AppKey("tripwire_bodies_encoded", bool)


class BodyTimeout(BodyRefused):
    status = 408

    def __init__(self, timeout: float) -> None:
        super().__init__(f"request body did not arrive within {timeout:g}s")


# How long a request body may take to arrive where handlers read it whole (http.body_timeout).
BODY_TIMEOUT = web.AppKey("tripwire_body_timeout", float)


async def within_body_timeout(request: web.Request, reading: Awaitable[T]) -> T:
    """Await `reading` (the request's body: request.read(), request.post()) for no longer than the app's
    BODY_TIMEOUT; raises BodyTimeout. A client trickling a body would otherwise hold its connection, one of
    http.max_connections, for ever (helper-49: five of them kept an evaluator at 503)."""
    timeout = request.app.get(BODY_TIMEOUT)
    try:
        async with asyncio.timeout(timeout):
            return await reading
    except TimeoutError:
        raise BodyTimeout(timeout or 0.0) from None


@web.middleware
async def refused_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body a handler gave up on (BodyRefused: too large, undecodable, too slow), answered with its status
    in the API's JSON error shape."""
    try:
        return await handler(request)
    except BodyRefused as exc:
        return error_response(exc.status, BODY_ERROR_TYPES[exc.status], str(exc))


# Set on a request whose `Expect: 100-continue` is answered only when read_body starts on its body.
_CONTINUE_DEFERRED = web.RequestKey("tripwire_continue_deferred", bool)


def add_body_route(router: web.UrlDispatcher, method: str, path: str, handler: Handler) -> None:
    """Register a route whose handler reads its body with `read_body`. `Expect: 100-continue` is answered
    only when the body is about to be read, so a request refused on its headers (token, rate limit,
    Content-Type, a Content-Length over the limit) gets its answer before the client uploads anything;
    aiohttp's default says `100 Continue` before the handler has looked (RFC 9110 section 10.1.1)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        if request.get(_CONTINUE_DEFERRED):
            # Answered without asking for the body: the client may send it or not, so what follows on this
            # connection is no request we could safely read.
            response.force_close()
        return response

    router.add_route(method, path, handle, expect_handler=_defer_continue)


async def _defer_continue(request: web.Request) -> None:
    if request.version != HttpVersion11:
        return
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
    request[_CONTINUE_DEFERRED] = True


async def read_body(
    request: web.Request,
    limit: int,
    within: float | None = None,
    take: Callable[[int], None] | None = None,
) -> bytes:
    """The request body (decompressed as its Content-Encoding says), refusing anything over `limit` bytes
    before reading it all into memory and, given `within` seconds, a body slower to arrive (a client
    trickling bytes would hold its connection and buffer for ever). Raises BodyTooLarge, BadBody
    (UnsupportedEncoding for a Content-Encoding other than gzip or deflate) or BodyTimeout. `take` is told
    each decoded chunk's size before the chunk is kept, and may raise to stop reading (a memory budget)."""
    if within is None:
        return await _read_body(request, limit, take)
    try:
        async with asyncio.timeout(within):
            return await _read_body(request, limit, take)
    except TimeoutError:
        raise BodyTimeout(within) from None


async def _read_body(request: web.Request, limit: int, take: Callable[[int], None] | None) -> bytes:
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
    if encoding not in DECODED_ENCODINGS:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or an uncompressed body"
        )
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    decoder = (
        _Decoder(encoding, limit) if request.app.get(BODIES_ENCODED) and encoding != "identity" else None
    )
    chunks: list[bytes] = []
    size = sent = 0
    try:
        if request.get(_CONTINUE_DEFERRED):
            request[_CONTINUE_DEFERRED] = False
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the response proper has not started (as aiohttp's handler does)
        async for raw in request.content.iter_chunked(64 * 1024):
            sent += len(raw)
            if sent > limit:  # compressed, it may not be bigger than the limit either
                raise BodyTooLarge(limit)
            for chunk in decoder.feed(raw) if decoder is not None else (raw,):
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                if take is not None:
                    take(len(chunk))
                chunks.append(chunk)
        if decoder is not None:
            decoder.finish()
    except (RequestPayloadError, ClientPayloadError, web.HTTPException, ValueError, zlib.error) as exc:
        raise BadBody(f"request body could not be decoded (Content-Encoding: {encoding}): {exc}") from None
    except ConnectionError:
        # The client went away mid-body: nobody reads the answer, but it must not log a traceback either.
        raise BadBody("the client closed the connection before the body was complete") from None
    return b"".join(chunks)


class _Decoder:
    """gzip or deflate, decoded chunk by chunk and never more than `limit` + 1 bytes out of one input chunk,
    so a small bomb is refused at the limit, not expanded first."""

    MAX_MEMBERS = 1024  # concatenated gzip members, as aiohttp allows: each costs a decoder of its own

    def __init__(self, encoding: str, limit: int) -> None:
        self.encoding = encoding
        self.limit = limit
        self.members = 0
        self._inflate: zlib._Decompress | None = None

    def _new(self, first: bytes) -> zlib._Decompress:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        # "deflate" is zlib-wrapped by the RFC, but some clients send it raw (as aiohttp also allows).
        return zlib.decompressobj(zlib.MAX_WBITS if first[:1] and first[0] & 0x0F == 8 else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._inflate is None:
                self.members += 1
                if self.members > self.MAX_MEMBERS:
                    raise ValueError(f"more than {self.MAX_MEMBERS} gzip members")
                self._inflate = self._new(data)
            out = self._inflate.decompress(data, self.limit + 1)
            if out:
                yield out
            data = self._inflate.unconsumed_tail
            if self._inflate.eof:
                # Concatenated gzip members are one gzip body; anything after a deflate stream is not.
                data = self._inflate.unused_data + data
                if data and self.encoding != "gzip":
                    raise ValueError("data after the end of the deflate stream")
                self._inflate = None

    def finish(self) -> None:
        if self._inflate is not None:
            raise ValueError("the compressed body is truncated")
