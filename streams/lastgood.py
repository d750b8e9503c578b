"""The last configuration that loaded, kept in the data directory, so that a configuration file
edited into one that does not load never stops the running system.

``atalaia up`` restarts a process that dies (``streams.processes``); a restarted process reads
its configuration files again. When one of them no longer loads (an escalation file edited into a
syntax error, a rule naming an unknown detector...), the process is restarted on the **last
configuration that loaded** instead of staying down (before, it stayed down until the file was
fixed: with the ops process down, nobody was paged for new alarms).

The snapshot (``<data_dir>/config-last-good/<part>``, one per part of ``atalaia check``) is taken
each time a part loads: when ``atalaia up`` starts (it starts only when every part loads), when a
process is restarted on files that load, when the rules process accepts a reload and when the ops
process finds an edited file that loads. Each snapshot is a copy of every file the part loaded,
copied safely (regular files only, within a size limit), then checked again **as copied** before
it replaces the previous one (an edit between the check and the copy never makes a broken
snapshot). Paths inside a configuration keep their meaning: the rules' directories are copied
with their files (a rule's group is still its file's name), and the warnings file's ``levels``
and ``areas`` (relative to the file, or absolute) are copied beside it and named relative to the
copy.

Credentials are never taken from a snapshot: an old console users or ingest tokens file could
hold a token revoked since. A process restarted while one of those does not load runs with an
empty one (the console, or ingest, refuses everyone) and says so.

A process running on the snapshot logs it in one ERROR line naming the ``file:line:col`` errors,
``/health`` is ``degraded`` naming them (``streams.guard.config_last_good``), and the gauge
``atalaia_config_last_good{part}`` is 1; ``atalaia up`` restarts it on the files again once they
load (:meth:`Fallback.changed`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("atalaia.config")

ROOT = "config-last-good"  # under the data directory
#: the parts of ``atalaia check`` kept as snapshots (``streams.preflight.PARTS``) and their setting
SNAPSHOT_PARTS = {
    "rules": "rules_paths",
    "detectors": "detectors_path",
    "incidents": "incidents_path",
    "escalation": "escalation_path",
    "warnings": "warnings_path",
}
#: never from a snapshot (a token revoked since would come back): an empty file instead
CREDENTIAL_PARTS = {"console users": ("console_users", "users: []\n"), "ingest tokens": ("ingest_tokens", "")}
ENV = "ATALAIA_CONFIG_LAST_GOOD"  # up to a process it started on the snapshot: what and why
AREA_MAX_BYTES = 256 * 1024 * 1024  # a warnings area file (GeoJSON) copied into a snapshot


class NotCopied(Exception):
    """A file of a part that cannot be copied into a snapshot (not a regular file, too large)."""


def root(settings: Any) -> Path:
    return Path(settings.data_dir) / ROOT


def _slug(part: str) -> str:
    return part.replace(" ", "-")


def copy_file(src: Path, dst: Path, max_bytes: int) -> None:
    """Copy ``src`` to ``dst``: a regular file of at most ``max_bytes`` only (a FIFO is never
    opened for reading, a huge file never read whole)."""
    try:
        st = os.stat(src)
        if not stat.S_ISREG(st.st_mode):
            raise NotCopied(f"{src}: not a regular file")
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # replaced meanwhile
                raise NotCopied(f"{src}: not a regular file")
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise NotCopied(f"{src}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise NotCopied(f"{src}: over {max_bytes} bytes")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


def _yaml_max() -> int:
    from atalaia.streams.config_yaml import YamlLimits

    return YamlLimits.from_env().max_bytes


def _rule_files(p: Path) -> list[Path]:
    """The files ``rules.loader`` reads of a rules directory."""
    found = sorted(f for f in [*p.glob("*.yaml"), *p.glob("*.yml")] if not f.name.startswith("."))
    return [f for f in found if f.is_file()]


def copy_part(settings: Any, part: str, into: Path) -> dict[str, Any]:
    """Copy the files ``part`` loads into the directory ``into``; returns the settings that name
    the copy, paths relative to ``into`` (:func:`_settings_at` makes them absolute)."""
    limit = _yaml_max()
    if part == "rules":
        paths = []
        for i, p in enumerate(Path(x) for x in settings.rules_paths):
            if p.is_dir():  # a directory: its rule files, same names (a rule's default group)
                (into / str(i)).mkdir(parents=True)
                for f in _rule_files(p):
                    copy_file(f, into / str(i) / f.name, limit)
                paths.append(str(i))
            else:
                copy_file(p, into / str(i) / p.name, limit)
                paths.append(f"{i}/{p.name}")
        return {"rules_paths": paths}
    if part == "warnings":
        return {"warnings_path": _copy_warnings(settings, into, limit)}
    setting = SNAPSHOT_PARTS[part]
    src = Path(getattr(settings, setting))
    copy_file(src, into / src.name, limit)
    return {setting: src.name}


def _copy_warnings(settings: Any, into: Path, limit: int) -> str:
    """The warnings file with its levels and areas files: paths in it are relative to it (or
    absolute), so the copy names the copied ones, relative to the copy (``levels/…``,
    ``areas/<n>/…``), whatever the original said."""
    from ruamel.yaml import YAML

    from atalaia.warnings.config import load_config

    src = Path(settings.warnings_path)
    loaded = load_config(src)  # the paths as the original resolves them
    copy_file(src, into / "original" / src.name, limit)  # kept as it was, for the reader
    copy_file(Path(loaded.levels), into / "levels" / Path(loaded.levels).name, limit)
    areas = []
    for i, a in enumerate(Path(x) for x in loaded.areas):
        copy_file(a, into / "areas" / str(i) / a.name, AREA_MAX_BYTES)
        areas.append(f"areas/{i}/{a.name}")
    yaml = YAML()  # round trip: everything else as written
    data = yaml.load((into / "original" / src.name).read_text(encoding="utf-8")) or {}
    data["levels"] = f"levels/{Path(loaded.levels).name}"
    data["areas"] = areas
    with open(into / src.name, "w", encoding="utf-8") as f:
        yaml.dump(data, f)
    return src.name


def _settings_at(update: dict[str, Any], base: Path) -> dict[str, Any]:
    return {k: [base / p for p in v] if isinstance(v, list) else base / v for k, v in update.items()}


def env_of(update: dict[str, Any]) -> dict[str, str]:
    """The environment that makes a worker's settings ``update`` (environment wins over a
    settings file)."""
    return {
        f"ATALAIA_{k.upper()}": json.dumps([str(p) for p in v]) if isinstance(v, list) else str(v)
        for k, v in update.items()
    }


def _check(settings: Any, part: str) -> list[str]:
    from atalaia.streams.preflight import part_problems

    return part_problems(settings, part)


@contextlib.contextmanager
def _locked(where: Path):
    where.mkdir(parents=True, exist_ok=True)
    with open(where / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _inside(path: Path, where: Path) -> bool:
    with contextlib.suppress(OSError, ValueError):
        Path(path).resolve().relative_to(where.resolve())
        return True
    return False


def _sources(settings: Any, part: str) -> list[Path]:
    """The files (and rule directories) ``part`` names; the warnings file's levels and areas
    files after it."""
    value = getattr(settings, SNAPSHOT_PARTS[part])
    found = [Path(p) for p in value] if isinstance(value, list) else [Path(value)]
    if part == "warnings":
        with contextlib.suppress(Exception):
            from atalaia.warnings.config import load_config

            loaded = load_config(found[0])
            found += [Path(loaded.levels), *(Path(a) for a in loaded.areas)]
    return found


def take(settings: Any, parts: list[str] | None = None, check: Any = None) -> list[str]:
    """Snapshot each of ``parts`` (default: every part kept) that loads, checked again as copied
    (``check(settings, part) -> problems``, by default ``atalaia check``'s part); returns the
    parts kept. Never raises: a part that cannot be kept is logged and keeps its previous
    snapshot. A part read from a snapshot already is not taken again."""
    check = check or _check
    where = root(settings)
    kept = []
    for part in parts if parts is not None else list(SNAPSHOT_PARTS):
        if part not in SNAPSHOT_PARTS:
            continue
        if any(_inside(p, where) for p in _sources(settings, part)):
            continue  # this process runs on the snapshot: nothing new to keep
        try:
            where.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{_slug(part)}.", dir=where))
        except OSError as e:
            log.warning("the last good %s configuration not kept: %s", part, e)
            continue
        try:
            update = copy_part(settings, part, tmp)
            problems = check(settings.model_copy(update=_settings_at(update, tmp)), part)
            if problems:  # edited between its check and the copy: keep the previous snapshot
                raise NotCopied("; ".join(problems[:3]))
            (tmp / "manifest.json").write_text(
                json.dumps(
                    {
                        "part": part,
                        "taken_at": time.time(),
                        "sources": [str(p) for p in _sources(settings, part)],
                        "settings": update,
                    }
                )
            )
            _publish(where, _slug(part), tmp)
            kept.append(part)
        except Exception as e:  # never the caller's end
            shutil.rmtree(tmp, ignore_errors=True)
            log.warning("the last good %s configuration not kept: %s", part, e)
    return kept


def take_isolated(settings: Any, detectors: Any) -> list[str]:
    """The rules process after it accepted a reload: the rules kept, checked as copied the way
    the reload loads them (in a child process with a time and memory limit, against the
    process's ``detectors`` names), never in the worker itself."""

    def check(copy: Any, part: str) -> list[str]:
        from atalaia.rules.stage import _load_isolated
        from atalaia.streams.config_yaml import YamlLimits

        try:
            _load_isolated(list(copy.rules_paths), YamlLimits.from_env(), frozenset(detectors))
        except Exception as e:
            return [str(e) or type(e).__name__]
        return []

    return take(settings, ["rules"], check)


STALE_S = 3600.0  # a copy being made this long ago was left by a process that died meanwhile


def _publish(where: Path, slug: str, tmp: Path) -> None:
    """Make the copy ``tmp`` (``.tmp-<slug>.*``: never removed by another process's publish)
    the snapshot ``slug`` at once: renamed to ``.<slug>.*``, then a symbolic link replaced. Older
    snapshots go, but the one it replaces (a process may be reading it)."""
    link = where / slug
    with _locked(where):
        done = where / tmp.name.replace(".tmp-", ".", 1)
        os.rename(tmp, done)
        old = os.readlink(link) if link.is_symlink() else None
        new_link = where / f".{slug}.link"
        with contextlib.suppress(FileNotFoundError):
            new_link.unlink()
        os.symlink(done.name, new_link)
        os.replace(new_link, link)
        for d in where.glob(f".{slug}.*"):
            if d.is_dir() and not d.is_symlink() and d.name not in (done.name, old):
                shutil.rmtree(d, ignore_errors=True)
        for d in where.glob(f".tmp-{slug}.*"):
            with contextlib.suppress(OSError):
                if time.time() - d.stat().st_mtime > STALE_S:
                    shutil.rmtree(d, ignore_errors=True)


def manifest(settings: Any, part: str) -> dict[str, Any] | None:
    """The snapshot of ``part`` (its manifest), or None when there is none."""
    try:
        return json.loads((root(settings) / _slug(part) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Fallback:
    """A process's start on the last configuration that loaded: ``env`` for the process,
    ``problems`` (part -> the ``file:line:col`` lines of the files that do not load)."""

    env: dict[str, str]
    problems: dict[str, list[str]]
    taken_at: dict[str, float] = field(default_factory=dict)  # part -> when its snapshot was taken

    def said(self) -> str:
        """The parts, and what does not load, in one line."""
        parts = []
        for part, lines in self.problems.items():
            when = self.taken_at.get(part)
            kept = (
                f"its snapshot of {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(when))}"
                if when is not None
                else "an empty file (credentials are never taken from a snapshot)"
            )
            parts.append(f"{part} on {kept}, because {' | '.join(lines[:3]) or 'it does not load'}")
        return "; ".join(parts)

    def notice(self) -> str:
        return json.dumps({"at": time.time(), "problems": self.problems, "taken_at": self.taken_at})


def fallback(settings: Any, problems: dict[str, list[str]], check: Any = None) -> Fallback | None:
    """How to start a process on the last configuration that loaded, when the parts of
    ``problems`` (part -> its ``file:line:col`` lines) do not load; None when one of them has no
    snapshot, or the snapshots together with the files that load do not load either (a rule
    snapshot naming a detector the current detectors file lacks: then every part that fails with
    them is taken from its snapshot too, as long as that helps).

    ``check(settings) -> {part: lines}``: the parts that fail (``preflight.startup_problems``)."""
    if check is None:
        from atalaia.streams.preflight import startup_problems as check
    where = root(settings)
    failing = dict(problems)
    for _ in range(len(SNAPSHOT_PARTS) + len(CREDENTIAL_PARTS)):
        update: dict[str, Any] = {}
        taken_at: dict[str, float] = {}
        for part in failing:
            if part in CREDENTIAL_PARTS:
                setting, empty = CREDENTIAL_PARTS[part]
                path = where / f"empty-{_slug(part)}.yaml"
                try:
                    where.mkdir(parents=True, exist_ok=True)
                    path.write_text(empty)
                except OSError:
                    return None
                update[setting] = path
                continue
            found = manifest(settings, part) if part in SNAPSHOT_PARTS else None
            if found is None:
                return None
            update.update(_settings_at(found["settings"], where / _slug(part)))
            taken_at[part] = float(found["taken_at"])
        still = check(settings.model_copy(update=update))
        if not still:
            return Fallback(env_of(update), failing, taken_at)
        if set(still) <= set(failing):
            return None  # the snapshots themselves do not load now
        for part, lines in still.items():
            failing.setdefault(part, lines)
    return None


def stamp(settings: Any) -> tuple:
    """What changes when a configuration file is edited (each file's time and size): a process on
    the snapshot is checked again when it does."""
    from atalaia.rules.loader import file_stamps

    found: list[Any] = [file_stamps(settings.rules_paths)]
    for part, setting in SNAPSHOT_PARTS.items():
        if part == "rules":
            continue
        found.append(_stat(Path(getattr(settings, setting))))
    found += [_stat(Path(p)) for p in (manifest(settings, "warnings") or {}).get("sources", [])[1:]]
    for setting, _ in CREDENTIAL_PARTS.values():
        value = getattr(settings, setting)
        found.append(_stat(Path(value)) if value is not None else None)
    return tuple(found)


def _stat(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class Keeper:
    """What ``atalaia up``'s supervisor asks about the configuration of the processes it starts
    (``streams.processes.Supervisor``): which parts fail, the snapshot, the start on it. Never
    raises (the supervisor's loop is what keeps the processes running): an unexpected error is a
    part that fails, no fallback, or a stamp that says nothing changed."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def problems(self, quiet: bool = False) -> dict[str, list[str]]:
        from atalaia.streams.preflight import startup_problems

        try:
            return startup_problems(self.settings, quiet=quiet)
        except Exception as e:
            return {"configuration": [f"the check failed: {type(e).__name__}: {e}"]}

    def take(self) -> list[str]:
        return take(self.settings)

    def fallback(self, problems: dict[str, list[str]]) -> Fallback | None:
        try:
            return fallback(self.settings, problems)
        except Exception as e:  # a snapshot that is not ours (its manifest edited): none
            log.warning("the last good configuration cannot be used: %s: %s", type(e).__name__, e)
            return None

    def stamp(self) -> tuple:
        try:
            return stamp(self.settings)
        except Exception:
            return ()
