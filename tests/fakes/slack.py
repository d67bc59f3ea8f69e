"""Local fakes of Slack: an incoming webhook (`FakeSlackWebhook`) and the Web API subset the notifier uses
(`FakeSlackApi`), answering exactly what slack-sdk's AsyncWebhookClient / AsyncWebClient receive from Slack.

What the real clients send (slack-sdk 3.48): the webhook client POSTs JSON; AsyncWebClient POSTs JSON with
`Authorization: Bearer` for chat.postMessage / chat.update, sends conversations.history and
conversations.replies as GET with query parameters (booleans as "1"/"0") and auth.test as a POST with an
empty form body. The API fake accepts all three encodings (JSON, form, query), like Slack does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from tests.fakes.http import HOST, Accept, Call, FakeServer, Handler, Outcome, Reply, Request

MAX_BLOCKS = 50
HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
ACTIONS_ELEMENTS_MAX = 25
BUTTON_TEXT_MAX = 75
MESSAGE_TEXT_MAX = 40_000
# Block types Slack accepts in messages; anything else (e.g. a typo) is invalid_blocks, as in Slack.
BLOCK_TYPES = {
    "actions",
    "context",
    "context_actions",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "markdown",
    "rich_text",
    "section",
    "table",
    "video",
}

# Webhook errors that are permanent (the hook or its channel is gone): reason -> HTTP status, per Slack docs.
WEBHOOK_DISABLED = {
    "invalid_token": 403,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "no_service": 404,
    "no_service_id": 404,
    "no_team": 404,
    "team_disabled": 404,
    "channel_not_found": 404,
    "channel_is_archived": 410,
}

BOT_USER = "U0FAKEBOT"
BOT_ID = "B0FAKEBOT"
TEAM_ID = "T000"


def block_problem(blocks: Any) -> str | None:
    """Why Slack would answer `invalid_blocks` for `blocks`, in Slack's wording, or None when valid."""
    if not isinstance(blocks, list):
        return "expected an array [json-pointer:/blocks]"
    if len(blocks) > MAX_BLOCKS:
        return f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]"
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"missing required field: type [json-pointer:{at}]"
        kind = block["type"]
        if kind not in BLOCK_TYPES:
            return f"unsupported type: {kind} [json-pointer:{at}/type]"
        block_id = block.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, str) or not 0 < len(block_id) <= 255:
                return f"must be 1..255 characters [json-pointer:{at}/block_id]"
            if block_id in block_ids:
                return f"duplicate block_id [json-pointer:{at}/block_id]"
            block_ids.add(block_id)
        problem = _BLOCK_CHECKS.get(kind, _ok)(block, at)
        if problem:
            return problem
    return None


def _ok(block: dict[str, Any], at: str) -> str | None:
    return None


def _text_problem(
    obj: Any, at: str, limit: int, kinds: tuple[str, ...] = ("plain_text", "mrkdwn")
) -> str | None:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return f"must be a text object of type {' or '.join(kinds)} [json-pointer:{at}]"
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return f"must be more than 0 characters [json-pointer:{at}/text]"
    if len(text) > limit:
        return f"must be less than {limit + 1} characters [json-pointer:{at}/text]"
    return None


def _header(block: dict[str, Any], at: str) -> str | None:
    return _text_problem(block.get("text"), f"{at}/text", HEADER_TEXT_MAX, ("plain_text",))


def _section(block: dict[str, Any], at: str) -> str | None:
    text, fields = block.get("text"), block.get("fields")
    if text is None and fields is None:
        return f"must provide either text or fields [json-pointer:{at}]"
    if text is not None:
        problem = _text_problem(text, f"{at}/text", SECTION_TEXT_MAX)
        if problem:
            return problem
    if fields is not None:
        if not isinstance(fields, list) or not 0 < len(fields) <= SECTION_FIELDS_MAX:
            return f"must have 1..{SECTION_FIELDS_MAX} items [json-pointer:{at}/fields]"
        for j, item in enumerate(fields):
            problem = _text_problem(item, f"{at}/fields/{j}", FIELD_TEXT_MAX)
            if problem:
                return problem
    return None


