"""Operator commands on ``atalaia.commands`` (from the console), validated at the edge."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atalaia.incidents.config import ActionName, RoleName, parse_duration
from atalaia.streams.records import record_decoder

if TYPE_CHECKING:
    from atalaia.incidents.silences import SilenceCommand

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


# -- the record of atalaia.commands (what the incident manager takes of it) ---------------------
@record_decoder
def decode_command(value: bytes) -> Command | SilenceCommand | None:
    """A record of ``atalaia.commands`` as the incident manager's command: a
    :class:`~atalaia.incidents.silences.SilenceCommand` (``silence`` / ``expire-silence``) or a
    :class:`Command`; ``None`` for a warning command (``"kind": "warning"``, the warnings stage's:
    :func:`atalaia.warnings.records.decode_warning_command`). Anything else raises
    ``msgspec.DecodeError`` with the first error and its path (``... - at `$.action```)."""
    import msgspec
    import orjson
    from pydantic import ValidationError

    from atalaia.incidents.silences import SILENCE_ACTIONS, SilenceCommand
    from atalaia.streams.records import invalid

    try:
        d = orjson.loads(value)
    except orjson.JSONDecodeError as e:
        raise msgspec.DecodeError(f"JSON is malformed: {e}") from None
    if not isinstance(d, dict):
        raise msgspec.ValidationError(f"Expected `object`, got `{type(d).__name__}`")
    if d.get("kind") == "warning":
        return None
    model = SilenceCommand if d.get("action") in SILENCE_ACTIONS else Command
    try:
        return model.model_validate(d)
    except ValidationError as e:
        first = e.errors()[0]
        raise invalid(first["msg"], ".".join(str(p) for p in first["loc"]) or "") from None
    except ValueError as e:  # a validator's own error outside pydantic's wrapping
        raise msgspec.ValidationError(str(e)) from None
