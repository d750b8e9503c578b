"""Which Kafka to talk to: ``ATALAIA_KAFKA`` if set, else the embedded broker that a running
``atalaia up`` announced in ``<data_dir>/broker``, else (for commands that own the process, like
``up`` and ``worker``) a new embedded broker."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from atalaia.streams.broker import EmbeddedBroker, how_ended
from atalaia.streams.settings import Settings

log = logging.getLogger(__name__)


def announce_file(settings: Settings) -> Path:
    return settings.data_dir / "broker"


def owner_file(settings: Settings) -> Path:
    return settings.data_dir / "broker.owner"


def _owner_alive(settings: Settings) -> bool:
    """False when the `atalaia up` that announced the broker is gone (killed: its broker is
    dying with it, though it may still answer for a moment)."""
    try:
        pid = int(owner_file(settings).read_text().strip())
    except (FileNotFoundError, ValueError):
        return True  # announced by an older version: the port check decides
    return pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_file(settings: Settings) -> Path:
    return settings.data_dir / "up.lock"


#: the open lock files of this process (never closed: a lock is held for the process's life)
_HELD: dict[Path, int] = {}


def lock_data_dir(settings: Settings) -> None:
    """Take ``<data_dir>/up.lock`` for the life of this process (``flock``, exclusive), or raise a
    ClickException naming the data directory and the PID that holds it. One ``atalaia up`` per
    data directory: a second one had joined the first's broker and run delivery recovery too (every
    waiting notification sent twice). The OS releases the lock when the process ends, however it
    ends (``kill -9`` too), so a crashed instance never blocks a restart; the processes ``up``
    starts do not inherit it (close-on-exec). A data directory made here is readable by the
    worker's user only (0700): it holds the audit trail, the people notified, the ingest log."""
    if not settings.data_dir.exists():
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    hold_lock(
        lock_file(settings),
        lambda holder: (
            f"another `atalaia up` (pid {holder}) is running with the data directory "
            f"{settings.data_dir}: stop it first, or give this one its own ATALAIA_DATA_DIR"
        ),
    )


