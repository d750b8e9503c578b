"""What the ingest stage made of its payloads is on /metrics (``atalaia_ingest_total{outcome}``):
the new observations, the redeliveries dropped, the payloads refused whole
(``../shared/fixtures/bad/expected.yaml``: "count it in a parse-error metric") and those accepted
with a data-quality warning, for events from HTTP, MQTT or a producer alike."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY

from tests.conftest import shared_path


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_ingest_stage_counts_observations_duplicates_warnings_and_refused_payloads() -> None:
    from atalaia.streams.ingest.events import RawEvent
    from atalaia.streams.ingest.stage import IngestCore
    from atalaia.streams.metrics import INGEST_OUTCOMES
    from atalaia.streams.settings import Settings

    bad = shared_path("fixtures", "bad")
    first = bad / "duplicate-notification-1.json"
    sent = [
        first,  # two observations... of one entity
        bad / "duplicate-notification-2.json",  # the same notification again: dropped
        bad / "malformed-json.json",  # the whole payload refused
        bad / "non-numeric-value.json",  # one attribute refused (decimal comma)
        bad / "future-timestamp.json",  # accepted with a data-quality warning
    ]
    records = []
    for path in sent:
        ev = RawEvent(path.read_bytes(), "ngsi-ld", "application/ld+json", None, "2026-01-28T10:00:05Z")
        records.append(SimpleNamespace(value=ev.body, headers=ev.headers(), timestamp=0))

    before = {k: _value("atalaia_ingest_total", outcome=k) for k in INGEST_OUTCOMES}
    outs = IngestCore(Settings()).process(records, now=1_769_594_405.0)
    after = {k: _value("atalaia_ingest_total", outcome=k) - before[k] for k in INGEST_OUTCOMES}

    observations = sum(1 for o in outs if o.topic == "observations")
    dlq = sum(1 for o in outs if o.topic == "dlq")
    assert observations > 0 and dlq == 2
    assert after["payloads"] == len(sent)
    assert after["observations"] == observations, "every new observation, counted once"
    assert after["notifications_redelivered"] == 1
    assert after["payloads_refused"] == 1, "the malformed body"
    assert after["warnings"] >= 1, "the future timestamp"


def test_every_ingest_outcome_is_exported_from_the_start_at_zero() -> None:
    """A rate() or an alert on a refusal works before the first one: the series exist at 0."""
    from atalaia.streams.metrics import INGEST_OUTCOMES

    for outcome in INGEST_OUTCOMES:
        assert REGISTRY.get_sample_value("atalaia_ingest_total", {"outcome": outcome}) is not None
