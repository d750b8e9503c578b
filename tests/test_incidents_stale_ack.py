"""An acknowledgement is for what the operator saw. Two operators look at an incident; a critical
alarm joins it (it asks for acknowledgement again) while one of them clicks Acknowledge on the page
they loaded before: that acknowledgement took the critical alarm with it, and nobody had seen it.
A command may carry the incident ``version`` the operator saw (the console sends it with every
acknowledge): the acknowledgement is refused, saying what came since, if the incident asked for
acknowledgement again after that version; changes that ask for nothing (a new reading of the
same alarm, a comment) do not refuse it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from atalaia.incidents.commands import Command
from atalaia.incidents.events import CommandReply, IncidentEvent
from atalaia.incidents.testing import Driver


def opened() -> tuple[Driver, int]:
    d = Driver()
    ev = d.fire("river-level-high", "porto-01", at=0, parish="Ribeira", severity="high")
    return d, ev.version


@pytest.mark.parametrize(
    ("what", "fire"),
    [
        ("a new alarm", lambda d: d.fire("rain-intense", "rain-02", at=30, parish="Ribeira")),
        (
            "a higher severity",
            lambda d: d.fire("river-level-high", "porto-01", at=30, parish="Ribeira", severity="critical"),
        ),
    ],
)
def test_an_acknowledgement_of_an_older_version_is_refused_when_it_asked_again(what, fire) -> None:
    d, seen = opened()
    fire(d)
    now = d.current()
    assert now.state == "unacknowledged" and now.version == seen + 1
    r = d.command("acknowledge", at=40, actor="ana", version=seen)
    assert isinstance(r, CommandReply) and not r.accepted, what
    assert r.reason.startswith(f"incident changed since version {seen}: version {now.version} asks for ")
    assert r.reason.endswith(f"look at it again (now version {now.version})")
    assert d.current().version == now.version and d.current().state == "unacknowledged"
    # the operator looks again and acknowledges what they now see
    ev = d.command("acknowledge", at=50, actor="ana", version=now.version)
    assert isinstance(ev, IncidentEvent) and ev.state == "acknowledged"


def test_changes_that_ask_for_nothing_do_not_refuse_it() -> None:
    d, seen = opened()
    d.fire("river-level-high", "porto-01", at=10, parish="Ribeira", value=4.2)  # a new reading
    d.command("comment", at=20, actor="rui", reason="crew on the way")
    assert d.current().version == seen + 2
    ev = d.command("acknowledge", at=30, actor="ana", version=seen)
    assert isinstance(ev, IncidentEvent) and ev.state == "acknowledged"


def test_without_a_version_it_acknowledges_as_before() -> None:
    d, _ = opened()
    d.fire("rain-intense", "rain-02", at=30, parish="Ribeira")
    ev = d.command("acknowledge", at=40)
    assert isinstance(ev, IncidentEvent) and ev.state == "acknowledged"


def test_it_survives_a_restart() -> None:
    d, seen = opened()
    d.fire("rain-intense", "rain-02", at=30, parish="Ribeira")
    d.state = d.manager.restore(d.manager.snapshot(d.state))
    r = d.command("acknowledge", at=40, version=seen)
    assert isinstance(r, CommandReply) and not r.accepted and "changed since" in r.reason


@pytest.mark.parametrize("bad", [0, -1, True, "3", 1.5, 2**60])
def test_a_version_is_a_positive_integer(bad) -> None:
    with pytest.raises(ValidationError) as e:
        Command(incident="i", action="acknowledge", actor="ana", role="operator", version=bad)
    assert e.value.errors()[0]["loc"] == ("version",)


def test_the_console_sends_the_version_it_shows_with_an_acknowledge() -> None:
    from atalaia.console.api import page

    assert "extra.version = current.incident.version" in page("incident.html").decode()
    assert "version: shown.version" in page("index.html").decode()


def test_the_openapi_document_gives_the_versions_the_manager_accepts() -> None:
    """A client that keeps to the document is not refused (2**60 passed it and got a 422)."""
    from atalaia.console.openapi import document

    body = document()["paths"]["/api/incidents/{incident}/commands"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]["properties"]["version"]
    base = {"incident": "i", "action": "acknowledge", "actor": "ana", "role": "operator"}
    for v in (schema["minimum"], schema["maximum"]):
        assert Command.model_validate({**base, "version": v}).version == v
    for v in (schema["minimum"] - 1, schema["maximum"] + 1):
        with pytest.raises(ValidationError):
            Command.model_validate({**base, "version": v})
