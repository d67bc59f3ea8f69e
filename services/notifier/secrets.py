"""Secrets in the routing file: Slack webhook URLs and bot tokens, PagerDuty routing keys.

They come from a file (`api_url_file`, `token_file`, `routing_key_file`, as Alertmanager has them) or from the
environment, written as a whole-value reference `${NAME}` (or `${NAME:-default}`), never as a literal: the
notifier refuses a literal secret at load, naming file:line. Both are read at send time, so a rotated secret
needs no restart, and never appear in logs or errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from shared.config import read_secret_file
from shared.yamlfile import ConfigError

_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?\}$")


class SecretError(ValueError):
    """A secret that cannot be read; the message names where it should come from, never its value."""


def is_env_reference(value: str) -> bool:
    return _ENV_REFERENCE.match(value.strip()) is not None


def expand(value: str, what: str, environ: Mapping[str, str] | None = None) -> str:
    """`value` itself, or the environment variable it references (`${NAME}`, `${NAME:-default}`)."""
    match = _ENV_REFERENCE.match(value.strip())
    if match is None:
        return value
    name, default = match.groups()
    found = (os.environ if environ is None else environ).get(name)
    if found:
        return found.strip()
    if default is not None:
        return default
    raise SecretError(f"{what}: environment variable {name} is not set")


def read_secret(value: str | None, file: Path | None, what: str) -> str:
    """The secret from `file` (stripped) or from `value` (expanded if it is an env reference)."""
    if file is not None:
        try:
            return read_secret_file(file, f"{what}_file")
        except ConfigError as exc:
            raise SecretError(str(exc)) from None
    if value is None:
        raise SecretError(f"{what}: not configured")
    return expand(value, what)
