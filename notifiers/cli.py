"""``atalaia notify``: check escalation policies, simulate them, read the delivery log, send a
test message to one target."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson

from atalaia.notifiers.config import (
    ConfigError,
    EscalationConfig,
    format_duration,
    load_config,
    parse_duration,
)


def _default_db() -> Path:
    from atalaia.streams.settings import get_settings

    return get_settings().data_dir / "deliveries.sqlite"


def _load(path: str) -> EscalationConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        for p in e.problems:
            click.echo(p, err=True)
        sys.exit(1)


@click.group()
def notify() -> None:
    """Escalation policies, notifications and the delivery log."""


def _configured_escalation() -> str:
    """The escalation file the worker loads (setting ``escalation_path``), or exit 1 saying why
    there is none to check."""
    from atalaia.streams.settings import SettingsError, get_settings

    try:
        path = get_settings().escalation_path
    except SettingsError as e:
        raise click.ClickException(str(e)) from None
    hint = "set ATALAIA_ESCALATION_PATH (or escalation_path in ATALAIA_CONFIG), or name a file: atalaia notify check FILE"
    if str(path) in ("", "."):
        raise click.ClickException(f"no escalation file configured: {hint}")
    if not path.exists():
        raise click.ClickException(f"{path}: the configured escalation file does not exist: {hint}")
    if path.is_dir():
        raise click.ClickException(f"{path}: the configured escalation file is a directory: {hint}")
    return str(path)


@notify.command()
@click.argument("policy", type=click.Path(dir_okay=False), required=False)
@click.option("--strict", is_flag=True, help="exit 1 on warnings too (a target variable not set ...)")
def check(policy: str | None, strict: bool = False) -> None:
    """Validate an escalation file (errors as file:line:col: message) and every target URL.
    Without POLICY: the file the worker uses (ATALAIA_ESCALATION_PATH, default config/escalation.yaml)."""
    import os
    import re

    from atalaia.notifiers.channels import check_targets

    policy = policy or _configured_escalation()
    cfg = _load(policy)
    problems, warnings = [], []
    env = dict(os.environ)
    for name, target in cfg.targets.items():
        missing = sorted(
            {m for f in (target.url, target.secret or "") for m in re.findall(r"\$\{(\w+)\}", f)} - set(env)
        )
        if missing:
            warnings.append(
                f"{policy}: target {name!r}: environment variable(s) {', '.join(missing)} not set"
            )
            for m in missing:
                whole = {"sms": "smseagle://placeholder@placeholder", "email": "mailto://placeholder"}
                env[m] = (
                    whole.get(target.channel, "http://placeholder")
                    if target.url.startswith("${" + m)
                    else "placeholder"
                )
        if target.max_attempts is not None:
            warnings.append(
                f"{policy}: target {name!r}: max_attempts is deprecated: it fails a notification after "
                f"{target.max_attempts} attempts even while the target is only briefly down; retries are "
                "budgeted by time now (retry: {for: 1h, max_backoff: 60s}); remove it to keep trying"
            )
    stand_ins = set(env) - set(os.environ)
    found, weak = check_targets(cfg, env, stand_ins)  # as the worker builds them, ${VAR}s expanded
    problems += found
    warnings += weak
    unused = (
        set(cfg.targets)
        - {t.target for p in cfg.policies.values() for s in p.steps for t in s.targets}
        - {m for s in cfg.schedules.values() for m in getattr(s, "members", [])}
        - {t.target for t in (cfg.warnings.targets if cfg.warnings else [])}
    )
    for name in sorted(unused):
        warnings.append(f"{policy}: target {name!r} is not used by any policy")
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    for p in problems:
        click.echo(p, err=True)
    if problems:
        sys.exit(1)
    if strict and warnings:
        click.echo(f"{policy}: failed (--strict): {len(warnings)} warning(s)", err=True)
        sys.exit(1)
    click.echo(
        f"{policy}: ok: {len(cfg.targets)} targets, {len(cfg.schedules)} schedules, "
        f"{len(cfg.routes)} routes, {len(cfg.policies)} policies"
    )
    for i, r in enumerate(cfg.routes):
        pol = cfg.policies[r.policy]
        steps = " → ".join(
            f"[{', '.join([t.target for t in s.targets] + (['propose_warning'] if s.propose_warning else []))}]"
            f" wait {format_duration(s.wait)}" + (f" ×{s.repeat + 1}" if s.repeat else "")
            for s in pol.steps
        )
        click.echo(
            f"  route {i}: {r.match.model_dump(exclude_none=True, exclude_defaults=True) or 'any'} "
            f"→ {r.policy}: {steps}"
        )


#: at most this many timer ticks in one ``notify simulate`` (about a year at the default 1m tick)
MAX_SIMULATED_TICKS = 600_000


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@notify.command()
@click.argument("policy", type=click.Path(dir_okay=False))
@click.argument("events", type=click.File("rb"))
@click.option(
    "--tick",
    default="1m",
    show_default=True,
    callback=_duration,
    help="timer resolution between events (> 0)",
)
@click.option(
    "--until",
    "until",
    default="6h",
    show_default=True,
    callback=_duration,
    help="keep ticking this long after the last event",
)
def simulate(policy: str, events, tick: timedelta, until: timedelta) -> None:
    """Run incident events (JSON lines, atalaia.incidents shape) through the policies on their own
    event time and print the notifications that would be sent, as JSON lines. Sends nothing.
    At most 600000 ticks in all (a larger --tick simulates longer)."""
    from atalaia.notifiers.engine import TICK, EscalationEngine, EscalationState
    from atalaia.streams.clock import parse_time

    step, horizon = tick, until
    if step <= timedelta(0):
        raise click.BadParameter("must be positive (e.g. 30s, 1m)", param_hint="--tick")
    if horizon / step > MAX_SIMULATED_TICKS:
        raise click.BadParameter(
            f"--until {format_duration(horizon)} at --tick {format_duration(step)} is "
            f"{horizon // step} ticks, over the limit of {MAX_SIMULATED_TICKS}: use a larger --tick",
            param_hint="--until",
        )
    engine, state = EscalationEngine(_load(policy)), EscalationState()
    last: datetime | None = None
    ticks = 0

    def count(t: datetime, end: datetime) -> None:
        nonlocal ticks
        ticks += max(0, (end - t) // step + 1)
        if ticks > MAX_SIMULATED_TICKS:
            click.echo(
                f"{events.name}: {ticks} ticks of {format_duration(step)} to simulate, over the limit of "
                f"{MAX_SIMULATED_TICKS} (events far apart, or a long --until): use a larger --tick",
                err=True,
            )
            sys.exit(1)

    def emit(notes) -> None:
        for n in notes:
            click.echo(
                orjson.dumps(
                    {
                        "due": n.due,
                        "incident": n.incident,
                        "policy": n.policy,
                        "episode": n.episode,
                        "step": n.step,
                        "repeat": n.repeat,
                        "target": n.target,
                        "kind": n.kind,
                        "id": n.id,
                    }
                )
            )

    for lineno, raw in enumerate(events, 1):
        if not raw.strip():
            continue
        try:
            ev = orjson.loads(raw)
            at = parse_time(ev["at"])
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as e:
            click.echo(f"{events.name}:{lineno}: not an incident event: {e}", err=True)
            sys.exit(1)
        if last is not None:
            t = last + step
            if t < at:
                count(t, at)
            while t < at:
                emit(engine.step(state, TICK, t)[1])
                t += step
        try:
            notes = engine.step(state, ev, at)[1]
        except (KeyError, ValueError, TypeError, AttributeError) as e:  # an alarm line, say
            click.echo(f"{events.name}:{lineno}: not an incident event: missing or bad {e}", err=True)
            sys.exit(1)
        emit(notes)
        last = at
    if last is not None:
        t, end = last + step, last + horizon
        count(t, end)
        while t <= end:
            emit(engine.step(state, TICK, t)[1])
            t += step


@notify.command("log")
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default=None,
    help="delivery log (default: <data_dir>/deliveries.sqlite)",
)
@click.option("--incident", default=None, help="only this incident")
@click.option("--attempts", is_flag=True, help="every attempt, not one line per notification")
@click.option("--json", "as_json", is_flag=True, help="JSON lines")
@click.option("--limit", default=200, show_default=True)
@click.option(
    "--lang",
    type=click.Choice(["pt-PT", "en-GB"]),
    default=None,
    help="language of the lines (default: from LANG: pt… → pt-PT, else en-GB)",
)
def log_cmd(
    db: str | None, incident: str | None, attempts: bool, as_json: bool, limit: int, lang: str | None
) -> None:
    """Show the delivery log: per notification (status, attempts, last error) or per attempt.
    Times are Lisbon time with the zone, values rounded with their units (as in the console, SMS
    and email); ``--json`` gives the raw rows (epoch seconds)."""
    import os

    from atalaia.notifiers.log import SQLiteDeliveryLog

    lang = lang or ("pt-PT" if os.environ.get("LANG", "").lower().startswith("pt") else "en-GB")
    words = WORDS[lang]

    path = Path(db) if db else _default_db()
    if not path.exists():
        click.echo(f"{path}: no delivery log yet", err=True)
        sys.exit(1)
    log = SQLiteDeliveryLog(path)
    rows = log.attempts(incident, limit) if attempts else log.deliveries(incident, limit)
    health = {h.target: h for h in log.targets()}
    leads = {} if as_json else _leads(log, [r.notification_id for r in rows], lang)
    for r in rows:
        d = {k: getattr(r, k) for k in r.__dataclass_fields__}
        if as_json:
            click.echo(orjson.dumps(d))
            continue
        when = _local(d.get("started_at") or d.get("updated_at"))
        what = leads.get(d["notification_id"], "")
        if attempts:
            lat = f"{d['latency_ms']:.0f} ms" if d["latency_ms"] is not None else "-"
            click.echo(
                f"{when}  {d['incident']}  {d['target']:<16} {d['channel']:<12} #{d['attempt']} "
                f"{words['status'].get(d['status'], d['status']):<10} {lat:>7}  {what}  "
                f"{d['error'] or d['detail'] or ''}".rstrip()
            )
        else:
            where = (
                words["resolved"]
                if d["kind"] == "resolved"
                # steps and repeats count from 0, as in the policy file's docs, --json, the HTTP API
                # and ``atalaia tail``: ``step 1 r2`` is the second step's second re-send
                else f"{words['step']} {d['step']}" + (f" r{d['repeat']}" if d["repeat"] else "")
            )
            click.echo(
                f"{when}  {d['incident']}  {where:<10} {d['target']:<16} {d['channel']:<12} "
                f"{_status_text(d, health.get(d['target']), lang)}  {what}  {d['last_error'] or ''}".rstrip()
            )
    if not as_json:
        now = time.time()
        for h in health.values():
            if h.state != "closed":
                # a probe overdue by more than a minute: no worker is probing it (stopped, or the
                # target is no longer configured), so the line is the last known state, not now's
                key = "down" if h.next_probe_at is None or h.next_probe_at > now - STALE_S else "stale"
                click.echo(
                    words[key].format(
                        target=h.target,
                        since=_local(h.since),
                        n=h.failures,
                        probe=_local(h.next_probe_at),
                        error=h.last_error or "",
                    )
                )
    log.close()


STALE_S = 60.0  # a breaker's probe overdue by more than this: ``notify log`` says its line is stale

# the words of ``notify log`` (times and values follow the console's rules: Lisbon time with the
# zone, values rounded with their units, decimal comma in Portuguese)
WORDS: dict[str, dict] = {
    "en-GB": {
        "status": {},
        "step": "step",
        "resolved": "resolved",
        "attempts": "attempts",
        "waiting": "waiting for target (attempts={n}, next try {next})",
        "failed_kept": "failed (attempts={n}; re-sent when the target recovers, until {until})",
        "down": "target {target}: unavailable since {since} ({n} consecutive failures), next probe {probe}: {error}",
        "stale": "target {target}: last known unavailable since {since} ({n} consecutive failures); its probe was "
        "due {probe} and no running worker has made it (stopped, or the target is no longer configured): {error}",
    },
    "pt-PT": {
        "status": {
            "queued": "em fila",
            "sending": "a enviar",
            "delivered": "entregue",
            "waiting": "à espera",
            "retrying": "a repetir",
            "failed": "falhou",
            "in-doubt": "incerto",
        },
        "step": "escalão",
        "resolved": "encerrado",
        "attempts": "tentativas",
        "waiting": "à espera do destino (tentativas={n}, próxima {next})",
        "failed_kept": "falhou (tentativas={n}; reenviado quando o destino voltar, até {until})",
        "down": "destino {target}: indisponível desde {since} ({n} falhas seguidas), próxima sonda {probe}: {error}",
        "stale": "destino {target}: indisponível desde {since} pelo último registo ({n} falhas seguidas); a sonda "
        "era às {probe} e nenhum worker em execução a fez (parado, ou o destino já não está configurado): {error}",
    },
}


def _local(t: float | None) -> str:
    """Lisbon time with the zone (``04/12/2026 19:32:05 WET``)."""
    from zoneinfo import ZoneInfo

    if t is None:
        return "-"
    return (
        datetime.fromtimestamp(t, UTC).astimezone(ZoneInfo("Europe/Lisbon")).strftime("%d/%m/%Y %H:%M:%S %Z")
    )


def _utc(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _leads(log, ids: list[str], lang: str) -> dict[str, str]:
    """Per notification id, its incident's severity and lead value with its unit (``alto 0,21 m``)."""
    from atalaia.notifiers.render import SEVERITY, format_value
    from atalaia.rules.alarm import severity_rank

    try:
        payloads = log.payloads(set(ids))
    except Exception:  # an older log: lines without values
        return {}
    rules = None
    out = {}
    for nid, n in payloads.items():
        s = n.snapshot
        text = SEVERITY[lang].get(s.severity, s.severity)
        ranked = sorted(s.alarms, key=lambda a: -severity_rank(a.get("severity")))
        a = next((x for x in ranked if x.get("value") is not None), None)
        if a is not None:
            if rules is None:
                rules = _rules()
            info = rules.get(a.get("rule"))
            text += " " + format_value(a.get("value"), info.unit if info else None, lang)
        out[nid] = text
    return out


