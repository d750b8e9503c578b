"""Live rule reload: the work a partition's engine does on the event loop when the rule files change.

    python -m benchmarks.reload_bench [--rules N] [--partitions P]

A rule base of N threshold rules (default 5 000) with a label and a summary template each, loaded
by P partition engines (default 4, the stage's cores in one worker). The reload thread has loaded
and validated the files (off the loop, in a child process: not timed here); what is timed is
``RuleEngine.reload`` on the loop, once per partition, for:

* **shared texts**: every rule's summary is the same template text (``{{ entity }} at {{ value }}``);
* **own texts**: every rule has its own summary text (its station's name in it), the worst case;
* **limits moved**: the same rules with every threshold moved (state carried over, open alarms
  evaluated again).

"before" compiles every rule's templates on the loop, in every partition, as the code did before
templates were shared; "now" is the product: the reload thread compiled the new rules' templates
once (``rules.stage._compile_templates``), and every partition's reload finds them. The figure to
watch is the longest single reload on the loop (a loop stall) and before ÷ now.
"""

from __future__ import annotations

import argparse
import gc
import time

from atalaia.rules import base
from atalaia.rules import templates as tpl
from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import LoadedRule, RuleSet
from atalaia.rules.schema import Rule
from atalaia.rules.stage import _compile_templates


def rule_set(n: int, own_texts: bool, above: float) -> RuleSet:
    rules = []
    for i in range(n):
        summary = (
            f"Estação s{i}: {{{{ entity }}}} at {{{{ value }}}} m"
            if own_texts
            else "{{ entity }} at {{ value }}"
        )
        body = {
            "id": f"r{i}",
            "select": {"type": "WaterObserved", "attribute": "height", "where": {"station": f"s{i}"}},
            "severities": [{"severity": "high", "above": above}, {"severity": "low", "below": 0.5}],
            "labels": {"team": "hydro-{{ labels.parish | default('porto') }}"},
            "annotations": {"summary": summary},
        }
        rules.append(LoadedRule(Rule.model_validate(body), "bench", "bench.yaml", 1 + i * 6))
    return RuleSet(rules)


def reloads(engines: list[RuleEngine], ruleset: RuleSet, before: bool) -> list[float]:
    times = []
    for engine in engines:
        gc.collect()
        if before:  # every rule compiled its own templates, on the loop, in every partition
            base.template = tpl.Template
        try:
            t = time.perf_counter()
            engine.reload(ruleset)
            times.append(time.perf_counter() - t)
        finally:
            base.template = tpl.template
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=5000)
    ap.add_argument("--partitions", type=int, default=4)
    a = ap.parse_args()
    print(f"{a.rules} rules, {a.partitions} partition engines; seconds of event loop per reload")
    print(f"{'case':<34}{'longest':>9}{'total':>9}")
    rows = {}
    for own in (False, True):
        base = rule_set(a.rules, own, 4.0)
        engines = [RuleEngine(base) for _ in range(a.partitions)]
        for mode in ("before", "now"):
            new = rule_set(
                a.rules, own, 4.0 + 0.1 * len(rows)
            )  # a fresh rule set (new objects), limits moved
            held = _compile_templates(new) if mode == "now" else []  # in the reload thread
            got = reloads(engines, new, before=mode == "before")
            del held
            name = f"{'own' if own else 'shared'} texts, limits moved, {mode}"
            rows[name] = got
            print(f"{name:<34}{max(got):>9.3f}{sum(got):>9.3f}")
    for texts in ("shared", "own"):
        old, now = rows[f"{texts} texts, limits moved, before"], rows[f"{texts} texts, limits moved, now"]
        print(
            f"{texts} texts: longest stall before ÷ now = {max(old) / max(now):.1f}×, "
            f"total {sum(old) / sum(now):.1f}×"
        )


if __name__ == "__main__":
    main()