def _context(block: dict[str, Any], at: str) -> str | None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= CONTEXT_ELEMENTS_MAX:
        return f"must have 1..{CONTEXT_ELEMENTS_MAX} items [json-pointer:{at}/elements]"
    for j, element in enumerate(elements):
        if isinstance(element, dict) and element.get("type") == "image":
            continue
        problem = _text_problem(element, f"{at}/elements/{j}", SECTION_TEXT_MAX)
        if problem:
            return problem
    return None


def _actions(block: dict[str, Any], at: str) -> str | None:
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= ACTIONS_ELEMENTS_MAX:
        return f"must have 1..{ACTIONS_ELEMENTS_MAX} items [json-pointer:{at}/elements]"
    for j, element in enumerate(elements):
        where = f"{at}/elements/{j}"
        if not isinstance(element, dict) or not isinstance(element.get("type"), str):
            return f"missing required field: type [json-pointer:{where}]"
        if element["type"] == "button":
            problem = _text_problem(element.get("text"), f"{where}/text", BUTTON_TEXT_MAX, ("plain_text",))
            if problem:
                return problem
            for key, limit in (("action_id", 255), ("value", 2000), ("url", 3000)):
                value = element.get(key)
                if value is not None and (not isinstance(value, str) or len(value) > limit):
                    return f"must be a string of at most {limit} characters [json-pointer:{where}/{key}]"
    return None


def _image(block: dict[str, Any], at: str) -> str | None:
    if not isinstance(block.get("image_url"), str) and not isinstance(block.get("slack_file"), dict):
        return f"must provide either image_url or slack_file [json-pointer:{at}]"
    if not isinstance(block.get("alt_text"), str):
        return f"missing required field: alt_text [json-pointer:{at}]"
    return None


_BLOCK_CHECKS = {
    "header": _header,
    "section": _section,
    "context": _context,
    "actions": _actions,
    "image": _image,
}


def _has_content(payload: dict[str, Any]) -> bool:
    """Slack needs something to show: text, blocks or (legacy) attachments."""
    text = payload.get("text")
    return bool(
        (isinstance(text, str) and text.strip()) or payload.get("blocks") or payload.get("attachments")
    )


class FakeSlackWebhook(FakeServer):
    """A Slack incoming webhook: `POST /services/{a}/{b}/{c}` with a JSON message, answered text/plain like
    Slack (200 `ok`; 400 `invalid_payload` / `no_text` / `invalid_blocks`; permanent errors after
    `disable(reason)`). `webhook_url` is a ready hook URL; `messages` holds the accepted payloads."""

    def __init__(self, *, host: str = HOST, port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.disabled: str | None = None
        self._messages: list[dict[str, Any]] = []

    @property
    def webhook_url(self) -> str:
        """A hook URL on this fake (any /services/{a}/{b}/{c} path works)."""
        return f"{self.url}/services/T000/B000/XXXXXXXX"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The accepted payloads, in order (hung calls included: Slack posted them)."""
        return list(self._messages)

    def disable(self, reason: str = "no_service") -> None:
        """Answer every later call with a permanent error: no_service / channel_not_found (404),
        channel_is_archived (410), action_prohibited / invalid_token (403), …"""
        if reason not in WEBHOOK_DISABLED:
            raise ValueError(f"unknown webhook error {reason!r}; choose from {sorted(WEBHOOK_DISABLED)}")
        self.disabled = reason

    def enable(self) -> None:
        """Undo `disable`."""
        self.disabled = None

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("POST", "/services/{a}/{b}/{c}", self._post)]

    def unknown_route(self, call: Call) -> Outcome:
        return Reply(404, "no_service")

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        return {429: "rate_limited", 500: "rollup_error"}.get(status, "service_unavailable")

    def rate_limited(self, retry_after: int) -> Reply:
        return Reply(429, "rate_limited", {"Retry-After": str(retry_after)})

    def _post(self, call: Call) -> Outcome:
        # The hook is looked up before its payload is read: a removed hook is 404 whatever was posted.
        if self.disabled is not None:
            return Reply(WEBHOOK_DISABLED[self.disabled], self.disabled)
        payload = call.json
        if not call.json_ok or not isinstance(payload, dict):
            return Reply(400, "invalid_payload")
        if payload.get("blocks") is not None and block_problem(payload["blocks"]):
            return Reply(400, "invalid_blocks")
        if not _has_content(payload):
            return Reply(400, "no_text")

        def apply() -> Reply:
            self._messages.append(payload)
            return Reply(200, "ok")

        return Accept(apply)


@dataclass
class _Message:
    channel: str
    ts: str
    text: str
    blocks: list[Any] | None
    attachments: list[Any] | None
    metadata: dict[str, Any] | None
    thread_ts: str | None = None  # set on replies: the parent's ts
    broadcast: bool = False
    edited: str | None = None
    replies: list[_Message] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        """The message as Slack's API returns it."""
        out: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER,
            "bot_id": BOT_ID,
            "team": TEAM_ID,
            "ts": self.ts,
            "text": self.text,
        }
        if self.blocks is not None:
            out["blocks"] = self.blocks
        if self.attachments is not None:
            out["attachments"] = self.attachments
        if self.metadata is not None:
            out["metadata"] = self.metadata
        if self.edited is not None:
            out["edited"] = {"user": BOT_USER, "ts": self.edited}
        if self.thread_ts is not None:
            out["thread_ts"] = self.thread_ts
            if self.broadcast:
                out["subtype"] = "thread_broadcast"
        elif self.replies:
            out["thread_ts"] = self.ts
            out["reply_count"] = len(self.replies)
            out["latest_reply"] = self.replies[-1].ts
        return out

    def view(self) -> dict[str, Any]:
        """The message as the test helper `FakeSlackApi.messages()` shows it."""
        out: dict[str, Any] = {
            "ts": self.ts,
            "text": self.text,
            "blocks": self.blocks,
            "attachments": self.attachments,
            "metadata": self.metadata,
            "thread_ts": self.thread_ts,
            "edited": self.edited is not None,
        }
        if self.thread_ts is None:
            out["replies"] = [r.view() for r in self.replies]
        else:
            out["broadcast"] = self.broadcast
        return out


