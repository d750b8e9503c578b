"""Who is acting: operator API tokens.

``ATALAIA_CONSOLE_USERS=users.yaml`` names a file of tokens::

    users:
      - {actor: ana, role: operator, token_sha256: 9f86d08...}   # sha256 of the token
      - {actor: rui, role: supervisor, token_sha256: ...}
      - {actor: eva, role: approver, token_sha256: ...}     # approves population warnings
      - {actor: gil, role: operator, token_sha256: ..., tenants: [gaia]}   # only tenant gaia

Only hashes are stored. With the file configured, every command must carry
``Authorization: Bearer <token>``; the actor and role come from the token, never from the
body (an operator cannot claim to be a supervisor). Without it (the demo), commands are taken as
sent and the console says so in ``/api/whoami``.

A user with ``tenants:`` sees and acts only on incidents of those tenants (the incident's
``correlation.tenant``): the list, the live stream, the incident pages and deliveries leave the
others out, and a command for another tenant's incident is answered 404 like an unknown one.
Without ``tenants:`` a user sees every tenant.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from atalaia.streams.config_yaml import YamlError, YamlErrors, YamlLimits, load_file, validate


class User(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    actor: str
    role: Literal["operator", "supervisor", "engineer", "approver", "viewer"]
    token_sha256: str
    tenants: list[str] | None = None  # None: every tenant; else only incidents of these tenants


class Users(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[User]


class UsersFileError(ValueError):
    """A users file that cannot be used; each line of the message is ``file:line:col: message``."""


def load_users(path: str | Path, limits: YamlLimits | None = None) -> list[User]:
    """The users of a users file (held to the safe-YAML limits of ``atalaia.streams.config_yaml``)."""
    try:
        tree = load_file(path, limits)
    except YamlError as exc:
        raise UsersFileError(str(exc)) from None
    if not isinstance(tree, dict):
        raise UsersFileError(f"{path}:1:1: a users file must be a mapping with 'users:'")
    try:
        return validate(tree, Users, str(path)).users
    except YamlErrors as exc:
        raise UsersFileError(str(exc)) from None


@dataclass(frozen=True)
class Identity:
    actor: str
    role: str
    tenants: frozenset[str] | None = None  # None: every tenant

    def sees(self, row: dict | None) -> bool:
        """Whether this user may see (and act on) an incident row: its tenant (the incident's
        ``correlation.tenant``) is one of the user's. A scoped user sees no tenant-less incident."""
        if self.tenants is None:
            return True
        if row is None:
            return False
        tenant = (row.get("correlation") or {}).get("tenant") or row.get("tenant")
        return tenant in self.tenants


class Authenticator:
    def __init__(self, users: list[User] | None) -> None:
        self.users = users

    @classmethod
    def from_file(cls, path: Path | None, limits: YamlLimits | None = None) -> Authenticator:
        """The users of a users file; a bad file raises UsersFileError ``file:line:col: ...``."""
        if path is None:
            return cls(None)
        return cls(load_users(path, limits))

    @property
    def enabled(self) -> bool:
        return self.users is not None

    def identify(self, authorization: str | None) -> Identity | None:
        """The user a ``Bearer`` token belongs to, or None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        digest = hashlib.sha256(authorization[7:].strip().encode()).hexdigest()
        for u in self.users or ():
            if hmac.compare_digest(digest, u.token_sha256.lower()):
                return Identity(u.actor, u.role, frozenset(u.tenants) if u.tenants is not None else None)
        return None