def _rules() -> dict:
    try:
        from atalaia.rules.info import rule_catalog
        from atalaia.streams.settings import get_settings

        return rule_catalog(get_settings().rules_paths)
    except Exception:  # values without units rather than no log
        return {}


def _status_text(d: dict, health: object | None, lang: str = "en-GB") -> str:
    """One delivery row's status as an operator reads it."""
    words = WORDS[lang]
    status, n = d["status"], d["attempts"]
    held = health is not None and getattr(health, "state", "closed") != "closed"
    if status in ("waiting", "retrying") or (status == "queued" and held):
        nxt = d.get("next_at")
        if held:
            probe = getattr(health, "next_probe_at", None)
            nxt = max(nxt or 0.0, probe or 0.0) or None
        return words["waiting"].format(n=n, next=_local(nxt))
    if status == "failed" and d.get("resend_until"):
        return words["failed_kept"].format(n=n, until=_local(d["resend_until"]))
    return f"{words['status'].get(status, status):<9} {words['attempts']}={n}"


#: ``notify test`` tries for this long at most, each attempt for at most TEST_TIMEOUT (apprise: twice)
TEST_FOR = timedelta(seconds=30)
TEST_TIMEOUT = timedelta(seconds=10)


def _test_log(path: Path) -> Any:
    """The delivery log as `notify test` writes it: its message and attempts are recorded, its
    short-lived circuit breaker is not (it is not the running lanes', and a failed test left the
    target "unavailable" in `notify log` after the target had come back)."""
    from atalaia.notifiers.log import SQLiteDeliveryLog

    class TestLog(SQLiteDeliveryLog):
        def set_target(self, health: Any) -> None:
            return None

    return TestLog(path)


