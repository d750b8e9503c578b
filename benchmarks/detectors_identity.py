"""Are the detectors' scores bit-identical to a recorded reference on every NAB file?

    python -m benchmarks.detectors_identity [--detector NAME ...] [--nab DIR] [--record]

Runs each configured detector (default: the default and every record-novelty variant, the
models that share its code) over every data file of the NAB kit, strictly online and with a
fresh model per file, and compares every score's exact bits (a SHA-256 of the float64 bytes
per file) with ``benchmarks/detectors_identity.json``. It also cuts every file in the middle,
round-trips the model through ``to_state()``/``from_state()`` and checks that the resumed model
continues with exactly the uninterrupted scores. ``--record`` writes the reference instead
(do that only with code whose scores are the ones to keep). Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import time
from pathlib import Path

from atalaia.detectors.base import Detector
from atalaia.detectors.config import load_config
from atalaia.detectors.nab import data_files, read_series

REFERENCE = Path(__file__).with_name("detectors_identity.json")
NAB = Path(__file__).resolve().parent.parent.parent / "shared" / "nab" / "data"
DETECTORS = [
    "novelty-evt-mean",
    "novelty-evt-mean-v2",
    "novelty-evt-mean-v1",
    "record-novelty",
    "record-novelty-v1",
    "record-novelty-m8000",
    "novelty-sustained",
]


def digest(scores: list[float]) -> str:
    return hashlib.sha256(struct.pack(f"<{len(scores)}d", *scores)).hexdigest()


def run(spec, times, values) -> tuple[list[float], bool]:
    """Scores of one fresh model over one file, and whether a model round-tripped through its
    state bytes in the middle of the file continues with exactly the same scores."""
    det = spec.build()
    scores = [det.score_learn(v, t) for t, v in zip(times, values, strict=True)]
    cut = len(values) // 2
    head = spec.build()
    for t, v in zip(times[:cut], values[:cut], strict=True):
        head.score_learn(v, t)
    resumed = Detector.from_state(head.to_state())
    tail = [resumed.score_learn(v, t) for t, v in zip(times[cut:], values[cut:], strict=True)]
    return scores, tail == scores[cut:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", action="append", help=f"detector name (default: {', '.join(DETECTORS)})")
    ap.add_argument("--nab", type=Path, default=NAB, help="NAB data directory")
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--record", action="store_true", help="write the reference instead of checking")
    args = ap.parse_args(argv)
    config = load_config()
    names = args.detector or DETECTORS
    files = data_files(args.nab)
    series = {str(f.relative_to(args.nab)): read_series(f)[1:] for f in files}
    reference = json.loads(args.reference.read_text()) if args.reference.exists() else {}
    failures = 0
    for name in names:
        spec = config.get(name)
        started, points, result = time.perf_counter(), 0, {}
        round_trips = 0
        for rel, (times, values) in series.items():
            scores, resumed_same = run(spec, times, values)
            points += len(scores)
            result[rel] = {"points": len(scores), "sha256": digest(scores)}
            round_trips += resumed_same
            if not resumed_same:
                failures += 1
                print(f"{name} {rel}: the model resumed from its state bytes scores differently")
        if args.record:
            reference[name] = result
            verdict = "recorded"
        else:
            want = reference.get(name)
            if want is None:
                failures += 1
                verdict = "NO REFERENCE"
            else:
                differ = [rel for rel in sorted(set(want) | set(result)) if want.get(rel) != result.get(rel)]
                failures += len(differ)
                for rel in differ:
                    print(f"{name} {rel}: scores differ from the reference")
                verdict = "bit-identical" if not differ else f"{len(differ)} files DIFFER"
        print(
            f"{name}: {len(series)} files, {points} scores: {verdict}; "
            f"state round trip mid-file exact on {round_trips}/{len(series)} files "
            f"({time.perf_counter() - started:.1f} s)"
        )
    if args.record:
        args.reference.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.reference}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
