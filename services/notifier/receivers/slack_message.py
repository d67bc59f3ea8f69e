"""The Slack Block Kit message for one notification (one aggregation group's alerts).

Layout (the choice the sender codes against): the header, and the context lines that must never be folded
away (a TEST marker, an update note), are top-level `blocks`; everything else sits in ONE legacy attachment
whose `color` paints the bar on the left (red/orange/yellow/blue by severity while firing, green once
resolved), like Alertmanager's `danger`/`good`, but with blocks inside. Top-level `text` is the fallback
Slack shows in push notifications and in clients without Block Kit.

    {"text": "[FIRING:3] HighErrorRate service=checkout — Error rate is 5.3% (critical)",
     "blocks": [header, (test context), (update context)],
     "attachments": [{"color": "#E01E5A", "fallback": <text>, "blocks": [summary, labels, divider,
                      one section per listed alert, "…and N more", actions, footer context]}]}

Limits: every text is cut to its Slack limit with an ellipsis, measured in UTF-16 code units (the stricter
count; a character is never split), the message has at most 50 blocks (top level and attachment together),
and the text and URLs of all blocks together stay under RENDER_TEXT_BUDGET because Slack rejects messages
whose blocks carry roughly 11-13 k characters in total (`msg_blocks_too_long`, undocumented). Alerts that do
not fit are counted in the "…and N more alerts" line.

Escaping: alert data (labels, annotations, receiver, group key, `update_note`) is mrkdwn-escaped (`&`, `<`,
`>`), so a label value such as `<!channel>` can neither ping a channel nor forge a link. `MessageOptions.text`
is an already-rendered mrkdwn template and is used as is (only cut to the limit): its author wants its links.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from services.notifier.notification import Notification
from shared.alerts import ZERO_TIME, Alert

# Slack's limits (Block Kit reference; INTEGRATIONS.md).
MAX_BLOCKS = 50
HEADER_TEXT_MAX = 150
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
CONTEXT_ELEMENTS_MAX = 10
ACTIONS_ELEMENTS_MAX = 25
TEXT_OBJECT_MAX = 3000
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
URL_MAX = 3000
BLOCK_ID_MAX = 255
ACTION_ID_MAX = 255
MESSAGE_TEXT_MAX = 40_000
MAX_ATTACHMENTS = 100
FALLBACK_MAX = 3000
# Undocumented: chat.postMessage answers `msg_blocks_too_long` from about 11.3 k characters of block text
# (slackapi/bolt-js#2509, #2867). check_limits flags above this; render_message stays well below it.
CUMULATIVE_TEXT_MAX = 11_000
RENDER_TEXT_BUDGET = 9_000

# Our own caps per piece, chosen so that the fixed parts of a message (everything but the per-alert listing)
# fit RENDER_TEXT_BUDGET together even at their worst; the listing shares what is left.
_SUMMARY_MAX = 300
_DESCRIPTION_MAX = 1200
_LABELS_LINE_MAX = 500
_LABELS_SHOWN = 30
_ALERT_HEAD_MAX = 400
_ALERT_MIN = 300  # below this an alert line says too little; fewer alerts are listed instead
_ALERT_ANNOTATION_MAX = 300
_VALUE_MAX = 100
_BUTTON_URL_MAX = 1000
_GRAPH_URL_MAX = 1500  # Prometheus graph URLs carry the url-encoded expression: allow them more room
_INLINE_RUNBOOK_URL_MAX = 800
_NOTE_MAX = 300
_FOOTER_ITEM_MAX = 300

SEVERITIES = ("critical", "error", "warning", "info")
# Unlabelled or unknown severities show as "warning": someone wrote the rule to be seen, but we cannot claim
# it pages; "critical" would teach people to ignore red, "info" would hide a real problem.
DEFAULT_SEVERITY = "warning"
_RANK = {"critical": 3, "error": 2, "warning": 1, "info": 0}
_ALIASES = {
    **dict.fromkeys(
        ("critical", "crit", "page", "pager", "paging", "fatal", "emergency", "emerg", "alert", "disaster"),
        "critical",
    ),
    **dict.fromkeys(("p0", "p1", "sev0", "sev1", "s0", "s1"), "critical"),
    **dict.fromkeys(("error", "err", "high", "major", "severe", "p2", "sev2", "s2"), "error"),
    **dict.fromkeys(
        ("warning", "warn", "medium", "moderate", "minor", "average", "p3", "sev3", "s3"), "warning"
    ),
    **dict.fromkeys(("info", "informational", "information", "notice", "low", "none", "debug", "ok"), "info"),
    **dict.fromkeys(("p4", "p5", "sev4", "sev5", "s4", "s5"), "info"),
}
_EMOJI = {"critical": "🔴", "error": "🟠", "warning": "🟡", "info": "🔵"}
_RESOLVED_EMOJI = "✅"
_TEST_EMOJI = "🧪"
# Slack's brand palette: red, orange, yellow, blue; green for resolved.
_COLOR = {"critical": "#E01E5A", "error": "#E8710A", "warning": "#ECB22E", "info": "#36C5F0"}
RESOLVED_COLOR = "#2EB67D"

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class MessageOptions:
    """How to render: overrides from the receiver config (templates already evaluated by the caller)."""

    title: str | None = None  # replaces the header text (a TEST marker is still prepended)
    text: str | None = None  # mrkdwn replacing the per-alert listing (used as is, only cut to the limit)
    silence_url: str | None = None  # e.g. external_url + "/#/silences/new"; None: no Silence button
    max_alerts_listed: int = 10  # then "…and N more alerts" (fewer when Slack's limits say so)
    test: bool = False  # `tripwire receivers test`: TEST in the header, the fallback text and a context line
    update_note: str | None = None  # e.g. "Resolved at 03:12 UTC", shown under the header of an update
    reenable: str | None = (
        None  # a kill-switch decision id: adds the "Re-enable flag" button (POST /slack/actions)
    )


_DEFAULT_OPTIONS = MessageOptions()


def severity_of(labels: dict[str, str]) -> str:
    """The normalised severity of a label set: one of critical, error, warning, info.

    The `severity` label is matched case-insensitively, ignoring spaces, `-` and `_`; common synonyms are
    understood (page/fatal/p1/sev1 -> critical, high/major/p2 -> error, warn/medium/p3 -> warning,
    low/notice/p4 -> info). A missing or unknown value gives DEFAULT_SEVERITY ("warning").
    """
    raw = labels.get("severity", "")
    key = re.sub(r"[\s_-]+", "", raw.lower())
    return _ALIASES.get(key, DEFAULT_SEVERITY)


def fallback_text(notification: Notification, options: MessageOptions = _DEFAULT_OPTIONS) -> str:
    """One line for push notifications and clients without Block Kit (mrkdwn-escaped, at most 3000 chars).

    E.g. `[FIRING:3] HighErrorRate service=checkout — Error rate is 5.3% (critical)`, or
    `[TEST] [RESOLVED:1] DiskFull host=db1 — Disk is 97% full`. A `title` override replaces it (TEST kept).
    """
    if _given(options.title):
        core = options.title or ""
    else:
        view = _View(notification)
        pool = notification.firing or notification.resolved
        status = "FIRING" if notification.firing else "RESOLVED"
        core = f"[{status}:{len(pool)}] {_names(view.names)}"
        labels = " ".join(f"{k}={v}" for k, v in view.title_labels)
        if labels:
            core += f" {labels}"
        summary = view.common_annotations.get("summary", "")
        if summary.strip():
            core += f" — {summary}"
        if notification.firing:
            core += f" ({view.severity})"
            if notification.resolved:
                core += f" (+{len(notification.resolved)} resolved)"
    if options.test:
        core = f"[TEST] {core}"
    # One line, escaped as a whole: the cut lands between characters, never inside `&amp;`.
    return _escape_cut(core, FALLBACK_MAX, inline=True)


def render_message(
    notification: Notification, options: MessageOptions = _DEFAULT_OPTIONS, *, now: float | None = None
) -> dict[str, Any]:
    """The chat.postMessage / incoming-webhook body: `text`, top-level `blocks` and one coloured attachment.

    `now` (Unix seconds, default the current time) is what "since 12 min ago" is measured from. The result
    passes check_limits for any input; see the module docstring for the layout.
    """
    view = _View(notification)
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, tz=UTC)
    fallback = fallback_text(notification, options)

    top: list[dict[str, Any]] = [_header(_header_text(notification, view, options))]
    if options.test:
        top.append(
            _context(f"{_TEST_EMOJI} *Test notification* from `tripwire receivers test`: no action needed.")
        )
    if _given(options.update_note):
        top.append(_context(f"🔄 {_escape_cut(options.update_note or '', _NOTE_MAX, inline=True)}"))

    before = _summary_blocks(view) + _labels_blocks(view)
    after = []
    actions = _actions(notification, view, options)
    if actions is not None:
        after.append(actions)
    after.append(_footer(notification))

    # The listing gets whatever blocks and text budget the fixed parts leave, keeping room for the divider
    # and the "…and N more" line (measured with the largest count it could show).
    fixed = [*top, *before, *after]
    blocks_left = MAX_BLOCKS - len(fixed) - 2
    more_reserve = _weight(_more(view.ordered, notification.external_url))
    text_left = RENDER_TEXT_BUDGET - sum(_weight(b) for b in fixed) - more_reserve
    listing: list[dict[str, Any]] = []
    if _given(options.text):
        limit = min(SECTION_TEXT_MAX, max(text_left + more_reserve, 200))
        listing.append(_section(_cut(_clean(options.text or "").strip(), limit)))
    else:
        wanted = view.ordered[: max(0, options.max_alerts_listed)]
        # Share the room so that many alerts with huge texts are listed short rather than few listed long.
        share = text_left // max(1, min(len(wanted), blocks_left))
        per_alert = min(SECTION_TEXT_MAX, max(_ALERT_MIN, share))
        for alert in wanted:
            section = _section(_alert_text(alert, view, now_dt, per_alert))
            if len(listing) >= blocks_left or _weight(section) > text_left:
                break
            listing.append(section)
            text_left -= _weight(section)
        hidden = view.ordered[len(listing) :]
        if hidden:
            listing.append(_more(hidden, notification.external_url))

    body = [*before, {"type": "divider"}, *listing, *after] if listing else [*before, *after]
    color = _COLOR[view.severity] if notification.firing else RESOLVED_COLOR
    return {
        "text": fallback,
        "blocks": top,
        "attachments": [{"color": color, "fallback": fallback, "blocks": body}],
    }


def check_limits(message: dict[str, Any]) -> list[str]:
    """Every Slack limit the message breaks, as readable strings; empty when Slack should accept it.

    Checks: fallback `text` present (≤ 40 000), ≤ 50 blocks (top level and attachments together), header
    plain_text ≤ 150, section text ≤ 3000, fields ≤ 10 and each ≤ 2000, context 1-10 elements, actions
    1-25 elements, button text ≤ 75, value ≤ 2000, url ≤ 3000, block_id/action_id unique and ≤ 255, empty
    texts, and the cumulative block text (CUMULATIVE_TEXT_MAX). Lengths are UTF-16 code units.
    """
    problems: list[str] = []
    text = message.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("text: fallback text is missing or empty")
    elif _u16(text) > MESSAGE_TEXT_MAX:
        problems.append(f"text: {_u16(text)} characters (limit {MESSAGE_TEXT_MAX})")

    located: list[tuple[str, Any]] = []
    blocks = message.get("blocks", [])
    if not isinstance(blocks, list):
        problems.append("blocks: not a list")
        blocks = []
    located += [(f"blocks[{i}]", b) for i, b in enumerate(blocks)]
    attachments = message.get("attachments", [])
    if not isinstance(attachments, list):
        problems.append("attachments: not a list")
        attachments = []
    if len(attachments) > MAX_ATTACHMENTS:
        problems.append(f"attachments: {len(attachments)} attachments (limit {MAX_ATTACHMENTS})")
    for a, attachment in enumerate(attachments):
        inner = attachment.get("blocks", []) if isinstance(attachment, dict) else None
        if not isinstance(inner, list):
            problems.append(f"attachments[{a}].blocks: not a list")
            continue
        located += [(f"attachments[{a}].blocks[{i}]", b) for i, b in enumerate(inner)]

    if len(located) > MAX_BLOCKS:
        problems.append(f"blocks: {len(located)} blocks (limit {MAX_BLOCKS})")
    seen_ids: set[str] = set()
    for where, block in located:
        problems += _check_block(where, block, seen_ids)
    total = sum(_weight(block) for _, block in located)
    if total > CUMULATIVE_TEXT_MAX:
        problems.append(
            f"blocks: {total} characters of text and URLs in total (Slack answers msg_blocks_too_long "
            f"above about {CUMULATIVE_TEXT_MAX})"
        )
    return problems


# ---------------------------------------------------------------------------------------------- content


class _View:
    """What every part of the message needs to know about the group, computed once."""

    def __init__(self, notification: Notification) -> None:
        alerts = notification.alerts
        self.common_labels = notification.common_labels()
        self.common_annotations = notification.common_annotations()
        pool = notification.firing or alerts
        self.severity = max(
            (severity_of(a.labels) for a in pool), key=_RANK.__getitem__, default=DEFAULT_SEVERITY
        )
        # Firing first, then the worst, then the oldest (often the cause), then a stable tie-break.
        self.ordered = sorted(
            alerts,
            key=lambda a: (a.is_resolved(), -_RANK[severity_of(a.labels)], a.starts_at, a.fingerprint),
        )
        self.names = sorted({a.name for a in pool}) or (
            [notification.group_labels["alertname"]] if notification.group_labels.get("alertname") else []
        )
        # The labels that say *which* group this is: the group labels, else (group_by: []) the common ones.
        source = notification.group_labels or self.common_labels
        self.title_labels = sorted((k, v) for k, v in source.items() if k != "alertname")
        self.group_labels = dict(sorted(notification.group_labels.items()))
        self.silence_labels = dict(sorted((notification.group_labels or self.common_labels).items()))
        urls = {a.generator_url for a in alerts}
        self.common_generator_url = next(iter(urls)) if len(urls) == 1 else ""


def _header_text(notification: Notification, view: _View, options: MessageOptions) -> str:
    if _given(options.title):
        core = _inline(options.title or "")
    else:
        pool = notification.firing or notification.resolved
        count = f" ×{len(pool)}" if len(pool) > 1 else ""
        labels = ", ".join(f"{k}={v}" for k, v in view.title_labels[:5])
        what = _names(view.names) + (f" ({_inline(labels)})" if labels else "")
        if notification.firing:
            core = f"{_EMOJI[view.severity]} FIRING{count} · {view.severity} · {what}"
        else:
            core = f"{_RESOLVED_EMOJI} RESOLVED{count} · {what}"
    if options.test:
        core = f"{_TEST_EMOJI} TEST · {core}"
    return _cut(core, HEADER_TEXT_MAX)


def _summary_blocks(view: _View) -> list[dict[str, Any]]:
    lines = []
    summary = view.common_annotations.get("summary", "")
    description = view.common_annotations.get("description", "")
    if summary.strip():
        lines.append(f"*{_escape_cut(summary, _SUMMARY_MAX, inline=True)}*")
    if description.strip():
        lines.append(_escape_cut(description, _DESCRIPTION_MAX))
    return [_section("\n".join(lines))] if lines else []


def _labels_blocks(view: _View) -> list[dict[str, Any]]:
    elements = []
    if view.group_labels:
        elements.append(f"*Group:* {_label_codes(view.group_labels, _LABELS_LINE_MAX)}")
    others = {k: v for k, v in sorted(view.common_labels.items()) if k not in view.group_labels}
    if others:
        elements.append(f"*All alerts:* {_label_codes(others, _LABELS_LINE_MAX)}")
    return [_context(*elements)] if elements else []


def _alert_text(alert: Alert, view: _View, now: datetime, limit: int) -> str:
    """One alert in at most `limit` characters; what matters at 3 a.m. gets the room first.

    Always: status emoji, name, distinguishing labels (cut to a third), value and since when. Then, as room
    allows: its runbook and graph links (when not shared by the group), its summary, its description.
    """
    emoji = _RESOLVED_EMOJI if alert.is_resolved() else _EMOJI[severity_of(alert.labels)]
    value = alert.annotations.get("value") or alert.labels.get("value") or ""
    shown_elsewhere = {"alertname"} | ({"value"} if not alert.annotations.get("value") else set())
    distinct = {
        k: v
        for k, v in sorted(alert.labels.items())
        if k not in view.common_labels and k not in shown_elsewhere
    }
    head = f"{emoji} *{_escape_cut(alert.name, 100, inline=True)}*"
    if distinct:
        head += " " + _label_codes(distinct, min(_ALERT_HEAD_MAX, limit // 3) - _u16(head) - 1)

    facts = (
        ("*value:* " + _code(value, _VALUE_MAX) if value.strip() else "*value:* n/a")
        + " · "
        + _since(alert, now)
    )
    links = []
    if "runbook_url" not in view.common_annotations:
        links.append(_link(alert.annotations.get("runbook_url", ""), "Runbook", _INLINE_RUNBOOK_URL_MAX))
    if not view.common_generator_url:
        links.append(_link(alert.generator_url, "Graph", _GRAPH_URL_MAX))
    for link in links:
        if link and _u16(head) + _u16(facts) + _u16(link) + 4 <= limit:
            facts += " · " + link

    notes = []
    room = limit - _u16(head) - _u16(facts) - 2
    for key in ("summary", "description"):
        text = alert.annotations.get(key, "")
        if key in view.common_annotations or not text.strip() or room < 40:
            continue  # shown once for the group, absent, or no room worth using
        note = _escape_cut(text, min(_ALERT_ANNOTATION_MAX, room - 1), inline=key == "summary")
        notes.append(note)
        room -= _u16(note) + 1
    return _cut("\n".join([head, *notes, facts]), limit)  # the cut only guards against rounding


def _since(alert: Alert, now: datetime) -> str:
    started = f"*since* {_when(alert.starts_at, now)} ({_duration(now - alert.starts_at)} ago)"
    if not alert.is_resolved():
        return started
    ended = alert.ends_at
    if ended == ZERO_TIME or ended < alert.starts_at:
        return f"{started} · *resolved*"
    return f"{started} · *resolved* {_when(ended, now)} (after {_duration(ended - alert.starts_at)})"


def _more(hidden: list[Alert], external_url: str) -> dict[str, Any]:
    firing = sum(1 for a in hidden if not a.is_resolved())
    noun = "alert" if len(hidden) == 1 else "alerts"
    text = f"…and {len(hidden)} more {noun} ({firing} firing, {len(hidden) - firing} resolved)"
    link = _link(external_url, "see them all", _BUTTON_URL_MAX)
    return _context(f"{text} · {link}" if link else text)


def _actions(notification: Notification, view: _View, options: MessageOptions) -> dict[str, Any] | None:
    buttons = []
    runbook = view.common_annotations.get("runbook_url", "")
    if _usable_url(runbook, _BUTTON_URL_MAX):
        buttons.append(_button("Runbook", runbook, "runbook", primary=bool(notification.firing)))
    if _usable_url(view.common_generator_url, _GRAPH_URL_MAX):
        buttons.append(_button("Graph", view.common_generator_url, "graph"))
    # Silencing a group that has already resolved helps nobody; the button would only invite mistakes.
    if notification.firing and options.silence_url and view.silence_labels:
        url = silence_link(options.silence_url, view.silence_labels)
        if _usable_url(url, _BUTTON_URL_MAX):
            buttons.append(_button("Silence", url, "silence"))
    if _usable_url(notification.external_url, _BUTTON_URL_MAX):
        buttons.append(_button("Alert list", notification.external_url, "alerts"))
    if options.reenable:
        buttons.insert(0, _reenable_button(options.reenable))
    return {"type": "actions", "elements": buttons} if buttons else None


REENABLE_ACTION = "tripwire_reenable"


def _reenable_button(decision_id: str) -> dict[str, Any]:
    """The human way back from a kill-switch flip: Slack posts the click to the notifier's /slack/actions,
    which checks Slack's signature before doing anything. A confirm dialog guards against a stray click."""
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": "Re-enable flag", "emoji": True},
        "action_id": REENABLE_ACTION,
        "value": decision_id[:2000],
        "style": "danger",
        "confirm": {
            "title": {"type": "plain_text", "text": "Re-enable the flag?"},
            "text": {"type": "mrkdwn", "text": "Turn the flag back on. Do it only once the cause is fixed."},
            "confirm": {"type": "plain_text", "text": "Re-enable"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        },
    }


