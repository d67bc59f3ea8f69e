"""Relabeling as Prometheus does it: target relabeling (which targets to scrape, at which URL, with which
labels) and the label merge and metric relabeling applied to every scraped sample.

Label sets are plain dicts. As in Prometheus' labels.Builder, an absent label reads as "" and setting a label
to "" removes it.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from shared.durations import format_duration, parse_duration
from shared.events import LABEL_NAME_RE
from shared.scrape_config import RelabelConfig, ScrapeConfig

ADDRESS = "__address__"
SCHEME = "__scheme__"
METRICS_PATH = "__metrics_path__"
SCRAPE_INTERVAL = "__scrape_interval__"
SCRAPE_TIMEOUT = "__scrape_timeout__"
PARAM_PREFIX = "__param_"
RESERVED_PREFIX = "__"
METRIC_NAME = "__name__"
EXPORTED_PREFIX = "exported_"


def relabel(labels: Mapping[str, str], configs: Iterable[RelabelConfig]) -> dict[str, str] | None:
    """`labels` after each relabel step in order, or None once a step drops the set. `labels` is not
    changed."""
    out = _Builder(labels)
    for config in configs:
        if not _step(config, out):
            return None
    return dict(out)


class _Builder(dict[str, str]):
    """The labels being relabeled, in the order Prometheus' labels.Builder walks them (its Range, which
    labelmap uses): the labels no step has set, by name, then those steps set, in the order first set.
    Steps change them through `set` and `delete` only; an empty value deletes."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        super().__init__(sorted((name, value) for name, value in labels.items() if value))
        self.added: set[str] = set()

    def set(self, name: str, value: str) -> None:
        if not value:
            self.delete(name)
            return
        if name not in self.added:
            self.pop(name, None)  # a set label moves after the untouched ones
            self.added.add(name)
        self[name] = value

    def delete(self, name: str) -> None:
        self.pop(name, None)
        self.added.discard(name)


def _step(config: RelabelConfig, labels: _Builder) -> bool:
    """Apply one step to `labels` in place; False means drop."""
    value = config.separator.join(labels.get(name, "") for name in config.source_labels or ())
    action = config.action
    if action == "drop":
        return config.pattern.fullmatch(value) is None
    if action == "keep":
        return config.pattern.fullmatch(value) is not None
    if action == "dropequal":
        return labels.get(config.target_label, "") != value
    if action == "keepequal":
        return labels.get(config.target_label, "") == value
    if action == "replace":
        match = config.pattern.fullmatch(value)
        if match is None:
            return True  # no match: no replacement
        target = expand(config.target_label, match)
        if not LABEL_NAME_RE.fullmatch(target):
            return True  # a templated target that expands to no valid name is skipped, as in Prometheus
        replacement = expand(config.replacement, match)
        if replacement:
            labels.set(target, replacement)
        else:
            # The target as expanded, as Prometheus does since 2.49 (#13308): `target_label: ${1}` with an
            # empty replacement deletes the label the source names.
            labels.delete(target)
    elif action == "lowercase":
        labels.set(config.target_label, go_lower(value))
    elif action == "uppercase":
        labels.set(config.target_label, go_upper(value))
    elif action == "hashmod":
        # Prometheus: the last 8 bytes of the MD5, big-endian, modulo `modulus`.
        digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
        labels.set(config.target_label, str(int.from_bytes(digest[8:], "big") % config.modulus))
    elif action == "labelmap":
        # In the Builder's order: when two names map to one, the one walked later wins, as in Prometheus.
        for name, label_value in list(labels.items()):
            match = config.pattern.fullmatch(name)
            if match is not None:
                labels.set(expand(config.replacement, match), label_value)
    elif action == "labeldrop":
        for name in [n for n in labels if config.pattern.fullmatch(n)]:
            labels.delete(name)
    elif action == "labelkeep":
        for name in [n for n in labels if not config.pattern.fullmatch(n)]:
            labels.delete(name)
    return True


