"""Per-entity detector state for the live agent: one model per (detector, key, attribute).

The bank is a pure state machine driven by event time: ``score_learn`` scores a value with
the entity's model and then learns it. ``snapshot()`` / ``DetectorBank.restore()`` carry the
complete state across a worker restart; the restored bank gives exactly the scores an
uninterrupted one would.

Memory is bounded for real fleets: a model whose entity has not reported for ``idle_after``
seconds of event time (the newest event time seen is the clock) is checkpointed (its exact
state bytes, in ``checkpoints``, a mutable mapping: a dict by default, or any persistent
store) and dropped from memory; it resumes from the checkpoint when the entity returns. At
most ``max_entities`` models are held in memory: at the limit a new entity is refused (its
score is None), the old ones are kept, a warning is logged when the limit is reached and the
refusals are counted (``stats["refused"]``, exported as ``atalaia_detector_entities_refused``).
A checkpoint whose entity has not reported for ``forget_after`` seconds, or the oldest beyond
``max_checkpoints``, is forgotten (``stats["forgotten"]``): the entity would start afresh.

The limits hold for the banks of a ``Pool`` together: the live worker's banks (one per
partition of each rules stage) share ``WORKER``, so a worker that holds six partitions, or
takes over a failed worker's, holds at most ``max_entities`` models, not six times as many.
A bank built without a pool has its own.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from atalaia.detectors.base import Detector, clean
from atalaia.detectors.config import DetectorsConfig, DetectorSpec

SNAPSHOT_VERSION = 2
RECENT_MAX = 256  # scores remembered for the other rules of the same reading (see DetectorBank._recent)


class Pool:
    """Banks whose models and checkpoints count against their limits together (the banks of
    one worker process: its partitions and stages). A bank leaves the pool when it is dropped
    (a revoked partition's)."""

    def __init__(self) -> None:
        self.banks: weakref.WeakSet[DetectorBank] = weakref.WeakSet()

    def models(self) -> int:
        """Models the pool's banks hold in memory."""
        return sum(len(b._models) for b in list(self.banks))

    def checkpoints(self) -> int:
        """Checkpoints the pool's banks keep."""
        return sum(len(b.checkpoints) for b in list(self.banks))


#: the live worker's banks (rules/stage.py): its limits are the process's, not a partition's
WORKER = Pool()
ModelKey = tuple[str, str, str]  # detector, key, attribute
log = logging.getLogger("atalaia.detectors.bank")


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
    >>> scores = [bank.score_learn("record-novelty", "urn:gauge:1", "flow", t0 + timedelta(minutes=i),
    ...                            5.0 + (i % 7) * 0.1) for i in range(400)]
    >>> scores[0] is None, 0.0 <= scores[-1] <= 1.0
    (True, True)
    >>> bank2 = DetectorBank.restore(load_config(), bank.snapshot())
    >>> t = t0 + timedelta(minutes=400)
    >>> bank2.score_learn("record-novelty", "urn:gauge:1", "flow", t, 9.0) == \\
    ...     bank.score_learn("record-novelty", "urn:gauge:1", "flow", t, 9.0)
    True
    """

    def __init__(
        self,
        config: DetectorsConfig,
        *,
        max_entities: int | None = ...,  # type: ignore[assignment]  # ...: as configured
        idle_after: float | None = ...,  # type: ignore[assignment]  # seconds; None: never
        checkpoints: MutableMapping[ModelKey, bytes] | None = None,
        forget_after: float | None = ...,  # type: ignore[assignment]  # seconds; None: never
        max_checkpoints: int | None = ...,  # type: ignore[assignment]
        pool: Pool | None = None,
    ) -> None:
        self.config = config
        self._specs: dict[str, DetectorSpec] = {d.name: d for d in config.detectors}
        #: in memory, least recently active first
        self._models: OrderedDict[ModelKey, Detector] = OrderedDict()
        self._last: dict[ModelKey, float] = {}  # newest event time of each model (epoch s)
        # the latest scores, per model: (time, value, score). Several rules with one detector on
        # one attribute (thresholds apart, an entity of two types) share its model; each scores
        # the reading, which the model must learn once (the second scored it against a model that
        # had learned it already). The calls for one reading are adjacent: a few entries suffice.
        self._recent: dict[ModelKey, tuple[float, float, float | None]] = {}
        self.max_entities = config.bank.max_entities if max_entities is ... else max_entities
        self.idle_after = config.bank.idle_seconds if idle_after is ... else idle_after
        self.checkpoints: MutableMapping[ModelKey, bytes] = {} if checkpoints is None else checkpoints
        limits = config.bank
        self.forget_after = limits.forget_seconds if forget_after is ... else forget_after
        self.max_checkpoints = limits.max_checkpoints if max_checkpoints is ... else max_checkpoints
        #: the newest event time of each checkpointed model, oldest first (what is forgotten)
        self._ck_last: OrderedDict[ModelKey, float] = OrderedDict()  # (O(1) at the front: a dict
        # emptied from the front walks over its deleted slots)
        self.pool = Pool() if pool is None else pool
        self.pool.banks.add(self)
        self.clock = float("-inf")  # newest event time seen (epoch seconds)
        self.stats: Counter[str] = Counter()  # evicted, resumed, refused
        self._full_logged = False
        self._fresh: dict[str, Detector] = {}  # a fresh model, per detector (never scored)
        #: after restore(): the detectors whose configuration text the snapshot had (None: all)
        self._unchanged: set[str] | None = None

    def __len__(self) -> int:
        return len(self._models)

    def _resolve(self, detector: str) -> str:
        if detector not in self._specs:
            detector = self.config.resolve(detector)
            if detector not in self._specs:
                raise KeyError(f"unknown detector {detector!r}; known: {sorted(self._specs)}")
        return detector

    def model(self, detector: str, key: str, attribute: str) -> Detector | None:
        """The model of one entity attribute: in memory, resumed from its checkpoint, or
        created fresh; None when the bank is full (the entity is refused)."""
        detector = self._resolve(detector)
        mk = (detector, key, attribute)
        det = self._models.get(mk)
        if det is not None:
            return det
        if self.max_entities is not None and (held := self.pool.models()) >= self.max_entities:
            self.stats["refused"] += 1
            if not self._full_logged:
                self._full_logged = True
                log.warning(
                    "detector bank full: %d entity models in memory (max_entities, this worker's "
                    "banks together); refusing new entities such as %s/%s/%s until idle ones are "
                    "evicted (counted in atalaia_detector_entities_refused)",
                    held,
                    detector,
                    key,
                    attribute,
                )
            return None
        data = self.checkpoints.pop(mk, None)
        self._ck_last.pop(mk, None)
        restored = None if data is None else Detector.from_state(data)
        det = None if restored is None else self._kept(detector, restored)
        if det is not None:
            self.stats["resumed"] += 1
        else:
            if restored is not None:
                self.stats["reset"] += 1
            det = self._specs[detector].build()
        self._models[mk] = det
        return det

    def _kept(self, detector: str, det: Detector) -> Detector | None:
        """A restored model as ``detector``'s model today, or None when it must restart. When
        the model tells its signature (``Detector.signature``: class and parameters with the
        code's defaults applied): itself when that is a fresh model's; carried over when it
        lacks only a test the code added since (``Detector.upgrade``, counted as upgraded);
        otherwise None, so one written under other defaults restarts. A model without a
        signature is kept when the detector's configuration text is unchanged since the
        snapshot."""
        model = self._fresh_model(detector)
        fresh = model.signature()
        if fresh is None:
            return det if self._unchanged is None or detector in self._unchanged else None
        if det.signature() == fresh:
            return det
        up = det.upgrade(model)
        if up is None or up.signature() != fresh:
            return None
        self.stats["upgraded"] += 1
        return up

    def _fresh_model(self, detector: str) -> Detector:
        """A freshly built model of ``detector``, built once: only read (its signature, its
        parameters for ``Detector.upgrade``), never scored."""
        model = self._fresh.get(detector)
        if model is None:
            model = self._fresh[detector] = self._specs[detector].build()
        return model

    def evict_idle(self, now: float | None = None) -> int:
        """Checkpoint and drop every model idle for ``idle_after`` seconds at event time
        ``now`` (default: the newest event time seen), then forget the checkpoints older than
        ``forget_after`` and, beyond ``max_checkpoints``, the oldest. Returns how many models
        were evicted."""
        now = self.clock if now is None else now
        evicted = 0
        if self.idle_after is not None:
            limit = now - self.idle_after
            # models are kept in order of last activity, so the idle ones are at the front
            while self._models:
                mk = next(iter(self._models))
                last = self._last.get(mk, limit)
                if last >= limit:
                    break
                self.checkpoints[mk] = self._models.pop(mk).to_state()
                self._ck_last.pop(mk, None)
                self._ck_last[mk] = last
                del self._last[mk]
                evicted += 1
        if evicted:
            self.stats["evicted"] += evicted
            if self.max_entities is not None and self.pool.models() < self.max_entities:
                self._full_logged = False
        if self._ck_last:
            self._forget(now, evicted)
        return evicted

    def _forget(self, now: float, added: int) -> None:
        """Forget the checkpoints whose entity has been silent for ``forget_after`` at ``now``
        and, when ``added`` ones took the pool beyond ``max_checkpoints``, this bank's oldest."""
        ck, gone = self._ck_last, 0
        if self.forget_after is not None:
            limit = now - self.forget_after
            while ck and next(iter(ck.values())) < limit:
                mk, _ = ck.popitem(last=False)
                self.checkpoints.pop(mk, None)
                gone += 1
        if added and self.max_checkpoints is not None:
            excess = self.pool.checkpoints() - self.max_checkpoints
            while excess > 0 and ck:
                mk, _ = ck.popitem(last=False)
                self.checkpoints.pop(mk, None)
                excess -= 1
                gone += 1
        if gone:
            self.stats["forgotten"] += gone

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
        t = _naive_utc(time)
        ts = t.replace(tzinfo=UTC).timestamp()
        if ts > self.clock:
            self.clock = ts
            if (self.idle_after is not None and self._models) or self._ck_last:
                self.evict_idle()
        det = self.model(detector, key, attribute)
        if det is None:
            return None
        detector = self._resolve(detector)
        mk = (detector, key, attribute)
        recent = self._recent.get(mk)
        if recent is not None and recent[0] == ts and recent[1] == x:  # this reading, scored already
            return recent[2]
        self._models.move_to_end(mk)
        last = self._last.get(mk)
        self._last[mk] = ts if last is None or ts > last else last
        seen = det.n_seen
        score = det.score_learn(x, t)
        result = score if seen >= self._specs[detector].warmup else None
        if len(self._recent) >= RECENT_MAX:
            self._recent.clear()
        self._recent[mk] = (ts, x, result)
        return result

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
            "last": self._last,
            "clock": self.clock,
            "stats": dict(self.stats),
            "checkpoints": dict(self.checkpoints) if isinstance(self.checkpoints, dict) else None,
            "checkpoint_last": self._ck_last,
        }
        return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, config: DetectorsConfig, data: bytes, **limits: Any) -> DetectorBank:
        """A bank from ``snapshot()`` bytes. Models of detectors that are no longer
        configured, or that no longer compute what their configuration builds, are dropped
        (they restart fresh, counted as ``reset``): a model that tells its signature
        (``Detector.signature``: class and parameters with the code's defaults applied) is
        compared with a fresh one's, so an edit that changes nothing it computes keeps it and a
        change of the code's defaults does not; one that does not tell is kept when its
        configuration text is unchanged. Checkpoints are checked the same way when they resume.
        ``limits``: ``max_entities``, ``idle_after``, ``checkpoints`` as for the constructor
        (a given checkpoint store is used as is; otherwise the snapshot's checkpoints)."""
        payload = pickle.loads(data)
        if not isinstance(payload, dict) or payload.get("version") not in (1, SNAPSHOT_VERSION):
            raise ValueError("not a detector bank snapshot of a supported version")
        bank = cls(config, **limits)
        same = {n for n, s in bank._specs.items() if payload["specs"].get(n) == _fingerprint(s)}
        bank._unchanged = same
        models = [(k, m) for k, m in payload["models"].items() if k[0] in bank._specs]
        kept = ((k, bank._kept(k[0], m)) for k, m in models)
        bank._models = OrderedDict((k, m) for k, m in kept if m is not None)
        bank._last = {k: v for k, v in payload.get("last", {}).items() if k in bank._models}
        bank.clock = payload.get("clock", float("-inf"))
        bank.stats.update(payload.get("stats", {}))
        if len(models) > len(bank._models):  # (no key otherwise: a snapshot round-trips byte for byte)
            bank.stats["reset"] += len(models) - len(bank._models)
        if "checkpoints" not in limits and payload.get("checkpoints"):
            # checked when each resumes (model()): one that computes otherwise starts fresh
            bank.checkpoints.update((k, v) for k, v in payload["checkpoints"].items() if k[0] in bank._specs)
        # when each checkpointed entity last reported (a snapshot from before this was kept:
        # as of the snapshot's clock)
        known = payload.get("checkpoint_last", {})
        held = [k for k in bank.checkpoints if k not in known]
        bank._ck_last = OrderedDict((k, known[k]) for k in known if k in bank.checkpoints)
        bank._ck_last.update((k, bank.clock) for k in held)
        return bank

    def state_of(self, detector: str, key: str, attribute: str) -> bytes | None:
        """One model's state (for a per-entity changelog/table), None if it does not exist."""
        mk = (self._resolve(detector), key, attribute)
        det = self._models.get(mk)
        return self.checkpoints.get(mk) if det is None else det.to_state()

    def load_state(self, detector: str, key: str, attribute: str, data: bytes) -> None:
        """Install one model's state written by ``state_of`` (same configuration assumed; a
        state whose signature is not the configuration's today is dropped, counted as reset)."""
        mk = (self._resolve(detector), key, attribute)
        self.checkpoints.pop(mk, None)
        self._ck_last.pop(mk, None)
        det = self._kept(mk[0], Detector.from_state(data))
        if det is None:  # computes otherwise: starts fresh on use
            self._models.pop(mk, None)
            self.stats["reset"] += 1
            return
        self._models[mk] = det

    def metrics(self) -> dict[str, float]:
        """Gauges and counters for Prometheus (``atalaia_detector_*``)."""
        return {
            "atalaia_detector_entities": len(self._models),
            "atalaia_detector_entities_checkpointed": len(self.checkpoints),
            "atalaia_detector_entities_max": self.max_entities or 0,
            "atalaia_detector_entities_evicted": self.stats["evicted"],
            "atalaia_detector_entities_resumed": self.stats["resumed"],
            "atalaia_detector_entities_reset": self.stats["reset"],
            "atalaia_detector_entities_upgraded": self.stats["upgraded"],
            "atalaia_detector_entities_refused": self.stats["refused"],
            "atalaia_detector_entities_forgotten": self.stats["forgotten"],
        }

    def memory_per_entity(self) -> dict[str, float]:
        """Mean pickled bytes of one model, per detector name in use."""
        sizes: dict[str, list[int]] = {}
        for (name, _, _), det in self._models.items():
            sizes.setdefault(name, []).append(len(det.to_state()))
        return {name: sum(v) / len(v) for name, v in sizes.items()}
