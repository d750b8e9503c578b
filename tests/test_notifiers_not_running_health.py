"""Delivery that cannot start is said on ``/health``: when the escalation targets lack the
settings they need, the worker logged one ERROR ("delivery is NOT running") and went on without
the delivery stage while ``/health`` answered ``ok`` (notifications waited on their topic, nobody
was paged). Now ``/health`` is ``degraded`` naming the unset settings and the waiting
notifications, and the demo (``atalaia up --demo``, ``make run``), which sets its targets'
settings to local stand-ins, still answers ``ok``."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from atalaia.notifiers.service import delivery_stage
from atalaia.streams.guard import HEALTH
from atalaia.streams.metrics import health_report
from atalaia.streams.settings import Settings

HOOK = """targets:
  hook: {channel: webhook, url: "${HOOK_URL}", secret: "${HOOK_SECRET}"}
routes: [{policy: p}]
policies:
  p: {steps: [{targets: [hook], wait: 10m}]}
"""


@pytest.fixture(autouse=True)
def clean_health():
    """The process's /health conditions start empty (a test run earlier in this process may have
    left one: a stage's, a guard's) and are put back as they were."""
    before = dict(HEALTH.problems)
    HEALTH.problems.clear()
    yield
    HEALTH.problems.clear()
    HEALTH.problems.update(before)


def _app() -> SimpleNamespace:
    return SimpleNamespace(service=lambda s: s)


def test_delivery_without_its_settings_degrades_health_naming_them(tmp_path: Path, monkeypatch, caplog):
    cfg = tmp_path / "esc.yaml"
    cfg.write_text(HOOK)
    monkeypatch.delenv("HOOK_URL", raising=False)
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    assert health_report({})[0]["status"] == "ok"
    with caplog.at_level(logging.ERROR, logger="atalaia.notifiers"):
        assert delivery_stage(Settings(data_dir=tmp_path, escalation_path=cfg), _app()) is None
    assert "delivery is NOT running" in caplog.text

    body, status = health_report({})
    assert body["status"] == "degraded" and status == 200, body  # the rest serves
    (problem,) = [p for p in body["problems"] if "delivery is NOT running" in p]
    assert "HOOK_SECRET, HOOK_URL" in problem and str(cfg) in problem
    assert "notifications wait on atalaia.notifications" in problem


def test_the_demo_sets_every_setting_its_targets_need_and_health_stays_ok(tmp_path: Path, monkeypatch):
    """`make run` = `atalaia up --demo`: its local receivers' addresses are what the shipped
    config/escalation.yaml reads, so delivery runs and /health says nothing about it."""
    from atalaia.streams.ingest.demo import start_demo_receivers

    for name, value in start_demo_receivers().items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path)  # the shipped config/escalation.yaml
    assert delivery_stage(settings, _app()) is not None
    assert health_report({})[0]["status"] == "ok"
