"""Record novelty: is some feature of the stream beyond anything seen so far?

Numenta's NAB detector fires when the value leaves the range seen so far ("spatial
anomaly"); this generalises it to several engineered features (value, change, level shift
against a slow mean, local volatility, deviation from the time-of-day profile), and adds a
far-tail test against robust quantiles, so that one huge spike does not mask later
anomalies. Records get rarer as a stream ages, so false alarms thin out on their own;
extremes can be forgotten after ``memory`` points, so a pattern not seen for a long time
becomes news again.

**Memory.** A bank holds one model per entity, so the model is laid out for size: the
parameters live in one ``_Plan`` shared by every model built with the same parameters
(interned, also when states are loaded), and the numeric state of one entity is one
``array('d')`` (absent values are NaN; every input is finite, so NaN never is a value) plus
river's P² estimators held without their Python wrappers. ``ExtremeTail`` and
``NoveltyExtreme`` (``extreme.py``) share this layout. States written before it (pickled
attribute dicts) still load: ``__setstate__`` migrates them.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from collections.abc import Hashable
from datetime import datetime
from typing import Any, NamedTuple

from river import stats

from atalaia.detectors.base import Detector, clean, number, scale_floor

FEATURES = ("value", "diff", "shift", "volatility", "seasonal", "spread", "shape", "pattern")
TAILS = (None, "history", "rolling")
NAN = math.nan
#: state format written by ``__getstate__`` (1: the compact layout; older states are dicts)
STATE_VERSION = 1


def logistic(z: float) -> float:
    return 1.0 if z > 40.0 else 0.0 if z < -40.0 else 1.0 / (1.0 + math.exp(-z))


def p2_quantile(q: float) -> Any:
    """river's P² running quantile (``stats.Quantile``) without its Python wrapper: the Rust
    estimator itself (``update``/``get``, the same numbers; ``get`` gives 0.0 before the first
    update, so callers track that themselves). The wrapper and its ``__dict__`` cost a third
    of the estimator's memory and a Python call per update."""
    return stats.Quantile(q)._quantile


class _Extremes:
    """Highest and lowest value of one feature (the layout of states written before the
    compact one; kept so that they load)."""

    __slots__ = ("block", "blocks", "cur_hi", "cur_lo", "cur_n", "hi", "lo", "mean", "n")


class _Blocks:
    """With ``memory``: maxima/minima of blocks of ``memory // 8`` points of one feature, so
    the extremes of the last ``memory`` points cost O(1) per point."""

    __slots__ = ("blocks", "cur_hi", "cur_lo", "cur_n")

    def __init__(self) -> None:
        self.blocks: deque[tuple[float, float]] = deque()
        self.cur_hi = self.cur_lo = 0.0
        self.cur_n = 0


class _Params(NamedTuple):
    """Every parameter of the record-novelty family (``RecordNovelty``, ``ExtremeTail``,
    ``NoveltyExtreme``); ``record``: the features with record tests, ``pareto``: whether every
    feature carries extreme-value tails."""

    features: tuple[str, ...]
    record: tuple[str, ...]
    pareto: bool
    tolerance: float = 0.05
    relax: float = 0.0
    fast: float = 0.3
    slow: float = 0.01
    bin_minutes: int = 60
    warmup: int = 150
    max_gap: float = 10.0
    memory: int | None = None
    tail: str | None = None
    tail_margin: float = 1.0
    tail_tolerance: float = 0.25
    tail_min: int = 500
    margin: float = 0.0
    agree: int = 1
    q: float = 0.98
    horizon: int = 1000
    min_excess: int = 10
    decades: float = 10.0
    shape_min: float | None = None
    tail_floor: float = 0.0
    stuck: float | None = None
    # (last: states written before these fields load with their defaults, the values every
    # configuration had until they were added to the signature)
    tail_quantile: float = 0.99
    tail_window: int = 2000
    day_types: int = 1


