"""The soak runs only when asked for by marker (``make soak`` = ``pytest -m soak tests/soak``): a
``-m`` expression that does not name it (``pytest -m broker``) must not start a 25-minute run."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or "").replace("not soak", ""):
        return
    skip = pytest.mark.skip(reason="the long fault suite: make soak (pytest -m soak tests/soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