def _footer(notification: Notification) -> dict[str, Any]:
    firing, resolved = len(notification.firing), len(notification.resolved)
    return _context(
        f"*{firing}* firing · *{resolved}* resolved",
        f"receiver {_code(notification.receiver, _FOOTER_ITEM_MAX)}",
        f"group {_code(notification.group_key, _FOOTER_ITEM_MAX)}",
    )


def silence_link(base: str, labels: dict[str, str]) -> str:
    """`base` with Alertmanager UI's `filter` query prefilled: `{a="x", b="y"}`, url-encoded."""
    matchers = ", ".join(f"{_matcher_name(k)}={_quoted(v)}" for k, v in sorted(labels.items()))
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}filter={quote('{' + matchers + '}', safe='')}"


def _matcher_name(name: str) -> str:
    # UTF-8 label names (Alertmanager >= 0.27) must be quoted in matchers.
    return name if _LABEL_NAME.match(name) else _quoted(name)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# ---------------------------------------------------------------------------------------------- blocks


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text or "Alert", "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text or " "}}


def _context(*texts: str) -> dict[str, Any]:
    elements = [{"type": "mrkdwn", "text": _cut(t, TEXT_OBJECT_MAX)} for t in texts if t.strip()]
    return {"type": "context", "elements": elements[:CONTEXT_ELEMENTS_MAX]}


