"""File-level k-fold cross-validation of detectors on a NAB kit (``../shared/nab``).

Per fold, the configuration (among the detectors given) and each profile's threshold are
chosen on the training files only, then the held-out files are scored at that threshold with
the NAB scorer of the kit (``nabscore.py``: probation, windows, sigmoid rewards, normalised
scores). The held-out score's mean and spread over folds is the figure to optimise; the
score on all files with the threshold optimised on them (NAB's own figure) is reported only
beside it.

Scores per (configuration, file) are cached on disk (``.npy``), so threshold and selection
sweeps never re-run a model. Everything runs in one process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import random
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from atalaia.detectors.config import DetectorSpec
from atalaia.detectors.nab import read_series, score_series

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
#: where ``atalaia detectors cv`` looks for the kit when given no path
DEFAULT_NAB = Path(__file__).resolve().parents[2] / "shared" / "nab"
DEFAULT_CACHE = Path(os.environ.get("ATALAIA_CV_CACHE", "/tmp/atalaia-cv-cache"))
#: half-width of the threshold neighbourhood whose mean raw score picks a "flat" threshold
FLAT_HALF_WIDTH = 0.03


def find_nab(path: str | Path | None = None) -> Path:
    """The NAB kit folder (holding ``data/``, ``labels/`` and ``nabscore.py``)."""
    candidates = [Path(path)] if path else [Path("../shared/nab"), DEFAULT_NAB]
    for c in candidates:
        if (c / "nabscore.py").is_file() and (c / "data").is_dir():
            return c.resolve()
        if c.name == "data" and (c.parent / "nabscore.py").is_file():
            return c.parent.resolve()
    raise FileNotFoundError(
        f"no NAB kit (data/, labels/, nabscore.py) at {', '.join(str(c) for c in candidates)}"
    )


def load_scorer(nab_dir: Path) -> ModuleType:
    """The kit's own scorer module, ``nabscore.py``."""
    name = "atalaia_nabscore"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, nab_dir / "nabscore.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def make_folds(rels: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """Split files into ``k`` disjoint folds, stratified by category folder (each category's
    files are shuffled with ``seed`` and dealt round-robin, continuing across categories, so
    fold sizes differ by at most one). Every file is in exactly one fold."""
    if not 2 <= k <= len(rels):
        raise ValueError(f"folds must be between 2 and the number of files ({len(rels)}), not {k}")
    rng = random.Random(seed)
    by_cat: dict[str, list[str]] = {}
    for rel in sorted(set(rels)):
        by_cat.setdefault(rel.rsplit("/", 1)[0] if "/" in rel else "", []).append(rel)
    folds: list[list[str]] = [[] for _ in range(k)]
    start = rng.randrange(k)
    i = 0
    for cat in sorted(by_cat):
        files = by_cat[cat]
        rng.shuffle(files)
        for rel in files:
            folds[(start + i) % k].append(rel)
            i += 1
    return [sorted(f) for f in folds]


@dataclass
class Kit:
    """The labelled files of a NAB kit and its scorer."""

    nab_dir: Path
    scorer: ModuleType
    truths: dict[str, object]  # rel -> nabscore.LabelledFile
    costs: dict[str, dict[str, float]]

    @classmethod
    def load(cls, nab_dir: str | Path | None = None, files: Iterable[str] | None = None) -> Kit:
        nab_dir = find_nab(nab_dir)
        ns = load_scorer(nab_dir)
        data = nab_dir / "data"
        labels = ns.load_windows(nab_dir / "labels" / "combined_windows.json")
        rels = ns._select_files(labels, data, list(files) if files else None, [])
        truths = {rel: ns.load_labelled_file(rel, data, labels[rel]) for rel in rels}
        return cls(nab_dir, ns, truths, ns.load_profiles(None))

    @property
    def rels(self) -> list[str]:
        return sorted(self.truths)

    def corpus(self, scores: dict[str, np.ndarray], rels: Sequence[str]):
        return self.scorer.build_corpus([self.truths[r] for r in rels], [scores[r] for r in rels])


def spec_key(spec: DetectorSpec) -> str:
    """Cache key of a configuration: its model, parameters and wrappers (not its name)."""
    body = spec.model_dump_json(exclude={"name", "description", "select", "threshold"})
    return hashlib.sha256(body.encode()).hexdigest()[:20]


class ScoreCache:
    """Per-(configuration, file) score streams on disk."""

    def __init__(self, root: Path | None = DEFAULT_CACHE) -> None:
        self.root = Path(root) if root else None

    def _path(self, spec: DetectorSpec, data_file: Path) -> Path | None:
        if self.root is None:
            return None
        st = data_file.stat()
        tag = hashlib.sha256(f"{data_file.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
        return self.root / spec_key(spec) / f"{tag[:20]}.npy"

    def scores(self, spec: DetectorSpec, data_file: Path) -> np.ndarray:
        path = self._path(spec, data_file)
        if path is not None and path.is_file():
            return np.load(path)
        _, times, values = read_series(data_file)
        out = np.asarray(score_series(spec.build(), times, values), dtype=float)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, out)
            os.replace(tmp, path)
        return out


def grid_raw(kit: Kit, corpus, cost: dict[str, float], grid: np.ndarray) -> np.ndarray:
    """Raw NAB score of ``corpus`` at every threshold of ``grid`` (from the scorer's sweep)."""
    thresholds, raw = kit.scorer.sweep_thresholds(corpus, cost)
    # thresholds descend; raw[i] holds for t in (thresholds[i+1], thresholds[i]]
    asc_t, asc_raw = thresholds[::-1], raw[::-1]
    idx = np.searchsorted(asc_t, grid, side="left")  # smallest candidate >= g
    idx = np.minimum(idx, len(asc_t) - 1)
    out = asc_raw[idx]
    out[grid > asc_t[-1]] = raw[0]
    return out


def choose_threshold(kit: Kit, corpus, cost: dict[str, float], mode: str = "flat") -> tuple[float, float]:
    """(threshold, its training raw score). ``best``: NAB's optimum (a peak, possibly narrow);
    ``flat``: the threshold whose neighbourhood (± ``FLAT_HALF_WIDTH``) has the best mean raw
    score, i.e. the centre of a wide good region rather than a lucky spike."""
    if mode == "best":
        return kit.scorer.best_threshold(corpus, cost)
    step = 0.0025
    grid = np.round(np.arange(0.0, 1.0 + step / 2, step), 6)
    raw = grid_raw(kit, corpus, cost, grid)
    h = round(FLAT_HALF_WIDTH / step)
    padded = np.concatenate([np.full(h, raw[0]), raw, np.full(h, raw[-1])])
    smooth = np.convolve(padded, np.ones(2 * h + 1) / (2 * h + 1), mode="valid")
    i = int(np.flatnonzero(smooth >= smooth.max() - 1e-9)[-1])  # ties: the higher threshold
    return float(grid[i]), float(smooth[i])


@dataclass
class FoldResult:
    fold: int
    chosen: str
    held_out: list[str]
    profiles: dict[str, dict] = field(default_factory=dict)  # profile -> score/threshold/tp/fn/fp/raw


@dataclass
class CVResult:
    label: str
    folds: list[FoldResult]
    pooled: dict[str, dict]  # profile -> held-out files pooled (each at its fold's threshold)
    full: dict[str, dict]  # profile -> all files, threshold optimised on them (NAB's figure)

    def mean_sd(self, profile: str = "standard") -> tuple[float, float]:
        xs = [f.profiles[profile]["score"] for f in self.folds]
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    def counts(self, profile: str = "standard") -> tuple[int, int, int]:
        ps = [f.profiles[profile] for f in self.folds]
        return sum(p["tp"] for p in ps), sum(p["fn"] for p in ps), sum(p["fp"] for p in ps)


def cross_validate(
    kit: Kit,
    candidates: dict[str, dict[str, np.ndarray]],
    folds: list[list[str]],
    label: str | None = None,
    mode: str = "flat",
    profiles: Sequence[str] = PROFILES,
) -> CVResult:
    """Cross-validate the selection among ``candidates`` (name -> rel -> scores): per fold and
    profile, each candidate's threshold is chosen on the training files; the candidate with the
    best standard-profile training score is kept; the held-out files are scored with it."""
    all_rels = [r for f in folds for r in f]
    if len(set(all_rels)) != len(all_rels):
        raise ValueError("folds share a file")
    results: list[FoldResult] = []
    pooled_raw = {p: 0.0 for p in profiles}
    pooled_counts = {p: [0, 0, 0] for p in profiles}
    null = {p: 0.0 for p in profiles}
    perfect = {p: 0.0 for p in profiles}
    for i, test in enumerate(folds):
        train = [r for j, f in enumerate(folds) if j != i for r in f]
        best_name, best_raw, picked = None, -math.inf, {}
        for name, scores in candidates.items():
            corpus = kit.corpus(scores, train)
            picked[name] = {p: choose_threshold(kit, corpus, kit.costs[p], mode) for p in profiles}
            raw = picked[name]["standard" if "standard" in profiles else profiles[0]][1]
            if raw > best_raw + 1e-12:
                best_name, best_raw = name, raw
        fr = FoldResult(i, best_name, list(test))
        held = kit.corpus(candidates[best_name], test)
        for p in profiles:
            cost = kit.costs[p]
            thr = picked[best_name][p][0]
            res = kit.scorer.score_at(held, cost, thr)
            fr.profiles[p] = {
                "score": kit.scorer.normalise(res["raw"], held, cost),
                "threshold": thr,
                "raw": res["raw"],
                "tp": res["tp"],
                "fn": res["fn"],
                "fp": res["fp"],
            }
            pooled_raw[p] += res["raw"]
            for k, c in enumerate(("tp", "fn", "fp")):
                pooled_counts[p][k] += res[c]
            null[p] += -cost["fn"] * held.n_scorable_windows
            perfect[p] += cost["tp"] * held.n_windows
        results.append(fr)
    pooled = {
        p: {
            "score": 100.0 * (pooled_raw[p] - null[p]) / (perfect[p] - null[p]),
            **dict(zip(("tp", "fn", "fp"), pooled_counts[p], strict=True)),
        }
        for p in profiles
    }
    full = full_score(kit, candidates[next(iter(candidates))], profiles) if len(candidates) == 1 else {}
    return CVResult(label or "+".join(candidates), results, pooled, full)


def held_out_shifted(
    kit: Kit, result: CVResult, scores: dict[str, np.ndarray], shift: float, profile: str = "standard"
) -> float | None:
    """Mean held-out score over ``result``'s folds with each fold's chosen threshold moved by
    ``shift``: how flat the score is around the threshold the training files picked (a
    threshold on a plateau loses little when the unseen series would have wanted another)."""
    out = []
    for f in result.folds:
        held = kit.corpus(scores, f.held_out)
        cost = kit.costs[profile]
        res = kit.scorer.score_at(held, cost, f.profiles[profile]["threshold"] + shift)
        s = kit.scorer.normalise(res["raw"], held, cost)
        if s is not None:
            out.append(s)
    return statistics.fmean(out) if out else None


def full_score(kit: Kit, scores: dict[str, np.ndarray], profiles: Sequence[str] = PROFILES) -> dict:
    """NAB's own figure: every file, threshold optimised on them (an optimistic number)."""
    corpus = kit.corpus(scores, kit.rels)
    out = {}
    for p in profiles:
        thr, _ = kit.scorer.best_threshold(corpus, kit.costs[p])
        res = kit.scorer.score_at(corpus, kit.costs[p], thr)
        out[p] = {
            "score": kit.scorer.normalise(res["raw"], corpus, kit.costs[p]),
            "threshold": thr,
            "tp": res["tp"],
            "fn": res["fn"],
            "fp": res["fp"],
        }
    return out


def fixed_threshold_score(
    kit: Kit, scores: dict[str, np.ndarray], threshold: float, profile: str = "standard"
) -> dict:
    """All files at one fixed threshold (e.g. the one a configuration ships with)."""
    corpus = kit.corpus(scores, kit.rels)
    res = kit.scorer.score_at(corpus, kit.costs[profile], threshold)
    return {
        "score": kit.scorer.normalise(res["raw"], corpus, kit.costs[profile]),
        "threshold": threshold,
        "tp": res["tp"],
        "fn": res["fn"],
        "fp": res["fp"],
    }


def score_all(
    kit: Kit,
    spec: DetectorSpec,
    cache: ScoreCache,
    progress: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Score streams of every kit file for one configuration (cached)."""
    out = {}
    for rel in kit.rels:
        if progress:
            progress(rel)
        out[rel] = cache.scores(spec, kit.nab_dir / "data" / rel)
    return out


def category_of(rel: str) -> str:
    """A file's NAB category: its folder (``realTweets/x.csv`` -> ``realTweets``)."""
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def category_folds(rels: Sequence[str]) -> list[list[str]]:
    """Leave-one-category-out folds: one fold per category folder, in name order."""
    by_cat: dict[str, list[str]] = {}
    for rel in sorted(set(rels)):
        by_cat.setdefault(category_of(rel), []).append(rel)
    if len(by_cat) < 2:
        raise ValueError("leave-one-category-out needs files from at least two categories")
    return [by_cat[c] for c in sorted(by_cat)]


@dataclass
class Summary:
    """One configuration's (or selection's) cross-validated figures."""

    label: str
    k: int  # folds per split
    scores: dict[str, list[float]]  # profile -> held-out fold scores, all splits
    counts: tuple[float, float, float]  # held-out TP/FN/FP (standard), mean over splits
    pooled: float
    loco: dict[str, dict] = field(default_factory=dict)  # category -> held-out figures (standard)
    loco_pooled: dict | None = None  # every category held out once, pooled (standard)

    def mean_sd(self, profile: str = "standard") -> tuple[float, float]:
        xs = self.scores[profile]
        return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)

    @property
    def se(self) -> float:
        """Standard error of the standard CV mean: sd of the held-out fold scores / sqrt(k)
        (k folds of one split are the independent held-out sets; repeated splits reuse the
        same files, so they do not shrink it)."""
        return self.mean_sd()[1] / math.sqrt(self.k)

    @property
    def loco_worst(self) -> tuple[str, float] | None:
        scored = [(c, r["score"]) for c, r in self.loco.items() if r["score"] is not None]
        return min(scored, key=lambda cs: cs[1]) if scored else None


def summarise(
    kit: Kit,
    candidates: dict[str, dict[str, np.ndarray]],
    fold_sets: Sequence[list[list[str]]],
    label: str,
    mode: str = "flat",
    loco: bool = False,
) -> Summary:
    """Cross-validate over every split of ``fold_sets`` (and, with ``loco``, leave one
    category out) and collect the figures a model choice needs."""
    results = [cross_validate(kit, candidates, fs, label, mode) for fs in fold_sets]
    scores = {
        p: [f.profiles[p]["score"] for r in results for f in r.folds if f.profiles[p]["score"] is not None]
        for p in PROFILES
    }
    n = len(results)
    counts = tuple(sum(r.counts()[i] for r in results) / n for i in range(3))
    pooled = statistics.fmean(r.pooled["standard"]["score"] for r in results)
    by_cat: dict[str, dict] = {}
    loco_pooled = None
    if loco:
        cats = category_folds(kit.rels)
        res = cross_validate(kit, candidates, cats, label, mode, ("standard",))
        for fold, files in zip(res.folds, cats, strict=True):
            by_cat[category_of(files[0])] = fold.profiles["standard"]
        loco_pooled = res.pooled["standard"]
    return Summary(label, len(fold_sets[0]), scores, counts, pooled, by_cat, loco_pooled)
