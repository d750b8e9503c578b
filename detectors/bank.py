"""Per-entity detector state for the live agent: one model per (detector, key, attribute).

The bank is a pure state machine driven by event time: ``score_learn`` scores a value with
the entity's model and then learns it. ``snapshot()`` / ``DetectorBank.restore()`` carry the
complete state across a worker restart; the restored bank gives exactly the scores an
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterable
from datetime import UTC, datetime

from atalaia.detectors.base import Detector, clean
from atalaia.detectors.config import DetectorsConfig, DetectorSpec

SNAPSHOT_VERSION = 1
ModelKey = tuple[str, str, str]  # detector, key, attribute


def _fingerprint(spec: DetectorSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


class DetectorBank:
    """Models keyed by detector name, entity key and attribute, created on first use.

    >>> from datetime import datetime, timedelta
    >>> from atalaia.detectors.config import load_config
    >>> bank = DetectorBank(load_config())
    >>> t0 = datetime(2026, 1, 1)
    >>> scores = [bank.score_learn("hst-default", "urn:gauge:1", "flow", t0 + timedelta(minutes=i),
    ...                            5.0 + (i % 7) * 0.1) for i in range(400)]
    >>> scores[0] is None, 0.0 <= scores[-1] <= 1.0
    (True, True)
    >>> bank2 = DetectorBank.restore(load_config(), bank.snapshot())
    >>> t = t0 + timedelta(minutes=400)
    >>> bank2.score_learn("hst-default", "urn:gauge:1", "flow", t, 9.0) == \\
    ...     bank.score_learn("hst-default", "urn:gauge:1", "flow", t, 9.0)
    True
    """

    def __init__(self, config: DetectorsConfig) -> None:
        self.config = config
        self._specs: dict[str, DetectorSpec] = {d.name: d for d in config.detectors}
        self._models: dict[ModelKey, Detector] = {}

    def __len__(self) -> int:
        return len(self._models)

    def model(self, detector: str, key: str, attribute: str) -> Detector:
        """The model of one entity attribute (created fresh on first use)."""
        mk = (detector, key, attribute)
        det = self._models.get(mk)
        if det is None:
            spec = self._specs.get(detector)
            if spec is None:
                raise KeyError(f"unknown detector {detector!r}; known: {sorted(self._specs)}")
            det = self._models[mk] = spec.build()
        return det

    def score_learn(
        self, detector: str, key: str, attribute: str, time: datetime, value: float
    ) -> float | None:
        """Score ``value`` at ``time`` with the entity's model, then learn it.

        None while the model is warming up (its first ``warmup`` points) or when the value
        is not a finite number (which is then not learned either).
        """
        x = clean(value)
        if x is None:
            return None
        det = self.model(detector, key, attribute)
        seen = det.n_seen
        score = det.score_learn(x, _naive_utc(time))
        return score if seen >= self._specs[detector].warmup else None

    def score_learn_many(
        self, detector: str, rows: Iterable[tuple[str, str, datetime, float]]
    ) -> list[float | None]:
        """``score_learn`` over a batch of ``(key, attribute, time, value)``, in order."""
        step = self.score_learn
        return [step(detector, k, a, t, v) for k, a, t, v in rows]

    def snapshot(self) -> bytes:
        """The whole bank as bytes (models plus the fingerprints of their specs)."""
        payload = {
            "version": SNAPSHOT_VERSION,
            "specs": {name: _fingerprint(s) for name, s in self._specs.items()},
            "models": self._models,
        }
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, config: DetectorsConfig, data: bytes) -> DetectorBank:
        """A bank from ``snapshot()`` bytes. Models of detectors that are no longer
        configured, or whose configuration changed, are dropped (they restart fresh)."""
        payload = pickle.loads(data)
        if not isinstance(payload, dict) or payload.get("version") != SNAPSHOT_VERSION:
            raise ValueError("not a detector bank snapshot of a supported version")
        bank = cls(config)
        same = {n for n, s in bank._specs.items() if payload["specs"].get(n) == _fingerprint(s)}
        bank._models = {k: m for k, m in payload["models"].items() if k[0] in same}
        return bank

    def state_of(self, detector: str, key: str, attribute: str) -> bytes | None:
        """One model's state (for a per-entity changelog/table), None if it does not exist."""
        det = self._models.get((detector, key, attribute))
        return None if det is None else det.to_state()

    def load_state(self, detector: str, key: str, attribute: str, data: bytes) -> None:
        """Install one model's state written by ``state_of`` (same configuration assumed)."""
        if detector not in self._specs:
            raise KeyError(f"unknown detector {detector!r}; known: {sorted(self._specs)}")
        self._models[(detector, key, attribute)] = Detector.from_state(data)

    def memory_per_entity(self) -> dict[str, float]:
        """Mean pickled bytes of one model, per detector name in use."""
        sizes: dict[str, list[int]] = {}
        for (name, _, _), det in self._models.items():
            sizes.setdefault(name, []).append(len(det.to_state()))
        return {name: sum(v) / len(v) for name, v in sizes.items()}
