"""`atalaia up`'s supervisor: a process that dies during its first start-up stops everything (a
configuration that does not load: exit 1, not a crash loop); one that dies after it has run is
restarted with a growing delay and never takes the others down. Before, a death during a
*restart's* start-up stopped everything: an escalation file edited into one that does not load
(read only when the ops process starts) followed by any crash of the ops process stopped the alarm
path and ingest too. A restart now waits until the configuration loads again."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atalaia.streams import processes
from atalaia.streams.processes import Child, Supervisor


class Script(Child):
    """A child running a small Python program instead of `atalaia worker`."""

    def __init__(self, name: str, code: str) -> None:
        super().__init__(name, [], {})
        self.code, self.starts = code, 0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.code])
        self.started = time.monotonic()
        self.starts += 1


FOREVER = "import time; time.sleep(60)"
DIES_SOON = "import time; time.sleep(0.4); raise SystemExit(3)"


def supervise(sup: Supervisor, for_s: float) -> tuple[int, float]:
    threading.Timer(for_s, lambda: setattr(sup, "stopping", True)).start()
    t0 = time.monotonic()
    return sup.run(), time.monotonic() - t0


def test_a_death_during_the_first_start_up_stops_everything(monkeypatch) -> None:
    monkeypatch.setattr(processes, "STARTUP_S", 5.0)
    alarms, ops = Script("alarms", FOREVER), Script("ops", "raise SystemExit(1)")
    status, took = supervise(Supervisor([alarms, ops]), 20)
    assert status == 1 and took < 10 and not alarms.alive() and ops.starts == 1


def test_a_process_that_ran_is_restarted_once_the_configuration_loads_and_never_stops_the_others(
    monkeypatch, caplog
) -> None:
    monkeypatch.setattr(processes, "STARTUP_S", 0.2)  # DIES_SOON runs past it, then dies
    monkeypatch.setattr(processes, "RESTART_MAX_DELAY_S", 0.3)
    answers = iter([["escalation"], ["escalation"]])  # the file does not load twice, then it does
    checks: list[float] = []

    def precheck() -> list[str]:
        checks.append(time.monotonic())
        return next(answers, [])

    alarms, ops = Script("alarms", FOREVER), Script("ops", DIES_SOON)
    status, _ = supervise(Supervisor([alarms, ops], precheck=precheck), 6)
    assert status == 0, "stopped by the operator, not by the deaths"
    assert alarms.starts == 1, "the alarm path was never stopped nor restarted"
    assert ops.starts >= 3 and len(checks) >= ops.starts - 1 + 2
    refused = [r.getMessage() for r in caplog.records if "not restarted" in r.getMessage()]
    assert len(refused) == 2 and "escalation" in refused[0], refused
    assert not any("stopping everything" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("failures", [1, 3, 7, 30])
def test_the_delay_between_restarts_grows_to_a_minute(failures: int) -> None:
    c = Child("ops", [], {})
    c.failures = failures - 1
    delay = Supervisor([])._later(c, 0.0)
    assert delay == min(60.0, 2.0 ** (failures - 1)) and c.retry_at == delay


def test_when_the_broker_dies_every_process_is_killed_at_once_and_the_caller_told(caplog) -> None:
    """Without its broker a process cannot stop gracefully (it waits on it for the whole stop
    timeout, 30 s and more): the supervisor kills them all at once and returns BROKER_LOST, so
    `atalaia up` starts them again on a new broker."""
    dead_at = time.monotonic() + 1.0

    def watch() -> str | None:
        return "the embedded broker died (signal SIGKILL)" if time.monotonic() >= dead_at else None

    ignores_term = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    alarms, ops = Script("alarms", ignores_term), Script("ops", ignores_term)
    status, took = supervise(Supervisor([alarms, ops], watch=watch, stop_timeout=30), 20)
    assert status == processes.BROKER_LOST and took < 5, (status, took)
    assert not alarms.alive() and not ops.alive()
    assert alarms.proc.returncode == ops.proc.returncode == -9
    (line,) = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert line.startswith("the embedded broker died (signal SIGKILL): stopping every process at once")


class Keeper:
    """``lastgood.Keeper`` as the supervisor sees it: the escalation file does not load until
    ``fixed``; its snapshot is there."""

    def __init__(self) -> None:
        self.fixed, self.taken, self.stamps = False, 0, 0

    def problems(self, quiet: bool = False) -> dict[str, list[str]]:
        return {} if self.fixed else {"escalation": ["/etc/esc.yaml:6:3: expected ','"]}

    def take(self) -> list[str]:
        self.taken += 1
        return ["escalation"]

    def fallback(self, problems: dict[str, list[str]]):
        from atalaia.streams.lastgood import Fallback

        return Fallback({"ATALAIA_ESCALATION_PATH": "/data/config-last-good/escalation/esc.yaml"}, problems)

    def stamp(self) -> tuple:
        return (self.fixed,)


class EnvScript(Script):
    """Writes the escalation file it was started on to ``out``, one line per start."""

    def __init__(self, name: str, out: Path, dies: bool) -> None:
        code = (
            "import os, sys, time\n"
            f"open({str(out)!r}, 'a').write(os.environ.get('ATALAIA_ESCALATION_PATH', 'files') + '\\n')\n"
            "time.sleep(0.4)\n"
            f"sys.exit(3) if {dies} and os.environ.get('ATALAIA_CONFIG_LAST_GOOD') is None else time.sleep(60)\n"
        )
        super().__init__(name, code)

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.code], env={**os.environ, **self.extra_env})
        self.started = time.monotonic()
        self.starts += 1


def test_a_process_whose_files_do_not_load_is_restarted_on_the_last_good_ones_then_on_the_files(
    monkeypatch, caplog, tmp_path
) -> None:
    """Before, it was not restarted until the file was fixed (nobody paged meanwhile)."""
    monkeypatch.setattr(processes, "STARTUP_S", 0.2)
    monkeypatch.setattr(processes, "LOOK_S", 0.2)
    out = tmp_path / "starts"
    keeper = Keeper()
    alarms, ops = Script("alarms", FOREVER), EnvScript("ops", out, dies=True)
    sup = Supervisor([alarms, ops], keeper=keeper)
    threading.Timer(3, lambda: setattr(keeper, "fixed", True)).start()
    status, _ = supervise(sup, 7)
    assert status == 0 and alarms.starts == 1
    # its first start on the files, its restart on the snapshot, its restart on the files fixed
    starts = out.read_text().split()
    assert starts[:3] == ["files", "/data/config-last-good/escalation/esc.yaml", "files"], starts
    said = [r for r in caplog.records if "LAST CONFIGURATION THAT LOADED" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR"
    assert "/etc/esc.yaml:6:3: expected ','" in said[0].getMessage()
    assert any("the configuration loads again (escalation)" in r.getMessage() for r in caplog.records)
    assert keeper.taken >= 2  # at its start (ready) and after the restart on the files


def test_processes_started_again_on_a_new_broker_are_restarts(monkeypatch, tmp_path) -> None:
    """After the embedded broker died, a process whose files do not load is started on the last
    good ones (before: it died during its start-up and stopped everything)."""
    monkeypatch.setattr(processes, "STARTUP_S", 5.0)
    out = tmp_path / "starts"
    ops = EnvScript("ops", out, dies=True)
    status, _ = supervise(Supervisor([ops], keeper=Keeper(), resumed=True), 2)
    assert status == 0 and ops.starts == 1
    assert out.read_text().split() == ["/data/config-last-good/escalation/esc.yaml"]


def test_a_process_is_not_put_on_the_last_good_configuration_for_a_part_it_does_not_load(
    monkeypatch, tmp_path
) -> None:
    """The embedded broker died while the escalation file does not load: every process of up is
    started again. The alarm path does not load that file: it starts on the files, and fixing the
    file does not restart it. Before, it was started on the snapshot as well and, once the file
    was fixed, stopped and started again: its public port refused events for 8 to 10 s."""
    monkeypatch.setattr(processes, "STARTUP_S", 0.2)
    monkeypatch.setattr(processes, "LOOK_S", 0.2)
    keeper = Keeper()
    alarms_out, ops_out = tmp_path / "alarms", tmp_path / "ops"
    alarms, ops = EnvScript("alarms", alarms_out, dies=False), EnvScript("ops", ops_out, dies=False)
    alarms.ignores = frozenset({"incidents", "escalation", "warnings", "console users"})
    threading.Timer(2, lambda: setattr(keeper, "fixed", True)).start()
    status, _ = supervise(Supervisor([alarms, ops], keeper=keeper, resumed=True), 5)
    assert status == 0
    assert alarms_out.read_text().split() == ["files"] and alarms.starts == 1
    assert ops_out.read_text().split() == ["/data/config-last-good/escalation/esc.yaml", "files"]


def test_a_stop_asked_for_as_the_broker_dies_stops(caplog) -> None:
    """Ctrl-C reaches `atalaia up` while its embedded broker dies: the processes are killed and
    the run ends with 0 (stopped). Before, the broker's death was looked at after the signal and
    returned BROKER_LOST: `atalaia up` started a new broker and every process again, and went on
    running (live: still serving 2 minutes after the SIGINT)."""
    import os
    import signal

    def watch() -> str | None:
        os.kill(os.getpid(), signal.SIGINT)  # the signal arrives as the broker is found dead
        return "the embedded broker died (signal SIGKILL)"

    alarms, ops = Script("alarms", FOREVER), Script("ops", FOREVER)
    status, _ = supervise(Supervisor([alarms, ops], watch=watch, stop_timeout=5), 20)
    assert status == 0
    assert not alarms.alive() and not ops.alive()
