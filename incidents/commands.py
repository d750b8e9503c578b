"""Operator commands on ``atalaia.commands`` (from the console), validated at the edge."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atalaia.incidents.config import ActionName, RoleName, parse_duration

Action = ActionName
Role = RoleName


class Command(BaseModel):
    """One operator command. ``id`` is the console's idempotency key (derived when absent)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = ""
    incident: str = Field(min_length=1)
    action: Action
    actor: str = Field(min_length=1)
    role: Role
    reason: str = ""
    duration: float | None = Field(None, description="seconds (or '30m') to shelve for")
    assignee: str | None = None
    at: datetime | None = Field(None, description="when the operator issued it; default: the step's now")

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = datetime.fromisoformat(v.replace("Z", "+00:00"))
        if isinstance(v, datetime):
            if v.tzinfo is None:
                raise ValueError("time has no UTC offset")
            return v.astimezone(UTC)
        return v

    @model_validator(mode="after")
    def _identity(self) -> Command:
        if not self.id:
            at = self.at.isoformat() if self.at else ""
            raw = f"{self.incident}|{self.action}|{self.actor}|{at}|{self.reason}|{self.duration}|{self.assignee}"
            object.__setattr__(self, "id", hashlib.blake2b(raw.encode(), digest_size=12).hexdigest())
        return self
