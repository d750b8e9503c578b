"""Who may post to the ingest endpoints, and who may read ``/health`` and ``/metrics``.

``ATALAIA_INGEST_TOKENS=tokens.yaml`` names a file of per-source tokens, stored hashed::

    tokens:
      - {source: orion-porto, tenant: porto, token_sha256: 9f86d08...}   # sha256 of the token
      - {source: iot-agent, token_sha256: ...}         # no tenant: the default tenant only

With the file configured, every notification must carry ``Authorization: Bearer <token>`` or
``X-Auth-Token: <token>`` (what FIWARE brokers send for a subscription). A token is bound to a
tenant: a request that names another one in ``NGSILD-Tenant`` or ``Fiware-Service`` is refused,
and a request that names none belongs to the token's tenant. ``atalaia tokens new`` makes a token
and its entry. A ``token_sha256`` listed twice is refused at ``file:line:col`` (it would act for
the last entry only: another tenant's platform refused, requests naming no tenant filed under the
other tenant). Tokens are 256-bit random strings, so one SHA-256 is as hard to invert as a
password hash is, at a microsecond per request; a password-like low-entropy token is refused by
the file loader rather than hashed more slowly.

``ATALAIA_METRICS_TOKEN_SHA256`` protects ``/health`` and ``/metrics`` with a separate token
(Prometheus: ``authorization: {credentials_file: ...}``); ``/livez`` and ``/readyz`` always
answer (a probe has no token): ``/livez`` says nothing but that the process serves HTTP,
``/readyz`` whether it serves now (``ready``, or ``starting`` / ``failed``), never why.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, field_validator

REFUSED = Counter(
    "atalaia_http_auth_refused_total",
    "HTTP requests refused for authentication, by endpoint group and reason",
    ["endpoint", "reason"],
)

# RFC 6750 token68 characters; anything else in a credential is refused before it is hashed
_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
MAX_TOKEN_CHARS = 512
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +(\S+) *")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
TOKEN_PREFIX = "atl_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits), in token68 characters."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str = Field(min_length=1, max_length=128)
    tenant: str | None = Field(None, min_length=1, max_length=128)
    token_sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")

    @field_validator("source", "tenant")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(ord(c) < 32 or ord(c) == 127 for c in v)):
            raise ValueError("must be a name: not blank, no control characters")
        return v


class TokenFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenEntry]


def load_token_file(path: str | Path) -> list[TokenEntry]:
    """The entries of an ingest token file (within the safe-loading limits; an empty file has
    none). A problem raises :class:`~atalaia.streams.config_yaml.YamlError` ``file:line:col: ...``
    (one line per problem), among them a token hash listed twice: one token would silently act
    for whichever entry came last (another tenant's platform refused, its requests filed under
    the other tenant)."""
    from atalaia.streams.config_yaml import YamlError, YamlErrors, load_file, located, position, validate

    name = str(path)
    tree = load_file(path)
    if tree is None:
        return []
    if not isinstance(tree, dict):
        raise YamlError(name, 1, 1, "a token file must be a mapping with 'tokens:'", "value")
    try:
        entries = validate(tree, TokenFile, name).tokens
    except YamlErrors as e:
        raise _one(e.errors) from None
    problems = []
    first: dict[str, int] = {}
    for i, e in enumerate(entries):
        j = first.setdefault(e.token_sha256.lower(), i)
        if j != i:
            line, _ = position(tree, ("tokens", j))
            other = entries[j]
            problems.append(
                located(
                    tree,
                    name,
                    ("tokens", i, "token_sha256"),
                    f"tokens.{i}.token_sha256: the same token as line {line} (source {other.source!r}, "
                    f"tenant {other.tenant or 'default'}): one token, one entry (make another with "
                    "`atalaia tokens new`)",
                    at="value",
                )
            )
    if problems:
        raise _one(problems)
    return entries


def _one(errors: list[Any]) -> Any:
    """One YamlError for several (the first's position, one line per problem)."""
    from atalaia.streams.config_yaml import YamlError

    head = errors[0]
    if len(errors) == 1:
        return head
    rest = "\n".join(str(e) for e in errors[1:])
    return YamlError(head.file, head.line, head.col, f"{head.message}\n{rest}", head.kind)


@dataclass(frozen=True, slots=True)
class Caller:
    source: str
    tenant: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 (no or unknown credentials) or 403 (a valid token for another tenant)
    reason: str  # metric label: missing, malformed, unknown, conflicting, tenant
    detail: str


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of a header (a repeated header is seen whole, not first- or last-wins)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, ()))
    return [v for k, v in headers.items() if k.lower() == name.lower()]


