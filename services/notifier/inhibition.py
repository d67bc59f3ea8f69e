"""Inhibition, as Alertmanager does it: a firing alert that matches a rule's source matchers mutes every
alert that matches its target matchers and has the same values for the `equal` labels (a label missing on
both sides counts as equal, both being empty).

An alert matching both sides of a rule is only inhibited by a source that does not itself match the target
side, so that, say, two `severity=critical` alerts do not inhibit each other through a rule whose source and
target both match critical (Alertmanager's excludeTwoSidedMatch).
"""

from __future__ import annotations

from services.notifier.config import InhibitRuleConfig, RoutingConfig
from services.notifier.matchers import Matcher, parse_matcher
from shared.alerts import Alert


def _matchers(texts: list[str], equal: dict[str, str], regex: dict[str, str]) -> list[Matcher]:
    out = [parse_matcher(text) for text in texts]
    out += [Matcher.create(name, "=", value) for name, value in equal.items()]
    out += [Matcher.create(name, "=~", value) for name, value in regex.items()]
    return out


class InhibitRule:
    def __init__(self, config: InhibitRuleConfig) -> None:
        self.source = _matchers(config.source_matchers, config.source_match, config.source_match_re)
        self.target = _matchers(config.target_matchers, config.target_match, config.target_match_re)
        self.equal = list(config.equal)

    def _on(self, matchers: list[Matcher], labels: dict[str, str]) -> bool:
        return all(m.matches(labels) for m in matchers)

    def sources_of(self, labels: dict[str, str], firing: list[Alert]) -> list[str]:
        """Fingerprints of the firing alerts that inhibit an alert with `labels` through this rule."""
        if not self._on(self.target, labels):
            return []
        two_sided = self._on(self.source, labels)
        out = []
        for source in firing:
            if source.labels == labels or not self._on(self.source, source.labels):
                continue
            if two_sided and self._on(self.target, source.labels):
                continue
            if all(source.labels.get(name, "") == labels.get(name, "") for name in self.equal):
                out.append(source.fingerprint)
        return out


class Inhibitor:
    """Every inhibit rule of a routing file."""

    def __init__(self, rules: list[InhibitRule]) -> None:
        self.rules = rules

    @classmethod
    def from_config(cls, routing: RoutingConfig) -> Inhibitor:
        return cls([InhibitRule(rule) for rule in routing.inhibit_rules])

    def inhibited_by(self, labels: dict[str, str], firing: list[Alert]) -> list[str]:
        """Fingerprints of the firing alerts that inhibit an alert with `labels` (empty: not inhibited)."""
        found: list[str] = []
        for rule in self.rules:
            found += [fp for fp in rule.sources_of(labels, firing) if fp not in found]
        return found