def go_upper(value: str) -> str:
    """Go's strings.ToUpper: each character's simple, one-to-one uppercase (`ß` stays `ß`, `ﬁ` stays `ﬁ`).
    Python's str.upper uses the full mapping (`ß` -> `SS`), so relabelled values would differ."""
    return value.upper() if value.isascii() else "".join(map(_simple_upper, value))


def go_lower(value: str) -> str:
    """Go's strings.ToLower: each character's simple lowercase, without str.lower's full mapping (`İ` ->
    `i` + U+0307) or its final-sigma rule (`Σ` is always `σ`)."""
    return value.lower() if value.isascii() else "".join(map(_simple_lower, value))


@functools.cache
def _simple_upper(char: str) -> str:
    upper = char.upper()
    if len(upper) == 1:
        return upper
    # Expands under the full mapping: the simple one is the titlecase form where that is one character
    # (Greek with ypogegrammeni, `ᾳ` -> `ᾼ`), else none (`ß`, `ŉ`, ligatures): the character unchanged.
    title = char.title()
    return title if len(title) == 1 else char


@functools.cache
def _simple_lower(char: str) -> str:
    return char.lower()[0]  # only `İ` expands (to `i` + a combining dot); its simple lowercase is `i`


def expand(template: str, match: re.Match[str]) -> str:
    """`template` with `$1`, `${1}`, `$name`, `${name}` replaced by the match's groups, exactly as Go's
    regexp.Expand: a name is the longest run of letters, digits and `_` (so `$1x` is the group named `1x`,
    which does not exist: empty), an unknown or unmatched group is empty, `$$` is `$`, and a `$` that starts
    no valid reference stays as it is."""
    out: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        parsed = _reference(rest)
        if parsed is None:
            out.append("$")  # malformed: the $ is literal text
            continue
        name, rest = parsed
        out.append(_group(match, name))


def _reference(text: str) -> tuple[str, str] | None:
    """The group name at the start of `text` (after a `$`) and the text after it, or None if malformed."""
    brace = text.startswith("{")
    body = text[1:] if brace else text
    end = 0
    while end < len(body) and (body[end] == "_" or body[end].isalpha() or body[end].isdecimal()):
        end += 1
    if end == 0:
        return None
    name = body[:end]
    if brace:
        if end >= len(body) or body[end] != "}":
            return None
        end += 1
    return name, body[end:]


def _group(match: re.Match[str], name: str) -> str:
    # Go reads a name of ASCII digits without a leading zero as a group number; anything else is a name.
    if name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0")):
        index = int(name)
        if index > match.re.groups:
            return ""
        return match.group(index) or ""
    if name in match.re.groupindex:
        return match.group(name) or ""
    return ""


