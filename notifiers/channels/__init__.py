"""Channels: one class per way of reaching a target. ``build_channel`` makes one from config.

Secrets: a target's URL and webhook secret may come from the environment (``${VAR}``) and carry
credentials (userinfo, a token in the query, an apprise token). No error message shows them: a URL
is shown redacted (:func:`redact_url`) or, when it comes from a variable, only by the variable's
name; every channel's failure text is scrubbed of its known secret values (:attr:`Channel.secrets`)
before it reaches the delivery log or the logs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from atalaia.notifiers.channels.base import Channel, ChannelContext
from atalaia.notifiers.config import MIN_SECRET_BYTES, Target

if TYPE_CHECKING:
    from atalaia.notifiers.config import EscalationConfig

__all__ = [
    "Channel",
    "ChannelContext",
    "TargetError",
    "build_channel",
    "check_targets",
    "expand_env",
    "redact_url",
]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: query keys whose values are credentials (scrubbed from failure texts)
_SECRET_KEY = re.compile(r"pass|pwd|token|key|secret|auth|sig|cred|session", re.I)


class TargetError(ValueError):
    """A target that cannot be built: ``field`` of the target (for ``file:line:col``) and a
    message that never contains a secret."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(message)


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replaces ``${VAR}`` by the environment's value; an unset variable is an error."""
    env = os.environ if env is None else env

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise KeyError(f"environment variable {m.group(1)} is not set")
        return env[m.group(1)]

    return _VAR.sub(sub, text)


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without userinfo, query or fragment (``?…`` when it had one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<an unparsable URL>"
    if not parts.scheme or not host:
        return "<not a URL>"
    cred = "***@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{cred}{host}{port}{parts.path}{'?…' if parts.query or parts.fragment else ''}"


def url_problem(url: str) -> str | None:
    """What makes ``url``'s host or port unusable (``[::1`` unclosed, port 99999, no host), in
    urllib's words (they show no part of the URL), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises for a port out of range or not a number)
    except ValueError as e:
        return str(e)
    return None if parts.hostname else "it has no host"


def _vars(text: str) -> list[str]:
    return _VAR.findall(text)


def _from(field: str, text: str) -> str:
    names = _vars(text)
    return f" ({field} comes from ${{{'}, ${'.join(names)}}}; its value is not shown)" if names else ""


def url_secrets(url: str) -> set[str]:
    """The parts of a URL that are credentials: userinfo, and query values under secret-looking keys."""
    out: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.username:
            out.add(parts.username)
        if parts.password:
            out.add(parts.password)
        out.update(v for k, v in parse_qsl(parts.query, keep_blank_values=False) if _SECRET_KEY.search(k))
    except ValueError:
        pass
    return out


def target_secrets(target: Target, url: str, secret: str | None) -> tuple[str, ...]:
    """Values to scrub from this target's failure texts (too short ones would garble the text)."""
    found = url_secrets(url)
    if secret:
        found.add(secret)
    return tuple(sorted((s for s in found if len(s) >= 4), key=len, reverse=True))


def build_channel(
    name: str, target: Target, ctx: ChannelContext, env: Mapping[str, str] | None = None
) -> Channel:
    """The channel of one target, its ``${VAR}``s expanded from ``env``. A target that cannot be
    built raises :class:`TargetError` (never showing a secret)."""
    from atalaia.notifiers.channels.apprise import AppriseChannel
    from atalaia.notifiers.channels.http import (
        AlertmanagerWebhookChannel,
        NgsiLdAlertChannel,
        SignedWebhookChannel,
    )

    try:
        url = expand_env(target.url, env)
    except KeyError as e:
        raise TargetError("url", str(e.args[0])) from None
    timeout = target.timeout.total_seconds()
    if target.channel in ("sms", "email"):
        sub = ChannelContext(target.lang or ctx.lang, ctx.tz, ctx.console_url, ctx.clock, ctx.http, ctx.rules)
        try:
            ch: Channel = AppriseChannel(
                name,
                sub,
                url,
                target.channel,
                throttle=target.throttle,
                timeout=timeout,
                max_segments=target.max_sms_segments,
            )
        except ValueError as e:
            raise TargetError("url", f"{e}{_from('url', target.url)}") from None
        ch.secrets = tuple(
            sorted(set(ch.secrets) | set(target_secrets(target, url, None)), key=len, reverse=True)
        )
        return ch
    if not url.startswith(("http://", "https://")):
        shown = _from("url", target.url) or f" (got {redact_url(url)})"
        raise TargetError("url", f"{target.channel} url must start with http:// or https://{shown}")
    problem = url_problem(url)
    if problem == "it has no host":
        raise TargetError("url", f"{target.channel} url has no host{_from('url', target.url)}")
    if problem is not None:
        raise TargetError(
            "url", f"{target.channel} url is not a valid URL: {problem}{_from('url', target.url)}"
        )
    if target.channel == "ngsi-ld":
        ch = NgsiLdAlertChannel(
            name, ctx, url, target.tenant, timeout, tenant_from_incident=target.tenant_from_incident
        )
    elif target.channel == "webhook":
        assert target.secret is not None
        try:
            secret = expand_env(target.secret, env)
        except KeyError as e:
            raise TargetError("secret", str(e.args[0])) from None
        if not secret.strip():
            raise TargetError(
                "secret",
                "the webhook secret is empty"
                + (
                    f" (${{{', '.join(_vars(target.secret))}}} is set but empty)"
                    if _vars(target.secret)
                    else ""
                )
                + ": anyone could forge the signature; set a random key of at least "
                f"{MIN_SECRET_BYTES} bytes",
            )
        sub = ChannelContext(target.lang or ctx.lang, ctx.tz, ctx.console_url, ctx.clock, ctx.http, ctx.rules)
        ch = SignedWebhookChannel(name, sub, url, secret, timeout, warning_format=target.warning_format)
        ch.secrets = target_secrets(target, url, secret)
        return ch
    else:
        ch = AlertmanagerWebhookChannel(name, ctx, url, timeout)
    ch.secrets = target_secrets(target, url, None)
    return ch


def check_targets(
    cfg: EscalationConfig, env: Mapping[str, str] | None = None, placeholders: Collection[str] = ()
) -> tuple[list[str], list[str]]:
    """Every target built as the worker builds it (``${VAR}``s expanded from ``env``): the
    problems (``file:line:col: target 'x': …``, a worker refuses to start with any) and warnings
    (a webhook secret shorter than ``MIN_SECRET_BYTES``; not for ``placeholders``, variables
    the caller stood in for because they are unset). Nothing secret is in either."""
    problems: list[str] = []
    warnings: list[str] = []
    for name, target in cfg.targets.items():
        try:
            build_channel(name, target, ChannelContext(), env)
        except TargetError as e:
            problems.append(cfg.where(("targets", name, e.field), f"target {name!r}: {e.message}"))
            continue
        except (ValueError, KeyError) as e:  # pragma: no cover - build_channel maps its errors
            problems.append(cfg.where(("targets", name), f"target {name!r}: {type(e).__name__}"))
            continue
        if (
            target.channel == "webhook"
            and target.secret
            and not set(_vars(target.secret)) & set(placeholders)
        ):
            try:
                secret = expand_env(target.secret, env)
            except KeyError:
                continue
            if len(secret.encode()) < MIN_SECRET_BYTES:
                where = _from("secret", target.secret)
                warnings.append(
                    cfg.where(
                        ("targets", name, "secret"),
                        f"target {name!r}: the webhook secret is {len(secret.encode())} bytes{where}: use a "
                        f"random key of at least {MIN_SECRET_BYTES} bytes (e.g. openssl rand -hex 32)",
                    )
                )
    return problems, warnings
