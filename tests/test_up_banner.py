"""`atalaia up`'s banner names the ingest token only when it is the one `up` made and keeps in
the data directory. With your own ATALAIA_INGEST_TOKENS (and the demo feed's ATALAIA_DEMO_TOKEN)
it printed that secret token as "kept in <data dir>/ingest-token", a file that did not exist."""

from __future__ import annotations

from pathlib import Path

from atalaia.streams.commands import banner_text
from atalaia.streams.settings import Settings
from atalaia.streams.tokens import ensure_demo_token


def test_the_banner_names_the_token_up_keeps(tmp_path: Path) -> None:
    tokens, token = ensure_demo_token(tmp_path)
    text = banner_text(Settings(data_dir=tmp_path, ingest_tokens=tokens), "127.0.0.1:9092", token)
    assert f"ingest token:            {token}" in text and str(tmp_path / "ingest-token") in text


def test_the_banner_never_prints_a_token_of_your_own_file(tmp_path: Path) -> None:
    own = tmp_path / "tokens.yaml"
    own.write_text("tokens: []\n")
    secret = "atl_my-own-demo-token"
    text = banner_text(Settings(data_dir=tmp_path / "data", ingest_tokens=own), "127.0.0.1:9092", secret)
    assert secret not in text and "ingest-token" not in text
    assert f"ingest tokens:           {own}" in text