def _error(error: str, **extra: Any) -> Reply:
    # Slack Web API errors are HTTP 200 with ok: false (slack-sdk raises SlackApiError on them).
    return Reply(200, {"ok": False, "error": error, **extra})


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in {"1", "true"}


def _micros(ts: str) -> int:
    return int(Decimal(ts) * 1_000_000)


class FakeSlackApi(FakeServer):
    """The Slack Web API under `/api/` (pass `base_url` to `AsyncWebClient(token, base_url=...)`):
    chat.postMessage, chat.update, conversations.history/replies/list and auth.test, with Slack's
    auth, channel and block validation and its `{"ok": false, "error": ...}` answers.

    Channels are `channels` (name -> id); a message may be posted to an id, a name or "#name", the other
    methods need the id, as in Slack. `messages(channel)` and `calls(method)` are for assertions."""

    def __init__(
        self,
        token: str = "xoxb-test-token",
        channels: dict[str, str] | None = None,
        *,
        host: str = HOST,
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        self.channels: dict[str, str] = dict(channels) if channels is not None else {"alerts": "C0ALERTS"}
        self._history: dict[str, list[_Message]] = {cid: [] for cid in self.channels.values()}
        self._by_ts: dict[tuple[str, str], _Message] = {}
        self._last_ts = 0
        self._methods = {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "conversations.history": self._history_call,
            "conversations.replies": self._replies,
            "conversations.list": self._list,
            "auth.test": self._auth_test,
        }

    @property
    def base_url(self) -> str:
        """The Web API base URL, with the trailing slash AsyncWebClient joins method names onto."""
        return f"{self.url}/api/"

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages of `channel` (id, name or #name), oldest first, each with its `replies`
        (broadcast replies are listed there, not at top level)."""
        cid = self._resolve(channel, names=True)
        if cid is None:
            raise KeyError(f"unknown channel {channel!r}")
        return [m.view() for m in self._history[cid] if m.thread_ts is None]

    def calls(self, method: str) -> list[Request]:
        """Requests made to one API method, e.g. `calls("chat.update")`."""
        return [r for r in self.requests if r.path == f"/api/{method}"]

    # -- plumbing -------------------------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [("GET", "/api/{method}", self._api), ("POST", "/api/{method}", self._api)]

    def unknown_route(self, call: Call) -> Outcome:
        return Reply(404, {"ok": False, "error": "unknown_method"})

    def failure_body(self, status: int) -> str | dict[str, Any] | None:
        if status == 429:
            return {"ok": False, "error": "ratelimited"}
        return {"ok": False, "error": "fatal_error"}

    def rate_limited(self, retry_after: int) -> Reply:
        return Reply(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after)})

    def _api(self, call: Call) -> Outcome:
        method = call.match["method"]
        handler = self._methods.get(method)
        if handler is None:
            return Reply(404, {"ok": False, "error": "unknown_method", "req_method": method})
        args: dict[str, Any] = dict(call.params)
        if call.content_type == "application/json" and call.body:
            if not call.json_ok or not isinstance(call.json, dict):
                return _error("invalid_json")
            args.update(call.json)
        # Slack takes the token from the header, or for form/query calls from a `token` argument.
        auth = call.headers.get("Authorization", "")
        token = (
            auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else call.params.get("token")
        )
        if not token:
            return _error("not_authed")
        if token != self.token:
            return _error("invalid_auth")
        # Form-encoded calls carry structured arguments as JSON strings.
        for key in ("blocks", "attachments", "metadata"):
            if isinstance(args.get(key), str):
                try:
                    args[key] = orjson.loads(args[key])
                except orjson.JSONDecodeError:
                    return _error("invalid_metadata_format" if key == "metadata" else f"invalid_{key}_format")
        return handler(args)

    def _resolve(self, channel: Any, *, names: bool) -> str | None:
        if not isinstance(channel, str):
            return None
        # Read `channels` on every call: a test may add a channel after the fake started.
        if channel in self.channels.values():
            cid: str | None = channel
        elif names:
            cid = self.channels.get(channel.removeprefix("#"))
        else:
            cid = None
        if cid is not None:
            self._history.setdefault(cid, [])
        return cid

    def _next_ts(self) -> str:
        micros = max(self._last_ts + 1, time.time_ns() // 1000)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _content_problem(self, args: dict[str, Any], *, required: bool = True) -> Reply | None:
        if args.get("blocks") is not None:
            problem = block_problem(args["blocks"])
            if problem:
                return _error("invalid_blocks", errors=[problem])
        if required and not _has_content(args):
            return _error("no_text")
        text = args.get("text")
        if text is not None and not isinstance(text, str):
            return _error("invalid_arguments")
        if isinstance(text, str) and len(text) > MESSAGE_TEXT_MAX:
            return _error("msg_too_long")
        metadata = args.get("metadata")
        if metadata is not None and not (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and metadata["event_type"]
            and isinstance(metadata.get("event_payload"), dict)
        ):
            return _error("invalid_metadata_format")
        return None

    # -- methods --------------------------------------------------------------------------------------------

    def _post_message(self, args: dict[str, Any]) -> Outcome:
        cid = self._resolve(args.get("channel"), names=True)
        if cid is None:
            return _error("channel_not_found")
        problem = self._content_problem(args)
        if problem:
            return problem
        thread_ts = str(args["thread_ts"]) if args.get("thread_ts") else None
        target = self._by_ts.get((cid, thread_ts)) if thread_ts else None
        if target is not None and target.thread_ts is not None:
            thread_ts = target.thread_ts  # a reply's ts: Slack threads under its parent
        # An unknown thread_ts is no error in Slack: the reply is accepted but shows nowhere. Same here.
        parent = self._by_ts.get((cid, thread_ts)) if thread_ts else None

        def apply() -> Reply:
            message = _Message(
                channel=cid,
                ts=self._next_ts(),
                text=args.get("text") or "",
                blocks=args.get("blocks"),
                attachments=args.get("attachments"),
                metadata=args.get("metadata"),
                thread_ts=thread_ts,
                broadcast=thread_ts is not None and _flag(args.get("reply_broadcast", False)),
            )
            self._history[cid].append(message)
            self._by_ts[(cid, message.ts)] = message
            if parent is not None:
                parent.replies.append(message)
            return Reply(200, {"ok": True, "channel": cid, "ts": message.ts, "message": message.wire()})

        return Accept(apply)

    def _update(self, args: dict[str, Any]) -> Outcome:
        cid = self._resolve(args.get("channel"), names=False)
        if cid is None:
            return _error("channel_not_found")
        message = self._by_ts.get((cid, str(args.get("ts"))))
        if message is None:
            return _error("message_not_found")
        problem = self._content_problem(args)
        if problem:
            return problem

        def apply() -> Reply:
            # Fields left out keep their value, as in Slack (send blocks=[] to drop the blocks).
            if "text" in args:
                message.text = args["text"] or ""
            for key in ("blocks", "attachments", "metadata"):
                if key in args:
                    setattr(message, key, args[key])
            message.edited = self._next_ts()
            return Reply(
                200,
                {
                    "ok": True,
                    "channel": cid,
                    "ts": message.ts,
                    "text": message.text,
                    "message": message.wire(),
                },
            )

        return Accept(apply)

    def _window(self, args: dict[str, Any]) -> tuple[int, int, bool] | Reply:
        try:
            oldest = _micros(str(args.get("oldest") or "0"))
        except InvalidOperation:
            return _error("invalid_ts_oldest")
        try:
            latest = _micros(str(args["latest"])) if args.get("latest") else 2**63
        except InvalidOperation:
            return _error("invalid_ts_latest")
        return oldest, latest, _flag(args.get("inclusive", False))

    @staticmethod
    def _page(items: list[_Message], args: dict[str, Any]) -> dict[str, Any] | Reply:
        try:
            limit = int(args.get("limit") or 100)
            start = int(str(args["cursor"]).removeprefix("offset:")) if args.get("cursor") else 0
        except ValueError:
            return _error("invalid_cursor")
        limit = min(limit, 999) if limit > 0 else 100
        page = items[start : start + limit]
        more = start + limit < len(items)
        out: dict[str, Any] = {"ok": True, "messages": [m.wire() for m in page], "has_more": more}
        out["response_metadata"] = {"next_cursor": f"offset:{start + limit}" if more else ""}
        return out

    def _history_call(self, args: dict[str, Any]) -> Outcome:
        cid = self._resolve(args.get("channel"), names=False)
        if cid is None:
            return _error("channel_not_found")
        window = self._window(args)
        if isinstance(window, Reply):
            return window
        oldest, latest, inclusive = window

        def inside(ts: int) -> bool:
            return oldest <= ts <= latest if inclusive else oldest < ts < latest

        # The channel shows top-level messages and broadcast replies; other replies live in their thread.
        shown = [
            m
            for m in reversed(self._history[cid])
            if (m.thread_ts is None or m.broadcast) and inside(_micros(m.ts))
        ]
        page = self._page(shown, args)
        return page if isinstance(page, Reply) else Accept(lambda: Reply(200, page))

    def _replies(self, args: dict[str, Any]) -> Outcome:
        cid = self._resolve(args.get("channel"), names=False)
        if cid is None:
            return _error("channel_not_found")
        message = self._by_ts.get((cid, str(args.get("ts"))))
        if message is None:
            return _error("thread_not_found")
        parent = self._by_ts.get((cid, message.thread_ts)) if message.thread_ts else message
        if parent is None:
            return _error("thread_not_found")
        page = self._page([parent, *parent.replies], args)
        return page if isinstance(page, Reply) else Accept(lambda: Reply(200, page))

    def _list(self, args: dict[str, Any]) -> Outcome:
        """conversations.list: every channel (one page; Slack pages with `response_metadata.next_cursor`)."""
        channels = [
            {"id": cid, "name": name, "is_channel": True, "is_member": True}
            for name, cid in self.channels.items()
        ]
        body = {"ok": True, "channels": channels, "response_metadata": {"next_cursor": ""}}
        return Accept(lambda: Reply(200, body))

    def _auth_test(self, args: dict[str, Any]) -> Outcome:
        body = {
            "ok": True,
            "url": "https://fake-team.slack.com/",
            "team": "Fake Team",
            "user": "tripwire",
            "team_id": TEAM_ID,
            "user_id": BOT_USER,
            "bot_id": BOT_ID,
        }
        return Accept(lambda: Reply(200, body))
