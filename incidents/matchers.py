"""Label matchers in Alertmanager syntax: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

Regular expressions are fully anchored, as in Alertmanager. A matcher on a label the alarm does
not carry sees the empty string (so ``team!="hydro"`` matches an alarm without ``team``).

>>> m = Matcher.parse('rule=~"station-(power|comms)-failure"')
>>> m.matches({"rule": "station-power-failure"})
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Op = Literal["=", "!=", "=~", "!~"]
_SYNTAX = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_:.\-]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|([^"\s][^"]*?))\s*$'
)


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        m = _SYNTAX.match(text)
        if not m:
            raise ValueError(
                f'bad matcher {text!r}: expected name="value", name!="value", name=~"regex" or name!~"regex"'
            )
        name, op, quoted, bare = m.groups()
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare.strip()
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(f"(?:{value})\\Z")
            except re.error as e:
                raise ValueError(f"bad regular expression in matcher {text!r}: {e}") from None
        return cls(name, op, value, regex)  # type: ignore[arg-type]

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        hit = self._regex.match(actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def matches_all(matchers: tuple[Matcher, ...], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
