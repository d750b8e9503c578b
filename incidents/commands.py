"""Operator commands on ``atalaia.commands`` (from the console), validated at the edge."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from atalaia.incidents.config import ActionName, RoleName, parse_duration
from atalaia.streams.records import record_decoder

if TYPE_CHECKING:
    from atalaia.incidents.silences import SilenceCommand

Action = ActionName
Role = RoleName

#: the times a command may carry: the records' range (``streams.records.TIME_PATTERN``), so a
#: time plus any duration the manager allows (at most 366 d) is still a time it can write
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def command_time(v: Any) -> Any:
    """A command's time (RFC 3339 text with an offset, an aware datetime, or finite epoch seconds)
    as an aware UTC datetime within the years 1970..9000; ValueError otherwise (never an
    OverflowError: the API answers 422 naming the field, the stage refuses the command)."""
    if isinstance(v, bool):
        raise ValueError("time must be RFC 3339 text like 2026-01-28T10:00:00Z")
    try:
        if isinstance(v, int | float):
            if not math.isfinite(v):
                raise ValueError("time must be finite")
            v = datetime.fromtimestamp(v, UTC)
        elif isinstance(v, str):
            v = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
        if not isinstance(v, datetime):
            return v  # pydantic says what is wrong with it
        if v.tzinfo is None:
            raise ValueError("time has no UTC offset")
        v = v.astimezone(UTC)
    except (OverflowError, OSError):
        raise ValueError("time out of range (years 1970 to 9000)") from None
    if not EARLIEST <= v <= LATEST:
        raise ValueError("time out of range (years 1970 to 9000)")
    return v


#: a command's reason (a comment, a shelve's or a closing's reason) at most: a few lines, as a
#: silence's comment; the console refuses longer ones (the state keeps each open incident's latest
#: audit entries, reasons included, and writes them at every checkpoint)
MAX_REASON_CHARS = 2000


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
    until: Literal["clear"] | None = Field(
        None,
        description='shelve only: "clear" = one-shot, until the incident\'s alarms return to normal '
        "(at most ``duration``, default ``shelving.max``)",
    )
    assignee: str | None = None
    at: datetime | None = Field(None, description="when the operator issued it; default: the step's now")
    version: int | None = Field(
        None,
        ge=1,
        le=2**53,
        strict=True,
        description="the incident version the operator saw: an acknowledge is refused if the incident "
        "asked for acknowledgement again after it (a new alarm, one firing again, a higher severity)",
    )

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float | None:
        return None if v is None else parse_duration(v)

    @field_validator("until")
    @classmethod
    def _until(cls, v: str | None, info: ValidationInfo) -> str | None:
        action = info.data.get("action")
        if v is not None and action is not None and action != "shelve":
            raise ValueError(f"only a shelve waits until its alarms clear, not {action}")
        return v

    @field_validator("at", mode="before")
    @classmethod
    def _at(cls, v: Any) -> Any:
        return None if v is None else command_time(v)

    @model_validator(mode="after")
    def _identity(self) -> Command:
        if not self.id:
            at = self.at.isoformat() if self.at else ""
            raw = f"{self.incident}|{self.action}|{self.actor}|{at}|{self.reason}|{self.duration}|{self.assignee}"
            if self.until is not None:  # (the ids of every other command stay as they were)
                raw += f"|until={self.until}"
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
