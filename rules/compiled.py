"""Compile loaded rules into evaluators (one per rule kind) holding that rule's state per alarm key."""

from __future__ import annotations

from atalaia.rules.base import NEG_INF, CompiledRule, Scorer, fingerprint
from atalaia.rules.loader import LoadedRule
from atalaia.rules.silence import AbsentRule, StuckRule
from atalaia.rules.state import StateRule
from atalaia.rules.threshold import ThresholdRule

__all__ = [
    "NEG_INF",
    "AbsentRule",
    "CompiledRule",
    "Scorer",
    "StateRule",
    "StuckRule",
    "ThresholdRule",
    "compile_rule",
    "fingerprint",
]


def compile_rule(loaded: LoadedRule, position: int) -> CompiledRule:
    rule = loaded.rule
    if rule.conditions is not None:
        from atalaia.rules.compound import CompoundRule

        return CompoundRule(loaded, position)
    if rule.absent_for is not None:
        return AbsentRule(loaded, position)
    if rule.stuck_for is not None:
        return StuckRule(loaded, position)
    if any(level.is_state for level in rule.severities or []):
        return StateRule(loaded, position)
    return ThresholdRule(loaded, position)
