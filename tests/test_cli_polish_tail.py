"""`atalaia tail` on a topic the broker lacks names Atalaia's topics and the one meant."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from atalaia.streams.cli import main
from atalaia.streams.settings import get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("ATALAIA_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_tail_of_a_misspelt_topic_names_the_topics_and_the_one_meant(broker: str, topic_prefix: str) -> None:
    """`atalaia tail alarm` said only "no topic 'atalaia.alarm' on 127.0.0.1:…"."""
    env = {"ATALAIA_KAFKA": broker, "ATALAIA_TOPIC_PREFIX": topic_prefix}
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["tail", "alarm", "--timeout", "5"], env=env)
    assert result.exit_code == 1, result.output
    assert f"no topic '{topic_prefix}.alarm' on {broker} (did you mean 'alarms'?)" in result.output
    assert "Atalaia's topics: events, observations, shared-observations, dlq, alarms" in result.output
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["tail", "alarms", "--timeout", "1"], env=env)
    assert result.exit_code == 0, result.output
