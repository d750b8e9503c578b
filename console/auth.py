"""Who is acting: operator API tokens.

``ATALAIA_CONSOLE_USERS=users.yaml`` names a file of tokens::

    users:
      - {actor: ana, role: operator, token_sha256: 9f86d08...}   # sha256 of the token
      - {actor: rui, role: supervisor, token_sha256: ...}

Only hashes are stored. With the file configured, every command must carry
``Authorization: Bearer <token>``; the actor and role come from the token, never from the
body (an operator cannot claim to be a supervisor). Without it (the demo), commands are taken as
sent and the console says so in ``/api/whoami``.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class User(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    actor: str
    role: Literal["operator", "supervisor", "engineer", "viewer"]
    token_sha256: str


class Users(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[User]


@dataclass(frozen=True)
class Identity:
    actor: str
    role: str


class Authenticator:
    def __init__(self, users: list[User] | None) -> None:
        self.users = users

    @classmethod
    def from_file(cls, path: Path | None) -> Authenticator:
        if path is None:
            return cls(None)
        from ruamel.yaml import YAML

        return cls(Users.model_validate(YAML(typ="safe").load(Path(path).read_text())).users)

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
                return Identity(u.actor, u.role)
        return None