def credentials(headers: Mapping[str, str]) -> tuple[list[str], str | None]:
    """The tokens a request presents (``Authorization: Bearer`` and ``X-Auth-Token``), or why the
    headers are unusable. Never raises."""
    found: list[str] = []
    for auth in _values(headers, "Authorization"):
        m = _BEARER.fullmatch(auth)
        if m is None:
            return [], "Authorization is not 'Bearer <token>'"
        found.append(m.group(1))
    found.extend(x.strip(" ") for x in _values(headers, "X-Auth-Token"))
    for tok in found:
        if not tok or len(tok) > MAX_TOKEN_CHARS or _TOKEN.fullmatch(tok) is None:
            return [], "the token is not a token68 string of at most 512 characters"
    return found, None


def request_tenant(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(tenant the request names or None, error). NGSILD-Tenant and Fiware-Service must agree; a
    blank one names none (as ingest reads it: the default tenant)."""
    named = [
        v for v in (*_values(headers, "NGSILD-Tenant"), *_values(headers, "Fiware-Service")) if v.strip()
    ]
    # ignoring case and surrounding space, as the token check and Orion (which lowers
    # Fiware-Service) read a tenant: "porto" and "PORTO" name one tenant
    if len({v.strip().casefold() for v in named}) > 1:
        return None, "NGSILD-Tenant / Fiware-Service headers name different tenants"
    return (named[0].strip() if named else None), None


class IngestAuth:
    """Ingest tokens: ``check(headers)`` -> Caller or Refusal. Disabled (everyone allowed) when
    no token file is configured."""

    def __init__(self, entries: list[TokenEntry] | None) -> None:
        self.enabled = entries is not None
        self._by_hash = {e.token_sha256.lower(): e for e in entries or ()}

    @classmethod
    def from_file(cls, path: Path | None) -> IngestAuth:
        if path is None:
            return cls(None)
        # within the safe-loading limits; fails closed: an unreadable file stops start-up with its
        # file:line:col (an empty file: no token is valid)
        return cls(load_token_file(path))

    def check(self, headers: Mapping[str, str]) -> Caller | Refusal:
        tenant, err = request_tenant(headers)
        if not self.enabled:
            return Caller("anonymous", tenant)
        tokens, err2 = credentials(headers)
        if err2:
            return Refusal(401, "malformed", err2)
        if not tokens:
            return Refusal(401, "missing", "send 'Authorization: Bearer <token>' or 'X-Auth-Token: <token>'")
        entries = {self._by_hash.get(hash_token(t)) for t in tokens}
        if None in entries:
            return Refusal(401, "unknown", "the token is not valid")
        if len(entries) > 1:
            return Refusal(401, "conflicting", "Authorization and X-Auth-Token carry different tokens")
        entry = entries.pop()
        if err:
            return Refusal(403, "tenant", err)
        # (tenant names are compared ignoring case, as Orion does: Fiware-Service "Porto" is porto)
        if tenant is not None and (entry.tenant is None or tenant.casefold() != entry.tenant.casefold()):
            mine = f"it is tenant {entry.tenant!r}'s" if entry.tenant else "it is for no tenant"
            return Refusal(
                403,
                "tenant",
                f"this token is not valid for tenant {tenant!r} ({mine}; the header is NGSILD-Tenant or "
                f"Fiware-Service): give that platform a token made with `atalaia tokens new --source NAME --tenant {tenant}`",
            )
        return Caller(entry.source, entry.tenant)


class MetricsAuth:
    """One token (its SHA-256 hex) for ``/health`` and ``/metrics``; None = open."""

    def __init__(self, token_sha256: str | None) -> None:
        if token_sha256 is not None and not _HEX64.fullmatch(token_sha256.strip()):
            raise ValueError("ATALAIA_METRICS_TOKEN_SHA256 must be 64 hexadecimal digits (a SHA-256)")
        self.digest = token_sha256.strip().lower() if token_sha256 else None

    def check(self, headers: Mapping[str, str]) -> Refusal | None:
        if self.digest is None:
            return None
        tokens, err = credentials(headers)
        if err or not tokens:
            return Refusal(401, "malformed" if err else "missing", "send 'Authorization: Bearer <token>'")
        if not all(secrets.compare_digest(hash_token(t), self.digest) for t in tokens):
            return Refusal(401, "unknown", "the token is not valid")
        return None
