"""Topic contracts: each record type round-trips through its encoder and its decoder exactly
(the same bytes again), and a decoder fed anything either returns its type or raises the one
decode error (``msgspec.DecodeError``), never anything else. The table of topics, types and
modules is in streams/README.md."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atalaia.incidents.commands import Command, decode_command
from atalaia.incidents.events import (
    AlarmView,
    CommandReply,
    IncidentEvent,
    decode_incident_record,
    decode_reply,
)
from atalaia.incidents.silences import SilenceEvent
from atalaia.notifiers.model import IncidentSnapshot, Notification, decode_notification
from atalaia.rules.alarm import STATES, AlarmTransition, decode_alarm
from atalaia.streams.clock import format_time
from atalaia.streams.ingest.observation import Observation, ObservationRecord, decode_observation
from atalaia.streams.records import DecodeError
from atalaia.warnings.records import (
    ACTIONS,
    CapRecord,
    WarningCommand,
    WarningEvent,
    WarningReply,
    decode_warning_command,
    decode_warning_record,
    decode_warning_reply,
)

text = st.text(max_size=12)
name = st.text(min_size=1, max_size=12)
number = st.floats(allow_nan=False, allow_infinity=False)  # JSON has neither
times = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(8999, 1, 1)).map(
    lambda t: format_time(t.replace(tzinfo=dt.UTC))
)
str_map = st.dictionaries(text, text, max_size=3)
location = st.none() | st.lists(number, min_size=2, max_size=2)

alarms = st.builds(
    AlarmTransition,
    at=times,
    rule=name,
    key=name,
    state=st.sampled_from(STATES),
    severity=name,
    value=st.none() | number,
    group=text,
    entity=st.none() | text,
    type=st.none() | text,
    since=st.none() | times,
    labels=str_map,
    annotations=str_map,
    location=location,
    id=text,
    tenant=st.none() | text.filter(lambda t: "|" not in t),
    service_path=st.none() | text,
    values=st.none() | st.dictionaries(text, st.none() | number, max_size=3),
)
views = st.builds(
    AlarmView,
    rule=text,
    key=text,
    entity=st.none() | text,
    state=st.sampled_from(STATES),
    severity=text,
    value=st.none() | number,
    count=st.integers(0, 10**6),
    first_seen=text,
    last_seen=text,
    suppressed=st.none() | text,
    chattering=st.booleans(),
)
incident_events = st.builds(
    IncidentEvent,
    id=text,
    incident=name,
    version=st.integers(0, 2**40),
    at=times,
    change=text,
    changes=st.lists(text, max_size=3),
    state=text,
    active=st.booleans(),
    severity=text,
    title=text,
    correlation=str_map,
    labels=str_map,
    location=location,
    alarms=st.lists(views, max_size=3),
    alarm_count=st.integers(0, 100),
    actor=text,
    reason=text,
    opened_at=text,
    acknowledged_by=st.none() | text,
    shelved_until=st.none() | text,
    assignee=st.none() | text,
    closed_at=st.none() | text,
    command=st.none() | text,
    tenant=st.none() | text,
)
silence_events = st.builds(
    SilenceEvent,
    id=text,
    change=st.sampled_from(["created", "started", "expired"]),
    at=times,
    matchers=st.lists(text, max_size=3),
    author=text,
    comment=text,
    starts_at=text,
    ends_at=text,
    created_at=text,
    source=text,
    expired_by=st.none() | text,
    command=st.none() | text,
    silenced=st.integers(0, 1000),
)
replies = st.builds(
    CommandReply,
    command=text,
    incident=text,
    action=text,
    actor=text,
    accepted=st.booleans(),
    reason=text,
    at=st.none() | times,
    version=st.none() | st.integers(0, 2**40),
    code=st.none() | text,
    params=st.none() | st.dictionaries(text, text | st.integers(-(2**40), 2**40), max_size=3),
)
snapshots = st.builds(
    IncidentSnapshot,
    incident=text,
    version=st.integers(0, 2**40),
    at=text,
    change=text,
    state=text,
    active=st.booleans(),
    severity=text,
    title=text,
    labels=str_map,
    correlation=str_map,
    location=location,
    opened_at=st.none() | text,
    acknowledged_by=st.none() | text,
    alarms=st.lists(st.dictionaries(text, text, max_size=2), max_size=2),
    tenant=st.none() | text,
)
notifications = st.builds(
    Notification,
    incident=text,
    policy=text,
    episode=st.integers(0, 100),
    step=st.integers(-1, 10),
    repeat=st.integers(0, 10),
    target=text,
    kind=st.sampled_from(["escalation", "resolved", "warning", "propose", "digest"]),
    due=text,
    snapshot=snapshots,
    id=text,
    warning=st.none() | st.dictionaries(text, text, max_size=2),
    digest=st.lists(snapshots, max_size=2),
)
observations = st.builds(
    Observation,
    time=st.datetimes(
        min_value=dt.datetime(1970, 1, 2),
        max_value=dt.datetime(8999, 1, 1),
        timezones=st.just(dt.UTC),
    ),
    entity=name,
    type=name,
    attributes=st.dictionaries(text, number, max_size=3),
    location=st.none() | st.tuples(number, number),
    source=text,
    units=str_map,
    labels=str_map,
    quality=st.lists(text, max_size=2),
    time_source=st.sampled_from(["observed", "notified", "received"]),
    tenant=st.none() | text.filter(lambda t: "|" not in t),
    service_path=st.none() | text,
)
commands = st.builds(
    Command,
    id=text,
    incident=name,
    action=st.sampled_from(["acknowledge", "shelve", "comment", "assign"]),
    actor=name,
    role=st.sampled_from(["operator", "supervisor"]),
    reason=text,
)
warning_events = st.builds(
    WarningEvent,
    warning=name,
    version=st.integers(0, 2**40),
    state=st.sampled_from(["draft", "submitted", "approved", "issued", "updated", "cancelled", "expired"]),
    change=name,
    at=times,
    actor=text,
    role=text,
    reason=text,
    command=st.none() | text,
    identifier=st.none() | text,
    status=text,
    msgType=text,
    supersedes=st.none() | text,
    incident=st.none() | text,
    tenant=st.none() | text,
)
cap_records = st.builds(
    CapRecord,
    warning=name,
    version=st.integers(0, 2**40),
    identifier=name,
    status=st.sampled_from(["Actual", "Exercise", "System", "Test", "Draft"]),
    msgType=st.sampled_from(["Alert", "Update", "Cancel", "Ack", "Error"]),
    sent=times,
    expires=st.none() | times,
    references=st.lists(text, max_size=3),
    tenant=st.none() | text,
    xml=name,
)
warning_replies = st.builds(
    WarningReply,
    command=st.none() | text,
    ok=st.booleans(),
    error=st.none() | text,
    warning=st.just(msgspec.UNSET) | st.none() | text,  # UNSET: the reply to a malformed command
)
warning_records = warning_events | cap_records | warning_replies
warning_commands = st.builds(
    WarningCommand,
    action=st.sampled_from(ACTIONS),
    actor=name,
    role=name,
    id=text,
    warning=st.none() | text,
    reason=text,
    draft=st.none() | st.dictionaries(text, st.none() | text | number | str_map, max_size=3),
    incident=st.none() | text,
    tenant=st.none() | text,
    at=st.none() | times,
)

TYPED = [
    (alarms, decode_alarm),
    (incident_events, decode_incident_record),
    (silence_events, decode_incident_record),
    (replies, decode_reply),
    (notifications, decode_notification),
    (warning_records, decode_warning_record),
    (warning_replies, decode_warning_reply),
    (warning_commands, decode_warning_command),
]


@pytest.mark.parametrize("records,decoder", TYPED, ids=lambda x: getattr(x, "__name__", ""))
@given(data=st.data())
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_record_round_trips_exactly(records, decoder, data) -> None:
    record = data.draw(records)
    raw = record.to_json()
    back = decoder(raw)
    assert back == record and type(back) is type(record)
    assert back.to_json() == raw, "the same bytes again"


@given(observations)
@settings(max_examples=80, deadline=None)
def test_observations_round_trip_as_their_consumers_read_them(o: Observation) -> None:
    raw = o.to_json()
    assert decode_observation(raw) == orjson.loads(raw)
    assert set(ObservationRecord.__annotations__) == {*Observation.model_fields, "id"}


@given(commands)
@settings(max_examples=50, deadline=None)
def test_commands_round_trip(cmd: Command) -> None:
    assert decode_command(orjson.dumps(cmd.model_dump(mode="json"))) == cmd


DECODERS = [
    decode_alarm,
    decode_incident_record,
    decode_reply,
    decode_notification,
    decode_observation,
    decode_command,
    decode_warning_record,
    decode_warning_reply,
    decode_warning_command,
]
json_values = st.recursive(
    st.none() | st.booleans() | number | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=15,
)


def _decodes_or_refuses(decoder, raw: bytes) -> None:
    try:
        decoder(raw)
    except DecodeError as e:
        assert str(e)  # a reason for the DLQ
    # anything else propagates and fails the test


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_a_decoder_returns_its_type_or_raises_the_decode_error(decoder, data) -> None:
    _decodes_or_refuses(decoder, data.draw(st.binary(max_size=64)))
    _decodes_or_refuses(decoder, json.dumps(data.draw(json_values)).encode())  # big integers too


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@pytest.mark.parametrize("field", ["labels", "values", "snapshot", "attributes", "correlation", "x"])
def test_a_record_nested_deeper_than_the_interpreter_goes_is_refused_not_a_crash(decoder, field) -> None:
    """A hostile producer's record nested 100 000 deep in any field is a DecodeError (a DLQ
    record), not a RecursionError that would stop the stage."""
    deep = b"[" * 100_000 + b"]" * 100_000
    # a warning command is the warnings stage's only when it says so (others: None, not its own)
    kind = b'"kind":"warning",' if decoder is decode_warning_command else b""
    with pytest.raises(DecodeError):
        decoder(b'{%s"%s":%s}' % (kind, field.encode(), deep))


SAMPLES = {
    decode_alarm: alarms,
    decode_incident_record: incident_events,
    decode_notification: notifications,
    decode_observation: observations,
    decode_command: commands,
    decode_warning_record: warning_records,
    decode_warning_command: warning_commands,
}


@pytest.mark.parametrize("decoder", list(SAMPLES), ids=lambda d: d.__name__)
@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_a_record_with_one_field_replaced_decodes_or_names_the_field(decoder, data) -> None:
    record = data.draw(SAMPLES[decoder])
    d = orjson.loads(record.to_json()) if hasattr(record, "to_json") else record.model_dump(mode="json")
    field = data.draw(st.sampled_from(sorted(d)))
    d[field] = data.draw(json_values)
    try:
        decoder(json.dumps(d).encode())
    except DecodeError as e:
        assert "$" in str(e) or "Expected `object`" in str(e), "the reason names where"


def test_the_warnings_records_keep_their_wire_fields() -> None:
    """The records of atalaia.warnings are the workflow's former dicts, byte for byte: the same
    keys in the same order (``kind`` first), ``null`` for a missing value, and no ``warning`` on
    the reply to a malformed command (the console and its JS read these)."""
    from atalaia.warnings.core import Workflow

    wf = Workflow()
    t = dt.datetime(2026, 12, 4, 17, tzinfo=dt.UTC)
    draft = {"sender": "pc@cm-porto.pt", "level": "red", "event": "Cheia"}
    draft["area"] = {"geocodes": {"DICOFRE": ["131203"]}}
    draft.update(
        headline="Cheia no Douro", instruction="Afaste-se do rio.", expires="2026-12-05T06:00:00+00:00"
    )
    state, out = wf.step(
        wf.initial_state(), {"action": "draft", "actor": "a", "role": "operator", "draft": draft}, t
    )
    w = out[-1].warning
    for actor, action in (("a", "submit"), ("b", "approve"), ("a", "issue"), ("a", "explode")):
        role = "approver" if action == "approve" else "operator"
        state, more = wf.step(state, {"action": action, "warning": w, "actor": actor, "role": role}, t)
        out += more
    keys = {
        "warning": [
            "kind", "warning", "version", "state", "change", "at", "actor", "role", "reason", "command",
            "identifier", "status", "msgType", "supersedes", "incident", "tenant",
        ],
        "cap": [
            "kind", "warning", "version", "identifier", "status", "msgType", "sent", "expires",
            "references", "tenant", "xml",
        ],
        "reply": ["kind", "command", "ok", "error", "warning"],
    }  # fmt: skip
    assert {o.kind for o in out} == set(keys)
    for o in out:
        raw = o.to_json()
        assert raw == orjson.dumps(msgspec.to_builtins(o)), "what orjson wrote of the dict"
        expected = keys[o.kind][:-1] if o.kind == "reply" and o.command is None else keys[o.kind]
        assert list(orjson.loads(raw)) == expected
    assert out[-1].command is None and "$.action" in out[-1].error  # the malformed one
