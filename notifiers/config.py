"""Escalation configuration: targets, schedules, routes and policies (YAML, validated).

Loaded with ruamel.yaml so every error points at ``file:line:col``. See ``notifiers/README.md``
for the format; ``config/escalation.yaml`` is a complete example.
"""

from __future__ import annotations

import os
import re
from datetime import date, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from atalaia.incidents.events import IncidentState
from atalaia.rules.alarm import SEVERITIES
from atalaia.rules.matchers import Matcher, from_map
from atalaia.streams.config_yaml import YamlError, YamlErrors, YamlLimits, located, parse, read_text, validate

if TYPE_CHECKING:
    from atalaia.streams.settings import Settings

STATES = get_args(IncidentState)  # the incident states of atalaia.incidents
CHANNELS = ("sms", "email", "ngsi-ld", "webhook", "alertmanager")
LANGS = ("pt-PT", "en-GB")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# ASCII digits only: ``\d`` would take "٥m" (Arabic-Indic five) as 5 minutes
_DUR = re.compile(r"^(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?$")
#: bounds of a target's send timeout (one attempt) and of its rate limit's period
MAX_TIMEOUT = timedelta(seconds=60)
MAX_RATE_PERIOD = timedelta(days=1)
MAX_RATE_MESSAGES = 10_000
#: a webhook secret shorter than this (bytes) is accepted with a warning
MIN_SECRET_BYTES = 16


def parse_duration(v: Any) -> timedelta:
    """``90s``, ``5m``, ``1h30m``, ``2d`` (or a number of seconds) → timedelta."""
    if isinstance(v, timedelta):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool):
        if v < 0:
            raise ValueError("duration must not be negative")
        try:
            return timedelta(seconds=v)
        except OverflowError:
            raise ValueError(f"duration {v} s is too long") from None
    m = _DUR.match(v.strip()) if isinstance(v, str) and v.strip().isascii() else None
    if not m or not any(m.groups()):
        raise ValueError(f"invalid duration {v!r}: use e.g. 90s, 5m, 1h30m, 2d")
    d, h, mi, s = (int(x or 0) for x in m.groups())
    try:
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)
    except OverflowError:
        raise ValueError(f"duration {v!r} is too long") from None


def format_duration(td: timedelta) -> str:
    """timedelta → the YAML form (``1h30m``)."""
    s, out = int(td.total_seconds()), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out or "0s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive_at_most(v: timedelta, name: str, limit: timedelta, why: str) -> timedelta:
    """A duration setting that must be more than 0 (``why`` says why) and at most ``limit``."""
    if v <= timedelta(0):
        raise ValueError(f"{name} must be positive ({why})")
    if v > limit:
        raise ValueError(f"{name} must be at most {format_duration(limit)}")
    return v


class RateLimit(_Model):
    max: int = Field(ge=1, le=MAX_RATE_MESSAGES, description="at most this many messages ...")
    per: Duration = Field(description="... per this period, per target (token bucket); 0 < per <= 1d")

    @field_validator("per")
    @classmethod
    def _per(cls, v: timedelta) -> timedelta:
        return _positive_at_most(v, "per", MAX_RATE_PERIOD, "e.g. rate: {max: 6, per: 10m}")


class Retry(_Model):
    """How long a notification is tried, and the target's circuit breaker. Set at the top level
    (every target), per policy, or per target; the most specific setting of each field wins."""

    for_: Duration | None = Field(
        None,
        alias="for",
        description="keep trying this long after it was queued ('waiting for target'), then 'failed' "
        "(default: the life of the escalation step, at least 1h)",
    )
    first_backoff: Duration = Field(timedelta(seconds=1), description="delay after the first failure")
    max_backoff: Duration = Field(timedelta(seconds=60), description="cap of the doubling delay")
    open_after: int = Field(
        3, ge=1, le=1000, description="consecutive failures that open the target's circuit (then one probe)"
    )
    resend_for: Duration = Field(
        timedelta(days=1),
        description="a failed notification is re-sent when its target recovers, until this long after queued",
    )

    @model_validator(mode="after")
    def _check(self) -> Retry:
        if self.first_backoff <= timedelta(0) or self.max_backoff < self.first_backoff:
            raise ValueError("need 0 < first_backoff <= max_backoff")
        if self.for_ is not None and self.for_ <= timedelta(0):
            raise ValueError("for must be positive")
        return self


