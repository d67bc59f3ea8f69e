"""The Slack Block Kit message: what on-call needs, Slack's limits for any input, and check_limits itself."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.notifier.notification import Notification
from services.notifier.receivers.slack_message import (
    MAX_BLOCKS,
    RESOLVED_COLOR,
    MessageOptions,
    check_limits,
    fallback_text,
    render_message,
    severity_of,
)
from shared.alerts import Alert, from_unix

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
EXTERNAL = "http://tripwire:9402"
SILENCES = EXTERNAL + "/#/silences/new"
GRAPH = "http://prometheus:9090/graph?g0.expr=rate%28http_errors%5B5m%5D%29&g0.tab=1"
RUNBOOK = "https://runbooks.example.com/HighErrorRate"


def alert(
    instance: str = "10.0.0.1:8080",
    *,
    name: str = "HighErrorRate",
    status: str = "firing",
    started: float = T0 - 720,
    ended: float | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    url: str = GRAPH,
) -> Alert:
    return Alert(
        labels={"alertname": name, "service": "checkout", "severity": "critical", "instance": instance}
        | (labels or {}),
        annotations={"summary": "Error rate is above 5%", "runbook_url": RUNBOOK} | (annotations or {}),
        startsAt=from_unix(started),
        endsAt=from_unix(ended if ended is not None else T0 + 240),
        generatorURL=url,
        status=status,  # type: ignore[arg-type]
    )


def group(*alerts: Alert, group_labels: dict[str, str] | None = None) -> Notification:
    labels = {"alertname": "HighErrorRate", "service": "checkout"} if group_labels is None else group_labels
    key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    return Notification(
        receiver="team-checkout",
        group_key=key,
        group_labels=labels,
        alerts=list(alerts),
        external_url=EXTERNAL,
    )


def three_firing() -> Notification:
    return group(
        alert("10.0.0.1:8080", annotations={"value": "5.3%"}),
        alert("10.0.0.2:8080", annotations={"value": "4.9%"}, started=T0 - 300),
        alert("10.0.0.3:8080", annotations={"value": "7.1%"}, started=T0 - 3 * 3600 - 120),
    )


def render(notification: Notification, **options: Any) -> dict[str, Any]:
    return render_message(notification, MessageOptions(**options), now=T0)


def all_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    return message["blocks"] + [b for a in message.get("attachments", []) for b in a["blocks"]]


def header(message: dict[str, Any]) -> str:
    return message["blocks"][0]["text"]["text"]


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    """Every mrkdwn string Slack will parse (section texts, context elements)."""
    texts = []
    for block in all_blocks(message):
        if block["type"] == "section":
            texts.append(block["text"]["text"])
        elif block["type"] == "context":
            texts += [e["text"] for e in block["elements"]]
    return texts


def alert_sections(message: dict[str, Any]) -> list[str]:
    """The per-alert listing: the sections after the divider."""
    body = message["attachments"][0]["blocks"]
    start = next(i for i, b in enumerate(body) if b["type"] == "divider") + 1
    return [b["text"]["text"] for b in body[start:] if b["type"] == "section"]


def buttons(message: dict[str, Any]) -> dict[str, str]:
    return {
        e["text"]["text"]: e["url"]
        for b in all_blocks(message)
        if b["type"] == "actions"
        for e in b["elements"]
    }


def u16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# ---------------------------------------------------------------------------------------------- content


def test_three_alert_firing_group_shows_what_on_call_needs() -> None:
    message = render(three_firing(), silence_url=SILENCES)
    assert check_limits(message) == []
    assert header(message) == "🔴 FIRING ×3 · critical · HighErrorRate (service=checkout)"
    assert message["text"] == "[FIRING:3] HighErrorRate service=checkout — Error rate is above 5% (critical)"
    assert message["attachments"][0]["color"] == "#E01E5A"
    texts = "\n".join(mrkdwn_texts(message))
    assert "*Error rate is above 5%*" in texts  # the common summary, once
    assert "*Group:* `alertname=HighErrorRate` `service=checkout`" in texts

    listed = alert_sections(message)
    assert len(listed) == 3
    # Oldest first among equally severe; each with its distinguishing label, value and since when.
    assert listed[0] == (
        "🔴 *HighErrorRate* `instance=10.0.0.3:8080`\n*value:* `7.1%` · *since* 04:58 UTC (3 h 2 min ago)"
    )
    assert "`instance=10.0.0.1:8080`" in listed[1] and "`5.3%`" in listed[1] and "(12 min ago)" in listed[1]
    assert "`instance=10.0.0.2:8080`" in listed[2] and "`4.9%`" in listed[2] and "(5 min ago)" in listed[2]

    links = buttons(message)
    assert links["Runbook"] == RUNBOOK
    assert links["Graph"] == GRAPH
    assert links["Alert list"] == EXTERNAL
    assert links["Silence"] == (
        SILENCES + "?filter=%7Balertname%3D%22HighErrorRate%22%2C%20service%3D%22checkout%22%7D"
    )
    assert unquote(links["Silence"].split("filter=")[1]) == '{alertname="HighErrorRate", service="checkout"}'
    footer = message["attachments"][0]["blocks"][-1]
    assert [e["text"] for e in footer["elements"]][:2] == [
        "*3* firing · *0* resolved",
        "receiver `team-checkout`",
    ]
    assert json.loads(json.dumps(message)) == message  # plain JSON, nothing exotic


def test_resolved_group_looks_different() -> None:
    n = group(
        *(alert(f"10.0.0.{i}:8080", status="resolved", ended=T0 - 60, started=T0 - 1560) for i in range(3))
    )
    message = render(n, silence_url=SILENCES)
    assert check_limits(message) == []
    assert header(message) == "✅ RESOLVED ×3 · HighErrorRate (service=checkout)"
    assert message["text"] == "[RESOLVED:3] HighErrorRate service=checkout — Error rate is above 5%"
    assert message["attachments"][0]["color"] == RESOLVED_COLOR
    dumped = json.dumps(message, ensure_ascii=False)
    assert "🔴" not in dumped and "FIRING" not in dumped and "#E01E5A" not in dumped
    assert "Silence" not in buttons(message)  # nothing left to silence
    assert "*resolved* 07:59 UTC (after 25 min)" in alert_sections(message)[0]


def test_mixed_group_lists_firing_first_and_counts_both() -> None:
    n = group(
        alert("a", status="resolved", ended=T0 - 60, started=T0 - 7200),
        alert("b", labels={"severity": "warning"}),
        alert("c"),
    )
    message = render(n)
    listed = alert_sections(message)
    assert [s.split("`instance=")[1][0] for s in listed] == ["c", "b", "a"]  # critical, warning, resolved
    assert listed[0].startswith("🔴") and listed[1].startswith("🟡") and listed[2].startswith("✅")
    assert header(message).startswith("🔴 FIRING ×2 · critical")
    assert message["text"].endswith("(critical) (+1 resolved)")
    assert "*2* firing · *1* resolved" in mrkdwn_texts(message)


def test_value_falls_back_to_label_then_na_and_per_alert_links_when_they_differ() -> None:
    n = group(
        alert(
            "a",
            labels={"value": "0.42"},
            started=T0 - 900,
            url="http://prom/graph?a",
            annotations={"runbook_url": "https://r/a"},
        ),
        alert("b", url="http://prom/graph?b", annotations={"runbook_url": "https://r/b", "summary": "Other"}),
    )
    message = render(n)
    first, second = alert_sections(message)
    assert "`value=0.42`" not in first  # the label is shown once, as the value
    assert (
        "*value:* `0.42`" in first
        and "<http://prom/graph?a|Graph>" in first
        and "<https://r/a|Runbook>" in first
    )
    assert "*value:* n/a" in second and "<http://prom/graph?b|Graph>" in second and "\nOther\n" in second
    assert "Runbook" not in buttons(message) and "Graph" not in buttons(message)
    assert "— " not in message["text"]  # no summary common to the group


def test_since_shows_the_date_when_it_is_not_today() -> None:
    listed = alert_sections(render(group(alert(started=T0 - 3 * 86400 - 3600))))
    assert "*since* Jan 12 07:00 UTC (3 d 1 h ago)" in listed[0]
    listed = alert_sections(render(group(alert(started=T0 - 400 * 86400))))
    assert "*since* 2025-12-11 08:00 UTC (400 d ago)" in listed[0]


def test_test_flag_marks_header_fallback_and_context() -> None:
    message = render(three_firing(), test=True)
    assert header(message).startswith("🧪 TEST · 🔴 FIRING")
    assert message["text"].startswith("[TEST] [FIRING:3]")
    assert any("Test notification" in t for t in mrkdwn_texts(message))
    overridden = render(three_firing(), test=True, title="Checkout errors")
    assert header(overridden) == "🧪 TEST · Checkout errors"
    assert overridden["text"] == "[TEST] Checkout errors"


def test_overrides_replace_header_and_listing() -> None:
    message = render(three_firing(), title="Checkout is failing", text="*3 pods* <https://x/y|dashboard>")
    assert check_limits(message) == []
    assert header(message) == "Checkout is failing"
    assert message["text"] == "Checkout is failing"
    # The rendered template is mrkdwn from the config author: kept as is, link included.
    assert alert_sections(message) == ["*3 pods* <https://x/y|dashboard>"]
    assert not any("instance=" in t for t in mrkdwn_texts(message))
    assert "Runbook" in buttons(message)  # links stay


def test_update_note_is_a_context_line_under_the_header() -> None:
    message = render(three_firing(), update_note="Resolved at 03:12 UTC <by> bob & co")
    assert message["blocks"][1] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "🔄 Resolved at 03:12 UTC &lt;by&gt; bob &amp; co"}],
    }


def test_alert_data_is_mrkdwn_escaped() -> None:
    evil = "<!channel> & <https://evil.example|click> `x`"
    n = group(
        alert("a", labels={"team": evil}, annotations={"summary": evil, "description": evil, "value": "<1>"}),
        group_labels={"alertname": "HighErrorRate", "team": evil},
    )
    message = render(n)
    assert check_limits(message) == []
    texts = [*mrkdwn_texts(message), message["text"]]
    for shown in texts:
        assert "<!channel>" not in shown and "<https://evil" not in shown
    joined = "\n".join(texts)
    assert "*&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt; `x`*" in joined  # the summary
    assert "`team=&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt; ˋxˋ`" in joined  # in a code span
    assert "`&lt;1&gt;`" in joined
    # The header is plain_text: Slack shows it literally, so it carries the raw text.
    assert "team=<!channel>" in header(message)


def test_silence_link_quotes_values_and_utf8_names() -> None:
    n = group(alert(), group_labels={"alertname": "HighErrorRate", "path": 'a"b\\c', "dotted.name": "x"})
    url = buttons(render(n, silence_url=SILENCES + "?x=1"))["Silence"]
    assert url.startswith(SILENCES + "?x=1&filter=")
    assert (
        unquote(url.split("filter=")[1])
        == '{alertname="HighErrorRate", "dotted.name"="x", path="a\\"b\\\\c"}'
    )


def test_silence_uses_common_labels_when_grouped_by_nothing_and_skips_unsafe_urls() -> None:
    n = group(alert("a"), alert("b"), group_labels={})
    url = buttons(render(n, silence_url=SILENCES))["Silence"]
    assert (
        unquote(url.split("filter=")[1])
        == '{alertname="HighErrorRate", service="checkout", severity="critical"}'
    )
    n = group(alert("a", url="javascript:alert(1)", annotations={"runbook_url": "ftp://x"}))
    links = buttons(render(n))
    assert "Graph" not in links and "Runbook" not in links


# ---------------------------------------------------------------------------------------------- limits


def test_500_alerts_stay_within_limits_and_say_how_many_more() -> None:
    alerts = [alert(f"10.0.{i // 250}.{i % 250}:8080", started=T0 - i) for i in range(490)]
    alerts += [alert(f"r{i}", status="resolved", ended=T0 - 10, started=T0 - 100) for i in range(10)]
    message = render(group(*alerts))
    assert check_limits(message) == []
    assert len(alert_sections(message)) == 10
    more = [t for t in mrkdwn_texts(message) if t.startswith("…and")]
    assert more == [f"…and 490 more alerts (480 firing, 10 resolved) · <{EXTERNAL}|see them all>"]
    assert message["text"].startswith("[FIRING:490] HighErrorRate")

    # Asking for all of them still yields a message Slack takes: the rest is counted.
    everything = render(group(*alerts), max_alerts_listed=1000)
    assert check_limits(everything) == []
    assert len(all_blocks(everything)) <= MAX_BLOCKS
    listed = len(alert_sections(everything))
    assert 10 < listed < 500
    assert any(t.startswith(f"…and {500 - listed} more alerts") for t in mrkdwn_texts(everything))


def test_huge_annotations_and_many_labels_stay_within_limits() -> None:
    big = "x" * 10_000
    many = {f"label_{i:03}": "v" * 50 for i in range(200)}
    alerts = [
        alert(
            f"i{i}",
            labels=many | {f"own_{j:03}": f"{i}-" + "w" * 50 for j in range(200)},
            annotations={"summary": f"{i} " + big, "description": big, "value": big},
            url="http://prom/graph?" + "q" * 1400 + str(i),
        )
        for i in range(60)
    ]
    n = group(*alerts, group_labels={"alertname": "HighErrorRate"} | many)
    message = render(n, silence_url=SILENCES, update_note=big, text=None, title=None)
    assert check_limits(message) == []
    assert u16(message["text"]) <= 3000 and message["text"].endswith("…")
    first = alert_sections(message)[0]
    assert "+" in first and "more" in first  # labels cut down to "+N more"
    assert any(t.startswith("…and ") and " more alerts" in t for t in mrkdwn_texts(message))
    # Group label lines are cut too, but still say how many were left out.
    assert any(t.startswith("*Group:*") and t.endswith("more") for t in mrkdwn_texts(message))

    overridden = render(n, title=big, text=big)
    assert check_limits(overridden) == []
    assert u16(header(overridden)) == 150 and header(overridden).endswith("…")


def test_truncation_never_splits_a_character() -> None:
    emoji = "😀" * 5000  # 2 UTF-16 units each
    n = group(alert(annotations={"summary": emoji, "description": emoji}, labels={"e": emoji}))
    message = render(n, title=emoji)
    assert check_limits(message) == []
    for shown in [*mrkdwn_texts(message), header(message), message["text"]]:
        shown.encode("utf-8")  # raises on a lone surrogate
    assert header(message) == "😀" * 74 + "…"  # 148 + 1 units


def test_lone_surrogates_and_control_characters_are_cleaned() -> None:
    n = group(alert(annotations={"summary": "bad\ud800 \x00bell\x07"}))
    message = render(n)
    assert check_limits(message) == []
    json.dumps(message, ensure_ascii=False).encode("utf-8")
    assert "*bad? bell*" in mrkdwn_texts(message)


def test_an_empty_notification_still_renders() -> None:
    message = render(group())
    assert check_limits(message) == []
    assert header(message) == "✅ RESOLVED · HighErrorRate (service=checkout)"


labels_st = st.dictionaries(
    st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True), st.text(max_size=300), max_size=40
)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(labels_st, labels_st, st.sampled_from(["firing", "resolved"])), max_size=30),
    st.integers(min_value=-1, max_value=80),
    st.text(max_size=4000),
)
def test_any_input_renders_within_limits(
    specs: list[tuple[dict[str, str], dict[str, str], str]], listed: int, extra: str
) -> None:
    alerts = [
        Alert(
            labels=labels | {"alertname": "A" + extra[:50] or "A"},
            annotations=annotations | {"summary": extra},
            startsAt=from_unix(T0 - 60),
            endsAt=from_unix(T0),
            status=status,  # type: ignore[arg-type]
        )
        for labels, annotations, status in specs
    ]
    n = Notification("r" + extra[:100], extra, {"alertname": "A"}, alerts, EXTERNAL)
    options = MessageOptions(
        title=extra or None,
        silence_url=SILENCES,
        max_alerts_listed=listed,
        update_note=extra,
        test=bool(listed % 2),
    )
    message = render_message(n, options, now=T0)
    assert check_limits(message) == []
    assert u16(fallback_text(n, options)) <= 3000


# ---------------------------------------------------------------------------------------------- severity


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("critical", "critical"),
        ("PAGE", "critical"),
        ("Sev-1", "critical"),
        ("fatal", "critical"),
        ("error", "error"),
        ("high", "error"),
        ("warning", "warning"),
        ("warn", "warning"),
        ("P3", "warning"),
        ("info", "info"),
        ("low", "info"),
        ("none", "info"),
        ("banana", "warning"),
        ("", "warning"),
    ],
)
def test_severity_of(value: str, expected: str) -> None:
    assert severity_of({"severity": value}) == expected


def test_severity_defaults_to_warning_and_group_takes_the_worst_firing() -> None:
    assert severity_of({}) == "warning"
    n = group(
        alert("a", labels={"severity": "info"}),
        alert("b", labels={"severity": "page"}, status="resolved", ended=T0 - 1),
        alert("c", labels={"severity": "error"}),
    )
    message = render(n)
    assert header(message).startswith("🟠 FIRING ×2 · error ·")  # the resolved page no longer counts
    assert message["attachments"][0]["color"] == "#E8710A"
    assert fallback_text(n).endswith("(error) (+1 resolved)")


# ---------------------------------------------------------------------------------------------- check_limits


def valid() -> dict[str, Any]:
    return {
        "text": "fallback",
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "hi"}}],
        "attachments": [
            {"color": "#000000", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "x"}}]}
        ],
    }


def text(value: str, kind: str = "mrkdwn") -> dict[str, str]:
    return {"type": kind, "text": value}


def button(label: str = "Go", url: str = "https://x", action_id: str = "a") -> dict[str, Any]:
    return {"type": "button", "text": text(label, "plain_text"), "url": url, "action_id": action_id}


@pytest.mark.parametrize(
    ("block", "complaint"),
    [
        ({"type": "header", "text": text("h" * 151, "plain_text")}, "151 characters (limit 150)"),
        ({"type": "header", "text": text("*h*")}, "must be plain_text"),
        ({"type": "header", "text": text("😀" * 76, "plain_text")}, "152 characters (limit 150)"),
        ({"type": "section", "text": text("s" * 3001)}, "3001 characters (limit 3000)"),
        ({"type": "section", "text": text("")}, "empty text"),
        ({"type": "section"}, "needs text or fields"),
        ({"type": "section", "fields": [text("f")] * 11}, "more than 10 fields"),
        ({"type": "section", "fields": [text("f" * 2001)]}, "2001 characters (limit 2000)"),
        ({"type": "section", "text": text("s"), "accessory": button("b" * 76)}, "76 characters (limit 75)"),
        ({"type": "context", "elements": [text("c")] * 11}, "11 elements (1 to 10)"),
        ({"type": "context", "elements": []}, "0 elements (1 to 10)"),
        ({"type": "context", "elements": [text("c" * 3001)]}, "3001 characters (limit 3000)"),
        ({"type": "actions", "elements": [button(url="https://x/" + "u" * 3000)]}, "longer than 3000"),
        ({"type": "actions", "elements": [button(url="")]}, "url: empty"),
        ({"type": "actions", "elements": [button(), button()]}, "action_id values are not unique"),
        ({"type": "actions", "elements": [button(action_id="a" * 256)]}, "action_id: longer than 255"),
        ({"type": "actions", "elements": [button() | {"value": "v" * 2001}]}, "value: 2001 characters"),
        ({"type": "actions", "elements": []}, "0 elements (1 to 25)"),
        ({"type": "divider", "block_id": "b" * 256}, "block_id: empty or longer than 255"),
        ({"text": text("no type")}, "not a block"),
    ],
)
def test_check_limits_catches_each_block_violation(block: dict[str, Any], complaint: str) -> None:
    assert check_limits(valid()) == []
    message = valid()
    message["attachments"][0]["blocks"].append(block)
    problems = check_limits(message)
    assert len(problems) == 1, problems
    assert problems[0].startswith("attachments[0].blocks[1]") and complaint in problems[0]


def test_check_limits_catches_message_level_violations() -> None:
    message = valid()
    del message["text"]
    assert check_limits(message) == ["text: fallback text is missing or empty"]
    message = valid() | {"text": "   "}
    assert check_limits(message) == ["text: fallback text is missing or empty"]
    message = valid() | {"text": "t" * 40_001}
    assert check_limits(message) == ["text: 40001 characters (limit 40000)"]

    # 50 blocks are counted over the top level and the attachments together.
    message = valid()
    message["blocks"] += [{"type": "divider"}] * 25
    message["attachments"][0]["blocks"] += [{"type": "divider"}] * 24
    assert check_limits(message) == ["blocks: 51 blocks (limit 50)"]

    message = valid()
    message["blocks"].append({"type": "divider", "block_id": "same"})
    message["attachments"][0]["blocks"].append({"type": "divider", "block_id": "same"})
    assert check_limits(message) == ["attachments[0].blocks[1].block_id: 'same' is not unique"]

    message = valid()
    message["attachments"][0]["blocks"] = [{"type": "section", "text": text("s" * 2900)} for _ in range(4)]
    problems = check_limits(message)
    assert len(problems) == 1 and "msg_blocks_too_long" in problems[0] and "11602 characters" in problems[0]

    assert check_limits({"text": "t", "blocks": "nope"}) == ["blocks: not a list"]
    assert check_limits({"text": "t", "attachments": [{"blocks": {}}]}) == [
        "attachments[0].blocks: not a list"
    ]