def hold_lock(path: Path, refused: Callable[[str], str]) -> None:
    """Hold an exclusive ``flock`` on ``path`` for the life of this process (idempotent), writing
    the PID into it; when another process holds it, raise a ClickException ``refused(its pid)``."""
    import fcntl

    if path in _HELD:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise click.ClickException(refused(holder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[path] = fd


def running_embedded(settings: Settings) -> str | None:
    try:
        bootstrap = announce_file(settings).read_text().strip()
    except FileNotFoundError:
        return None
    if not _owner_alive(settings):
        return None
    host, _, port = bootstrap.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return bootstrap
    except (OSError, ValueError):
        return None


def client_bootstrap(settings: Settings) -> str:
    """For client commands (send, tail): never start a broker of their own."""
    if settings.kafka:
        return settings.kafka
    found = running_embedded(settings)
    if found:
        return found
    raise click.ClickException(
        "no Kafka to talk to: set ATALAIA_KAFKA=host:port, or start `atalaia up` in this directory "
        f"(it announces its embedded broker in {announce_file(settings)})"
    )


def reset_embedded_state(settings: Settings) -> None:
    import shutil

    from atalaia.streams.ingestlog import ROOT

    shutil.rmtree(settings.data_dir / "state", ignore_errors=True)
    shutil.rmtree(settings.data_dir / ROOT, ignore_errors=True)
    for pattern in ("atalaia.db*", "deliveries.sqlite*"):  # incl. the email commit markers' folder
        for f in settings.data_dir.glob(pattern):
            if f.is_dir():
                shutil.rmtree(f, ignore_errors=True)
            else:
                f.unlink(missing_ok=True)


def reanchor_checkpoints(
    state_dir: Path,
    cluster: str,
    starts: dict[tuple[str, str, int], int] | None = None,
    only_not: str | None = None,
) -> int:
    """Point every stage checkpoint in ``state_dir`` (with ``only_not``: those not already on
    that broker) at the beginning of a new (empty) broker's topics, state untouched, except where
    ``starts[(stage, topic, partition)]`` says otherwise (the ingest log put there what the stage
    had not read); return how many partitions were kept."""
    from atalaia.streams.checkpoints import REANCHORED_KEY
    from atalaia.streams.stage import CLUSTER_KEY, Checkpoints

    kept = 0
    for stage_dir in sorted(p for p in state_dir.glob("*") if p.is_dir()):
        ckpts = Checkpoints(stage_dir)
        for f in sorted(stage_dir.glob("p*.ckpt")):
            partition = int(f.stem[1:])
            loaded = ckpts.load(partition)
            if loaded is None:
                continue
            offsets, state = loaded
            if only_not is not None and offsets.get(CLUSTER_KEY) == only_not:
                continue
            anchored = {
                t: (starts or {}).get((stage_dir.name, t, partition), 0)
                for t in offsets
                if t not in (CLUSTER_KEY, REANCHORED_KEY)
            }
            ckpts.save(partition, {**anchored, CLUSTER_KEY: cluster, REANCHORED_KEY: 1}, state)
            kept += 1
    return kept


def keep_or_reset(
    settings: Settings, cluster: str, fresh: bool, starts: dict[tuple[str, str, int], int] | None = None
) -> None:
    """A new embedded broker: its topics are empty. Keep the domain state of the data directory
    (stage checkpoints re-anchored at the new topics' beginning, or at ``starts`` where the
    ingest log put back what they had not read; the SQL projection, the delivery log),
    or with ``fresh`` remove it; say in one line what could not be kept."""
    had = any((settings.data_dir / "state").glob("*/p*.ckpt")) or any(settings.data_dir.glob("*.sqlite"))
    if fresh:
        reset_embedded_state(settings)
        if had:
            log.warning(
                "--fresh: removed the previous run's state in %s",
                settings.data_dir,
                extra={"ratelimit": False},
            )
        return
    if not had:
        return
    kept = reanchor_checkpoints(settings.data_dir / "state", cluster, starts)
    log.warning(
        "kept the previous run's incidents, shelves, silences, escalation timers, audit and delivery "
        "log from %s (%d stage partition(s) re-anchored to the new embedded broker; accepted events "
        "no stage had checkpointed are put back from the ingest log); records in flight between "
        "later stages are sent again by the stages that hold them — `atalaia up --fresh` starts clean",
        settings.data_dir,
        kept,
        extra={"ratelimit": False},  # once per broker (up's restarts of a dead one): never a flood
    )


@contextlib.contextmanager
def owned_bootstrap(settings: Settings, *, fresh: bool = False) -> Iterator[str]:
    """For up/worker/console: ATALAIA_KAFKA, else the embedded broker a running ``atalaia up``
    announced in this data directory, else a new embedded broker for the life of the process."""
    with owned_broker(settings, fresh=fresh) as (bootstrap, _):
        yield bootstrap


def broker_death(broker: EmbeddedBroker) -> Callable[[], str | None]:
    """For ``Supervisor(watch=...)``: None while the embedded broker runs, then how it ended."""

    def watch() -> str | None:
        proc = broker.proc
        if proc is None or proc.poll() is None:
            return None
        return f"{broker.named} died ({how_ended(proc.returncode)})"

    return watch


@contextlib.contextmanager
def owned_broker(
    settings: Settings, *, fresh: bool = False, broker: EmbeddedBroker | None = None
) -> Iterator[tuple[str, EmbeddedBroker | None]]:
    """:func:`owned_bootstrap`, and the embedded broker when this process started it (None for
    ATALAIA_KAFKA or a running ``atalaia up``'s), so that its death can be watched. ``broker``:
    the (not yet started) embedded broker to start, if one is needed, so that the caller can
    tell a death during the start-up (``broker.ended``) from another failure."""
    if settings.kafka:
        yield settings.kafka, None
        return
    running = running_embedded(settings)
    if running:  # an `atalaia up` in this directory: join it, never reset what it is using
        if fresh:
            raise click.ClickException(
                f"--fresh: an `atalaia up` is running on {running} with this data directory; stop it first"
            )
        yield running, None
        return
    # The embedded broker keeps its topics in memory, so each run starts a new history. The
    # domain state in the data directory is kept (unless --fresh) and re-anchored to the new
    # topics' beginning; the checkpoints carry the new cluster id, so the stages trust them.
    broker = broker if broker is not None else EmbeddedBroker()
    if settings.state_store == "kafka":
        log.warning(
            "ATALAIA_STATE_STORE=kafka with the embedded broker: stage state lives in its in-memory "
            "topics and is lost when it stops (the default, file, keeps it in %s)",
            settings.data_dir / "state",
        )
    if fresh:  # before the ingest log is read: it goes with the rest
        keep_or_reset(settings, broker.cluster_id, fresh)
    with broker:
        from atalaia.streams import ingestlog

        # the events accepted but not checkpointed by the previous run(s): back on the new broker
        # before any stage starts, each stage's checkpoint pointed at the first it had not read
        starts = (
            ingestlog.replay(settings, broker.bootstrap, broker.cluster_id)
            if ingestlog.enabled(settings)
            else {}
        )
        if not fresh:
            keep_or_reset(settings, broker.cluster_id, fresh, starts)
        ingestlog.forget_earlier(settings)
        path = announce_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(broker.bootstrap)
        owner_file(settings).write_text(str(os.getpid()))
        try:
            yield broker.bootstrap, broker
        finally:
            with contextlib.suppress(FileNotFoundError):
                if path.read_text() == broker.bootstrap:
                    os.unlink(path)
                    owner_file(settings).unlink(missing_ok=True)
