"""`atalaia up` refuses, before starting anything, a demo whose feed could not send."""

from __future__ import annotations

from click.testing import CliRunner

from atalaia.streams.cli import main
from atalaia.streams.settings import get_settings


def test_a_demo_with_your_own_ingest_tokens_needs_a_token_for_its_feed(tmp_path, monkeypatch) -> None:
    """With ATALAIA_INGEST_TOKENS the demo feed posted without a token: 401 every second, one
    warning a minute, and /health said ok with nothing processed."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens: []\n")
    monkeypatch.setenv("ATALAIA_INGEST_TOKENS", str(tokens))
    monkeypatch.setenv("ATALAIA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ATALAIA_DEMO_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["up", "--demo"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "ATALAIA_DEMO_TOKEN" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "data").exists()  # nothing was started