def _button(label: str, url: str, action: str, *, primary: bool = False) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "url": url,
        # action_id must be unique in the block; Slack still posts an interaction payload for link buttons.
        "action_id": f"tripwire_{action}",
    }
    if primary:
        button["style"] = "primary"
    return button


def _link(url: str, label: str, limit: int) -> str | None:
    """A mrkdwn link `<url|label>`, or None when the URL is unusable or longer than `limit` once escaped."""
    if not _usable_url(url, limit):
        return None
    # Inside <url|label>, `|` and `>` would end the URL and `&` must be an entity.
    safe = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|{label}>" if _u16(safe) <= limit else None


def _usable_url(url: str, limit: int) -> bool:
    """Only absolute http(s) URLs, whole: a cut URL leads somewhere wrong and `javascript:` nowhere good."""
    return (
        bool(url)
        and url.startswith(("http://", "https://"))
        and _u16(url) <= limit
        and not any(c.isspace() or ord(c) < 32 for c in url)
    )


def _label_codes(labels: dict[str, str], limit: int) -> str:
    """`k=v` code spans (no mrkdwn inside them), at most _LABELS_SHOWN, then `+N more`, within `limit`."""
    items = list(labels.items())
    parts: list[str] = []
    used = 0
    for index, (name, value) in enumerate(items):
        part = _code(f"{name}={value}", 120)
        after = len(items) - index - 1
        reserve = len(f" +{after} more") if after else 0  # room to still announce the rest
        if index >= _LABELS_SHOWN or used + _u16(part) + reserve > limit:
            parts.append(f"+{len(items) - index} more")
            break
        parts.append(part)
        used += _u16(part) + 1
    return " ".join(parts)


