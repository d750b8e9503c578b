"""Which Kafka to talk to: ``ATALAIA_KAFKA`` if set, else the embedded broker that a running
``atalaia up`` announced in ``<data_dir>/broker``, else (for commands that own the process, like
``up`` and ``worker``) a new embedded broker."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import click

from atalaia.streams.broker import EmbeddedBroker
from atalaia.streams.settings import Settings


def announce_file(settings: Settings) -> Path:
    return settings.data_dir / "broker"


def running_embedded(settings: Settings) -> str | None:
    try:
        bootstrap = announce_file(settings).read_text().strip()
    except FileNotFoundError:
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

    shutil.rmtree(settings.data_dir / "state", ignore_errors=True)
    for pattern in ("atalaia.db*", "deliveries.sqlite*"):
        for f in settings.data_dir.glob(pattern):
            f.unlink(missing_ok=True)


@contextlib.contextmanager
def owned_bootstrap(settings: Settings) -> Iterator[str]:
    """For up/worker/console: ATALAIA_KAFKA, else the embedded broker a running ``atalaia up``
    announced in this data directory, else a new embedded broker for the life of the process."""
    if settings.kafka:
        yield settings.kafka
        return
    running = running_embedded(settings)
    if running:  # an `atalaia up` in this directory: join it, never reset what it is using
        yield running
        return
    # The embedded broker keeps its topics in memory, so each run starts a new history: stage
    # checkpoints, the incident projection and the delivery log of an earlier run describe
    # topics that no longer exist (and deterministic ids would collide with the new run's).
    reset_embedded_state(settings)
    with EmbeddedBroker() as broker:
        path = announce_file(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(broker.bootstrap)
        try:
            yield broker.bootstrap
        finally:
            with contextlib.suppress(FileNotFoundError):
                if path.read_text() == broker.bootstrap:
                    os.unlink(path)
