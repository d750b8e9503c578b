"""Escalation routes scoped to tenants: the same entity in two tenants escalates to each tenant's
own policy and targets, and the notifications carry the tenant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from atalaia.notifiers.config import ConfigError, load_config_text
from atalaia.notifiers.engine import EscalationEngine, EscalationState
from atalaia.notifiers.model import Notification
from atalaia.notifiers.testing import incident_event
from atalaia.streams.clock import format_time

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

CONFIG = """
targets:
  porto-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000001"}
  gaia-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000002"}
  regional-sms: {channel: sms, url: "smseagle://t@127.0.0.1:9/+351912000003"}
routes:
  - {match: {tenant: porto}, policy: porto}
  - {match: {tenant: [gaia, matosinhos], min_severity: high}, policy: gaia}
  - {match: {min_severity: critical}, policy: regional}
policies:
  porto: {steps: [{targets: [porto-sms], wait: 5m}]}
  gaia: {steps: [{targets: [gaia-sms], wait: 5m}]}
  regional: {steps: [{targets: [regional-sms], wait: 5m}]}
"""


def opened(tenant: str | None, severity: str = "high") -> dict:
    corr = {"parish": "Bonfim", **({"tenant": tenant} if tenant else {})}
    inc = f"inc-{tenant or 'none'}"
    return incident_event(
        incident=inc,
        at=format_time(T0),
        severity=severity,
        correlation=corr,
        **({"tenant": tenant} if tenant else {}),
    )


def notify(engine: EscalationEngine, event: dict) -> list[Notification]:
    return engine.step(EscalationState(), event, T0)[1]


def test_each_tenant_escalates_to_its_own_policy_and_the_notifications_say_which():
    engine = EscalationEngine(load_config_text(CONFIG, "escalation.yaml"))
    porto, gaia = notify(engine, opened("porto")), notify(engine, opened("gaia"))
    assert [(n.policy, n.target) for n in porto] == [("porto", "porto-sms")]
    assert [(n.policy, n.target) for n in gaia] == [("gaia", "gaia-sms")]
    assert porto[0].snapshot.tenant == "porto" and gaia[0].snapshot.tenant == "gaia"
    assert Notification.from_dict(porto[0].to_dict()).snapshot.tenant == "porto"  # on the topic too
    # gaia's route needs high: a medium one in gaia matches no route; a tenant-less critical
    # incident takes the unscoped route only
    assert notify(engine, opened("gaia", "medium")) == []
    assert [n.policy for n in notify(engine, opened(None, "critical"))] == ["regional"]
    assert [n.policy for n in notify(engine, opened("braga", "critical"))] == ["regional"]


def test_a_route_tenant_must_be_text():
    with pytest.raises(ConfigError):
        load_config_text(CONFIG.replace("tenant: porto", "tenant: {a: 1}"), "escalation.yaml")