class Target(_Model):
    channel: Literal["sms", "email", "ngsi-ld", "webhook", "alertmanager"]
    url: str = Field(description="apprise URL (sms, email) or HTTP(S) endpoint; ${VAR} is expanded")
    lang: Literal["pt-PT", "en-GB"] | None = None
    secret: str | None = Field(None, description="webhook HMAC secret; ${VAR} is expanded")
    tenant: str | None = Field(
        None, description="ngsi-ld: a fixed NGSI-LD tenant (NGSILD-Tenant header) for every upsert"
    )
    tenant_from_incident: bool = Field(
        True,
        description="ngsi-ld without a fixed tenant: send the incident's (or warning's) tenant as "
        "NGSILD-Tenant; false: no tenant header (the broker's default tenant)",
    )
    rate: RateLimit | None = None
    timeout: Duration = Field(
        timedelta(seconds=10), description="of one send attempt; 0 < timeout <= 60s (apprise: twice this)"
    )
    max_attempts: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="deprecated: also fail after this many attempts (retries are budgeted by time, retry.for)",
    )
    retry: Retry | None = None
    concurrency: int = Field(1, ge=1, le=32, description="sends in flight at once to this target")
    throttle: float = Field(0.0, ge=0, description="apprise per-request throttle in s (plugin default 5.5)")
    max_sms_segments: int = Field(3, ge=1, le=10)
    warning_format: Literal["json", "cap"] = Field(
        "json",
        description="webhook: a population warning as JSON (with the CAP XML) or as the CAP XML itself",
    )

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: timedelta) -> timedelta:
        return _positive_at_most(v, "timeout", MAX_TIMEOUT, "0 would mean no timeout at all for HTTP targets")

    @model_validator(mode="after")
    def _check(self) -> Target:
        if self.channel == "webhook" and not (self.secret or "").strip():
            raise ValueError("a webhook target needs a secret (HMAC-SHA256 signing key), not an empty one")
        if self.channel in ("ngsi-ld", "webhook", "alertmanager") and not re.match(
            r"^(https?://|\$\{)", self.url
        ):
            raise ValueError(f"{self.channel} target url must start with http:// or https://")
        return self


class Window(_Model):
    """``from`` on each of ``days`` until ``to`` (exclusive). ``to`` earlier than ``from`` wraps past
    midnight into the next day (``from: "20:00", to: "08:00"`` on fri = Friday 20:00 to Saturday
    08:00); ``to: "00:00"`` is midnight; ``from`` equal to ``to`` is refused, except
    ``"00:00"``–``"00:00"``, the whole day."""

    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(min_length=1)
    start: time = Field(alias="from")
    end: time = Field(
        alias="to",
        description="exclusive; 24:00 is written 00:00 and means midnight; earlier than from: the next day",
    )

    @model_validator(mode="after")
    def _check(self) -> Window:
        if self.start == self.end and self.start != time(0):
            raise ValueError(
                f"from and to are both {self.start:%H:%M}: an empty window (the whole day is "
                'from: "00:00", to: "00:00"; a window past midnight has its to earlier than its from)'
            )
        return self


class HoursSchedule(_Model):
    type: Literal["hours"]
    windows: list[Window] = Field(min_length=1)
    holidays: list[date] = Field(default_factory=list, description="local dates that are never in hours")


