"""A kill-switch receiver's provider, built from its `flag_off_configs` entry."""

from __future__ import annotations

import aiohttp

from services.notifier.config import FlagOffConfig
from services.notifier.flag_providers import FlagProvider
from services.notifier.flag_providers.builtin import BuiltinProvider
from services.notifier.flag_providers.flagsmith import FlagsmithProvider
from services.notifier.flag_providers.launchdarkly import LaunchDarklyProvider
from services.notifier.flag_providers.unleash import UnleashProvider
from services.notifier.flag_providers.webhook import WebhookProvider
from services.notifier.secrets import SecretError, expand, read_secret
from shared.flag_store import FlagStore
from shared.yamlfile import ConfigError


def build_provider(
    config: FlagOffConfig, session: aiohttp.ClientSession, store: FlagStore | None
) -> FlagProvider:
    """The provider for one flag_off config; credentials are read per request (rotation needs no restart)."""
    if config.provider == "builtin":
        return BuiltinProvider(store)

    def credential() -> str:
        if config.token is None and config.token_file is None:
            return ""  # the webhook provider may rely on its signature alone
        return read_secret(config.token, config.token_file, "token")

    try:
        base_url = expand(config.base_url() or "", "url")
    except SecretError as exc:
        raise ConfigError(f"flag_off_configs ({config.provider}): {exc}") from None
    if config.provider == "launchdarkly":
        return LaunchDarklyProvider(session, base_url=base_url, credential=credential, timeout=config.timeout)
    if config.provider == "unleash":
        return UnleashProvider(session, base_url=base_url, credential=credential, timeout=config.timeout)
    if config.provider == "flagsmith":
        return FlagsmithProvider(session, base_url=base_url, credential=credential, timeout=config.timeout)

    def signing_secret() -> str:
        return read_secret(config.signing_secret, config.signing_secret_file, "signing_secret")

    return WebhookProvider(
        session,
        base_url=base_url,
        credential=credential,
        signing_secret=signing_secret,
        timeout=config.timeout,
    )