class TargetError(ValueError):
    """A target that relabeling left unscrapeable (no address, bad scheme, bad interval...)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One thing to scrape: where, how often, and the labels its series get."""

    job: ScrapeConfig
    url: str
    labels: dict[str, str]  # job, instance and the rest, without `__` labels
    interval: float
    timeout: float

    @property
    def instance(self) -> str:
        return self.labels.get("instance", "")

    @property
    def identity(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        """What makes two targets the same target (Prometheus: the URL and the label set)."""
        return self.url, tuple(sorted(self.labels.items()))


def target_from(job: ScrapeConfig, address: str, group_labels: Mapping[str, str]) -> Target | None:
    """The target for `address` in a static_config with `group_labels`, after the job's relabel_configs
    (Prometheus' PopulateLabels): None if relabeling drops it; TargetError if what is left is unusable."""
    labels = {**group_labels, ADDRESS: address}
    for name, value in (
        ("job", job.job_name),
        (SCRAPE_INTERVAL, format_duration(job.interval)),
        (SCRAPE_TIMEOUT, format_duration(job.timeout)),
        (METRICS_PATH, job.metrics_path),
        (SCHEME, job.scheme),
    ):
        if not labels.get(name):
            labels[name] = value
    for param, values in sorted(job.params.items()):
        if values and not labels.get(PARAM_PREFIX + param):
            labels[PARAM_PREFIX + param] = values[0]
    relabeled = relabel(labels, job.relabel_configs)
    if relabeled is None:
        return None
    address = relabeled.get(ADDRESS, "")
    if not address:
        raise TargetError("no address (relabeling removed __address__)")
    if "/" in address:
        raise TargetError(f"{address!r} is not a valid hostname (__address__ must be host:port)")
    scheme = relabeled.get(SCHEME, "")
    if scheme not in ("http", "https"):
        raise TargetError(f"invalid scheme {scheme!r} (__scheme__ must be http or https)")
    interval = _duration(relabeled, SCRAPE_INTERVAL)
    timeout = _duration(relabeled, SCRAPE_TIMEOUT)
    if timeout > interval:
        raise TargetError(
            f"scrape timeout cannot be greater than scrape interval "
            f"({relabeled[SCRAPE_TIMEOUT]!r} > {relabeled[SCRAPE_INTERVAL]!r})"
        )
    public = {name: value for name, value in relabeled.items() if not name.startswith(RESERVED_PREFIX)}
    public.setdefault("instance", address)
    return Target(
        job=job,
        url=_url(scheme, address, relabeled.get(METRICS_PATH, ""), job.params, relabeled),
        labels=public,
        interval=interval,
        timeout=timeout,
    )


def _duration(labels: Mapping[str, str], name: str) -> float:
    text = labels.get(name, "")
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise TargetError(f"error parsing {name}: {exc}") from None
    if seconds <= 0:
        raise TargetError(f"{name} cannot be 0")
    return seconds


def _url(
    scheme: str, address: str, path: str, params: Mapping[str, list[str]], labels: Mapping[str, str]
) -> str:
    """The scrape URL: the job's params, each one's first value replaced by a `__param_<name>` label."""
    query = {name: list(values) for name, values in params.items()}
    for name, value in labels.items():
        if name.startswith(PARAM_PREFIX):
            key = name.removeprefix(PARAM_PREFIX)
            query[key] = [value, *query.get(key, [])[1:]]
    encoded = urlencode(sorted(query.items()), doseq=True)  # sorted by key, like Go's url.Values.Encode
    if path and not path.startswith("/"):
        path = "/" + path  # a relabelled __metrics_path__: Go's URL.String puts the `/` after the host
    return f"{scheme}://{address}{quote(path, safe='/:@!$&()*+,;=-._~')}" + (f"?{encoded}" if encoded else "")


def targets_of(job: ScrapeConfig) -> tuple[list[Target], list[str]]:
    """Every distinct target of a job's static_configs, and a message for each unusable one."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], Target] = {}
    problems: list[str] = []
    for group in job.static_configs:
        for address in group.targets:
            try:
                target = target_from(job, address, group.labels)
            except TargetError as exc:
                problems.append(f"target {address}: {exc}")
                continue
            if target is not None:
                found.setdefault(target.identity, target)
    return list(found.values()), problems


def sample_labels(
    scraped: Mapping[str, str], target: Mapping[str, str], honor_labels: bool
) -> dict[str, str]:
    """A scraped sample's labels merged with its target's, as Prometheus' mutateSampleLabels: with
    honor_labels the scraped value wins; without, the target's does and a clashing scraped label is kept as
    `exported_<name>` (`exported_exported_<name>` if that is taken too). An empty value counts as absent in
    the result, but with honor_labels a label exposed empty still keeps the target's off (`lset.Has`): the
    Pushgateway's `instance=""` is there so that no instance is attached."""
    out = {name: value for name, value in scraped.items() if value}
    if honor_labels:
        for name, value in target.items():
            if name not in scraped:
                out[name] = value
        return out
    clashes = [(name, out[name]) for name in sorted(target) if out.get(name)]
    out.update(target)
    # Shorter names first, as Prometheus does, so `exported_` prefixes stack predictably.
    for name, value in sorted(clashes, key=lambda clash: len(clash[0])):
        renamed = name
        while True:
            renamed = EXPORTED_PREFIX + renamed
            if not out.get(renamed):
                out[renamed] = value
                break
    return out