# offsets of the scalars in the state array; the features' blocks and the profile follow
PREV, STEP, FAST_MEAN, SLOW_MEAN, VOL, TAIL_N, SCALARS = range(7)
# with ``stuck``, after the profile: the current run of equal readings, the longest run the
# test knows (0: none yet), the runs completed
RUN, LONGEST, RUNS = range(3)
#: completed runs of equal readings before the stuck test speaks (the longest of fewer says
#: little about how long this series holds a value)
STUCK_RUNS = 10
# with ``spread``, after the profile (before the stuck slots): the short and the reference EW
# mean absolute change and the changes learned; with ``shape``: the EW lag-1 product and square
# of the one-step deviations, the previous deviation and the deviations learned
SP_SHORT, SP_REF, SP_N = range(3)
SH_C, SH_V, SH_PREV, SH_N = range(4)
#: the context features' record tests learn one block late: the highest and lowest value of the
#: block under way (2 slots after the feature's own) join the seen range when it completes, every
#: ``LAG`` values of the feature, so a feature that drifts for less than a block (an EW over about
#: ``LAG`` readings does, when the sensor goes quiet) is measured against the range before it,
#: not beaten by a hair at each step
LAG = 50
#: ``spread``: the EW rate of the short mean absolute change (about 50 readings) and of its
#: reference (about 500 readings: it does not follow a sensor that goes quiet or bursts for
#: hours); both average equally over their first 1/rate changes. Fixed before measuring.
SPREAD_FAST, SPREAD_REF = 0.02, 0.002
#: ``shape``: the EW rate of the lag-1 autocorrelation of the one-step deviations (about 50
#: readings). Fixed before measuring.
SHAPE_RATE = 0.02
# with ``pattern``, after shape's slots: the EW mean absolute deviation of the readings from the
# slow mean, the last ``PT_LEN`` symbols (a base-3 code) and how many there are, the total of
# the word counts; the counts themselves are the model's ``_w`` (``array('H')``)
PT_DEV, PT_WORD, PT_LEN, PT_TOTAL = range(4)
#: ``pattern`` (all fixed before measuring, from first principles): a reading's symbol is low /
#: mid / high against the slow EW mean ± ``PT_SPLIT`` EW mean absolute deviations (±0.43 sd on a
#: Gaussian, whose mean absolute deviation is 0.80 sd: the terciles, so on noise every symbol,
#: and every word, is equally likely and no word is rare); a word is the last ``PT_W`` symbols
#: (3⁴ = 81 words), and its rarity ``log((total + 81) / (count + 1))`` (Laplace) against the word
#: counts, spoken once they hold ``PT_WORDS`` words (one per word, the prior's weight). The
#: counts are halved (integer) when they total ``PT_HORIZON`` words: a memory of 1000–2000
#: words, about 12–25 of a word of average frequency (3.5–7 days of 5-minute readings)
PT_SPLIT, PT_W, PT_HORIZON = 0.54, 4, 2000
PT_WORDS = 3**PT_W
# per record-tested feature: hi, lo, mean, n; per feature with tails: seen, then n, m, v of
# its upper tail and of its lower tail (the tail of −f)
EXT_SIZE, PARETO_SIZE = 4, 7


class _Plan:
    """Parameters plus the state layout they imply; immutable, one per distinct parameter
    set (``plan()`` interns them), shared by all the models that use it."""

    __slots__ = (
        *_Params._fields,
        "params",
        "codes",
        "ext",
        "par",
        "profile",
        "bins",
        "size",
        "items",
        "value_ext",
        "run",
        "spread",
        "shape",
        "pattern",
        "lagged",
        "weekend",
    )

    def __init__(self, params: _Params) -> None:
        for name, value in zip(_Params._fields, params, strict=True):
            setattr(self, name, value)
        #: with ``day_types`` 2, the weekend profile's offset from the weekday one's; else 0
        self.weekend = 1440 // params.bin_minutes if params.day_types == 2 else 0
        self.params = params
        self.codes = tuple(FEATURES.index(f) for f in params.features)
        off, ext, par = SCALARS, [], []
        for f in params.features:
            ext.append(off if f in params.record else -1)
            off += EXT_SIZE if f in params.record else 0
            par.append(off if params.pareto else -1)
            off += PARETO_SIZE if params.pareto else 0
        self.ext, self.par = tuple(ext), tuple(par)
        self.profile, self.bins = off, 1440 // params.bin_minutes
        #: with ``day_types`` 2: the weekday profile's bins, then the weekend's (Sat, Sun)
        self.size = off + self.bins * params.day_types
        #: the context features' slots (SP_* / SH_* from here), or −1; before the stuck slots
        self.spread = -1 if "spread" not in params.features else self.size
        self.size += 0 if self.spread < 0 else 5
        self.shape = -1 if "shape" not in params.features else self.size
        self.size += 0 if self.shape < 0 else 6
        self.pattern = -1 if "pattern" not in params.features else self.size
        self.size += 0 if self.pattern < 0 else 6
        #: record-test offset → the slots of its block under way (the context features')
        self.lagged = {
            ext[params.features.index(f)]: o + k
            for f, o, k in (
                ("spread", self.spread, 3),
                ("shape", self.shape, 4),
                ("pattern", self.pattern, 4),
            )
            if o >= 0 and ext[params.features.index(f)] >= 0
        }
        #: the stuck test's slots (RUN, LONGEST, RUNS from here), or −1
        self.run = -1 if params.stuck is None else self.size
        self.size += 0 if params.stuck is None else 3
        #: per feature: (code, record-test offset or −1, tail offset or −1, index of its
        #: upper tail's quantile estimator in the model's ``_q``, the lower one's next)
        quantiles = tuple(2 + 2 * i if params.pareto else -1 for i in range(len(params.features)))
        self.items = tuple(zip(self.codes, self.ext, self.par, quantiles, strict=True))
        #: the value's record-test offset (its seen range), or −1
        self.value_ext = ext[params.features.index("value")] if "value" in params.features else -1

    def fresh(self) -> array:
        s = array("d", [NAN]) * self.size
        s[TAIL_N] = 0.0
        for e in self.ext:
            if e >= 0:
                s[e + 3] = 0.0  # n
        for o in self.par:
            if o >= 0:
                s[o : o + PARETO_SIZE] = array("d", [0.0] * PARETO_SIZE)
        if self.run >= 0:
            s[self.run : self.run + 3] = array("d", [0.0] * 3)
        if self.spread >= 0:
            s[self.spread + SP_N] = 0.0
        if self.shape >= 0:
            s[self.shape : self.shape + 4] = array("d", [0.0, 0.0, NAN, 0.0])
        if self.pattern >= 0:
            s[self.pattern + PT_WORD : self.pattern + 4] = array("d", [0.0, 0.0, 0.0])
        return s

    def counts(self) -> array | None:
        """Fresh word counts for ``pattern`` (None without it)."""
        return None if self.pattern < 0 else array("H", bytes(2 * PT_WORDS))


