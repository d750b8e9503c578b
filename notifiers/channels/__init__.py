"""Channels: one class per way of reaching a target. ``build_channel`` makes one from config."""

from __future__ import annotations

import os
import re

from atalaia.notifiers.channels.base import Channel, ChannelContext
from atalaia.notifiers.config import Target

__all__ = ["Channel", "ChannelContext", "build_channel", "expand_env"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str, env: dict[str, str] | None = None) -> str:
    """Replaces ``${VAR}`` by the environment's value; an unset variable is an error."""
    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise KeyError(f"environment variable {m.group(1)} is not set")
        return env[m.group(1)]

    return _VAR.sub(sub, text)


def build_channel(
    name: str, target: Target, ctx: ChannelContext, env: dict[str, str] | None = None
) -> Channel:
    from atalaia.notifiers.channels.apprise import AppriseChannel
    from atalaia.notifiers.channels.http import (
        AlertmanagerWebhookChannel,
        NgsiLdAlertChannel,
        SignedWebhookChannel,
    )

    url = expand_env(target.url, env)
    if target.channel in ("ngsi-ld", "webhook", "alertmanager") and not url.startswith(
        ("http://", "https://")
    ):
        raise ValueError(f"{target.channel} url must start with http:// or https:// (got {url!r})")
    timeout = target.timeout.total_seconds()
    if target.channel in ("sms", "email"):
        sub = ChannelContext(target.lang or ctx.lang, ctx.tz, ctx.console_url, ctx.clock, ctx.http, ctx.rules)
        return AppriseChannel(
            name,
            sub,
            url,
            target.channel,
            throttle=target.throttle,
            timeout=timeout,
            max_segments=target.max_sms_segments,
        )
    if target.channel == "ngsi-ld":
        return NgsiLdAlertChannel(
            name, ctx, url, target.tenant, timeout, tenant_from_incident=target.tenant_from_incident
        )
    if target.channel == "webhook":
        assert target.secret is not None
        sub = ChannelContext(target.lang or ctx.lang, ctx.tz, ctx.console_url, ctx.clock, ctx.http, ctx.rules)
        return SignedWebhookChannel(
            name, sub, url, expand_env(target.secret, env), timeout, warning_format=target.warning_format
        )
    return AlertmanagerWebhookChannel(name, ctx, url, timeout)
