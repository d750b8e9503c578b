"""Why an alarm is suppressed, as events write it and as the console reads it back
(``incidents/reasons.py``): the texts stay the contract of ``atalaia.incidents`` (English, event
times), and their parts (kind, rule, key, silence, comment, ``until``) are what the incident page
says in its own language and time format."""

from __future__ import annotations

import doctest

from hypothesis import given
from hypothesis import strategies as st

from atalaia.console.present import alarm_suppression, explain
from atalaia.incidents import reasons
from atalaia.incidents.model import fmt

RULE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,20}", fullmatch=True)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=";"), min_size=1, max_size=30)
NAME = TEXT.filter(lambda s: ": " not in s and not s.endswith(":") and s.strip() == s and s)
WHEN = st.integers(0, 2**52).map(fmt)

REASON = st.one_of(
    WHEN.map(lambda u: (reasons.chattering(u), {"kind": "chattering", "until": u})),
    st.tuples(RULE, TEXT).map(
        lambda rk: (reasons.inhibited(*rk), {"kind": "inhibited", "rule": rk[0], "key": rk[1]})
    ),
    st.tuples(NAME, TEXT).map(
        lambda nc: (reasons.maintenance(*nc), {"kind": "maintenance", "name": nc[0], "comment": nc[1]})
    ),
    st.tuples(NAME, TEXT).map(
        lambda sc: (reasons.silenced(*sc), {"kind": "silenced", "silence": sc[0], "comment": sc[1]})
    ),
)


def test_docstring_examples() -> None:
    result = doctest.testmod(reasons)
    assert result.failed == 0 and result.attempted > 0


@given(st.lists(REASON, min_size=1, max_size=5))
def test_the_parts_of_a_suppression_are_what_the_manager_wrote(said) -> None:
    """However many reasons the manager joins ("; ", chattering first, as it writes them), the
    console reads each back with its values: a chattering shelve's end as the event time."""
    said = sorted(said, key=lambda p: p[1]["kind"] != "chattering")[:1] + [
        p for p in said[1:] if p[1]["kind"] != "chattering"
    ]
    text = "; ".join(t for t, _ in said)
    assert reasons.parts(text) == [p for _, p in said]
    assert alarm_suppression({"suppressed": text}) == [p for _, p in said]
    # the timeline: the reason alone, or after what opened the incident
    lead = "river-level-high urn:ngsi-ld:WaterObserved:g1 fired"
    history = [
        {"changes": ["alarm-suppressed"], "reason": text, "state": "suppressed", "severity": "high"},
        {"changes": ["opened"], "reason": f"{lead} — {text}", "state": "suppressed", "severity": "high"},
        {
            "changes": ["shelved"],
            "reason": text,
            "state": "shelved",
            "severity": "high",
        },  # an operator's words
    ]
    out = explain(history)
    assert [(e["reason_lead"], e["suppression"]) for e in out] == [
        (None, [p for _, p in said]),
        (lead, [p for _, p in said]),
        (None, None),
    ]
    assert [e["reason"] for e in out] == [h["reason"] for h in history], "the text is kept"


@given(RULE, TEXT.filter(lambda s: not s.startswith(" ") and " — " not in s))
def test_no_longer_suppressed_is_read_back(rule, key) -> None:
    text = reasons.unsuppressed(rule, key)
    assert reasons.parts(text) == [{"kind": "unsuppressed", "rule": rule, "key": key}]


def test_other_texts_have_no_parts() -> None:
    for text in (
        None,
        "",
        "gauge being cleaned",
        "shelved: chattering until",
        "inhibited by x",
        "maintenance x",
    ):
        assert reasons.parts(text) is None and reasons.timeline(text) is None


@given(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(
        lambda s: s + " no longer suppressed"
    )
)
def test_a_silence_comment_never_makes_a_suppression_read_as_lifted(comment) -> None:
    """An incident opened already silenced, by a silence whose comment ends in "no longer
    suppressed" ("pump 3 alarm no longer suppressed"): its timeline read "river-level-high <its
    whole reason> no longer suppressed", the opposite of what happened. The suppression is read as
    one (or, when the comment cannot be told apart, not read at all: the page shows the text)."""
    from atalaia.incidents.testing import Driver

    d = Driver()
    d.step(
        {"id": "s", "action": "silence", "actor": "rui", "role": "supervisor", "comment": comment,
         "matchers": ['rule="river-level-high"'], "duration": 3600},
        0,
    )  # fmt: skip
    ev = d.fire("river-level-high", "gauge-7", at=10, parish="Ribeira")
    assert ev.alarms[0].suppressed and "opened" in ev.changes
    (entry,) = explain([{"version": 1, "changes": ev.changes, "reason": ev.reason, "severity": "high"}])
    kinds = [p["kind"] for p in entry["suppression"] or []]
    assert "unsuppressed" not in kinds, (ev.reason, entry["suppression"])
    assert entry["reason"] == ev.reason, "the text is kept"
    said = alarm_suppression({"suppressed": ev.alarms[0].suppressed})
    assert said is None or [p["kind"] for p in said] == ["silenced"], said