@notify.command("test")
@click.argument("policy", type=click.Path(dir_okay=False))
@click.argument("target")
@click.option("--db", type=click.Path(dir_okay=False), default=None)
def test_target(policy: str, target: str, db: str | None) -> None:
    """Send a test message to one target (recorded in the delivery log as incident
    ``test-<target>-<time>-<6 hex digits>``)."""
    from atalaia.notifiers.channels import TargetError
    from atalaia.notifiers.config import Retry
    from atalaia.notifiers.model import IncidentSnapshot, Notification
    from atalaia.notifiers.service import Notifier
    from atalaia.streams.clock import format_time

    cfg = _load(policy)
    if target not in cfg.targets:
        click.echo(f"no target {target!r} in {policy} (known: {', '.join(sorted(cfg.targets))})", err=True)
        sys.exit(1)
    now = datetime.now(UTC).replace(microsecond=0)
    # a run of its own: two runs within one second are two messages, each with its own result
    inc = f"test-{target}-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    snap = IncidentSnapshot(
        inc,
        1,
        format_time(now),
        "opened",
        "unacknowledged",
        True,
        "informational",
        "Mensagem de teste / test message",
    )
    n = Notification(inc, "test", 0, 0, 0, target, "escalation", format_time(now), snap)

    async def go() -> None:
        # a test message is tried for TEST_FOR s at most in all (not the escalation's retry budget),
        # and is not kept for re-sending later if it failed: an attempt is held to TEST_TIMEOUT
        # (apprise: twice its timeout), and none starts once it could not end by then
        chosen = cfg.targets[target]
        timeout = min(chosen.timeout, TEST_TIMEOUT)
        attempt = timeout * (2 if chosen.channel in ("sms", "email") else 1)
        budget = (TEST_FOR - attempt).total_seconds()
        short = Retry.model_validate({"for": budget, "max_backoff": 8, "resend_for": budget})
        only = chosen.model_copy(update={"retry": short, "max_attempts": None, "timeout": timeout})
        notifier = Notifier(
            cfg.model_copy(update={"targets": {target: only}, "retry": None}),
            _test_log(Path(db) if db else _default_db()),
        )
        try:
            # not a second sender: the running delivery stage owns the log's unfinished deliveries
            # (taking them up here sent a waiting one twice and marked one being sent in doubt)
            await notifier.start(recover=False)
        except TargetError as e:
            await notifier.aclose()
            click.echo(cfg.where(("targets", target, e.field), f"target {target!r}: {e.message}"), err=True)
            sys.exit(1)
        try:
            # the schedule above ends in time; this is the last guard of the promise
            await asyncio.wait_for(notifier.deliver([n]), TEST_FOR.total_seconds() + 5)
        except TimeoutError:
            click.echo(f"{target}: no result after {TEST_FOR.total_seconds():g} s: gave up", err=True)
        finally:
            await notifier.aclose()
        for a in notifier.log.attempts(inc):
            click.echo(
                f"attempt {a.attempt}: {a.status} {a.error or a.detail or ''} ({(a.latency_ms or 0):.0f} ms)"
            )
        if notifier.log.deliveries(inc)[0].status != "delivered":
            sys.exit(1)

    asyncio.run(go())
