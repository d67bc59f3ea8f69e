"""Prometheus scraping in the collector: every target of `scrape_configs` is fetched on its interval, parsed
with prometheus-client's parsers, labelled and relabeled as Prometheus does, and published as ONE batch per
scrape onto the metrics stream through the same Publisher (and validation) as the JSON API.

Per scrape, as in Prometheus:
- the samples as exposed (`_total`, `_bucket{le}`, `_sum`, `_count`, `{quantile}`), with the target's labels
  attached (`honor_labels`: on a clash the target wins and the scraped value moves to `exported_<name>`,
  unless honor_labels is true) and `metric_relabel_configs` applied;
- timestamps: the sample's own if it has one (and `honor_timestamps`), else the scrape's start;
- the report series `up`, `scrape_duration_seconds`, `scrape_samples_scraped` and
  `scrape_samples_post_metric_relabeling`, with the target's labels. A target that times out, refuses,
  answers other than 200, sends an unknown Content-Type or a body that does not parse, or exceeds
  `sample_limit`, yields only the report series with `up 0`, and its reason is logged (rate-limited).

Where tripwire differs, by necessity: samples the stream schema cannot carry (NaN/Inf values, reserved or
over-long labels, timestamps outside collector.max_age/max_skew) are dropped one by one and counted in
`tripwire_scrape_samples_dropped_total`, instead of failing the scrape; no staleness markers are written (the
schema carries finite values only); `sample_limit: 0` means collector.max_items, not unlimited, because one
scrape is one stream entry.

Timing: each target has its own loop, first due at a random phase within its interval (so targets spread
out), then every interval. A scrape never overlaps the previous one of the same target: ticks that pass
while it runs (a slow publish, say) are skipped and counted. When Redis refuses the batch (Publisher raises
Unavailable) the scrape is lost, counted, and the next interval tries again: nothing is reported stored that
is not in Redis.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import random
import re
import ssl
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as openmetrics_parser
from yarl import URL

from services.collector.ingest import (
    METRICS,
    Accepted,
    IngestLimits,
    Rejected,
    limits_from,
    quoted,
    validate_items,
)
from services.collector.publish import Publisher, StoreRefused, Unavailable
from services.collector.relabel import METRIC_NAME, Target, relabel, sample_labels, targets_of
from shared.clock import Clock
from shared.config import Config, read_secret_file
from shared.durations import format_duration
from shared.events import METRIC_NAME_RE
from shared.gofloat import format_go_exponent, format_go_float, go_parse_float
from shared.matchers import go_quote
from shared.scrape_config import DEFAULT_SCRAPE_PROTOCOLS, ScrapeConfig
from shared.service import Service
from shared.streams import Keys
from shared.tasks import cancel_and_wait
from shared.yamlfile import ConfigError

log = logging.getLogger(__name__)

# The media type asked for each scrape protocol, as Prometheus writes them.
_MEDIA_TYPES: dict[str, str] = {
    "PrometheusText0.0.4": "text/plain;version=0.0.4",
    "PrometheusText1.0.0": "text/plain;version=1.0.0",
    "OpenMetricsText0.0.1": "application/openmetrics-text;version=0.0.1",
    "OpenMetricsText1.0.0": "application/openmetrics-text;version=1.0.0",
}


def accept_header(protocols: Sequence[str]) -> str:
    """The Accept header of a job's scrapes, built as Prometheus builds it: the protocols in order of
    preference with falling q-values, then anything. The versions that can carry UTF-8 names ask for
    legacy-name escaping: our streams carry legacy names only, so an exporter is asked to escape them."""
    weight = len(_MEDIA_TYPES) + 2  # as Prometheus: its table also holds PrometheusProto, which we never ask
    parts = []
    for protocol in protocols or DEFAULT_SCRAPE_PROTOCOLS:
        media_type = _MEDIA_TYPES[protocol]
        if protocol.endswith("1.0.0"):
            media_type += ";escaping=underscores"
        parts.append(f"{media_type};q=0.{weight}")
        weight -= 1
    parts.append(f"*/*;q=0.{weight}")
    return ",".join(parts)


USER_AGENT = "tripwire-collector"
# Threads that parse and validate scrape bodies, at least (one per target at most).
PARSE_THREADS = 4
VALIDATE_THREADS = 2
# A target's failure is logged when it starts or changes, then at most once per this many seconds.
LOG_EVERY = 60.0
REPORT_SERIES = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)

SUCCESS = "success"


class ScrapeFailed(Exception):
    """The scrape yields `up 0`: `outcome` is the short class (a metric label), `reason` the full story."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ScrapeLimits:
    """The collector's limits as they apply to a scrape's batch."""

    max_items: int
    max_age: float
    max_skew: float
    item_limits: IngestLimits

    @classmethod
    def from_config(cls, config: Config) -> ScrapeLimits:
        collector = config.collector
        return cls(collector.max_items, collector.max_age, collector.max_skew, limits_from(config))


@dataclass(slots=True)
class ScrapeResult:
    """What one scrape did (returned by `Scraper.scrape_once`, for tests and logs)."""

    target: Target
    started_at: float
    outcome: str = SUCCESS
    reason: str | None = None
    duration: float = 0.0  # measured (monotonic), not the injected clock: it is the target's speed
    protocol: str | None = None  # "openmetrics" or "text"
    samples_scraped: int = 0
    samples_post_relabel: int = 0
    series_added: int = 0  # series in this scrape that the target's last successful scrape did not have
    samples_published: int = 0  # items in the batch, report series included
    dropped: dict[str, int] = field(default_factory=dict)
    entry_id: str | None = None
    publish_error: str | None = None

    @property
    def up(self) -> bool:
        return self.outcome == SUCCESS

    @property
    def published(self) -> bool:
        return self.entry_id is not None


