"""Start-up and stop of `atalaia up` as users start it (product defaults, embedded broker, a fresh
data directory each time): seconds from the command to the port answering (`/livez` 200), to the
pipeline being ready (`/health` 200), and from Ctrl-C (SIGINT, ``--settle`` seconds after it was
ready) to the process's exit.

    python -m benchmarks.startup_bench [--runs 5] [--against DIR] [--settle S]

``--against DIR`` also runs another checkout of Atalaia (e.g. a `git worktree` of an earlier
commit) with the same interpreter and packages, alternating the two run by run so the machine's
load falls on both alike, and prints each figure's ratio (this checkout ÷ the other).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ATALAIA = str(Path(sys.executable).parent / "atalaia")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ready(r: httpx.Response) -> bool:
    """200, or the one problem of `up` without --demo: its escalation targets' settings are unset,
    so delivery does not run and /health says so (degraded) once everything else is up."""
    if r.status_code == 200:
        return True
    body = r.json() if r.status_code == 503 else {}
    problems = body.get("problems") or [""]
    return body.get("status") == "degraded" and all(p.startswith("delivery is NOT running") for p in problems)


def one_run(pythonpath: str | None, settle: float = 0.0) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATALAIA_")}
        env |= {"ATALAIA_DATA_DIR": data, "ATALAIA_HTTP_PORT": str(port)}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [ATALAIA, "up"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        out: dict[str, float] = {}
        try:
            while "health" not in out:
                if proc.poll() is not None:
                    raise SystemExit(f"atalaia up exited {proc.returncode} while starting")
                if time.monotonic() - t0 > 120:
                    raise SystemExit("atalaia up not healthy in 120 s")
                for name in ("livez", "health"):
                    if name in out:
                        continue
                    try:
                        if ready(httpx.get(f"http://127.0.0.1:{port}/{name}", timeout=1)):
                            out[name] = time.monotonic() - t0
                    except (httpx.HTTPError, ValueError):
                        pass
                time.sleep(0.05)
            time.sleep(settle)
            t1 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            out["stop"] = time.monotonic() - t1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out


def summary(runs: list[dict[str, float]], key: str) -> str:
    xs = [r[key] for r in runs]
    return f"median {statistics.median(xs):5.2f} s (min {min(xs):5.2f}, max {max(xs):5.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--against", type=Path, help="another checkout of Atalaia to run alternately")
    ap.add_argument("--settle", type=float, default=0.0, help="seconds between ready and Ctrl-C")
    args = ap.parse_args()
    variants: dict[str, str | None] = {"this checkout": None}
    if args.against:
        shim = Path(tempfile.mkdtemp(prefix="atalaia-against-"))
        (shim / "atalaia").symlink_to(args.against.resolve())  # found before the editable install
        variants[f"against {args.against}"] = str(shim)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for i in range(args.runs):
        for name, path in variants.items():
            results[name].append(one_run(path, args.settle))
            print(f"run {i + 1} {name}: " + ", ".join(f"{k} {v:.2f} s" for k, v in results[name][-1].items()))
    labels = {
        "livez": "port answers (/livez 200)",
        "health": "pipeline ready (/health 200)",
        "stop": "Ctrl-C to exit",
    }
    for name in variants:
        print(f"\n{name} ({args.runs} runs):")
        for key, label in labels.items():
            print(f"  {label:30s} {summary(results[name], key)}")
    if len(variants) == 2:
        a, b = (results[n] for n in variants)
        print("\nratio, this checkout ÷ the other (median):")
        for key, label in labels.items():
            ratio = statistics.median(r[key] for r in a) / statistics.median(r[key] for r in b)
            print(f"  {label:30s} ×{ratio:.2f}")


if __name__ == "__main__":
    main()
