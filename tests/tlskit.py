"""Test PKI (a CA, a server certificate for 127.0.0.1/localhost, client certificates) made with the
``openssl`` command, and a TLS-terminating TCP proxy that requires a client certificate."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Pki:
    dir: Path

    def __getattr__(self, name: str) -> Path:  # pki.ca_pem, pki.server_key, pki.client_pem ...
        stem, _, ext = name.rpartition("_")
        return self.dir / f"{stem}.{ext}"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(where: Path) -> Pki:
    """ca.pem/ca.key, server.pem/server.key (SAN 127.0.0.1, localhost), client.pem/client.key
    signed by the CA, and rogue.pem/rogue.key signed by another CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    where.mkdir(parents=True, exist_ok=True)
    days = ("-days", "2")
    for ca in ("ca", "rogueca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 *days, "-subj", f"/CN=atalaia test {ca}", cwd=where)  # fmt: skip
    (where / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (where / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("rogue", "rogueca", "client.ext")):  # fmt: skip
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=where)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", *days, "-extfile", ext, cwd=where)  # fmt: skip
    return Pki(where)


def server_context(pki: Pki, *, require_client_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_pem))
    ctx.load_cert_chain(str(pki.server_pem), str(pki.server_key))
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


class TlsProxy:
    """Listens with TLS (client certificate required) on 127.0.0.1:``port`` and forwards the
    plain bytes to ``target_port``; runs its own event loop in a thread. ``handshakes`` counts the
    completed TLS handshakes, ``refused`` the failed ones."""

    def __init__(self, port: int, target_port: int, ctx: ssl.SSLContext) -> None:
        self.port, self.target_port, self.ctx = port, target_port, ctx
        self.handshakes = 0
        self.refused = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.AbstractServer | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))

    def _handshake_failed(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if isinstance(context.get("exception"), ssl.SSLError | ConnectionResetError):
            self.refused += 1  # a client without an acceptable certificate
        else:
            loop.default_exception_handler(context)

    async def _start(self) -> None:
        self.loop.set_exception_handler(self._handshake_failed)
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port, ssl=self.ctx)

    def __enter__(self) -> TlsProxy:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self.server:
                self.server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