class RotationSchedule(_Model):
    type: Literal["rotation"]
    members: list[str] = Field(min_length=1, description="target names, in rota order")
    start: str = Field(description="local date-time of the first handoff, e.g. 2026-01-05T09:00")
    shift: Duration = Field(description="length of one shift, e.g. 7d")


Schedule = Annotated[HoursSchedule | RotationSchedule, Field(discriminator="type")]


class StepTarget(_Model):
    target: str
    during: str | None = Field(None, description="only while this hours schedule is in hours")
    outside: str | None = Field(None, description="only while this hours schedule is out of hours")


def _step_target(v: Any) -> Any:
    return {"target": v} if isinstance(v, str) else v


class ProposeWarning(_Model):
    """An escalation step that drafts a population warning from the incident (a ``draft`` command
    on ``atalaia.commands``, kind warning). The draft waits for a person to submit it and another
    to approve it: this never publishes anything by itself."""

    sender: str = Field(description="the CAP sender of the draft, e.g. protecao.civil@cm-porto.pt")
    valid_for: Duration = Field(timedelta(hours=12), description="expires = onset + this")
    status: Literal["Actual", "Exercise", "Test"] = "Actual"


def _propose(v: Any) -> Any:
    return {"sender": v} if isinstance(v, str) else v


class Step(_Model):
    targets: list[Annotated[StepTarget, BeforeValidator(_step_target)]] = Field(default_factory=list)
    propose_warning: Annotated[ProposeWarning, BeforeValidator(_propose)] | None = Field(
        None, description="also draft a population warning from the incident (waits for approval)"
    )
    wait: Duration = Field(description="time before the next repeat / the next step")
    repeat: int = Field(0, ge=0, le=100, description="re-send this step up to N more times, every `wait`")

    @model_validator(mode="after")
    def _check(self) -> Step:
        if not self.targets and self.propose_warning is None:
            raise ValueError("a step needs targets (or propose_warning)")
        return self


class WarningTarget(_Model):
    target: str
    exercise: bool | Literal["only"] = Field(
        False,
        description="true: also Exercise and Test warnings; only: nothing but Exercise and Test (drill sinks)",
    )


def _warning_target(v: Any) -> Any:
    return {"target": v} if isinstance(v, str) else v


class WarningsDelivery(_Model):
    """Who receives issued population warnings (records on ``atalaia.warnings``)."""

    targets: list[Annotated[WarningTarget, BeforeValidator(_warning_target)]] = Field(default_factory=list)
    exercises: Literal["marked", "all", "none"] = Field(
        "marked",
        description="Exercise/Test warnings go to the targets marked exercise (marked), to every "
        "target (all), or nowhere (none)",
    )
    retry: Retry | None = None


