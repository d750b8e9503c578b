"""Run a detector over NAB data files and write NAB result CSVs.

Each file is one fresh stream, processed strictly online (score, then learn).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from atalaia.detectors.base import Detector

Factory = Callable[[], Detector]


def data_files(data_dir: Path) -> list[Path]:
    """Every ``*.csv`` under ``data_dir``, sorted by relative path."""
    files = sorted(p for p in Path(data_dir).rglob("*.csv") if p.is_file())
    if not files:
        raise FileNotFoundError(f"no CSV data files under {data_dir}")
    return files


def read_series(path: Path) -> tuple[list[str], list[datetime], list[float]]:
    """Rows of a NAB data file: raw timestamp texts, parsed times and values."""
    texts, times, values = [], [], []
    with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM (a spreadsheet's export) is no column
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if "timestamp" not in header or "value" not in header:
            raise ValueError(f"{path}:1:1: expected columns timestamp,value, got {header}")
        it, iv = header.index("timestamp"), header.index("value")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                t = datetime.fromisoformat(row[it].strip())
                if t.tzinfo is not None:  # (NAB's times are naive UTC; the models compare them)
                    t = t.astimezone(UTC).replace(tzinfo=None)
                times.append(t)
                values.append(float(row[iv]))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{lineno}:1: bad row {row!r}: {exc}") from None
            texts.append(row[it].strip())
    return texts, times, values


def score_series(detector: Detector, times: list[datetime], values: list[float]) -> list[float]:
    """Strictly online scores of one stream."""
    step = detector.score_learn
    return [step(v, t) for t, v in zip(times, values, strict=True)]


def run_file(factory: Factory, data_file: Path, out_file: Path) -> int:
    """Score ``data_file`` with a fresh detector and write ``out_file``; returns its rows."""
    texts, times, values = read_series(data_file)
    scores = score_series(factory(), times, values)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for text, v, s in zip(texts, values, scores, strict=True):
            # (a non-finite value is written as read: the models ignore it, it scores 0)
            w.writerow([text, int(v) if math.isfinite(v) and v.is_integer() else repr(v), repr(float(s))])
    return len(scores)


def run_nab(
    factory: Factory, data_dir: Path, out_dir: Path, prefix: str, workers: int | None = None
) -> list[Path]:
    """Write ``OUT/<category>/<prefix>_<file>.csv`` for every data file under ``data_dir``."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    jobs = []
    for f in data_files(data_dir):
        rel = f.relative_to(data_dir)
        jobs.append((f, out_dir / rel.parent / f"{prefix}_{rel.name}"))
    workers = workers or min(2, os.cpu_count() or 1)
    if workers <= 1:
        for f, o in jobs:
            run_file(factory, f, o)
    else:
        with ProcessPoolExecutor(workers) as pool:
            # the biggest files first keeps both workers busy until the end
            jobs.sort(key=lambda j: -j[0].stat().st_size)
            list(pool.map(run_file, [factory] * len(jobs), [j[0] for j in jobs], [j[1] for j in jobs]))
    return [o for _, o in jobs]