class ScrapeMetrics:
    """The scraper's own metrics, on the service's /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scrapes = Counter(
            "tripwire_scrapes",
            "Scrapes by job and outcome (success, timeout, connection_error, http_status, content_type, "
            "parse_error, body_size_limit, sample_limit, label_limit, relabel_error, credentials, tls).",
            ["job", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "tripwire_scrape_duration_seconds",
            "Time to fetch and parse one scrape.",
            ["job"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.skipped = Counter(
            "tripwire_scrape_skipped_ticks",
            "Scrape ticks skipped because the previous scrape of the same target was still running.",
            ["job"],
            registry=registry,
        )
        self.publish_failures = Counter(
            "tripwire_scrape_publish_failures",
            "Scrapes whose batch Redis did not store (down or slow); the next interval scrapes again.",
            ["job"],
            registry=registry,
        )
        self.dropped = Counter(
            "tripwire_scrape_samples_dropped",
            "Scraped samples left out of their batch, by reason (invalid, non_finite, duplicate, "
            "unsupported, reserved_name, reserved_label).",
            ["job", "reason"],
            registry=registry,
        )
        self.targets = Gauge(
            "tripwire_scrape_targets", "Targets scraped, by job.", ["job"], registry=registry
        )


@dataclass(slots=True)
class _Parsed:
    """A scrape body turned into stream items (before validation)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    scraped: int = 0
    post_relabel: int = 0
    dropped: Tally[str] = field(default_factory=Tally)
    failure: ScrapeFailed | None = None
    series: set[int] = field(default_factory=set)  # a hash of each item's series, for scrape_series_added


@dataclass(slots=True)
class _Health:
    """Per target: what was last logged, for rate-limited logging."""

    failing: str | None = None
    logged_at: float = -math.inf
    suppressed: int = 0
    dropped_logged_at: float = -math.inf
    up: bool | None = None