class Policy(_Model):
    steps: list[Step] = Field(min_length=1)
    stop_on: list[Literal[STATES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: [s for s in STATES if s != "unacknowledged"],
        description="incident states that stop the escalation (default: every state but unacknowledged; "
        "drop acknowledged to keep reminding until it is closed)",
    )
    notify_resolved: bool = Field(True, description="tell every target already notified when it closes")
    retry: Retry | None = None
    repage_interval: Duration | None = Field(
        None, description="this policy's repage_interval (else the top level)"
    )

    @model_validator(mode="after")
    def _check(self) -> Policy:
        if "unacknowledged" in self.stop_on:
            raise ValueError("stop_on cannot contain unacknowledged: that is the state escalations exist for")
        return self


class Match(_Model):
    severity: list[Literal[SEVERITIES]] | None = None  # type: ignore[valid-type]
    min_severity: Literal[SEVERITIES] | None = None  # type: ignore[valid-type]
    labels: dict[str, str | list[str]] = Field(default_factory=dict)
    tenant: str | list[str] | None = Field(
        None, description="only incidents of this tenant (or these tenants); unset: any tenant"
    )
    _matchers: tuple[dict[str, Any], tuple[Matcher, ...]] | None = PrivateAttr(default=None)

    @property
    def label_matchers(self) -> tuple[Matcher, ...]:
        """``labels`` as the one label matcher (``rules.matchers``), built once per ``labels``."""
        cached = self._matchers
        if cached is None or cached[0] is not self.labels:
            cached = self._matchers = (self.labels, from_map(self.labels))
        return cached[1]


class Route(_Model):
    match: Match = Field(default_factory=Match)
    policy: str


class Storm(_Model):
    """Storm digests: when a target already got ``threshold`` messages in the last ``window``, the
    next ones are held for ``wait`` and sent as one message that sums them up."""

    threshold: int = Field(3, ge=1, description="messages a target gets one by one per window")
    window: Duration = Field(timedelta(minutes=2), description="the sliding window of the count")
    wait: Duration = Field(timedelta(seconds=30), description="how long a digest collects before it goes")
    channels: list[Literal["sms", "email"]] = Field(
        default_factory=lambda: ["sms", "email"], description="channels read by people (machines get each)"
    )


class EscalationConfig(_Model):
    timezone: str = "Europe/Lisbon"
    lang: Literal["pt-PT", "en-GB"] = "pt-PT"
    console_url: str | None = Field(
        None, description="link to the incident in messages: {console_url}/incidents/<id>"
    )
    retry: Retry | None = Field(None, description="delivery retry defaults for every target")
    repage_interval: Duration = Field(
        timedelta(minutes=5),
        description="an incident paged less than this ago is not paged again when it re-enters the "
        "escalation (severity flapping, a policy switch, re-acknowledgement); the page is deferred to "
        "the end of the interval and sent then if still due (Alertmanager's group_interval). 0 = off",
    )
    storm: Storm | None = Field(None, description="storm digests per target (off when absent)")
    repage_on_rise: bool = Field(
        True, description="a severity higher than any paged within the interval pages at once"
    )
    targets: dict[str, Target] = Field(default_factory=dict)
    schedules: dict[str, Schedule] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)
    policies: dict[str, Policy] = Field(default_factory=dict)
    warnings: WarningsDelivery | None = Field(
        None, description="population warnings: the targets that receive them (see notifiers/README.md)"
    )
    # the parsed file, to point problems found later (targets once ${VAR}s are expanded) at file:line:col
    _tree: Any = PrivateAttr(default=None)
    _file: str = PrivateAttr(default="<escalation>")

    def where(self, loc: tuple[Any, ...], message: str) -> str:
        """``file:line:col: message`` at ``loc`` of the file this was loaded from."""
        if self._tree is not None:
            try:
                return str(located(self._tree, self._file, loc, message))
            except Exception:  # a location is a courtesy, the message is the point
                pass
        return f"{self._file}: {'.'.join(str(p) for p in loc)}: {message}"


