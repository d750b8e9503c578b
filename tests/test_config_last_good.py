"""The last configuration that loaded (``streams.lastgood``): snapshots keep the meaning of the
paths inside a configuration (the warnings file's levels and areas relative to it, or absolute;
rule directories and their files' names, which are the rules' groups), a snapshot is checked as
copied (an edit after the check never makes a broken one), a FIFO or a huge file is never read
into one, credentials never come back from one, and a start on it is said by ``/health``."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from atalaia.streams import lastgood
from atalaia.streams.guard import CONFIG_LAST_GOOD, BrokerHealth, config_last_good
from atalaia.streams.settings import Settings

CONFIG = Path(__file__).resolve().parents[1] / "config"
RULE = """
rules:
  - id: {id}
    select: {{type: WaterObserved, attribute: height}}
    severities: [{{severity: high, above: {above}}}]
"""


def settings_in(tmp: Path, **paths: object) -> Settings:
    return Settings(
        data_dir=tmp / "data",
        rules_paths=paths.pop("rules_paths", [CONFIG / "rules"]),
        detectors_path=paths.pop("detectors_path", CONFIG / "detectors.yaml"),
        escalation_path=paths.pop("escalation_path", CONFIG / "escalation.yaml"),
        incidents_path=paths.pop("incidents_path", CONFIG / "incidents.yaml"),
        warnings_path=paths.pop("warnings_path", CONFIG / "warnings.yaml"),
        **paths,
    )


def from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process started with ``env`` reads."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return Settings()


# where the warnings file names its levels and areas files: beside it, below it, above it (../),
# or by an absolute path
PLACES = st.sampled_from(["same", "below", "above", "absolute"])


def _place(tmp: Path, conf: Path, where: str, name: str) -> tuple[Path, str]:
    if where == "same":
        return conf / name, name
    if where == "below":
        return conf / "sub" / "deeper" / name, f"sub/deeper/{name}"
    if where == "above":
        return conf.parent / "shared" / name, f"../shared/{name}"
    target = tmp / "elsewhere" / name
    return target, str(target)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(levels_at=PLACES, areas_at=st.lists(PLACES, min_size=1, max_size=3))
def test_the_warnings_snapshot_resolves_levels_and_areas_as_the_original_did(
    levels_at: str, areas_at: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from atalaia.warnings.config import load_config

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        conf = tmp / "etc" / "conf"
        conf.mkdir(parents=True)
        levels, levels_ref = _place(tmp, conf, levels_at, "levels.yaml")
        levels.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CONFIG / "levels.yaml", levels)
        refs, originals = [], []
        for i, where in enumerate(areas_at):
            area, ref = _place(tmp, conf, where, f"area{i}.geojson")
            area.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CONFIG / "geo" / "porto.geojson", area)
            refs.append(ref)
            originals.append(area)
        warnings = conf / "warnings.yaml"
        warnings.write_text(
            f"# mine\nlevels: {levels_ref}\nareas: {json.dumps(refs)}\nregion: [36.8, 42.2, -9.6, -6.1]\n"
        )
        s = settings_in(tmp, warnings_path=warnings)
        before = load_config(warnings)
        areas = before.catalogue().areas

        assert lastgood.take(s, ["warnings"]) == ["warnings"]
        # the originals change: the warnings file breaks, its levels and areas go
        warnings.write_text("levels: [\n")
        for p in [levels, *originals]:
            p.unlink()
        fb = lastgood.fallback(s, {"warnings": [f"{warnings}:2:1: broken"]}, check=lambda _s: {})
        assert fb is not None
        with monkeypatch.context() as m:
            snap = load_config(from_env(fb.env, m).warnings_path)
        root = (tmp / "data" / lastgood.ROOT).resolve()
        assert Path(snap.levels).resolve().is_relative_to(root)
        assert Path(snap.levels).read_bytes() == (CONFIG / "levels.yaml").read_bytes()
        assert len(snap.areas) == len(before.areas)
        for a in snap.areas:
            assert Path(a).resolve().is_relative_to(root)
            assert Path(a).read_bytes() == (CONFIG / "geo" / "porto.geojson").read_bytes()
        assert snap.catalogue().areas == areas


def test_rule_directories_and_files_keep_their_names_and_groups(tmp_path, monkeypatch) -> None:
    from atalaia.rules.loader import load_rules

    one, two = tmp_path / "one", tmp_path / "two"
    for i, d in enumerate((one, two)):
        d.mkdir()
        (d / "hydro.yaml").write_text(RULE.format(id=f"level-{i}", above=3))  # same name, two dirs
        (d / ".hidden.yaml").write_text("not: [a rule")  # never read by the loader: not copied
    single = tmp_path / "air.yml"
    single.write_text(RULE.format(id="air", above=50))
    s = settings_in(tmp_path, rules_paths=[one, two, single])
    original = [(r.rule.id, r.group, Path(r.file).name) for r in load_rules(s.rules_paths).rules]

    assert lastgood.take(s, ["rules"]) == ["rules"]
    (one / "hydro.yaml").write_text("rules: [oops\n")
    shutil.rmtree(two)
    fb = lastgood.fallback(s, {"rules": ["broken"]}, check=lambda _s: {})
    snap = from_env(fb.env, monkeypatch).rules_paths
    assert [(r.rule.id, r.group, Path(r.file).name) for r in load_rules(snap).rules] == original
    assert not any(p.name.startswith(".") for d in snap if d.is_dir() for p in d.iterdir())


def test_an_edit_between_the_check_and_the_copy_keeps_the_previous_snapshot(tmp_path) -> None:
    esc = tmp_path / "esc.yaml"
    shutil.copyfile(CONFIG / "escalation.yaml", esc)
    s = settings_in(tmp_path, escalation_path=esc)
    assert lastgood.take(s, ["escalation"]) == ["escalation"]
    kept = lastgood.manifest(s, "escalation")
    esc.write_text("broken: [\n")  # edited after a check said it loads: the copy does not
    assert lastgood.take(s, ["escalation"]) == []
    assert lastgood.manifest(s, "escalation") == kept
    snap = tmp_path / "data" / lastgood.ROOT / "escalation" / "esc.yaml"
    assert snap.read_bytes() == (CONFIG / "escalation.yaml").read_bytes()
    # and a process already on the snapshot does not take it as a new one
    on_it = settings_in(tmp_path, escalation_path=snap)
    assert lastgood.take(on_it, ["escalation"]) == []


def test_a_fifo_is_never_opened_and_a_large_file_never_read(tmp_path) -> None:
    fifo = tmp_path / "esc.yaml"
    os.mkfifo(fifo)
    done = threading.Event()

    def copy() -> None:
        with pytest.raises(lastgood.NotCopied, match="not a regular file"):
            lastgood.copy_file(fifo, tmp_path / "out", 100)
        done.set()

    threading.Thread(target=copy, daemon=True).start()
    assert done.wait(10), "copying a FIFO blocked"
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a" * 101)
    with pytest.raises(lastgood.NotCopied, match="over 100 bytes"):
        lastgood.copy_file(big, tmp_path / "out", 100)
    assert not (tmp_path / "out").exists()
    # a part whose file is a FIFO is not kept (and take never raises)
    assert lastgood.take(settings_in(tmp_path, escalation_path=fifo), ["escalation"]) == []


def test_no_snapshot_no_fallback_and_credentials_never_come_from_one(tmp_path, monkeypatch) -> None:
    from atalaia.console.auth import load_users
    from atalaia.streams.ingest.auth import load_token_file

    s = settings_in(tmp_path)
    assert lastgood.fallback(s, {"escalation": ["x:1:1: no"]}, check=lambda _s: {}) is None
    fb = lastgood.fallback(
        s, {"console users": ["u:1:1: no"], "ingest tokens": ["t:1:1: no"]}, check=lambda _s: {}
    )
    got = from_env(fb.env, monkeypatch)
    assert load_users(got.console_users) == [] and load_token_file(got.ingest_tokens) == []
    assert "credentials are never taken from a snapshot" in fb.said()


def test_parts_that_fail_with_the_snapshots_are_taken_from_theirs_too(tmp_path) -> None:
    """A detectors file that does not load: the rules kept with the detectors they were checked
    against come from the snapshot too, when the current rules fail against the old detectors."""
    s = settings_in(tmp_path)
    assert set(lastgood.take(s, ["rules", "detectors"])) == {"rules", "detectors"}
    root = tmp_path / "data" / lastgood.ROOT

    def check(tried: Settings) -> dict[str, list[str]]:
        on_snapshot = all(str(p).startswith(str(root)) for p in tried.rules_paths)
        return {} if on_snapshot else {"rules": ["r.yaml:3:5: no detector 'x'"]}

    fb = lastgood.fallback(s, {"detectors": ["d.yaml:1:1: broken"]}, check=check)
    assert fb is not None and set(fb.problems) == {"detectors", "rules"}
    assert {"ATALAIA_DETECTORS_PATH", "ATALAIA_RULES_PATHS"} <= set(fb.env)
    # snapshots that do not load either: no fallback (the restart waits, as before)
    assert lastgood.fallback(s, {"detectors": ["d"]}, check=lambda _s: {"detectors": ["d"]}) is None


def test_health_names_the_files_that_do_not_load_while_on_the_snapshot() -> None:
    health = BrokerHealth(clock=lambda: 1000.0)
    notice = lastgood.Fallback({}, {"escalation": ["/etc/esc.yaml:6:3: expected ','"]}, {"escalation": 0.0})
    config_last_good(notice.notice(), health)
    status, problems = health.status()
    assert status == "degraded"
    assert problems == [
        "running on the last configuration that loaded, not on the files: escalation on its snapshot "
        "of 1970-01-01T00:00:00Z, because /etc/esc.yaml:6:3: expected ',' (fix them, `atalaia check`: "
        "atalaia up restarts this process on them once they load)"
    ]
    assert CONFIG_LAST_GOOD.labels("escalation")._value.get() == 1
    other = BrokerHealth()
    config_last_good('{"problems": 3}', other)  # not up's notice: ignored
    assert other.status() == ("ok", [])


def test_snapshots_replace_each_other_and_old_copies_go(tmp_path) -> None:
    esc = tmp_path / "esc.yaml"
    shutil.copyfile(CONFIG / "escalation.yaml", esc)
    s = settings_in(tmp_path, escalation_path=esc)
    for _ in range(4):
        assert lastgood.take(s, ["escalation"]) == ["escalation"]
        time.sleep(0.01)
    root = tmp_path / "data" / lastgood.ROOT
    copies = [d for d in root.glob(".escalation.*") if d.is_dir() and not d.is_symlink()]
    assert len(copies) == 2 and (root / "escalation").resolve() in [c.resolve() for c in copies]


def test_a_copy_another_process_is_making_is_never_removed_by_a_publish(tmp_path, monkeypatch) -> None:
    """The ops process and ``atalaia up`` may take the same part at once: each copy is made
    aside (``.tmp-…``), and a publish removes only published ones (it had removed the other's
    copy while it was being made, so that copy was lost)."""
    esc = tmp_path / "esc.yaml"
    shutil.copyfile(CONFIG / "escalation.yaml", esc)
    s = settings_in(tmp_path, escalation_path=esc)
    real, inner = lastgood.copy_part, []

    def copy_part(settings, part, into):  # another taker publishes while this copy is made
        done = real(settings, part, into)
        if not inner:
            inner.append(None)
            inner[0] = lastgood.take(s, [part])
        return done

    monkeypatch.setattr(lastgood, "copy_part", copy_part)
    assert lastgood.take(s, ["escalation"]) == ["escalation"] and inner == [["escalation"]]
    snap = tmp_path / "data" / lastgood.ROOT / "escalation"
    assert (snap / "esc.yaml").read_bytes() == esc.read_bytes()
    assert lastgood.manifest(s, "escalation") is not None


def test_the_keeper_never_raises_into_the_supervisor(tmp_path) -> None:
    """The supervisor's loop keeps the processes running: a snapshot whose manifest is not ours
    gives no fallback (the restart waits, as without a snapshot), never an exception."""
    esc = tmp_path / "esc.yaml"
    shutil.copyfile(CONFIG / "escalation.yaml", esc)
    s = settings_in(tmp_path, escalation_path=esc)
    assert lastgood.take(s, ["escalation"]) == ["escalation"]
    (tmp_path / "data" / lastgood.ROOT / "escalation" / "manifest.json").write_text('{"settings": 7}')
    keeper = lastgood.Keeper(s)
    assert keeper.fallback({"escalation": ["x:1:1: no"]}) is None
    assert isinstance(keeper.stamp(), tuple)
