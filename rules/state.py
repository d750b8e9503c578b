"""State rules: ``equals``, ``in`` and ``changed_to`` on text and boolean attributes (a device's
``deviceState``, ``"fault"``/``"offline"``), with ``for`` and ``keep_firing_for`` as threshold rules.

The value is read from the observation's ``attributes`` or, for text, its ``labels`` (ingest keeps
text properties as labels, and boolean ones as the labels ``"true"``/``"false"``, which a rule whose
conditions are booleans reads as booleans). ``changed_to: X`` holds from an observation whose value is X when the
key's previous value was another one, for as long as the value stays X; the first observation of a
key never counts as a change. Transitions carry ``value: null``; templates see the state as ``value``.
"""

from __future__ import annotations

from typing import Any

from atalaia.rules.alarm import AlarmTransition
from atalaia.rules.loader import LoadedRule
from atalaia.rules.threshold import AlarmState, ThresholdRule


class _Level:
    __slots__ = ("changed_to", "equals", "members", "severity")

    def __init__(self, level: Any) -> None:
        self.severity = level.severity
        self.equals = level.equals
        self.members = tuple(level.in_) if level.in_ is not None else None
        self.changed_to = level.changed_to


BOOLEAN_TEXT = ("true", "false")  # a boolean property as ingest keeps it, as a label


def same(a: Any, b: Any) -> bool:
    """Equal and of the same kind: ``True`` is not ``1``, ``"1"`` is not ``1``."""
    return (
        a == b and (a.__class__ is bool) == (b.__class__ is bool) and isinstance(a, str) == isinstance(b, str)
    )


class StateAlarm(AlarmState):
    __slots__ = ("armed", "prev")

    def __init__(self) -> None:
        super().__init__()
        self.prev: Any = None  # the key's last state
        self.armed: list[bool] = []  # per changed_to level: the value changed to it and stayed

    def dump(self) -> list[Any]:
        return [*super().dump(), self.prev, self.armed]

    @classmethod
    def load(cls, d: list[Any]) -> StateAlarm:
        base = AlarmState.load(d[:8])
        s = cls()
        for name in AlarmState.__slots__:
            setattr(s, name, getattr(base, name))
        s.prev, s.armed = d[8], d[9]
        return s


class StateRule(ThresholdRule):
    kind = "state"
    can_purge = False  # the previous state matters to changed_to

    def __init__(self, loaded: LoadedRule, position: int) -> None:
        super().__init__(loaded, position)
        self.levels = [_Level(lv) for lv in loaded.rule.severities or []]  # type: ignore[misc]
        self._levels = tuple((True, 0.0, 0.0, False, lv.for_) for lv in loaded.rule.severities or [])
        # a rule on booleans reads a label "true"/"false" as one (labels are text: ingest keeps a
        # boolean property as one); a rule on text reads it as the text it is
        wanted = [v for lv in self.levels for v in (lv.equals, lv.changed_to, *(lv.members or ()))]
        self.reads_booleans = any(v.__class__ is bool for v in wanted)

    def observe_state(self, obs: dict[str, Any], key: str, t: float, t_text: str, v: Any, out: list) -> bool:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = StateAlarm()
            st.armed = [False] * len(self.levels)
        elif t < st.t:
            return False
        prev = st.prev
        holding = []
        for i, lv in enumerate(self.levels):
            if lv.equals is not None:
                holds = same(v, lv.equals)
            elif lv.members is not None:
                holds = any(same(v, m) for m in lv.members)
            else:
                if not same(v, lv.changed_to):
                    st.armed[i] = False
                elif prev is not None and not same(prev, lv.changed_to):
                    st.armed[i] = True
                holds = st.armed[i]
            holding.append(holds)
        st.t = t
        st.prev = v
        self.evaluate(st, key, t, t_text, None, obs, out, holding, v)
        return True

    def end(self, key: str, at: float, reason: str, out: list[AlarmTransition]) -> None:
        super().end(key, at, reason, out)

    load_state = staticmethod(StateAlarm.load)
