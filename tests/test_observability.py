"""Observability as configuration: the alert rules pass `promtool check rules` and their unit
tests, the Prometheus config is valid and scrapes every Atalaia process of the compose stack,
Grafana's provisioning files and the dashboard follow Grafana's schema and every PromQL query
(dashboard and alerts) is valid and names metrics that Atalaia exposes. Plus the metric hooks:
lag from the fetch high watermark, produce -> alarm latency, deliveries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
ALERTS = CONFIG / "alerts" / "atalaia.rules.yml"
ALERT_TESTS = CONFIG / "alerts" / "atalaia.rules.test.yml"
GRAFANA = CONFIG / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "atalaia.json"
METRIC = re.compile(r"\b(atalaia_[a-z0-9_]+|up)\b")
PANEL_TYPES = {"timeseries", "stat", "gauge", "bargauge", "table", "heatmap", "text", "row", "piechart"}


def yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text(encoding="utf-8"))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


def exposed_names() -> set[str]:
    """Every series name Atalaia's processes can expose (HELP/TYPE lines list families without
    samples too), with the _total/_bucket/_sum/_count names Prometheus stores."""
    from prometheus_client import REGISTRY

    import atalaia.notifiers.service
    import atalaia.streams.app
    import atalaia.streams.guard
    import atalaia.streams.ingest.auth
    import atalaia.streams.metrics
    import atalaia.streams.stage  # noqa: F401
    from atalaia.incidents.kpi import KpiSnapshot, PositionKpi, export_kpis

    kpis = CollectorRegistry()
    export_kpis(
        kpis,
        KpiSnapshot(
            at="2026-01-01T00:00:00Z",
            window_s=600,
            threshold=10,
            positions=(PositionKpi("all", 1, 2, False, 0.0, 3, 0.5),),
            chattering_alarms=0,
            chattering_flagged_total=0,
            auto_shelved_total=0,
            stale_alarms=0,
            open_incidents={"unacknowledged": 1},
            suppressed_alarms=0,
            stats={"alarm": 1},
            top_rules=(("r", 1),),
        ),
    )
    names = set()
    for registry in (REGISTRY, kpis):
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                if kind == "counter":  # the text format names the family x_total already
                    names.add(name if name.endswith("_total") else name + "_total")
                elif kind == "histogram":
                    names |= {name + s for s in ("_bucket", "_sum", "_count")}
                else:
                    names.add(name)
            elif line and not line.startswith("#"):
                names.add(line.split("{")[0].split(" ")[0])
    return names


# -- alert rules ------------------------------------------------------------------------------
def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [tool, "test", "rules", ALERT_TESTS.name], capture_output=True, text=True, cwd=ALERT_TESTS.parent
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


def test_alerts_cover_lag_dlq_delivery_failures_and_stage_down_and_name_real_metrics():
    rules = [r for g in yaml(ALERTS)["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "AtalaiaConsumerLagGrowing",
        "AtalaiaDeadLettersHigh",
        "AtalaiaDeliveryFailed",
        "AtalaiaStageDown",
        "AtalaiaProcessDown",
    } <= names
    exposed = exposed_names()
    for r in rules:
        unknown = set(METRIC.findall(r["expr"])) - exposed - {"up"}
        assert not unknown, f"{r['alert']} names metrics nobody exposes: {unknown}"
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
    tested = {
        a["alertname"]
        for t in yaml(ALERT_TESTS)["tests"]
        for a in t.get("alert_rule_test", [])
        if a["exp_alerts"]
    }
    assert names - tested <= {"AtalaiaDeliveryRetrying"}, (
        f"alerts without a firing unit test: {names - tested}"
    )


# -- Prometheus and Compose -------------------------------------------------------------------
def test_prometheus_config_is_valid_and_scrapes_every_atalaia_process():
    check = subprocess.run(
        [promtool(), "check", "config", str(CONFIG / "prometheus.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    prom = yaml(CONFIG / "prometheus.yml")
    compose = yaml(ROOT / "docker-compose.yml")["services"]
    targets = set()
    for job in prom["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            targets |= {(n, sd["port"]) for n in sd["names"]}
        for sc in job.get("static_configs", []):
            targets |= {tuple(t.rsplit(":", 1)) for t in sc["targets"]}
    targets = {(h, int(p)) for h, p in targets}
    for name in ("worker", "notifier"):  # workers without --http: their own metrics port
        env = compose[name]["environment"]
        assert env["ATALAIA_HTTP_HOST"] == "0.0.0.0"
        assert (name, int(env["ATALAIA_METRICS_PORT"])) in targets, f"{name} is not scraped"
    assert ("console", int(compose["console"]["environment"]["ATALAIA_HTTP_PORT"])) in targets
    # scaled workers: found by DNS (every replica), never one fixed address
    assert any(
        n == ["worker"]
        for j in prom["scrape_configs"]
        for n in [sd["names"] for sd in j.get("dns_sd_configs", [])]
    )
    volumes = compose["prometheus"]["volumes"]
    assert "./config/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    assert "./config/alerts:/etc/prometheus/alerts:ro" in volumes and prom["rule_files"] == [
        "alerts/*.rules.yml"
    ]


# -- Grafana ----------------------------------------------------------------------------------
def test_grafana_provisioning_loads_the_datasource_and_the_dashboard():
    compose = yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in compose["volumes"])
    assert mounts["./config/grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert sources["apiVersion"] == 1
    (ds,) = sources["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy" and ds["url"] == "http://prometheus:9090"
    providers = yaml(GRAFANA / "provisioning" / "dashboards" / "atalaia.yml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # the provider's path is where compose mounts the repository's dashboards
    assert mounts["./config/grafana/dashboards"] == provider["options"]["path"]
    assert (ROOT / "config" / "grafana" / "dashboards" / DASHBOARD.name).is_file()


def _panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_follows_grafanas_dashboard_model_and_queries_real_metrics():
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {
        d["uid"] for d in yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    }
    assert isinstance(dash["uid"], str) and 0 < len(dash["uid"]) <= 40 and dash["title"]
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert "id" not in dash or dash["id"] is None  # provisioning assigns ids
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exposed = exposed_names()
    exprs = []
    titles = " ".join(p["title"].lower() for p in panels)
    for word in ("stages up", "lag", "alarm", "delivery", "dead letters", "incidents", "flood"):
        assert word in titles, f"no panel about {word}"
    for p in panels:
        assert p["type"] in PANEL_TYPES, p["type"]
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy") and g["x"] + g["w"] <= 24 and g["h"] > 0
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in uids and p["datasource"]["type"] == "prometheus"
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] in uids
            names = set(METRIC.findall(t["expr"]))
            assert names, t["expr"]
            unknown = names - exposed - {"up"}
            assert not unknown, f"panel {p['title']!r} queries metrics nobody exposes: {unknown}"
            exprs.append(t["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m"))
    assert len(exprs) >= 10
    # every query is PromQL that Prometheus parses (as recording rules, through promtool)
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "dashboard.rules.yml"
    path.write_text(json.dumps(rules))
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# -- the hooks, without a broker --------------------------------------------------------------
@dataclass
class _Record:
    offset: int
    timestamp: int


@dataclass
class _TP:
    topic: str
    partition: int

    def __hash__(self) -> int:
        return hash((self.topic, self.partition))

    def __lt__(self, other: _TP) -> bool:
        return (self.topic, self.partition) < (other.topic, other.partition)


@dataclass
class _Consumer:
    ends: dict

    def assignment(self) -> set:
        return set(self.ends)

    def highwater(self, tp: _TP) -> int | None:
        return self.ends[tp]


@dataclass
class _Stage:
    consumer: _Consumer
    positions: dict
    failed: Any = None
    _consumer_started: bool = True
    cores: dict = field(default_factory=dict)
    processed: int = 0


def _sample(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


def test_lag_is_the_fetch_high_watermark_minus_the_position_and_stage_up_follows_failure():
    from atalaia.streams.metrics import watch_stages

    a, b, c = _TP("x.observations", 0), _TP("x.observations", 1), _TP("x.observations", 2)
    stage = _Stage(_Consumer({a: 110, b: 7, c: None}), {a: 25, b: 7, c: 3})
    watch_stages({"lagtest": stage})
    assert _sample("atalaia_consumer_lag", stage="lagtest", topic="x.observations", partition="0") == 85
    assert _sample("atalaia_consumer_lag", stage="lagtest", topic="x.observations", partition="1") == 0
    # no fetch yet: no lag reported (rather than a wrong one)
    assert _sample("atalaia_consumer_lag", stage="lagtest", topic="x.observations", partition="2") is None
    assert _sample("atalaia_consumer_position", stage="lagtest", topic="x.observations", partition="2") == 3
    assert _sample("atalaia_stage_up", stage="lagtest") == 1
    stage.failed = RuntimeError("boom")
    assert _sample("atalaia_stage_up", stage="lagtest") == 0


def test_a_full_detector_bank_is_seen_on_metrics_with_the_entities_it_refused():
    """The rules stage's detector banks (one per partition, the fused core's inside its rules
    core) are summed per stage on /metrics (their shared limit is not): an operator sees a bank at its limit refusing new
    entities, not only the log line."""
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from atalaia.detectors.bank import DetectorBank
    from atalaia.detectors.config import load_config
    from atalaia.streams.metrics import watch_stages

    config = load_config()
    t0 = datetime(2026, 1, 1)
    full = DetectorBank(config, max_entities=2, idle_after=None)
    for e in range(5):
        full.score_learn(config.default, f"urn:e{e}", "flow", t0 + timedelta(minutes=e), 1.0)
    other = DetectorBank(config, max_entities=10, idle_after=None)
    other.score_learn(config.default, "urn:x", "flow", t0, 1.0)
    cores = {0: SimpleNamespace(bank=full), 1: SimpleNamespace(rules=SimpleNamespace(bank=other))}
    stage = _Stage(_Consumer({}), {}, cores=cores)
    watch_stages({"banktest": stage})
    assert _sample("atalaia_detector_entities", stage="banktest") == 3
    # the limit is the worker's (its banks share it), not a sum over partitions
    assert _sample("atalaia_detector_entities_max", stage="banktest") == 10
    assert _sample("atalaia_detector_entities_refused", stage="banktest") == 3
    assert _sample("atalaia_detector_entities_reset", stage="banktest") == 0


def test_batch_hook_counts_alarms_by_rule_and_state_and_observes_produce_to_alarm_latency():
    from atalaia.streams.metrics import batch_done, ticked
    from atalaia.streams.stage import Out

    def alarm(state: str) -> Out:
        return Out("alarms", json.dumps({"rule": "hooktest", "state": state, "key": "k"}).encode())

    now_ms = int(time.time() * 1000)
    before = _sample("atalaia_alarm_latency_seconds_count", stage="hookstage") or 0
    batch_done(
        "hookstage",
        [
            ([_Record(0, now_ms - 2000), _Record(1, now_ms - 1000)], [alarm("pending"), alarm("firing")]),
            ([_Record(5, now_ms - 100)], [Out("observations", b"{}")]),
        ],
    )
    ticked("hookstage", [alarm("resolved"), Out("incidents", b'{"state": "unacknowledged"}')])
    assert _sample("atalaia_alarm_transitions_total", rule="hooktest", state="firing") == 1
    assert _sample("atalaia_alarm_transitions_total", rule="hooktest", state="resolved") == 1
    assert _sample("atalaia_incident_changes_total", state="unacknowledged") >= 1
    # two alarms, timed from the oldest record of their partition batch; timer outputs have none
    assert _sample("atalaia_alarm_latency_seconds_count", stage="hookstage") == before + 2
    assert 3.9 < _sample("atalaia_alarm_latency_seconds_sum", stage="hookstage") < 5
    assert _sample("atalaia_stage_record_age_seconds_count", stage="hookstage") == 2


def test_delivery_log_finish_counts_statuses_and_times_alarm_to_first_delivery():
    from types import SimpleNamespace

    from atalaia.streams.metrics import metered_log

    seen = []
    log = metered_log(SimpleNamespace(finish=lambda *a, **k: seen.append(a)))
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 30))
    n = SimpleNamespace(
        target="hook-sms", kind="escalation", step=0, repeat=0, snapshot=SimpleNamespace(at=at)
    )
    log.finish(n, 1, None, "waiting", 0.0, 1.0)
    log.finish(n, 2, None, "delivered", 0.0, 1.0)
    assert len(seen) == 2  # the log itself still records both
    assert _sample("atalaia_deliveries_total", target="hook-sms", status="waiting") == 1
    assert _sample("atalaia_deliveries_total", target="hook-sms", status="delivered") == 1
    assert _sample("atalaia_alarm_delivery_latency_seconds_count", target="hook-sms") == 1
    assert 29 <= _sample("atalaia_alarm_delivery_latency_seconds_sum", target="hook-sms") < 40


def test_stage_outputs_carry_their_metric_labels_so_none_is_decoded_to_be_counted():
    """The cores attach the labels of the typed record they encode (``Out.counted``); they are
    the ones the record's JSON holds."""
    from types import SimpleNamespace

    from atalaia.incidents.config import IncidentConfig
    from atalaia.incidents.stage import IncidentsCore
    from atalaia.rules.alarm import AlarmTransition
    from atalaia.rules.stage import RulesCore

    t = AlarmTransition(at="2026-01-28T10:00:00Z", rule="r1", key="k", state="firing", severity="high")
    out = RulesCore._out(t)
    assert out.counted == ("r1", "firing") == tuple(json.loads(out.value)[f] for f in ("rule", "state"))
    alarm = SimpleNamespace(value=out.value, topic="t.alarms", key=out.key, headers=[], timestamp=None)
    incidents = [
        o for o in IncidentsCore(IncidentConfig()).process([alarm], time.time()) if o.topic == "incidents"
    ]
    assert incidents
    for o in incidents:
        assert o.counted == (json.loads(o.value)["state"],)


def test_dead_letters_are_counted_by_source_and_first_code_or_reason():
    from atalaia.streams.ingest.dlq import dlq_labels, to_dlq_record
    from atalaia.streams.ingest.result import Rejection

    assert dlq_labels(to_dlq_record(b"x", "rules", "bad time: 2026-13-01")) == ("rules", "bad time")
    assert dlq_labels(to_dlq_record(b"x", "http:porto", ["a: b"])) == ("http", "a")
    rej = Rejection("malformed JSON at line 1", scope="payload", code="malformed-json")
    assert dlq_labels(to_dlq_record(b"{", "http", [str(rej)], rejections=[rej])) == ("http", "malformed-json")