class Scraper:
    """Scrapes the targets of `configs` and publishes each scrape as one batch on `stream`.

    `session` may be None: the scraper then makes its own aiohttp session and `close()` closes it.
    `rng` decides each target's phase offset (tests pass a seeded one).
    """

    def __init__(
        self,
        configs: Sequence[ScrapeConfig],
        publisher: Publisher,
        stream: str,
        session: aiohttp.ClientSession | None,
        clock: Clock,
        limits: ScrapeLimits,
        registry: CollectorRegistry,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.publisher = publisher
        self.stream = stream
        self.clock = clock
        self.limits = limits
        self.metrics = ScrapeMetrics(registry)
        self._session = session
        self._own_session = session is None
        self._rng = rng or random.Random()
        self._health: dict[tuple[str, tuple[tuple[str, str], ...]], _Health] = {}
        self._publish_logged_at = -math.inf
        # Per job: the tls_config files' state when its context was built, and the context (or why not).
        self._tls: dict[str, tuple[object, ssl.SSLContext | bool | ScrapeFailed]] = {}
        # A parse that outlived its scrape_timeout cannot be stopped: until it ends its target is not
        # scraped again (`_parsing` holds the parses still running, and only those: a finished one would
        # keep its whole result alive until the next scrape).
        self._parsing: dict[tuple[str, tuple[tuple[str, str], ...]], Future[_Parsed]] = {}
        # Per target, the series of its last successful scrape (hashes): what scrape_series_added counts from.
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], set[int]] = {}
        self.targets: list[Target] = []
        for job in configs:
            targets, problems = scrapable_targets(job, self.limits, self.clock.now())
            for problem in problems:
                log.warning("scrape target skipped: %s", problem, extra={"job": job.job_name})
            self.targets.extend(targets)
            self.metrics.targets.labels(job.job_name).set(len(targets))
            self._tls_of(job)  # a tls_config that cannot be loaded is logged at start
        # Parsing and validating run in threads of the scraper's own, so that scrapes cannot use up the
        # default pool other work shares (OTLP decoding). A thread per target at most: each target holds
        # one at a time, stuck parse or not, so stuck targets can never keep the others waiting. Threads
        # are made as they are needed and reused, so there are rarely more than a few.
        self._executor = ThreadPoolExecutor(
            max_workers=max(PARSE_THREADS, len(self.targets)), thread_name_prefix="scrape-parse"
        )
        # Validation has threads of its own: it ends in bounded time, but queued behind parses stuck past
        # their timeouts (every thread of the pool) it never ran, and no scrape reported `up 0`.
        self._validators = ThreadPoolExecutor(max_workers=VALIDATE_THREADS, thread_name_prefix="scrape-check")

    # Running ---------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Scrape every target until cancelled: one task per target, each on its own interval and phase.
        Never returns (the service counts a returned loop as stopped)."""
        if not self.targets:
            log.warning("scrape_configs yield no targets to scrape (all dropped by relabeling or invalid)")
        self._ensure_session()
        tasks = [
            asyncio.create_task(self._loop(target), name=f"scrape {target.job.job_name} {target.url}")
            for target in self.targets
        ]
        try:
            if tasks:
                await asyncio.gather(*tasks)
            await asyncio.Event().wait()
        finally:
            await cancel_and_wait(tasks)

    async def _loop(self, target: Target) -> None:
        interval = target.interval
        job = target.job.job_name
        due = self.clock.now() + self._rng.uniform(0, interval)
        refused = 0  # scrapes in a row that Redis did not take
        while True:
            await self.clock.sleep_until(due)
            try:
                result = await self.scrape_once(target)
            except Exception:
                # A bug must cost one scrape, not the target's loop.
                log.exception("scrape failed unexpectedly", extra={"job": job, "target": target.url})
            else:
                refused = refused + 1 if result.publish_error else 0
            # Back off while Redis refuses: 2, 4, then 8 intervals between scrapes, not every interval.
            step = interval * (min(2**refused, 8) if refused else 1)
            due, missed = next_due(due, step, interval, self.clock.now())
            if missed:
                self.metrics.skipped.labels(job).inc(missed)

    async def close(self) -> None:
        """Close the aiohttp session if the scraper made it, and let go of the parse threads."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._validators.shutdown(wait=False, cancel_futures=True)

    def status(self) -> dict[str, object]:
        """For /readyz details: how many targets there are and how many were up at their last scrape."""
        up = sum(1 for health in self._health.values() if health.up)
        return {"scrape_targets": len(self.targets), "scrape_targets_up": up}

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No connection cap: each target holds at most one request at a time anyway.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
            )
        return self._session

    # One scrape ------------------------------------------------------------------------------------------
    async def scrape_once(self, target: Target) -> ScrapeResult:
        """Fetch, parse, label and publish one scrape of `target`. Never raises for the target's faults or
        Redis being unavailable: the result says what happened."""
        job = target.job
        result = ScrapeResult(target=target, started_at=self.clock.now())
        began = time.monotonic()
        parsed = _Parsed()
        try:
            earlier = self._parsing.get(target.identity)
            if earlier is not None and not earlier.done():
                raise ScrapeFailed(
                    "timeout",
                    "the body of an earlier scrape is still being parsed, past its scrape_timeout; this "
                    "target is not scraped again until that ends (a body that is slow to parse)",
                )
            # One deadline for fetch and parse: a gzip bomb or a huge body must not stay "up" past
            # scrape_timeout (the parse thread is not stopped, but its result is no longer waited for).
            async with asyncio.timeout(target.timeout):
                body, content_type = await self._fetch(target)
                # An empty body is a scrape of no samples, whatever its Content-Type (or none), as in
                # Prometheus (scrapeLoop.append): `up 1`, `scrape_samples_scraped 0`.
                if body:
                    result.protocol = protocol_for(content_type, job.fallback_scrape_protocol)
                    parsing = self._executor.submit(
                        parse_scrape,
                        body,
                        result.protocol,
                        target,
                        result.started_at,
                        self._sample_limit(job),
                    )
                    self._parsing[target.identity] = parsing
                    parsing.add_done_callback(self._parse_ended_callback(target.identity))
                    parsed = await asyncio.wrap_future(parsing)
            if parsed.failure is not None:
                raise parsed.failure
        except ScrapeFailed as exc:
            result.outcome, result.reason = exc.outcome, exc.reason
        except TimeoutError:
            parsed = _Parsed()
            result.outcome = "timeout"
            result.reason = (
                f"no complete, parsed response within {format_duration(target.timeout)} (scrape_timeout)"
            )
        except Exception as exc:
            # Whatever else (a credentials file aiohttp refuses, a relabelled address yarl cannot use):
            # still `up 0` with a reason, so `up == 0` alerts fire.
            parsed = _Parsed()
            result.outcome, result.reason = "error", f"{type(exc).__name__}: {exc}"
        result.duration = time.monotonic() - began
        result.samples_scraped, result.samples_post_relabel = parsed.scraped, parsed.post_relabel
        result.series_added = self._new_series(target, parsed.series) if result.up else 0
        items = _without_report_series(parsed) if result.up else []
        items.extend(_report(target, result))
        accepted, invalid, first_reason = await asyncio.wrap_future(
            self._validators.submit(self._validated, items, self.clock.now())
        )
        if invalid:
            parsed.dropped["invalid"] += invalid
        result.dropped = dict(parsed.dropped)
        self._record(result, first_reason)
        if accepted is not None:
            result.samples_published = accepted.count
            try:
                published = await self.publisher.publish(
                    self.stream, METRICS.kind, accepted.items_json, uuid.uuid4().hex
                )
                result.entry_id = published.entry_id
            except (Unavailable, StoreRefused) as exc:
                result.publish_error = str(exc)
                self._publish_failed(target, exc)
        return result

    def _new_series(self, target: Target, series: set[int]) -> int:
        """How many of a successful scrape's series its target's last successful scrape did not have (all of
        them the first time), as Prometheus' scrape cache counts scrape_series_added; a failed scrape is
        not counted and changes nothing."""
        previous = self._series.get(target.identity)
        self._series[target.identity] = series
        return len(series) if previous is None else len(series - previous)

    def _parse_ended_callback(
        self, identity: tuple[str, tuple[tuple[str, str], ...]]
    ) -> Callable[[Future[_Parsed]], None]:
        """A done-callback (it runs in the parse thread) that forgets the parse on the event loop."""
        loop = asyncio.get_running_loop()

        def forget(parse: Future[_Parsed]) -> None:
            if self._parsing.get(identity) is parse:  # not a later parse of the same target
                del self._parsing[identity]

        def ended(parse: Future[_Parsed]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the scraper stopped meanwhile
                loop.call_soon_threadsafe(forget, parse)

        return ended

    def _sample_limit(self, job: ScrapeConfig) -> int:
        return job.sample_limit or self.limits.max_items

    def _tls_of(self, job: ScrapeConfig) -> ssl.SSLContext | bool | ScrapeFailed:
        """The job's TLS context, built again whenever one of its tls_config files changed (a rotated
        certificate, a CA file that appeared): files are read at every scrape, as the README says, but
        only parsed when they change."""
        state = _tls_files_state(job)
        cached = self._tls.get(job.job_name)
        if cached is None or cached[0] != state:
            cached = self._tls[job.job_name] = (state, tls_context_for(job))
        return cached[1]

    async def _fetch(self, target: Target) -> tuple[bytes, str]:
        job = target.job
        tls = self._tls_of(job)
        if isinstance(tls, ScrapeFailed):
            raise tls
        headers = {
            "Accept": accept_header(job.scrape_protocols),
            # aiohttp decompresses what it gets, gzip or not; identity asks for the body as it is.
            "Accept-Encoding": "gzip" if job.enable_compression else "identity",
            "User-Agent": USER_AGENT,
            "X-Prometheus-Scrape-Timeout-Seconds": f"{target.timeout:g}",
        }
        if authorization := authorization_for(job):
            headers["Authorization"] = authorization
        session = self._ensure_session()
        try:
            async with asyncio.timeout(target.timeout):
                async with session.get(URL(target.url, encoded=True), headers=headers, ssl=tls) as response:
                    if response.status != 200:
                        raise ScrapeFailed(
                            "http_status", f"server returned HTTP status {response.status} {response.reason}"
                        )
                    body = await _read(response, job.body_size_limit)
                    return body, response.headers.get("Content-Type", "")
        except TimeoutError:
            raise ScrapeFailed(
                "timeout",
                f"no complete response within {format_duration(target.timeout)} (scrape_timeout)",
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ScrapeFailed("connection_error", f"{type(exc).__name__}: {exc}") from None

    def _validated(self, items: list[dict[str, Any]], now: float) -> tuple[Accepted | None, int, str | None]:
        """The batch without the items the stream schema refuses: (batch, how many were left out, the first
        reason). Runs validate_items again without the bad ones, which then passes."""
        limits = self.limits
        dropped, first_reason = 0, None
        while items:
            try:
                accepted = validate_items(
                    METRICS,
                    items,
                    now,
                    len(items),
                    limits.max_age,
                    limits.max_skew,
                    limits=limits.item_limits,
                    listed=len(items),  # every bad item in one pass: a few at a time is quadratic
                )
            except Rejected as exc:
                bad = {error.index for error in exc.errors if error.index is not None}
                if not bad:
                    raise  # a whole-batch refusal cannot happen with max_items=len(items): a bug
                if first_reason is None:
                    error = exc.errors[0]
                    item = items[error.index] if error.index is not None else {}
                    first_reason = f"{item.get('name', '?')}: {error.field}: {error.reason}"
                dropped += len(bad)
                items = [item for index, item in enumerate(items) if index not in bad]
                continue
            return accepted, dropped, first_reason
        return None, dropped, first_reason

    # Bookkeeping -----------------------------------------------------------------------------------------
    def _record(self, result: ScrapeResult, first_invalid: str | None) -> None:
        target = result.target
        job = target.job.job_name
        self.metrics.scrapes.labels(job, result.outcome).inc()
        self.metrics.duration.labels(job).observe(result.duration)
        for reason, count in result.dropped.items():
            self.metrics.dropped.labels(job, reason).inc(count)
        health = self._health.setdefault(target.identity, _Health())
        now = self.clock.now()
        context = {"job": job, "target": target.url, "instance": target.instance}
        if result.up:
            if health.failing is not None:
                log.info("scrape target is up again", extra={**context, "was": health.failing})
            health.failing, health.suppressed, health.logged_at = None, 0, -math.inf
        elif result.outcome != health.failing or now - health.logged_at >= LOG_EVERY:
            log.warning(
                "scrape of %s failed (%s): %s",
                target.url,
                result.outcome,
                result.reason,
                extra={
                    **context,
                    "outcome": result.outcome,
                    "reason": result.reason,
                    "suppressed": health.suppressed,
                },
            )
            health.failing, health.logged_at, health.suppressed = result.outcome, now, 0
        else:
            health.suppressed += 1
        health.up = result.up
        if result.dropped and now - health.dropped_logged_at >= LOG_EVERY:
            log.warning(
                "scrape of %s: %d sample(s) left out of the batch %s; first invalid: %s",
                target.url,
                sum(result.dropped.values()),
                result.dropped,
                first_invalid or "-",
                extra={**context, "dropped": result.dropped},
            )
            health.dropped_logged_at = now

    def _publish_failed(self, target: Target, exc: Unavailable | StoreRefused) -> None:
        self.metrics.publish_failures.labels(target.job.job_name).inc()
        now = self.clock.now()
        if now - self._publish_logged_at >= LOG_EVERY:
            log.warning(
                "scrape not stored, retrying next interval: %s",
                exc,
                extra={"job": target.job.job_name, "target": target.url},
            )
            self._publish_logged_at = now


# Fetching ---------------------------------------------------------------------------------------------------
# With no body_size_limit configured, still this much at most: one scrape is one stream entry, and a runaway
# exporter (or a gzip bomb, decompressed as it is read) must not take the collector's memory.
MAX_SCRAPE_BODY = 256 * 1024 * 1024


async def _read(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if limit <= 0:
        limit = MAX_SCRAPE_BODY
    if response.content_length is not None and response.content_length > limit:
        raise ScrapeFailed("body_size_limit", _too_large(limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ScrapeFailed("body_size_limit", _too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def scrapable_targets(job: ScrapeConfig, limits: ScrapeLimits, now: float) -> tuple[list[Target], list[str]]:
    """The job's targets, and why each one left out is left out: discovery and relabeling drop some; a target
    whose own labels the stream would refuse could never report even `up`, so it is skipped, loudly, as
    Prometheus refuses a target with an invalid label name (a labelmap result, a value past
    collector.max_label_value_length, ...)."""
    targets, problems = targets_of(job)
    kept: list[Target] = []
    for target in targets:
        report = ScrapeResult(target=target, started_at=now)
        try:
            validate_items(
                METRICS,
                _report(target, report)[:1],
                now,
                1,
                limits.max_age,
                limits.max_skew,
                limits=limits.item_limits,
            )
        except Rejected as exc:
            error = exc.errors[0]
            problems.append(f"target {target.url}: its labels are refused: {error.field}: {error.reason}")
        else:
            kept.append(target)
    return kept, problems


def _too_large(limit: int) -> str:
    return f"body size limit exceeded: the response is larger than {limit} bytes (body_size_limit)"


def authorization_for(job: ScrapeConfig) -> str | None:
    """The Authorization header, its secret read from its file now (files can be rotated between scrapes)."""
    try:
        if job.authorization is not None and job.authorization.credentials_file is not None:
            secret = read_secret_file(job.authorization.credentials_file, "authorization.credentials_file")
            return f"{job.authorization.type} {secret}"
        if job.bearer_token_file is not None:
            return f"Bearer {read_secret_file(job.bearer_token_file, 'bearer_token_file')}"
        if job.basic_auth is not None:
            password = ""
            if job.basic_auth.password_file is not None:
                password = read_secret_file(job.basic_auth.password_file, "basic_auth.password_file")
            token = base64.b64encode(f"{job.basic_auth.username}:{password}".encode()).decode()
            return f"Basic {token}"
    except ConfigError as exc:
        raise ScrapeFailed("credentials", str(exc)) from None
    return None


def _tls_files_state(job: ScrapeConfig) -> object:
    """What identifies the current content of a job's tls_config files: each one's (mtime, size, inode),
    or the error reading its metadata gave."""
    tls = job.tls_config
    if tls is None:
        return None
    state: list[object] = []
    for file in (tls.ca_file, tls.cert_file, tls.key_file):
        if file is None:
            state.append(None)
            continue
        try:
            stat = file.stat()
        except OSError as exc:
            state.append(type(exc).__name__)
        else:
            state.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(state)


def tls_context_for(job: ScrapeConfig) -> ssl.SSLContext | bool | ScrapeFailed:
    """The `ssl` argument for aiohttp: True (verify with the system CAs) unless tls_config says otherwise; a
    tls_config whose files cannot be loaded fails every scrape of the job with the reason."""
    tls = job.tls_config
    if tls is None:
        return True
    if tls.ca_file is None and tls.cert_file is None:
        return not tls.insecure_skip_verify
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file is not None and tls.key_file is not None:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        log.error("tls_config of job %s cannot be loaded: %s", job.job_name, exc, extra={"job": job.job_name})
        return ScrapeFailed("tls", f"tls_config cannot be loaded: {exc}")
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def protocol_for(content_type: str, fallback: str | None) -> str:
    """ "openmetrics" or "text" for a response's Content-Type, as Prometheus 3 decides: a missing or unknown
    type fails the scrape unless the job names a fallback_scrape_protocol."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/openmetrics-text":
        return "openmetrics"
    if media_type == "text/plain":
        return "text"
    if fallback is not None:
        return "openmetrics" if fallback.startswith("OpenMetrics") else "text"
    if not media_type:
        raise ScrapeFailed(
            "content_type",
            "the target sent no Content-Type; set fallback_scrape_protocol (e.g. PrometheusText0.0.4) on the "
            "job to parse it anyway",
        )
    raise ScrapeFailed(
        "content_type",
        f"unsupported Content-Type {content_type!r} (tripwire reads text/plain and "
        "application/openmetrics-text); set fallback_scrape_protocol on the job to parse it anyway",
    )


def next_due(due: float, step: float, interval: float, now: float) -> tuple[float, int]:
    """When a target's next scrape is due after the one due at `due`, `step` later (an interval, more while
    backing off), and how many ticks were missed. A scrape that ran past one or more ticks skips them
    rather than running two at once. A wall clock that stepped back (NTP, a resumed VM) would otherwise
    hold the target for as long as the step: the next scrape is never more than `step` from now."""
    due += step
    if due < now:
        missed = math.ceil((now - due) / interval)
        return due + missed * interval, missed
    return min(due, now + step), 0


# Parsing ----------------------------------------------------------------------------------------------------
class _ExpositionError(Exception):
    pass


_Exposed = tuple[str, Mapping[str, str], float | None, float | None]


def _exposed(body: bytes, protocol: str, parsed: _Parsed) -> Iterator[_Exposed]:
    """(name, labels, value, timestamp) of every sample as exposed. Value None: a sample we cannot carry
    (a native histogram). Text-format samples with a label name starting with `__` are counted in `parsed`
    as scraped and dropped (reserved_label) and left out. Raises _ExpositionError for a body that does not
    parse."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if protocol == "openmetrics":  # OpenMetrics has no free comments: all of it must be UTF-8
            raise _ExpositionError(f"body is not UTF-8: {exc}") from None
        text = _text_without_undecodable_comments(body)
    if protocol == "openmetrics":
        families: Iterable[Any] = openmetrics_parser.text_string_to_metric_families(text)
        renamed: set[int] = set()
    else:
        text, renamed, reserved = _scan_text(text)
        if reserved:
            parsed.scraped += reserved
            parsed.dropped["reserved_label"] += reserved
        families = text_parser.text_string_to_metric_families(text)
    line = -1  # the sample line each sample came from: the parser makes one per line, in order
    try:
        for family in families:
            # prometheus-client's text parser renames the samples of `# TYPE foo counter` to foo_total;
            # Prometheus stores them as exposed, so the rename is undone, line by line: the family of a
            # `foo_total` counter beside it is called foo too, and its samples keep their name.
            undo = family.type == "counter" and bool(renamed)
            normalized = _NORMALIZED_LABEL.get(family.type)
            for sample in family.samples:
                line += 1
                name = sample.name
                if undo and line in renamed and name.endswith("_total"):
                    name = name[:-6]
                labels = sample.labels
                if normalized in labels:
                    labels = {**labels, normalized: openmetrics_float(labels[normalized])}
                if sample.native_histogram is not None:
                    yield name, labels, None, None
                    continue
                timestamp = None if sample.timestamp is None else float(sample.timestamp)
                yield name, labels, float(sample.value), timestamp
    except _ExpositionError:
        raise
    except Exception as exc:  # the parsers raise ValueError mostly, but also IndexError, TypeError...
        raise _ExpositionError(str(exc) or type(exc).__name__) from None


def _text_without_undecodable_comments(body: bytes) -> str:
    """A text-format body that is not all UTF-8, without its comment lines that are not (as Prometheus,
    which skips comments other than HELP and TYPE unread); any other such line fails the scrape."""
    lines = []
    for number, raw in enumerate(body.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            words = raw.split(None, 2)
            metadata = len(words) > 1 and words[0] == b"#" and words[1] in (b"HELP", b"TYPE")
            if not words or not words[0].startswith(b"#") or metadata:
                raise _ExpositionError(f"line {number} is not UTF-8: {exc}") from None
            lines.append("")  # kept as a blank line: line numbers in later messages stay right
    return "\n".join(lines)


# Prometheus 3 rewrites these label values when it parses a scrape (normalizeFloatsInLabelValues), so that
# `le="1"` from one exporter and `le="1.0"` from another are one series, and rules say `le="1.0"`.
_NORMALIZED_LABEL = {"histogram": "le", "summary": "quantile"}


def openmetrics_float(text: str) -> str:
    """A label value that is a number, written as Prometheus' FormatOpenMetricsFloat writes it: Go's
    strconv.FormatFloat(v, 'g', -1, 64) with ".0" added where that has neither "." nor "e" (1 -> "1.0",
    1e6 -> "1e+06", 0.005 -> "0.005", +Inf); anything Go's ParseFloat refuses stays as it is."""
    try:
        value = go_parse_float(text)
    except ValueError:
        return text
    if math.isnan(value) or math.isinf(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    if value == 0:
        return "0.0"
    _, digits, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    decimal_exponent = int(exponent) + len(digits) - 1
    # 'g' with the shortest digits: an exponent below -4, or from 6 up (strconv's rule for precision -1).
    written = format_go_exponent(value) if not -4 <= decimal_exponent < 6 else format_go_float(value)
    return written if "e" in written or "." in written else written + ".0"


def _scan_text(text: str) -> _TextScan:
    """One pass over a text-format body before prometheus-client parses it. Returns the text for the parser,
    the sample lines (counted from 0, as the parser meets them) named after a counter declared without
    `_total`, whose samples the parser renames, and how many samples with a label name starting with `__`
    were left out of that text: the parser would refuse the whole body for one. Raises _ExpositionError for
    the sample lines Prometheus refuses but that parser takes quietly: more fields than name, value and
    timestamp (`foo 1 2 3` became a timestamp of 3 ms; an exemplar, which the text format has not), or a
    value or timestamp Go would not read (see _check_value_and_time)."""
    # Lines as the parser reads them (io.StringIO): split at "\n" only, not at the other characters
    # str.splitlines() breaks at, which a label value may hold.
    lines = text.split("\n")
    # The parser renames a family's samples by the type it ends with, which a TYPE line after some of its
    # samples still sets: every counter declaration counts, wherever it is.
    counters = {name for raw in lines if "TYPE" in raw and (name := _plain_counter(raw)) is not None}
    renamed: set[int] = set()
    # Lines the parser must not see, blanked so that line numbers in its messages stay right: samples with a
    # `__` label (Prometheus keeps them; our streams cannot carry an internal name), and what Prometheus
    # reads as a comment but prometheus-client fails the body for.
    hidden: list[int] = []
    reserved = 0
    sample_line = -1
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if line.split() == ["#", "TYPE"]:
                hidden.append(number - 1)  # `# TYPE` alone
            continue
        token = _NAME_TOKEN.match(line).group()  # type: ignore[union-attr]  # it matches the empty string
        rest = line[len(token) :].lstrip()
        labels: list[tuple[str, str | None]] | None = []
        if rest.startswith("{"):
            block = _LABEL_BLOCK.match(rest)
            if block is None:
                labels = None
            else:
                rest = rest[block.end() :]
                # Read one by one only where it matters: a `__` name, or the metric name inside.
                if not token or "__" in block.group(1):
                    labels = _block_labels(block.group(1))
        if labels is not None and not (token and not METRIC_NAME_RE.fullmatch(token)):
            _check_value_and_time(rest.split(), number)
        # (A line that does not read as a sample is left to the parser, whose message says why.)
        if labels and any(n.startswith("__") and n != METRIC_NAME for n, _ in labels):
            hidden.append(number - 1)
            reserved += 1
            continue  # left out of the text the parser reads: not one of its sample lines
        sample_line += 1
        # The name as the parser reads it: before the labels, or inside them (`{"name"}`, `{__name__="x"}`).
        if (token or _braced_name(labels or [])) in counters:
            renamed.add(sample_line)
    if hidden:
        for index in hidden:
            lines[index] = ""
        text = "\n".join(lines)
    return _TextScan(text, renamed, reserved)


class _TextScan(NamedTuple):
    text: str  # what the parser reads
    renamed: set[int]  # sample lines, counted from 0, whose `_total` the parser added
    reserved: int  # samples with a `__` label, left out of `text`


def _check_value_and_time(fields: list[str], number: int) -> None:
    """What Prometheus' text parser refuses after a series and prometheus-client takes: anything but a value
    and an optional timestamp of integer milliseconds (a third field, an exemplar, `-1000`), and a value
    Go's strconv.ParseFloat refuses (`1e400`, `+NaN`, `٣`, which Python's float() reads as 3)."""
    if not fields or len(fields) > 2 or (len(fields) == 2 and not _MILLISECONDS.fullmatch(fields[1])):
        raise _ExpositionError(
            f"line {number}: expected a value and an optional integer timestamp after the series, got "
            f"{quoted(' '.join(fields))}"
        )
    value = fields[0]
    if _PLAIN_VALUE.fullmatch(value):
        return
    try:
        if any(ch in value for ch in "pP_"):  # Prometheus keeps to the float syntax before Go 1.13
            raise ValueError(f"unsupported character in float: {value!r}")
        go_parse_float(value)
    except ValueError as exc:
        raise _ExpositionError(f"line {number}: {exc}") from None


def _plain_counter(line: str) -> str | None:
    """The name a `# TYPE name counter` line declares, if it does not end with `_total` (quoted, unquoted)."""
    parts = line.split()
    if len(parts) != 4 or parts[0] != "#" or parts[1] != "TYPE" or parts[3] != "counter":
        return None
    name = _unquoted(parts[2])
    return None if name.endswith("_total") else name


# A metric name as the text format starts a sample with it (empty when the name is inside the braces).
_NAME_TOKEN = re.compile(r"[^\s{]*")
# A label block: up to the first `}` outside a quoted string.
# Possessive: nothing is given back, so a block without its `}` fails in linear time, not exponential.
_LABEL_BLOCK = re.compile(r'\{((?:[^"}]++|"(?:[^"\\]++|\\.)*+")*+)\}')
# One label of a label block: a name, bare or quoted, then `="value"` (a quoted name alone is the metric name,
# in the UTF-8 form), then a comma or the end.
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*|"(?:[^"\\]|\\.)*")\s*(?:=\s*("(?:[^"\\]|\\.)*")\s*)?(?:,|$)')
_ESCAPE = re.compile(r"\\(.)")


def _unquoted(text: str) -> str:
    """A name or value as written, its quotes and backslash escapes removed if it is quoted."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        if "\\" not in text:
            return text[1:-1]
        return _ESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), text[1:-1])
    return text


def _braced_name(labels: list[tuple[str, str | None]]) -> str:
    """The metric name given inside a label block, quoted alone or as `__name__`; "" if none is."""
    for name, value in labels:
        if value is None:
            return name
        if name == METRIC_NAME:
            return value
    return ""


def _block_labels(block: str) -> list[tuple[str, str | None]] | None:
    """The (name, value) pairs of a label block, value None for a quoted metric name alone; None for a block
    that does not read as labels (left to the parser to refuse)."""
    position, labels = 0, []
    while position < len(block):
        match = _LABEL.match(block, position)
        if match is None or match.end() == position:
            return None
        value = match.group(2)
        labels.append((_unquoted(match.group(1)), None if value is None else _unquoted(value)))
        position = match.end()
    return labels


_MILLISECONDS = re.compile(r"[0-9]+")
_PLAIN_VALUE = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]*)?")  # no exponent: always in range, read alike


def parse_scrape(body: bytes, protocol: str, target: Target, started_at: float, sample_limit: int) -> _Parsed:
    """A scrape body as stream items, with the target's labels, metric relabeling and timestamps applied
    (pure; the scraper runs it in a worker thread so a large body does not stall the event loop)."""
    job = target.job
    relabeling = job.metric_relabel_configs
    label_limits = job.label_limit or job.label_name_length_limit or job.label_value_length_limit
    parsed = _Parsed()
    seen: set[tuple[str, tuple[tuple[str, str], ...], float]] = set()
    try:
        for exposed_name, exposed_labels, value, timestamp in _exposed(body, protocol, parsed):
            parsed.scraped += 1
            name = exposed_name
            labels = sample_labels(exposed_labels, target.labels, job.honor_labels)
            if relabeling:
                labels[METRIC_NAME] = name
                relabeled = relabel(labels, relabeling)
                if not relabeled:
                    continue  # dropped, or every label removed: Prometheus drops it too, without an error
                name = relabeled.pop(METRIC_NAME, "")
                labels = relabeled
                if not name:
                    # As Prometheus (errNameLabelMandatory): a config error fails the scrape loudly, not
                    # one sample quietly.
                    parsed.failure = ScrapeFailed(
                        "relabel_error",
                        f"metric relabeling left the sample {exposed_name!r} with no __name__",
                    )
                    return parsed
            parsed.post_relabel += 1
            if label_limits and (exceeded := _label_limit_exceeded(name, labels, job)):
                parsed.failure = ScrapeFailed("label_limit", exceeded)
                return parsed
            if parsed.post_relabel > sample_limit:
                continue  # keep counting for the report; the scrape fails below
            at = timestamp if timestamp is not None and job.honor_timestamps else started_at
            key = (name, tuple(sorted(labels.items())), at)
            if key in seen:
                parsed.dropped["duplicate"] += 1  # Prometheus refuses a second sample for a series and time
                continue
            seen.add(key)  # before the value is judged: a NaN we drop still took its series and time
            parsed.series.add(hash(key[:2]))
            reason = _unusable(value)
            if reason is not None:
                parsed.dropped[reason] += 1
                continue
            parsed.items.append(
                {"name": name, "labels": labels, "value": value, "kind": "sample", "timestamp": at}
            )
    except _ExpositionError as exc:
        parsed.failure = ScrapeFailed("parse_error", f"cannot parse the {protocol} body: {exc}")
        return parsed
    if parsed.post_relabel > sample_limit:
        which = "sample_limit" if job.sample_limit else "collector.max_items, as sample_limit is 0"
        parsed.failure = ScrapeFailed(
            "sample_limit",
            f"sample limit exceeded: {parsed.post_relabel} samples after metric relabeling, the limit is "
            f"{sample_limit} ({which})",
        )
    return parsed


def _label_limit_exceeded(name: str, labels: dict[str, str], job: ScrapeConfig) -> str | None:
    """Why a sample's labels (after metric relabeling, __name__ included, lengths in UTF-8 bytes) break the
    job's label_limit, label_name_length_limit or label_value_length_limit, in Prometheus' words; None if
    they don't. Any of them fails the whole scrape, as in Prometheus."""
    metric = name[:50]
    count = len(labels) + 1
    if job.label_limit and count > job.label_limit:
        return f"label_limit exceeded (metric: {metric}, number of labels: {count}, limit: {job.label_limit})"
    # Prometheus' order: a label set sorted by name, bytewise (`Zone` before `__name__` before `a`).
    for label, value in sorted([(METRIC_NAME, name), *labels.items()]):
        if job.label_name_length_limit and (length := len(label.encode())) > job.label_name_length_limit:
            return (
                f"label_name_length_limit exceeded (metric: {metric}, label name: {label[:50]}, "
                f"length: {length}, limit: {job.label_name_length_limit})"
            )
        if job.label_value_length_limit and (length := len(value.encode())) > job.label_value_length_limit:
            return (
                f"label_value_length_limit exceeded (metric: {metric}, label name: {label[:50]}, "
                f"value: {go_quote(value[:50])}, length: {length}, limit: {job.label_value_length_limit})"
            )
    return None


def _unusable(value: float | None) -> str | None:
    if value is None:
        return "unsupported"
    if not math.isfinite(value):
        return "non_finite"  # the stream carries finite values only
    return None


def _without_report_series(parsed: _Parsed) -> list[dict[str, Any]]:
    """The parsed items without an exporter's own `up` or `scrape_*` series, which would sit beside ours
    under the same labels and time (counted as dropped, reserved_name)."""
    items = parsed.items
    reserved = sum(1 for i in items if i["name"] in REPORT_SERIES)
    if reserved:
        items = [i for i in items if i["name"] not in REPORT_SERIES]
        parsed.dropped["reserved_name"] += reserved
    return items


def _report(target: Target, result: ScrapeResult) -> list[dict[str, Any]]:
    """The report series Prometheus writes for every scrape, with the target's labels and the scrape's
    start as their time (metric relabeling does not apply to them)."""
    values = (
        1.0 if result.up else 0.0,
        result.duration,
        float(result.samples_scraped),
        float(result.samples_post_relabel),
        float(result.series_added),
    )
    return [
        {
            "name": name,
            "labels": dict(target.labels),
            "value": value,
            "kind": "sample",
            "timestamp": result.started_at,
        }
        for name, value in zip(REPORT_SERIES, values, strict=True)
    ]


# Wiring -----------------------------------------------------------------------------------------------------
def with_resolved_paths(job: ScrapeConfig, resolve: Callable[[Path], Path]) -> ScrapeConfig:
    """The job with its secret and certificate files made absolute against the config file's directory."""
    update: dict[str, Any] = {}
    if job.bearer_token_file is not None:
        update["bearer_token_file"] = resolve(job.bearer_token_file)
    if job.authorization is not None and job.authorization.credentials_file is not None:
        update["authorization"] = job.authorization.model_copy(
            update={"credentials_file": resolve(job.authorization.credentials_file)}
        )
    if job.basic_auth is not None and job.basic_auth.password_file is not None:
        update["basic_auth"] = job.basic_auth.model_copy(
            update={"password_file": resolve(job.basic_auth.password_file)}
        )
    if job.tls_config is not None:
        files = {
            key: resolve(path)
            for key in ("ca_file", "cert_file", "key_file")
            if (path := getattr(job.tls_config, key)) is not None
        }
        update["tls_config"] = job.tls_config.model_copy(update=files)
    return job.model_copy(update=update) if update else job


def start_scraping(service: Service, publisher: Publisher) -> Scraper | None:
    """Scrape the service config's `scrape_configs` in the background (None when there are none): adds the
    "scrape" loop, closes the HTTP session on stop, and reports target counts in /readyz details."""
    config = service.config
    if not config.scrape_configs:
        return None
    jobs = [with_resolved_paths(job, config.resolve) for job in config.scrape_configs]
    scraper = Scraper(
        jobs,
        publisher,
        Keys(config.redis.prefix).metrics,
        None,
        service.clock,
        ScrapeLimits.from_config(config),
        service.registry,
    )
    service.add_loop("scrape", scraper.run)
    service.on_stop(scraper.close)
    service.details.append(scraper.status)
    log.info(
        "scraping %d target(s) of %d job(s)",
        len(scraper.targets),
        len(jobs),
        extra={"jobs": [job.job_name for job in jobs]},
    )
    return scraper
