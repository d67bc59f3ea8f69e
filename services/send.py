"""`tripwire send metric|log`: post one event to a collector."""

from __future__ import annotations

import argparse
import os
import sys

import aiohttp
import orjson


def parse_labels(pairs: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"tripwire send: label {pair!r} must be NAME=VALUE")
        labels[name] = value
    return labels


def _timestamp(text: str | None) -> float | str | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text  # RFC 3339; the collector validates it


async def send(args: argparse.Namespace) -> int:
    labels = parse_labels(args.labels)
    if args.what == "metric":
        path = "/api/v1/metrics"
        item: dict[str, object] = {
            "name": args.name,
            "value": args.value,
            "kind": args.kind,
            "labels": labels,
        }
        body: dict[str, object] = {"samples": [item]}
    else:
        path = "/api/v1/logs"
        item = {"service": args.service, "level": args.level, "message": args.message, "labels": labels}
        body = {"logs": [item]}
    if (ts := _timestamp(args.timestamp)) is not None:
        item["timestamp"] = ts
    token = args.token or os.environ.get("TRIPWIRE_INGEST_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = args.url.rstrip("/") + path
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, json=body, headers=headers) as response,
        ):
            text = await response.text()
    except aiohttp.ClientError as exc:
        print(f"tripwire send: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    if response.status == 202:
        print(f"accepted: {orjson.loads(text).get('accepted')} item(s) -> {url}")
        return 0
    print(f"tripwire send: HTTP {response.status}: {text}", file=sys.stderr)
    return 1
