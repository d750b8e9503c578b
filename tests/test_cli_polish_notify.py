"""``atalaia notify``: step numbers read the same in every output, and ``notify check`` checks the
configured escalation file when given none (as the worker loads it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from atalaia.notifiers.log import SQLiteDeliveryLog
from atalaia.notifiers.model import DeliveryResult, IncidentSnapshot, Notification
from atalaia.streams.cli import main
from atalaia.streams.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch, tmp_path):
    for name in ("ATALAIA_CONFIG", "ATALAIA_ESCALATION_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # not the repository (its warnings/ shadows the stdlib's)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def atalaia(*args: str, env: dict | None = None):
    get_settings.cache_clear()
    return CliRunner().invoke(main, list(args), env={"LANG": "C.UTF-8", **(env or {})})


# --- 1. notify log numbers steps as the policy file, --json, the API and tail: from 0 ----------


def delivery_log(path: Path) -> None:
    """Step 0 (its first message and one repeat) and step 1 of one incident, all delivered."""
    snap = IncidentSnapshot(
        "inc-1", 1, "2026-01-05T10:00:00Z", "opened", "unacknowledged", True, "high", "Ribeira"
    )
    log = SQLiteDeliveryLog(path)
    t = datetime(2026, 1, 5, 10, 0, 5, tzinfo=UTC).timestamp()
    for i, (step, repeat, target) in enumerate(((0, 0, "ana-sms"), (0, 1, "ana-sms"), (1, 0, "chefe-sms"))):
        n = Notification("inc-1", "p", 0, step, repeat, target, "escalation", "2026-01-05T10:00:00Z", snap)
        log.enqueue([(n, "sms")], t + i)
        log.begin(n, "sms", 1, t + i)
        log.finish(n, 1, DeliveryResult("delivered"), "delivered", t + i, 50.0)
    log.close()


@pytest.mark.parametrize(("lang", "word"), [("en-GB", "step"), ("pt-PT", "escalão")])
def test_notify_log_numbers_steps_and_repeats_as_its_json_does(tmp_path, lang, word) -> None:
    db = tmp_path / "deliveries.sqlite"
    delivery_log(db)
    raw = atalaia("notify", "log", "--db", str(db), "--json")
    human = atalaia("notify", "log", "--db", str(db), "--lang", lang)
    assert raw.exit_code == 0 and human.exit_code == 0, raw.output + human.output
    rows = [orjson.loads(x) for x in raw.output.splitlines()]
    lines = human.output.splitlines()
    assert len(rows) == len(lines) == 3
    for row, line in zip(rows, lines, strict=True):
        m = re.search(rf"inc-1  {word} (\d+)(?: r(\d+))?\s+{row['target']}", line)
        assert m, line
        assert (int(m[1]), int(m[2] or 0)) == (row["step"], row["repeat"]), (line, row)
    # the first step of the policy file is step 0, as notifiers/README.md documents it
    first = next(x for x, r in zip(lines, rows, strict=True) if (r["step"], r["repeat"]) == (0, 0))
    assert f"{word} 0 " in first and f"{word} 1 " not in first


# --- 2. notify check without a file checks the configured escalation file -----------------------


GOOD = """\
targets:
  sala: {channel: webhook, url: "https://sala.example/hook", secret: "0123456789abcdef0123456789abcdef"}
routes:
  - match: {min_severity: high}
    policy: cheia
policies:
  cheia:
    steps:
      - {targets: [sala], wait: 5m}
"""


def test_notify_check_without_a_file_checks_the_configured_escalation_file(tmp_path) -> None:
    policy = tmp_path / "my-escalation.yaml"
    policy.write_text(GOOD)
    r = atalaia("notify", "check", env={"ATALAIA_ESCALATION_PATH": str(policy)})
    assert r.exit_code == 0, r.output
    assert f"{policy}: ok: 1 targets" in r.output and "route 0" in r.output
    # the same answer as naming the file
    assert r.output == atalaia("notify", "check", str(policy)).output


def test_notify_check_without_a_file_reports_the_configured_files_errors(tmp_path) -> None:
    policy = tmp_path / "escalation.yaml"
    policy.write_text(GOOD.replace("policy: cheia", "policy: nenhuma"))
    r = atalaia("notify", "check", env={"ATALAIA_ESCALATION_PATH": str(policy)})
    assert r.exit_code == 1
    assert re.search(rf"{re.escape(str(policy))}:\d+:\d+: .*nenhuma", r.output), r.output


def test_notify_check_without_a_file_and_no_configured_file_says_so(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "escalation.yaml"
    r = atalaia("notify", "check", env={"ATALAIA_ESCALATION_PATH": str(missing)})
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), "an error, not a crash"
    assert f"{missing}: the configured escalation file does not exist" in r.output
    assert "ATALAIA_ESCALATION_PATH" in r.output and "Traceback" not in r.output
    r = atalaia("notify", "check", env={"ATALAIA_ESCALATION_PATH": ""})
    assert r.exit_code == 1 and "no escalation file configured" in r.output


def test_simulate_on_a_file_of_alarm_transitions_says_what_is_wrong_not_a_traceback(tmp_path) -> None:
    """An easy mix-up (`rules replay --labels`'s output given to `notify simulate`): the first line
    has an `at`, so it got past the check and the engine raised KeyError: 'incident'."""
    alarms = tmp_path / "alarms.jsonl"
    alarms.write_bytes(
        orjson.dumps(
            {"at": "2024-03-01T00:00:00Z", "rule": "r", "key": "k", "state": "firing", "severity": "high"}
        )
        + b"\n"
    )
    cfg = Path(__file__).resolve().parents[1] / "config" / "escalation.yaml"
    r = atalaia("notify", "simulate", str(cfg), str(alarms))
    assert r.exit_code == 1, r.output
    assert isinstance(r.exception, SystemExit), r.exception
    assert f"{alarms}:1: not an incident event" in r.output and "incident" in r.output, r.output
