"""The hot path's rewritten pieces give what the code they replace gave (property tests).

* ``RawEvent.from_record``: one pass over the headers instead of two dicts;
* ``parse_payload``: the empty-body check without copying the body, the digest on demand;
* ``RuleEngine.snapshot``: each rule's definition serialised once.
"""

from __future__ import annotations

import hashlib

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from atalaia.rules.engine import RuleEngine
from atalaia.rules.loader import load_texts
from atalaia.streams.ingest import parse_payload
from atalaia.streams.ingest.events import RawEvent

NAMES = st.sampled_from(
    [
        "source",
        "Source",
        "received-at",
        "content-type",
        "Content-Type",
        "link",
        "LINK",
        "fiware-service",
        "Fiware-ServicePath",
        "ngsild-tenant",
        "x-other",
    ]
)
VALUES = st.binary(max_size=12) | st.sampled_from([b"application/json", "é".encode(), b"\xff\xfe"])


def reference_from_record(value: bytes, headers: list[tuple[str, bytes]] | None) -> RawEvent:
    """``RawEvent.from_record`` as it was written before the hot-path pass."""
    h = {k.lower(): v.decode(errors="replace") for k, v in (headers or ())}
    extra = {k: v for k, v in h.items() if k not in ("source", "received-at", "content-type", "link")}
    return RawEvent(
        body=value or b"",
        source=h.get("source", "kafka"),
        content_type=h.get("content-type"),
        link=h.get("link"),
        received_at=h.get("received-at"),
        extra=extra or None,
    )


@settings(max_examples=300, deadline=None)
@given(st.none() | st.lists(st.tuples(NAMES, VALUES), max_size=8), st.binary(max_size=8) | st.none())
def test_from_record_equals_the_two_dict_version(headers, value):
    new = RawEvent.from_record(value, headers)
    old = reference_from_record(value, headers)
    assert new == old
    assert list((new.extra or {}).items()) == list((old.extra or {}).items())  # same order


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"{", b"}", b"[]", b"1", b"\x00"]))
)
def test_empty_body_check_and_digest_equal_strip_and_eager_hash(parts):
    body = b"".join(parts)
    res = parse_payload(body, source="test")
    assert (any(r.code == "empty" for r in res.rejections)) == (not body.strip())
    assert res.digest == hashlib.blake2b(body, digest_size=12).hexdigest()


RULES = """
group: g
rules:
  - id: high
    select: {type: WaterObserved, attribute: height, where: {district: "13"}}
    aggregate: {function: avg, window: 10m}
    severities:
      - {severity: critical, above: 4.5, clear_below: 4.2, for: 2m}
      - {severity: high, above: 3.5}
    labels: {team: hydro}
  - {id: silent, select: {type: WaterObserved}, absent_for: 15m, severity: medium}
"""


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=20))
def test_snapshot_carries_each_rule_as_model_dump_did(heights):
    rs = load_texts([("r.yaml", RULES)])
    engine = RuleEngine(rs)
    engine.observe_batch(
        {
            "time": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
            "entity": "urn:e",
            "type": "WaterObserved",
            "attributes": {"height": h},
            "labels": {"district": "13"},
        }
        for i, h in enumerate(heights)
    )
    for _ in range(2):  # the second snapshot reuses the serialised rules
        body = orjson.loads(engine.snapshot())
        assert [r["rule"] for r in body["rules"]] == [
            lr.rule.model_dump(mode="json", by_alias=True, exclude_unset=True) for lr in rs.rules
        ]
    restored = orjson.loads(RuleEngine.restore(rs, engine.snapshot()).snapshot())
    assert restored["rules"] == body["rules"]


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=3))
def test_time_caches_answer_as_a_fresh_parse_across_evictions(start, step):
    from datetime import UTC, datetime

    from atalaia.streams.clock import format_time
    from atalaia.streams.ingest import timeparse
    from atalaia.streams.ingest.encode import time_text

    texts = [format_time(datetime.fromtimestamp(1_700_000_000 + start + i * step, UTC)) for i in range(200)]
    size, timeparse._CACHE_MAX = timeparse._CACHE_MAX, 64  # evictions after a few times
    try:
        parsed = [timeparse.parse_observation_time(t) for t in texts]
        assert len(timeparse._cache) <= 64 and len(timeparse.formatted) <= size
        for text, p in zip(texts, parsed, strict=True):
            assert p == timeparse._parse(text)
            assert time_text(p.time) == text == format_time(p.time)
    finally:
        timeparse._CACHE_MAX = size
