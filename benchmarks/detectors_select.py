"""Model selection for the default detector by the one-standard-error rule.

    python -m benchmarks.detectors_select [--stage features|controls|all] [--features a,b]
        [--tail history|none] [--repeats 3] [--folds 5]

Every candidate is a variant of record novelty, cross-validated on ``../shared/nab``
(file-level folds, threshold chosen on the training files only; ``atalaia.detectors.cv``;
score streams cached like ``atalaia detectors cv``). For each it prints the held-out standard
score mean ± sd and its standard error (sd / sqrt(folds)), the low-FP and low-FN profiles,
held-out TP/FN/FP (mean over splits), leave-one-category-out pooled score and worst category,
and the all-file score (threshold optimised on all files; reported only beside).

The rule: among the candidates whose CV standard mean is within one standard error of the
best mean, pick the simplest (fewest tests + knobs: each feature and the tail test count one,
the refractory hold one, the rate cap two, ``agree`` and ``margin`` one each); ties go to the
fewest held-out false positives.

Stages: ``features`` ablates the tests (every subset of value/diff/shift/seasonal, with and
without the far tail; refractory hold 100 throughout); ``controls`` adds false-positive
controls to one test set (``--features``/``--tail``): longer holds, an alert-rate cap, two
tests agreeing, a scale-free margin, a warm-up of 600 points.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

from atalaia.detectors import cv
from atalaia.detectors.config import DetectorSpec

FEATURES = ("value", "diff", "shift", "seasonal")


def novelty(
    name: str,
    features: tuple[str, ...],
    tail: bool = True,
    hold: int = 100,
    every: int = 0,
    burst: int = 1,
    agree: int = 1,
    margin: float = 0.0,
    warmup: int = 150,
) -> tuple[DetectorSpec, int]:
    """A record-novelty spec and its complexity (tests + knobs)."""
    params: dict = {"fast": 0.1, "features": list(features), "warmup": warmup}
    if tail:
        params["tail"] = "history"
    if agree != 1:
        params["agree"] = agree
    if margin:
        params["margin"] = margin
    suppress = {"alert": 0.6, "hold": hold}
    if every:
        suppress |= {"every": every, "burst": burst}
    spec = DetectorSpec(name=name, warmup=warmup, model="novelty", params=params, suppress=suppress)
    complexity = len(features) + tail + (hold > 0) + 2 * (every > 0) + (agree != 1) + (margin > 0)
    return spec, complexity


def label(feats: tuple[str, ...], tail: bool) -> str:
    """value.diff.shift.seasonal.tail (a configuration name: no spaces or '+')."""
    return ".".join(feats) + (".tail" if tail else "")


def feature_stage() -> list[tuple[DetectorSpec, int]]:
    out = []
    for r in range(len(FEATURES), 0, -1):
        for feats in itertools.combinations(FEATURES, r):
            for tail in (True, False):
                name = label(feats, tail)
                out.append(novelty(name, feats, tail))
    return out


def control_stage(feats: tuple[str, ...], tail: bool) -> list[tuple[DetectorSpec, int]]:
    base = label(feats, tail)
    out = [novelty(base, feats, tail)]
    for hold in (50, 150, 200, 300):
        out.append(novelty(f"{base}_hold{hold}", feats, tail, hold=hold))
    for every, burst in itertools.product((500, 1000, 2000), (1, 2, 3)):
        out.append(novelty(f"{base}_cap{every}x{burst}", feats, tail, every=every, burst=burst))
    out.append(novelty(f"{base}_agree2", feats, tail, agree=2))
    for margin in (0.05, 0.1, 0.25):
        out.append(novelty(f"{base}_margin{margin}", feats, tail, margin=margin))
    out.append(novelty(f"{base}_warmup600", feats, tail, warmup=600))
    return out


def row(s: cv.Summary, complexity: int, full: dict) -> str:
    m, sd = s.mean_sd()
    lfp, lfp_sd = s.mean_sd("reward_low_FP_rate")
    lfn, lfn_sd = s.mean_sd("reward_low_FN_rate")
    tp, fn, fp = s.counts
    cat, worst = s.loco_worst
    return (
        f"| {s.label} | {complexity} | {m:.1f} ± {sd:.1f} | {s.se:.1f} | {lfp:.1f} ± {lfp_sd:.1f} | "
        f"{lfn:.1f} ± {lfn_sd:.1f} | {tp:.0f}/{fn:.0f}/{fp:.0f} | {s.loco_pooled['score']:.1f} | "
        f"{cat} {worst:.1f} | {full['score']:.1f} ({full['fp']} FP) |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=("features", "controls", "all"), default="all")
    ap.add_argument("--features", default="value,diff,shift,seasonal")
    ap.add_argument("--tail", choices=("history", "none"), default="history")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    kit = cv.Kit.load()
    cache = cv.ScoreCache()
    fold_sets = [cv.make_folds(kit.rels, args.folds, args.seed + r) for r in range(args.repeats)]
    cands: list[tuple[DetectorSpec, int]] = []
    if args.stage in ("features", "all"):
        cands += feature_stage()
    if args.stage in ("controls", "all"):
        cands += control_stage(tuple(args.features.split(",")), args.tail == "history")
    seen, unique = set(), []
    for spec, c in cands:
        if spec.name not in seen:
            seen.add(spec.name)
            unique.append((spec, c))
    print(
        f"{len(unique)} candidates; {args.folds} folds x {args.repeats} splits from seed {args.seed}; "
        "flat thresholds; TP/FN/FP: held out, mean over splits",
        file=sys.stderr,
    )
    print(
        "| candidate | tests+knobs | CV standard | SE | CV low-FP | CV low-FN | held-out TP/FN/FP | "
        "LOCO pooled | LOCO worst | all 31 (opt. thr) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    summaries = []
    for spec, complexity in unique:
        started = time.perf_counter()
        streams = cv.score_all(kit, spec, cache)
        s = cv.summarise(kit, {spec.name: streams}, fold_sets, spec.name, loco=True)
        full = cv.full_score(kit, streams, ["standard"])["standard"]
        print(row(s, complexity, full), flush=True)
        print(f"  {spec.name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        summaries.append((s, complexity))
    best = max(summaries, key=lambda sc: sc[0].mean_sd()[0])[0]
    bar = best.mean_sd()[0] - best.se
    eligible = [sc for sc in summaries if sc[0].mean_sd()[0] >= bar]
    chosen, c = min(eligible, key=lambda sc: (sc[1], sc[0].counts[2], -sc[0].mean_sd()[0]))
    print(
        f"\nbest mean: {best.label} {best.mean_sd()[0]:.1f} (SE {best.se:.1f}); within one SE "
        f"(>= {bar:.1f}): {len(eligible)} candidates; simplest, then fewest FP: "
        f"{chosen.label} ({c} tests+knobs, {chosen.mean_sd()[0]:.1f}, FP {chosen.counts[2]:.0f})"
    )
    for s, c in sorted(eligible, key=lambda sc: (sc[1], sc[0].counts[2])):
        print(
            f"  {c:2d}  {s.label:40s} {s.mean_sd()[0]:5.1f}  FP {s.counts[2]:5.0f}  "
            f"LOCO worst {s.loco_worst[0]} {s.loco_worst[1]:.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