class ConfigError(ValueError):
    """One or more problems, each ``file:line:col: message``."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    def __reduce__(self) -> tuple:
        return (ConfigError, (self.problems,))


# --- loading with positions ------------------------------------------------------------------


def load_config_text(
    text: str, filename: str = "<escalation>", limits: YamlLimits | None = None
) -> EscalationConfig:
    try:
        data = parse(text, filename, limits)
    except YamlError as e:
        raise ConfigError([str(e)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{filename}:1:1: an escalation file must be a mapping (targets, routes, policies)"]
        )
    try:
        cfg = validate(data, EscalationConfig, filename)
    except YamlErrors as e:
        raise ConfigError([str(p) for p in e.errors]) from None
    problems = [str(located(data, filename, loc, msg)) for loc, msg in _references(cfg)]
    if problems:
        raise ConfigError(problems)
    cfg._tree, cfg._file = data, filename
    return cfg


def with_console_url(escalation: EscalationConfig, settings: Any) -> EscalationConfig:
    """The escalation config with the links messages carry as delivery sends them: to the running
    console (``settings.public_url()``) when ``ATALAIA_CONSOLE_URL`` is set or the file names none."""
    if settings.console_url or not escalation.console_url:
        return escalation.model_copy(update={"console_url": settings.public_url()})
    return escalation


def load_config(path: str | Path, limits: YamlLimits | None = None) -> EscalationConfig:
    """Load an escalation file (held to the safe-YAML limits of ``atalaia.streams.config_yaml``)."""
    try:
        text = read_text(path, limits)
    except YamlError as e:
        raise ConfigError([str(e)]) from None
    return load_config_text(text, str(path), limits)


def _references(cfg: EscalationConfig) -> list[tuple[tuple[Any, ...], str]]:
    """Cross-references the schema cannot check: names of policies, targets, schedules."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    out: list[tuple[tuple[Any, ...], str]] = []
    try:
        ZoneInfo(cfg.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name no file can have
        out.append(
            (("timezone",), f"unknown time zone {cfg.timezone!r} (use an IANA name like Europe/Lisbon)")
        )
    hours = {n for n, s in cfg.schedules.items() if isinstance(s, HoursSchedule)}
    rotations = {n for n, s in cfg.schedules.items() if isinstance(s, RotationSchedule)}
    for name in set(cfg.targets) & rotations:
        out.append((("schedules", name), f"{name!r} is both a target and a rotation schedule"))
    for name, sch in cfg.schedules.items():
        if isinstance(sch, RotationSchedule):
            for i, m in enumerate(sch.members):
                if m not in cfg.targets:
                    out.append((("schedules", name, "members", i), f"unknown target {m!r}"))
            try:
                from datetime import datetime

                datetime.fromisoformat(sch.start)
            except ValueError:
                out.append((("schedules", name, "start"), f"invalid local date-time {sch.start!r}"))
            if sch.shift <= timedelta(0):
                out.append((("schedules", name, "shift"), "shift must be positive"))
    for i, route in enumerate(cfg.routes):
        if route.policy not in cfg.policies:
            known = ", ".join(sorted(cfg.policies)) or "none defined"
            out.append((("routes", i, "policy"), f"unknown policy {route.policy!r} (known: {known})"))
    for pname, pol in cfg.policies.items():
        for si, step in enumerate(pol.steps):
            if step.wait <= timedelta(0) and (step.repeat or si < len(pol.steps) - 1):
                out.append((("policies", pname, "steps", si, "wait"), "wait must be positive"))
            for ti, st in enumerate(step.targets):
                loc = ("policies", pname, "steps", si, "targets", ti)
                if st.target not in cfg.targets and st.target not in rotations:
                    out.append((loc, f"unknown target or rotation {st.target!r}"))
                for which in (st.during, st.outside):
                    if which is not None and which not in hours:
                        out.append((loc, f"unknown hours schedule {which!r}"))
    if cfg.warnings is not None:
        for i, wt in enumerate(cfg.warnings.targets):
            loc = ("warnings", "targets", i)
            target = cfg.targets.get(wt.target)
            if target is None:
                out.append((loc, f"unknown target {wt.target!r} (warnings go to named targets)"))
            elif target.channel == "alertmanager":
                out.append((loc, f"{wt.target!r} is an alertmanager target: it cannot carry a warning"))
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def missing_env(cfg: EscalationConfig, env: Any = None) -> list[str]:
    """Environment variables the targets' ``url``/``secret`` use (the only expanded fields) but
    that are not set."""
    env = os.environ if env is None else env
    used = {v for t in cfg.targets.values() for f in (t.url, t.secret or "") for v in _VAR.findall(f)}
    return sorted(v for v in used if v not in env)


def missing_delivery_settings(settings: Settings) -> list[str]:
    """Environment variables the escalation targets use but that are not set. The file is read
    by the safe loader (a FIFO, a huge or a non-UTF-8 file is a ``ConfigError``, never a hang)."""
    return missing_env(load_config(settings.escalation_path))