def _code(raw: str, limit: int) -> str:
    # A backtick would end the span early; a look-alike keeps the value readable.
    inner = _escape_cut(raw.replace("`", "ˋ"), max(limit - 2, 1), inline=True)
    return f"`{inner}`" if inner else "`''`"


# ---------------------------------------------------------------------------------------------- text


def _u16(text: str) -> int:
    """Length in UTF-16 code units: never less than Slack's count, whichever way it counts."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _clean(text: str) -> str:
    """Lone surrogates (invalid JSON for Slack) replaced; control characters but tab and newline dropped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub("", text)


def _inline(text: str) -> str:
    return _WHITESPACE.sub(" ", _clean(text)).strip()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_cut(raw: str, limit: int, *, inline: bool = False) -> str:
    """`raw` mrkdwn-escaped and cut to `limit` with an ellipsis, never inside an entity or a character."""
    text = _inline(raw) if inline else _clean(raw).strip()
    escaped = _escape(text)
    if _u16(escaped) <= limit:
        return escaped
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = _ESCAPES.get(char, char)
        width = _u16(piece)
        if used + width > limit - 1:
            break
        pieces.append(piece)
        used += width
    return "".join(pieces).rstrip() + "…"


def _cut(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units with an ellipsis, whole characters only."""
    if _u16(text) <= limit:
        return text
    pieces: list[str] = []
    used = 0
    for char in text:
        width = 2 if ord(char) > 0xFFFF else 1
        if used + width > limit - 1:
            break
        pieces.append(char)
        used += width
    return "".join(pieces) + "…"


def _given(text: str | None) -> bool:
    """An override counts only if something visible is left once cleaned."""
    return text is not None and bool(_inline(text))


def _names(names: list[str]) -> str:
    if not names:
        return "alerts"
    shown = ", ".join(names[:3])
    return shown + (f" +{len(names) - 3} more" if len(names) > 3 else "")


def _when(moment: datetime, now: datetime) -> str:
    """`02:47 UTC` today, `Jan 14 02:47 UTC` this year, `2025-01-14 02:47 UTC` before."""
    if moment.date() == now.date():
        return f"{moment:%H:%M} UTC"
    if moment.year == now.year:
        return f"{moment:%b} {moment.day} {moment:%H:%M} UTC"
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _duration(delta: Any) -> str:
    seconds = max(0, int(delta.total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 1:
        return "<1 min"
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{days} d {hours % 24} h" if hours % 24 else f"{days} d"


# ---------------------------------------------------------------------------------------------- checks


def _strings(node: Any, keys: tuple[str, ...] = ("text", "url")) -> Iterator[str]:
    """Every string under `keys` anywhere in a block (text objects nest as {"text": {"text": ...}})."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from _strings(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, keys)


def _weight(block: Any) -> int:
    return sum(_u16(s) for s in _strings(block))


def _check_text(where: str, obj: Any, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where}: not a text object"]
    if plain_only and obj["type"] != "plain_text":
        return [f"{where}: must be plain_text"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: empty text"]
    if _u16(text) > limit:
        return [f"{where}: {_u16(text)} characters (limit {limit})"]
    return []


def _check_element(where: str, element: Any) -> list[str]:
    if not isinstance(element, dict) or element.get("type") != "button":
        return []  # other interactive elements are not used by our messages
    problems = _check_text(f"{where}.text", element.get("text"), BUTTON_TEXT_MAX, plain_only=True)
    url = element.get("url")
    if url is not None and (not isinstance(url, str) or not url or _u16(url) > URL_MAX):
        problems.append(f"{where}.url: empty or longer than {URL_MAX} characters")
    value = element.get("value")
    if isinstance(value, str) and _u16(value) > BUTTON_VALUE_MAX:
        problems.append(f"{where}.value: {_u16(value)} characters (limit {BUTTON_VALUE_MAX})")
    action_id = element.get("action_id")
    if isinstance(action_id, str) and _u16(action_id) > ACTION_ID_MAX:
        problems.append(f"{where}.action_id: longer than {ACTION_ID_MAX} characters")
    return problems


def _check_block(where: str, block: Any, seen_ids: set[str]) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [f"{where}: not a block (no type)"]
    kind = block["type"]
    problems: list[str] = []
    block_id = block.get("block_id")
    if block_id is not None:
        if not isinstance(block_id, str) or not block_id or _u16(block_id) > BLOCK_ID_MAX:
            problems.append(f"{where}.block_id: empty or longer than {BLOCK_ID_MAX} characters")
        elif block_id in seen_ids:
            problems.append(f"{where}.block_id: {block_id!r} is not unique")
        else:
            seen_ids.add(block_id)
    if kind == "header":
        problems += _check_text(f"{where}.text", block.get("text"), HEADER_TEXT_MAX, plain_only=True)
    elif kind == "section":
        fields = block.get("fields")
        if block.get("text") is None and not fields:
            problems.append(f"{where}: a section needs text or fields")
        if block.get("text") is not None:
            problems += _check_text(f"{where}.text", block["text"], SECTION_TEXT_MAX)
        if fields is not None:
            if not isinstance(fields, list) or len(fields) > SECTION_FIELDS_MAX:
                problems.append(f"{where}.fields: more than {SECTION_FIELDS_MAX} fields")
            else:
                for i, field in enumerate(fields):
                    problems += _check_text(f"{where}.fields[{i}]", field, FIELD_TEXT_MAX)
        if "accessory" in block:
            problems += _check_element(f"{where}.accessory", block["accessory"])
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= CONTEXT_ELEMENTS_MAX:
            count = len(elements) if isinstance(elements, list) else 0
            problems.append(f"{where}.elements: {count} elements (1 to {CONTEXT_ELEMENTS_MAX})")
        else:
            for i, element in enumerate(elements):
                if isinstance(element, dict) and element.get("type") == "image":
                    continue
                problems += _check_text(f"{where}.elements[{i}]", element, TEXT_OBJECT_MAX)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= ACTIONS_ELEMENTS_MAX:
            count = len(elements) if isinstance(elements, list) else 0
            problems.append(f"{where}.elements: {count} elements (1 to {ACTIONS_ELEMENTS_MAX})")
        else:
            action_ids = [e.get("action_id") for e in elements if isinstance(e, dict) and e.get("action_id")]
            if len(action_ids) != len(set(action_ids)):
                problems.append(f"{where}.elements: action_id values are not unique")
            for i, element in enumerate(elements):
                problems += _check_element(f"{where}.elements[{i}]", element)
    return problems
