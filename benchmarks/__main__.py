"""`make bench`: run every benchmark module in this folder, one after the other, each in its own
process (so one's memory and threads do not colour another's figures)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "ingest_bench",
    "latency_bench",
    "scale_bench",
    "ingest_parse_bench",
    "rules_bench",
    "detectors_bench",
    "incidents_bench",
    "notifiers_bench",
]


def main() -> int:
    found = {p.stem for p in HERE.glob("*_bench.py")}
    names = [n for n in ORDER if n in found] + sorted(found - set(ORDER))
    if len(sys.argv) > 1:
        names = [n for n in names if any(a in n for a in sys.argv[1:])]
    failed = []
    for name in names:
        print(f"\n=== benchmarks.{name} ===", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
