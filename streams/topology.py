"""The pipeline's topology, declared once: which stage reads and writes which topic, in which
consumer group, with which core, how often it ticks, and in which *process group* ``atalaia up``
runs it. ``streams.app`` builds the stages from :data:`STAGES` (each core lives in its package:
``streams.ingest.stage``, ``rules.stage``, ``rules.fused``, ``incidents.stage``,
``notifiers.stage``, ``warnings.stage``; the delivery stage's notifier in
``notifiers.service``), ``atalaia worker --stages`` and ``atalaia up`` choose from it, and the
README's diagram and table are :func:`flowchart` and :func:`diagram` (``python -m
atalaia.streams.topology`` prints both).

Process groups (``atalaia up`` starts one OS process per group, so they use both cores and never
share an event loop):

* ``alarms`` — the alarm path: HTTP/MQTT ingest, ingest + rules + detectors (fused), the
  label-keyed rules. Nothing else runs on its loop, so a storm of incident, projection or
  delivery work cannot delay an alarm.
* ``ops`` — incidents, projection, escalation (and warning notices), delivery, population
  warnings, and the console
  (API, live board, CAP feed; the alarms process forwards those HTTP paths to it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from atalaia.streams.stage import CoreFactory

log = logging.getLogger(__name__)

# Who writes topics besides the stages (the diagram): the HTTP/MQTT ingest endpoints, the console.
WRITERS = (("HTTP / MQTT", "events"), ("console", "commands"))

# The stage names users choose with ``atalaia worker --stages`` (in pipeline order).
USER_STAGES = ("ingest", "rules", "incidents", "projection", "escalation", "delivery", "warnings")
PROCESS_GROUPS = ("alarms", "ops")
BACKGROUND_GROUP = "ops"  # runs at a lower CPU priority than the alarm path (Settings.ops_nice)
#: the configuration parts (``atalaia check``'s) the processes of ``atalaia up`` do not load:
#: the alarm path (ingest and rules, the public port's ingest endpoints) reads no incidents,
#: escalation, warnings or console users file; the ops process (and the console it serves) no
#: rules, detectors or ingest tokens file. A process of ``up`` restarted while only such a part
#: does not load starts on the files, not on the last good configuration (``streams.lastgood``),
#: so fixing that file never restarts it (the alarm path's would refuse events meanwhile)
NOT_LOADED = {
    "alarms": frozenset({"incidents", "escalation", "warnings", "console users"}),
    "ops": frozenset({"rules", "detectors", "ingest tokens"}),
}


@dataclass(frozen=True)
class StageSpec:
    """One batched stage (``streams.stage.BatchStage``)."""

    name: str  # also its consumer group suffix and checkpoint directory (unique in a plan)
    sources: tuple[str, ...]  # topic suffixes it consumes (co-partitioned)
    outputs: tuple[str, ...]  # topic suffixes it produces (documentation and the diagram)
    process: str  # the process group `atalaia up` runs it in
    cores: Callable[[Any, Any], CoreFactory | None]  # (settings, app) -> core factory; None: skip
    needs: frozenset[str]  # the user stage names that select it
    tick_s: float | None = None
    fused: bool = False  # stands for several user stages at once (ingest + rules)
    sinks: tuple[str, ...] = ()  # what it writes outside Kafka, off the loop (the diagram)
    doc: str = ""


# -- core factories: built once per worker (configuration loaded here) ------------------------
def _ingest(settings: Any, app: Any) -> CoreFactory:
    from atalaia.streams.ingest.stage import IngestCore

    return lambda p: IngestCore(settings)


def _rule_files(settings: Any, app: Any) -> tuple[Any, Any]:
    """One rule set (reloaded on change) and one detector configuration per worker."""
    if getattr(app, "atalaia_rule_files", None) is None:
        from atalaia.detectors.config import load_config as load_detectors
        from atalaia.rules.stage import RuleFiles
        from atalaia.streams.lastgood import take_isolated

        detectors = load_detectors(settings.detectors_path)
        # a rule naming a detector this configuration lacks is refused when the rules load
        files = RuleFiles(settings.rules_paths, detectors=detectors.known)
        files.on_reload = partial(take_isolated, settings, detectors.known)  # kept as the last good rules
        app.atalaia_rule_files = (files, detectors)
    return app.atalaia_rule_files


def _rules(settings: Any, app: Any) -> CoreFactory:
    from atalaia.rules.stage import RulesCore

    files, detectors = _rule_files(settings, app)
    return lambda p: RulesCore(files, detectors, settings)


def _rules_shared(settings: Any, app: Any) -> CoreFactory:
    from atalaia.rules.stage import RulesCore, label_keyed

    files, detectors = _rule_files(settings, app)
    return lambda p: RulesCore(files, detectors, settings, part=label_keyed, forward=False)


def _ingest_rules(settings: Any, app: Any) -> CoreFactory:
    from atalaia.rules.fused import IngestRulesCore

    files, detectors = _rule_files(settings, app)
    return lambda p: IngestRulesCore(p, settings, files, detectors)


def _incidents(settings: Any, app: Any) -> CoreFactory:
    from atalaia.incidents.config import load_config
    from atalaia.incidents.stage import IncidentsCore

    config = load_config(settings.incidents_path)
    return lambda p: IncidentsCore(config)


def _projection(settings: Any, app: Any) -> CoreFactory:
    from atalaia.incidents.stage import ProjectionCore, projection_sink

    app.atalaia_projection = projection_sink(settings)  # the console of this process reads it too
    return lambda p: ProjectionCore(app.atalaia_projection)


def _escalation_config(settings: Any, app: Any) -> Any:
    """The escalation file, loaded once per worker (escalation and warning-notices read it)."""
    if getattr(app, "atalaia_escalation_config", None) is None:
        from atalaia.notifiers.config import load_config

        app.atalaia_escalation_config = load_config(settings.escalation_path)
    return app.atalaia_escalation_config


def _escalation(settings: Any, app: Any) -> CoreFactory:
    from atalaia.notifiers.stage import EscalationCore
    from atalaia.warnings.config import load_config as load_warnings_config

    config = _escalation_config(settings, app)
    warnings_settings = load_warnings_config(
        settings.warnings_path, settings.public_url()
    )  # propose_warning drafts
    proposes = any(s.propose_warning for p in config.policies.values() for s in p.steps)
    # the warning catalogue (levels, areas: files) is read here, not on the loop at the first draft
    catalogue = warnings_settings.catalogue() if proposes else None
    return lambda p: EscalationCore(config, warnings_config=warnings_settings, catalogue=catalogue)


def _warning_notices(settings: Any, app: Any) -> CoreFactory | None:
    """Issued warnings → the escalation channels, when the escalation file has ``warnings:``."""
    from atalaia.notifiers.stage import WarningNoticesCore

    config = _escalation_config(settings, app)
    if config.warnings is None:
        return None
    return lambda p: WarningNoticesCore(config)


def _warnings(settings: Any, app: Any) -> CoreFactory:
    from atalaia.warnings.cap import schema
    from atalaia.warnings.config import load_config
    from atalaia.warnings.stage import WarningsCore

    app.atalaia_warnings_config = config = load_config(settings.warnings_path, settings.public_url())
    config.catalogue()  # read now (it is cached), not on the loop when a partition's core is made
    schema()  # the CAP XSD parsed now (cached), not on the loop when the first warning is issued
    return lambda p: WarningsCore(config)


def _delivery(settings: Any, app: Any) -> CoreFactory | None:
    from atalaia.notifiers.service import delivery_stage  # the notifier, its log, its service

    return delivery_stage(settings, app)


def _spec(name, sources, outputs, process, cores, needs=None, **kw) -> StageSpec:
    return StageSpec(name, sources, outputs, process, cores, frozenset(needs or (name,)), **kw)


STAGES: tuple[StageSpec, ...] = (
    _spec(
        "rules",  # fused: the rules stage's name, state directory and consumer group
        ("events", "observations"),
        ("observations", "alarms", "shared-observations", "dlq"),
        "alarms",
        _ingest_rules,
        needs=("ingest", "rules"),
        tick_s=1.0,
        fused=True,
        doc="ingest and rules fused: normalise, then evaluate entity-keyed rules and detectors on "
        "the fresh observations",
    ),
    _spec("ingest", ("events",), ("observations", "dlq"), "alarms", _ingest, doc="validate, normalise"),
    _spec(
        "rules",
        ("observations",),
        ("alarms", "shared-observations", "dlq"),
        "alarms",
        _rules,
        tick_s=1.0,
        doc="entity-keyed rules and detectors",
    ),
    _spec(
        "rules-shared",
        ("shared-observations",),
        ("alarms", "dlq"),
        "alarms",
        _rules_shared,
        needs=("rules",),
        tick_s=1.0,
        doc="label-keyed rules (one alarm per parish ...), in event-time order",
    ),
    _spec(
        "incidents",
        ("alarms", "commands"),
        ("incidents", "replies", "dlq"),
        "ops",
        _incidents,
        tick_s=1.0,
        doc="dedup, correlate, ISA-18.2 lifecycle, operator commands",
    ),
    _spec(
        "projection",
        ("incidents",),
        ("dlq",),
        "ops",
        _projection,
        sinks=("SQL (console)",),
        doc="the console's SQL projection",
    ),
    _spec(
        "escalation",
        ("incidents",),
        ("notifications", "commands", "dlq"),
        "ops",
        _escalation,
        tick_s=1.0,
        doc="escalation policies: steps, waits, repeats; propose_warning steps draft a warning",
    ),
    _spec(
        "warning-notices",
        ("warnings",),
        ("notifications", "dlq"),
        "ops",
        _warning_notices,
        needs=("escalation",),
        doc="issued warnings to the escalation file's `warnings:` targets (when it has that section)",
    ),
    _spec(
        "warnings",
        ("commands",),
        ("warnings", "dlq"),  # its command replies are records of atalaia.warnings (kind reply)
        "ops",
        _warnings,
        tick_s=1.0,
        doc="population warnings (CAP 1.2), approval; command replies on `warnings`",
    ),
    _spec(
        "delivery",
        ("notifications",),
        ("dlq",),
        "ops",
        _delivery,
        sinks=("people",),
        doc="SMS, email, PGU, webhooks",
    ),
)


def plan(chosen: tuple[str, ...] | frozenset[str], fuse: bool = True) -> list[StageSpec]:
    """The stages a worker runs for the user stage names ``chosen``: ingest and rules together
    run fused (one stage) unless ``fuse`` is off."""
    chosen = frozenset(chosen)
    unknown = chosen - set(USER_STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; known: {', '.join(USER_STAGES)}")
    out = [s for s in STAGES if s.needs <= chosen and (fuse or not s.fused)]
    replaced = set().union(*(s.needs for s in out if s.fused))  # ingest and rules: the fused one
    return [s for s in out if s.fused or s.name not in replaced]


def process_groups(chosen: tuple[str, ...] = USER_STAGES) -> dict[str, tuple[str, ...]]:
    """The user stage names of each process group, in pipeline order (for ``atalaia up``)."""
    groups: dict[str, list[str]] = {g: [] for g in PROCESS_GROUPS}
    for s in STAGES:
        for name in sorted(s.needs, key=USER_STAGES.index):
            if name in chosen and name not in groups[s.process]:
                groups[s.process].append(name)
    return {g: tuple(sorted(v, key=USER_STAGES.index)) for g, v in groups.items() if v}


def diagram(fuse: bool = True) -> str:
    """The topology as a Markdown table (the README's)."""
    rows = [
        "| stage | reads | writes | process | what |",
        "|---|---|---|---|---|",
    ]
    for s in plan(USER_STAGES, fuse):
        rows.append(
            f"| `{s.name}` | {', '.join(s.sources)} | {', '.join(s.outputs)} | {s.process} | {s.doc} |"
        )
    return "\n".join(rows)


def flowchart(fuse: bool = True) -> str:
    """The topology as a Mermaid flowchart (the README's diagram): topics are rounded, stages
    are boxes, the DLQ arrows dotted; what writes topics from outside (:data:`WRITERS`) and
    what stages write outside Kafka (their ``sinks``) at the edges."""
    stages = plan(USER_STAGES, fuse)

    def tid(t: str) -> str:
        return "t_" + t.replace("-", "_")

    def sid(s: StageSpec) -> str:
        return "s_" + s.name.replace("-", "_")

    topics: list[str] = []
    for t in [t for _, t in WRITERS] + [t for s in stages for t in (*s.sources, *s.outputs)]:
        if t not in topics:
            topics.append(t)
    lines = ["```mermaid", "flowchart LR"]
    for i, (who, _) in enumerate(WRITERS):
        lines.append(f'  w{i}["{who}"]')
    lines += [f'  {tid(t)}(["{t}"])' for t in topics]
    for s in stages:
        label = f"{s.name}: {' + '.join(sorted(s.needs, key=USER_STAGES.index))}" if s.fused else s.name
        lines.append(f'  {sid(s)}["{label}"]')
    sinks = [x for s in stages for x in s.sinks]
    lines += [f'  x{i}["{x}"]' for i, x in enumerate(sinks)]
    lines += [f"  w{i} --> {tid(t)}" for i, (_, t) in enumerate(WRITERS)]
    for s in stages:
        lines += [f"  {tid(t)} --> {sid(s)}" for t in s.sources]
        lines += [f"  {sid(s)} {'-.->' if t == 'dlq' else '-->'} {tid(t)}" for t in s.outputs]
        lines += [f"  {sid(s)} --> x{sinks.index(x)}" for x in s.sinks]
    lines.append("```")
    return "\n".join(lines)


if __name__ == "__main__":
    print(flowchart())
    print()
    print(diagram())