_PLANS: dict[str, _Plan] = {}


def plan(params: _Params) -> _Plan:
    """The shared plan of ``params`` (keyed by ``repr``: 0.0 and −0.0, 1 and 1.0 stay apart)."""
    key = repr(params)
    found = _PLANS.get(key)
    if found is None:
        found = _PLANS[key] = _Plan(params)
    return found


def _param(name: str, settable: bool) -> property:
    def get(self: RecordNovelty) -> Any:
        return getattr(self._p, name)

    def put(self: RecordNovelty, value: Any) -> None:
        self._p = plan(self._p.params._replace(**{name: value}))

    return property(get, put if settable else None, doc=f"parameter ``{name}``")


class RecordNovelty(Detector):
    """Score = max over features of a logistic of the feature's exceedance of its seen range
    (0.5 exactly at the edge of the range, → 1 beyond it by a few ``tolerance``).

    Parameters: ``features`` (among value, diff, shift, volatility, seasonal, and the context
    features spread — the log ratio of the short EW mean absolute change to a slow reference
    that does not follow it —, shape — the EW lag-1 autocorrelation of the one-step
    deviations — and pattern — the rarity of the word of the last ``PT_W`` readings' symbols,
    low / mid / high against the slow mean, in fading counts of the words seen; their record
    tests learn one block of ``LAG`` values late); ``tolerance``
    (fraction of the range that moves the score from 0.5 to 0.73); ``fast``/``slow`` (EW rates
    of the level-shift means); ``bin_minutes`` (time-of-day profile bins); ``day_types`` (1: one
    time-of-day profile; 2: one for Monday–Friday and one for Saturday–Sunday, by the weekday of
    the timestamps' own time, each learned as the single one is; as there, a bin not learned yet
    gives no seasonal value, so the first weekend is not scored against the weekdays' profile);
    ``memory`` (points over which extremes are remembered, None = forever); ``relax`` (per-point
    pull of the
    extremes towards the mean); ``tail`` ("history": P² quantiles of the whole history in
    constant memory, "rolling": exact quantiles of the last ``tail_window`` values) adds a
    far-tail test — a value beyond the ``tail_quantile`` band by more than ``tail_margin`` band
    widths is news even when one old spike stretched the range (it scores 0.5 at the margin,
    rising with ``tail_tolerance``; ``tail_floor``: silent while the band is at most that
    fraction of the value's seen range, i.e. on a series that nearly always reads the same and
    then blips, where "band widths" has no unit; 0 = never silent); ``stuck`` (a frozen
    sensor: the reading that makes a run of equal readings ``stuck`` times as long as the
    longest run this series has completed scores 0.95, and the run becomes the longest, so a
    sensor frozen for good is told again only at ``stuck`` times that; silent until
    ``STUCK_RUNS`` runs have completed, so a constant series never speaks; a repeat at the same
    time does not lengthen a run and a gap of more than ``max_gap`` steps ends it; None = no
    such test); ``margin`` (a fraction of the seen range a feature must
    exceed before it scores above 0.5: scale-free); ``agree`` (score the ``agree``-th most
    novel test, features and tail alike, so ``agree=2`` needs two tests to agree); ``warmup`` (points scored 0); ``max_gap`` (a gap longer
    than this many typical steps makes the change features wait for the next point).

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> det = RecordNovelty(warmup=50)
    >>> for i in range(500):
    ...     _ = det.score_learn(10.0 + (i % 10) * 0.2, t0 + timedelta(minutes=5 * i))
    >>> det.score_one(10.8, t0 + timedelta(minutes=2500)) < 0.2 < 0.9 < det.score_one(13.0, t0)
    True
    """

    # _p: the shared plan; _s: the state array; _q: the far tail's (low, high) quantile
    # estimators or None; _blocks: per record-tested feature, its blocks (with memory) or None
    __slots__ = ("_blocks", "_p", "_prev_t", "_q", "_s", "_w", "n_seen")

    def __init__(
        self,
        features: tuple[str, ...] | list[str] = FEATURES,
        tolerance: float = 0.05,
        relax: float = 0.0,
        fast: float = 0.3,
        slow: float = 0.01,
        bin_minutes: int = 60,
        warmup: int = 150,
        max_gap: float = 10.0,
        memory: int | None = None,
        tail: str | None = None,
        tail_window: int = 2000,
        tail_quantile: float = 0.99,
        tail_margin: float = 1.0,
        tail_tolerance: float = 0.25,
        margin: float = 0.0,
        agree: int = 1,
        tail_floor: float = 0.0,
        stuck: float | None = None,
        day_types: int = 1,
    ) -> None:
        unknown = set(features) - set(FEATURES)
        if unknown or not features:
            raise ValueError(f"features must be among {FEATURES}, not {sorted(unknown) or '[]'}")
        if 1440 % bin_minutes:
            raise ValueError("bin_minutes must divide a day")
        if not 1 <= agree <= len(features) + (tail is not None) + (stuck is not None):
            raise ValueError("agree must be between 1 and the number of tests (features, tail, stuck)")
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, not {tail!r}")
        if not (number(tail_floor) and 0.0 <= tail_floor < 1.0):
            raise ValueError(
                f"tail_floor must be a fraction of the seen range, 0 <= tail_floor < 1, not {tail_floor!r}"
            )
        if stuck is not None and not (number(stuck) and 1.0 < stuck <= 1e6):
            raise ValueError(
                f"stuck must be a factor over the longest run of equal readings, 1 < stuck <= 1e6, or null, not {stuck!r}"
            )
        if day_types not in (1, 2) or isinstance(day_types, bool):
            raise ValueError(
                f"day_types must be 1 (one time-of-day profile) or 2 (weekdays, weekends), not {day_types!r}"
            )
        features = tuple(features)
        q: tuple[Any, Any] | None = None
        if tail == "rolling":  # exact quantiles of the last tail_window values
            q = (
                stats.RollingQuantile(1.0 - tail_quantile, tail_window),
                stats.RollingQuantile(tail_quantile, tail_window),
            )
        elif tail == "history":  # P² estimates over the whole history, constant memory
            q = (p2_quantile(1.0 - tail_quantile), p2_quantile(tail_quantile))
        self._setup(
            _Params(
                features=features,
                record=features,
                pareto=False,
                tolerance=tolerance,
                relax=relax,
                fast=fast,
                slow=slow,
                bin_minutes=bin_minutes,
                warmup=warmup,
                max_gap=max_gap,
                memory=memory,
                tail=tail,
                tail_margin=tail_margin,
                tail_tolerance=tail_tolerance,
                tail_min=min(tail_window // 4, 500),
                margin=margin,
                agree=agree,
                tail_floor=float(tail_floor),
                stuck=None if stuck is None else float(stuck),
                tail_quantile=tail_quantile,
                tail_window=tail_window,
                day_types=int(day_types),
            ),
            q,
        )

    def _setup(self, params: _Params, q: tuple[Any, Any] | None) -> None:
        self._p = p = plan(params)
        self._s = p.fresh()
        self._q = q
        self._prev_t: datetime | None = None
        self._blocks = None if p.memory is None else tuple(_Blocks() if e >= 0 else None for e in p.ext)
        self._w = p.counts()
        self.n_seen = 0

    # parameters (shared through the plan); the ones that shape the state are read-only
    features = _param("features", False)
    bin_minutes = _param("bin_minutes", False)
    memory = _param("memory", False)
    tail = _param("tail", False)
    tolerance = _param("tolerance", True)
    relax = _param("relax", True)
    fast = _param("fast", True)
    slow = _param("slow", True)
    warmup = _param("warmup", True)
    max_gap = _param("max_gap", True)
    tail_margin = _param("tail_margin", True)
    tail_tolerance = _param("tail_tolerance", True)
    tail_floor = _param("tail_floor", True)
    stuck = _param("stuck", False)
    day_types = _param("day_types", False)
    _tail_min = _param("tail_min", True)
    margin = _param("margin", True)
    agree = _param("agree", True)

    # -- state bytes -------------------------------------------------------------------
    def __getstate__(self) -> tuple:
        state = (
            STATE_VERSION,
            self._p.params,
            self._s.tobytes(),
            self._q,
            self._prev_t,
            self.n_seen,
            self._blocks,
        )
        # with ``pattern`` only, its word counts (so every other state is as before)
        return state if self._w is None else (*state, self._w.tobytes())

    def __setstate__(self, state: tuple | dict) -> None:
        if isinstance(state, dict):
            self._w = None
            self._migrate(state)
            return
        version, params, data, self._q, self._prev_t, self.n_seen, self._blocks, *words = state
        if version != STATE_VERSION:
            raise ValueError(f"unknown record-novelty state version {version!r}")
        self._p = plan(_Params(*params))
        self._s = array("d")
        self._s.frombytes(data)
        self._w = None
        if words:
            self._w = array("H")
            self._w.frombytes(words[0])

    def _migrate(self, d: dict) -> None:
        """Load a state written before the compact layout (the pickled attribute dict)."""
        ext: dict[str, _Extremes] = d["_ext"]
        tails = d.get("_tails")  # ExtremeTail and NoveltyExtreme
        p = self._p = plan(
            _Params(
                features=tuple(d["features"]),
                record=tuple(ext),
                pareto=tails is not None,
                tolerance=d["tolerance"],
                relax=d["relax"],
                fast=d["fast"],
                slow=d["slow"],
                bin_minutes=d["bin_minutes"],
                warmup=d["warmup"],
                max_gap=d["max_gap"],
                memory=d["memory"],
                tail=d["tail"],
                tail_margin=d["tail_margin"],
                tail_tolerance=d["tail_tolerance"],
                tail_min=d["_tail_min"],
                tail_quantile=d.get("tail_quantile", 0.99),
                tail_window=d.get("tail_window", 2000),
                margin=d.get("margin", 0.0),  # states from before these knobs: their defaults
                agree=d.get("agree", 1),
                **({k: d[k] for k in ("q", "horizon", "min_excess", "decades")} if tails is not None else {}),
            )
        )
        s = self._s = p.fresh()
        for name, value in (
            (PREV, d["_prev"]),
            (STEP, d["_step"]),
            (FAST_MEAN, d["_fast_mean"]),
            (SLOW_MEAN, d["_slow_mean"]),
            (VOL, d["_vol"]),
        ):
            s[name] = NAN if value is None else value
        for b, ref in d["_profile"].items():
            s[p.profile + b] = ref
        blocks = []
        for f, e in zip(p.features, p.ext, strict=True):
            old = ext.get(f)
            if e < 0 or old is None:
                blocks.append(None)
                continue
            s[e : e + EXT_SIZE] = array("d", [old.hi, old.lo, old.mean, old.n])
            b = _Blocks()
            b.blocks, b.cur_hi, b.cur_lo, b.cur_n = deque(old.blocks), old.cur_hi, old.cur_lo, old.cur_n
            blocks.append(b)
        self._blocks = tuple(blocks) if p.memory is not None else None
        self._q = None
        if d["_tail"] is not None:
            lo, hi, n = d["_tail"]
            # history: river's P² wrappers, of which only the estimator is kept
            self._q = (lo._quantile, hi._quantile) if isinstance(lo, stats.Quantile) else (lo, hi)
            s[TAIL_N] = n
        if tails is not None:
            self._q = (
                *(self._q or (None, None)),
                *(t.quantile._quantile for f in p.features for t in tails[f]),
            )
            for f, o in zip(p.features, p.par, strict=True):
                hi, lo = tails[f]
                seen = 1.0 if hi.quantile.get() is not None else 0.0
                s[o : o + PARETO_SIZE] = array("d", [seen, hi.n, hi.m, hi.v, lo.n, lo.m, lo.v])
        self._prev_t = d["_prev_t"]
        self.n_seen = d["n_seen"]

    # -- the model -----------------------------------------------------------------------
    def _values(self, x: float, t: datetime) -> list[tuple[float, int, int, int]]:
        """(feature value, record-test offset, tail offset, tail quantile index) of every
        feature defined at ``(x, t)``, in the order of ``features``."""
        p, s = self._p, self._s
        prev = s[PREV]
        contiguous = prev == prev and not self._gap(t)  # a gap cuts the change features
        out = []
        for code, e, o, qi in p.items:
            if code == 0:  # value
                out.append((x, e, o, qi))
            elif code == 1:  # diff
                if contiguous:
                    out.append((x - prev, e, o, qi))
            elif code == 2:  # shift
                slow = s[SLOW_MEAN]
                if slow == slow:
                    fast = s[FAST_MEAN]
                    fast = fast + p.fast * (x - fast)
                    out.append((fast - slow, e, o, qi))
            elif code == 3:  # volatility
                vol = s[VOL]
                if contiguous and vol == vol:
                    out.append((vol + p.fast * (abs(x - prev) - vol), e, o, qi))
            elif code == 4:  # seasonal
                b = p.profile + (t.hour * 60 + t.minute) // p.bin_minutes
                if p.weekend and t.weekday() >= 5:  # day_types 2: Saturday and Sunday's own bins
                    b += p.weekend
                ref = s[b]
                if ref == ref:  # (a bin not learned yet: no seasonal value, as at the start)
                    out.append((x - ref, e, o, qi))
            elif code == 5:  # spread
                if contiguous and s[p.spread + SP_N] >= LAG:  # (a reference of LAG changes)
                    out.append((self._spread(x, prev), e, o, qi))
            elif code == 6:  # shape
                h = p.shape
                if contiguous and s[h + SH_N] >= LAG and s[h + SH_PREV] == s[h + SH_PREV]:
                    out.append((self._shape(x - s[FAST_MEAN]), e, o, qi))
            else:  # pattern: a complete word, and counts that hold as many words as there are
                h = p.pattern
                if contiguous and s[h + PT_LEN] >= PT_W - 1 and s[h + PT_TOTAL] >= PT_WORDS:
                    word = int(s[h + PT_WORD]) * 3 + self._symbol(x)
                    out.append((math.log((s[h + PT_TOTAL] + PT_WORDS) / (self._w[word] + 1.0)), e, o, qi))
        return out

    def _symbol(self, x: float) -> int:
        """``pattern``'s symbol of ``x``: 0 (low), 1 (mid) or 2 (high) against the slow EW mean
        ± ``PT_SPLIT`` EW mean absolute deviations (the terciles of a Gaussian), both before
        ``x``; a series that has not deviated yet reads mid at its mean."""
        s = self._s
        mean, dev = s[SLOW_MEAN], s[self._p.pattern + PT_DEV]
        band = max(PT_SPLIT * dev, scale_floor(mean)) if dev == dev else scale_floor(mean)
        return 0 if x < mean - band else 2 if x > mean + band else 1

    def _spread(self, x: float, prev: float) -> float:
        """The ``spread`` feature at ``x``: log of the short EW mean absolute change (``x``'s
        included) over its slow reference (``x``'s not): ≈ 0 while the spread is as usual, −1.6
        when a sensor has gone a fifth as noisy (for hours), positive in a burst of changes."""
        s, o = self._s, self._p.spread
        n = s[o + SP_N] + 1.0
        short = s[o + SP_SHORT]
        short += max(1.0 / n, SPREAD_FAST) * (abs(x - prev) - short)
        floor = scale_floor(s[SLOW_MEAN])
        return math.log((short + floor) / (s[o + SP_REF] + floor))

    def _shape(self, d: float) -> float:
        """The ``shape`` feature for the one-step deviation ``d`` (the value minus the fast EW
        mean before it): the EW lag-1 autocorrelation of these deviations, ``d``'s included, in
        [−1, 1]: near 1 on a smooth course, near 0 on noise, negative when readings alternate;
        scale-free, so a change of texture inside the range shows."""
        s, o = self._s, self._p.shape
        n = s[o + SH_N] + 1.0
        rate = max(1.0 / n, SHAPE_RATE)
        prev = s[o + SH_PREV]
        c = s[o + SH_C] + rate * (d * prev - s[o + SH_C])
        v = s[o + SH_V] + rate * (d * d - s[o + SH_V])
        floor = scale_floor(s[SLOW_MEAN])
        return max(-1.0, min(1.0, c / (v + floor * floor)))

    def score_one(self, x: float, t: datetime) -> float:
        x = clean(x)
        if x is None or self.n_seen < self._p.warmup:
            return 0.0
        return self._record_score(x, t, self._values(x, t))

    def _gap(self, t: datetime) -> bool:
        """Is ``t`` more than ``max_gap`` typical steps after the previous point?"""
        prev_t, step = self._prev_t, self._s[STEP]
        return prev_t is not None and step == step and (t - prev_t).total_seconds() > self._p.max_gap * step

    def _run(self, x: float, t: datetime) -> float:
        """The run of equal readings ``x`` at ``t`` makes (the stuck test): one longer when it
        repeats the previous reading, 1 (a new run) when it differs or comes after a gap of more
        than ``max_gap`` typical steps, 0 when it repeats it at the same or an earlier time (a
        duplicate delivery: the run neither grows nor ends)."""
        s, prev_t = self._s, self._prev_t
        if x != s[PREV] or prev_t is None:
            return 1.0
        if t <= prev_t:
            return 0.0
        return 1.0 if self._gap(t) else s[self._p.run + RUN] + 1.0

    def _told(self, run: float) -> bool:
        """Does a growing ``run`` of equal readings make a record the stuck test tells (``stuck``
        times the longest, once ``STUCK_RUNS`` runs have completed)? A told run is the new
        longest, so it is told once."""
        s, r = self._s, self._p.run
        return s[r + RUNS] >= STUCK_RUNS and run >= self._p.stuck * s[r + LONGEST]

    def _stuck_test(self, x: float, t: datetime) -> float | None:
        """The stuck test's exceedance (in the record tests' units) when ``x`` at ``t`` makes a
        run of equal readings ``stuck`` times the longest (3 tolerances: 0.95), else None."""
        p, r = self._p, self._p.run
        if r < 0:
            return None
        run = self._run(x, t)
        if run > self._s[r + RUN] and self._told(run):
            return (3.0 + math.log(run / (p.stuck * self._s[r + LONGEST])) / math.log(p.stuck)) * p.tolerance
        return None

    def _record_score(
        self, x: float, t: datetime, values: list[tuple[float, int, int, int]], stuck: bool = True
    ) -> float:
        p, s = self._p, self._s
        tests = []
        for f, e, _, _ in values:
            if e >= 0 and s[e + 3]:
                hi, lo = s[e], s[e + 1]
                span = max(hi - lo, scale_floor(s[e + 2]))
                tests.append(max(f - hi, lo - f) / span - p.margin)
        if p.tail is not None and s[TAIL_N] >= p.tail_min:
            lo, hi = self._q[0].get(), self._q[1].get()
            span = max(hi - lo, scale_floor(hi))
            v = p.value_ext
            # with tail_floor, a band narrower than that part of the seen value range (a series
            # that nearly always reads the same, then blips) has no unit to measure "far" in:
            # the far-tail test is silent and the record and tail tests speak
            if not (p.tail_floor and v >= 0 and s[v + 3] and hi - lo <= p.tail_floor * (s[v] - s[v + 1])):
                e = max(x - hi, lo - x) / span
                tests.append((e - p.tail_margin) * p.tolerance / p.tail_tolerance)
        if stuck and (run := self._stuck_test(x, t)) is not None:
            tests.append(run)
        if len(tests) < p.agree:
            return 0.0
        # the agree-th largest: with agree=2 two tests must call the point novel
        worst = max(tests) if p.agree == 1 else sorted(tests)[-p.agree]
        return logistic(worst / p.tolerance)

    def signature(self) -> Hashable:
        return (type(self).__name__, self._p.params)

    def upgrade(self, fresh: Detector) -> Detector | None:
        # a model from before its configuration had the stuck test gains it: the test counts
        # runs from here (silent until STUCK_RUNS have completed), every other state is kept
        if type(fresh) is not type(self):
            return None
        have, want = self._p.params, fresh._p.params  # type: ignore[attr-defined]
        if have.stuck is not None or want.stuck is None or have._replace(stuck=want.stuck) != want:
            return None
        p = plan(want)
        if p.run != len(self._s):  # (the stuck slots are the last of the layout)
            return None
        self._p = p
        self._s.extend(array("d", [0.0, 0.0, 0.0]))
        return self

    def learn_one(self, x: float, t: datetime) -> None:
        x = clean(x)
        if x is None:
            return
        p, s = self._p, self._s
        values = self._values(x, t)
        if p.pareto:
            self._learn_tails(values)
        for f, e, _, _ in values:
            if e < 0:
                continue
            # the feature's extremes (hi, lo, EW mean, n), optionally over the last memory points
            n = s[e + 3]
            g = p.lagged.get(e, -1) if p.lagged else -1
            if n == 0:
                s[e] = s[e + 1] = s[e + 2] = f
            elif g >= 0:  # a context feature: its range learns one block late
                s[e + 2] += p.slow * (f - s[e + 2])
                hi, lo = s[g], s[g + 1]
                s[g], s[g + 1] = (f, f) if hi != hi else (max(hi, f), min(lo, f))
                if (n + 1) % LAG == 0:
                    s[e], s[e + 1] = max(s[e], s[g]), min(s[e + 1], s[g + 1])
                    s[g] = s[g + 1] = NAN
            else:
                mean = s[e + 2] + p.slow * (f - s[e + 2])
                hi = s[e] + p.relax * (mean - s[e])
                lo = s[e + 1] + p.relax * (mean - s[e + 1])
                s[e], s[e + 1], s[e + 2] = max(hi, f), min(lo, f), mean
            s[e + 3] = n + 1
            if p.memory is not None:
                self._learn_blocks(self._block_of(e), f, e)
        if p.tail is not None:
            self._q[0].update(x)
            self._q[1].update(x)
            s[TAIL_N] += 1
        r = p.run
        if r >= 0:
            run = self._run(x, t)
            if run == 1.0:
                if s[r + RUN]:  # the previous run ended
                    s[r + LONGEST] = max(s[r + LONGEST], s[r + RUN])
                    s[r + RUNS] += 1.0
                s[r + RUN] = run
            elif run:  # (0: a duplicate delivery changes nothing)
                if self._told(run):
                    s[r + LONGEST] = run  # told (above): the new longest
                s[r + RUN] = run
        prev, prev_t = s[PREV], self._prev_t
        contiguous = prev == prev and not self._gap(t)
        o = p.shape
        if o >= 0:
            fast = s[FAST_MEAN]  # (before this point's update, below)
            if contiguous and fast == fast:
                dev = x - fast
                if s[o + SH_PREV] == s[o + SH_PREV]:
                    n = s[o + SH_N] + 1.0
                    s[o + SH_N] = n
                    rate = max(1.0 / n, SHAPE_RATE)
                    s[o + SH_C] += rate * (dev * s[o + SH_PREV] - s[o + SH_C])
                    s[o + SH_V] += rate * (dev * dev - s[o + SH_V])
                s[o + SH_PREV] = dev
            else:  # a gap (or the first point): the next deviation has no predecessor
                s[o + SH_PREV] = NAN
        if p.pattern >= 0:
            self._learn_pattern(x, contiguous)
        slow = s[SLOW_MEAN]
        if slow != slow:
            s[FAST_MEAN] = s[SLOW_MEAN] = x
        else:
            s[FAST_MEAN] += p.fast * (x - s[FAST_MEAN])
            s[SLOW_MEAN] = slow + p.slow * (x - slow)
        if contiguous:
            d = abs(x - prev)
            vol = s[VOL]
            s[VOL] = d if vol != vol else vol + p.fast * (d - vol)
            o = p.spread
            if o >= 0:
                n = s[o + SP_N] + 1.0
                s[o + SP_N] = n
                if n == 1.0:
                    s[o + SP_SHORT] = s[o + SP_REF] = d
                else:
                    s[o + SP_SHORT] += max(1.0 / n, SPREAD_FAST) * (d - s[o + SP_SHORT])
                    s[o + SP_REF] += max(1.0 / n, SPREAD_REF) * (d - s[o + SP_REF])
        b = p.profile + (t.hour * 60 + t.minute) // p.bin_minutes
        if p.weekend and t.weekday() >= 5:  # day_types 2: Saturday and Sunday learn their own
            b += p.weekend
        ref = s[b]
        s[b] = x if ref != ref else ref + 0.1 * (x - ref)
        if prev_t is not None:
            dt = (t - prev_t).total_seconds()
            if dt > 0:
                step = s[STEP]
                s[STEP] = dt if step != step else min(dt, 0.9 * step + 0.1 * dt)
        s[PREV] = x
        self._prev_t = t
        self.n_seen += 1

    def _learn_pattern(self, x: float, contiguous: bool) -> None:
        """``pattern``: count the word ``x`` completes, shift its symbol into the word under way
        (a gap, or the first reading, starts the word afresh), then learn its deviation from the
        slow mean (all against the state before ``x``, as ``_values`` saw it)."""
        s, o = self._s, self._p.pattern
        slow = s[SLOW_MEAN]
        if contiguous and slow == slow:
            symbol = self._symbol(x)
            have = s[o + PT_LEN]
            if have >= PT_W - 1:
                w = self._w
                w[int(s[o + PT_WORD]) * 3 + symbol] += 1
                total = s[o + PT_TOTAL] + 1.0
                if total >= PT_HORIZON:  # fade: halve every count (integers: exact)
                    for i in range(PT_WORDS):
                        w[i] >>= 1
                    total = float(sum(w))
                s[o + PT_TOTAL] = total
            s[o + PT_WORD] = (int(s[o + PT_WORD]) * 3 + symbol) % (PT_WORDS // 3)
            s[o + PT_LEN] = min(have + 1.0, PT_W - 1.0)
        else:
            s[o + PT_WORD] = s[o + PT_LEN] = 0.0
        if slow == slow:  # the deviation: equal weights for the first 1/slow readings
            dev, n = s[o + PT_DEV], float(self.n_seen)
            d = abs(x - slow)
            s[o + PT_DEV] = d if dev != dev else dev + max(1.0 / n, self._p.slow) * (d - dev)

    def _learn_tails(self, values: list[tuple[float, int, int, int]]) -> None:
        """Learn the features' extreme-value tails (``ExtremeTail``; a plan with tails is
        only ever built by it)."""
        raise NotImplementedError

    def _block_of(self, e: int) -> _Blocks:
        return self._blocks[self._p.ext.index(e)]

    def _learn_blocks(self, b: _Blocks, f: float, e: int) -> None:
        s = self._s
        if b.cur_n == 0:
            b.cur_hi = b.cur_lo = f
        else:
            b.cur_hi, b.cur_lo = max(b.cur_hi, f), min(b.cur_lo, f)
        b.cur_n += 1
        if b.cur_n >= max(1, self._p.memory // 8):
            b.blocks.append((b.cur_hi, b.cur_lo))
            b.cur_n = 0
            if len(b.blocks) > 8:
                b.blocks.popleft()
                s[e] = max(k[0] for k in b.blocks)
                s[e + 1] = min(k[1] for k in b.blocks)
