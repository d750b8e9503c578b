"""A worker (or `atalaia up`) given an ATALAIA_KAFKA nobody answers on: one line naming the
broker and the setting, exit 1 — it was a 50-line traceback ending in a RuntimeError."""

from __future__ import annotations

import functools
import socket

import click
import pytest

from atalaia.streams import broker, commands
from atalaia.streams.settings import Settings


def test_an_unreachable_broker_is_one_clear_error_not_a_traceback(monkeypatch, tmp_path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there
    monkeypatch.setattr(broker, "ensure_topics", functools.partial(broker.ensure_topics, timeout=1.0))
    settings = Settings(data_dir=tmp_path, kafka=f"127.0.0.1:{port}")
    with pytest.raises(click.ClickException) as e:
        commands._prepare(settings, f"127.0.0.1:{port}", demo=False)
    message = e.value.format_message()
    assert f"127.0.0.1:{port}" in message and "ATALAIA_KAFKA" in message, message
    assert "\n" not in message, message


def test_send_to_an_unreachable_broker_is_one_clear_error(monkeypatch, tmp_path) -> None:
    from click.testing import CliRunner

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setattr(
        commands, "get_settings", lambda: Settings(data_dir=tmp_path, kafka=f"127.0.0.1:{port}")
    )
    events = tmp_path / "e.json"
    events.write_text('{"id": "x", "type": "WaterObserved", "height": 1}')
    r = CliRunner().invoke(commands.send, [str(events)])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert f"no Kafka broker answers at 127.0.0.1:{port}" in r.output and "Traceback" not in r.output, (
        r.output
    )


def test_tail_of_an_unreachable_broker_says_no_broker_answers(monkeypatch, tmp_path) -> None:
    """It said "lost the broker" (it never had one) and the client's "Unclosed AIOKafkaConsumer"."""
    from click.testing import CliRunner

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setattr(
        commands, "get_settings", lambda: Settings(data_dir=tmp_path, kafka=f"127.0.0.1:{port}")
    )
    r = CliRunner().invoke(commands.tail, ["alarms", "--timeout", "3"])
    assert r.exit_code == 1, r.output
    assert f"no Kafka broker answers at 127.0.0.1:{port}" in r.output, r.output
