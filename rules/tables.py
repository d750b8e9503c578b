"""Per-entity threshold tables: a CSV file with an ``entity`` column (entity ids) and one column per
threshold, named by rules as ``above: {table: gauges.csv, column: high}`` (path relative to the rule
file). Errors name ``file:line``; a table is read again when its modification time changes.

>>> import tempfile, os
>>> d = tempfile.mkdtemp(); p = os.path.join(d, "gauges.csv")
>>> _ = open(p, "w").write("entity,high\\nurn:g1,4.5\\nurn:g2,\\n")
>>> load_table("gauges.csv", "high", os.path.join(d, "hydro.yaml"))
{'urn:g1': 4.5}
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

ENTITY_COLUMNS = ("entity", "id")
MAX_BYTES = 16 * 1024 * 1024


class TableError(ValueError):
    pass


def table_path(table: str, rule_file: str | None) -> Path:
    p = Path(table)
    if p.is_absolute() or not rule_file or rule_file.startswith("<"):
        return p
    return Path(rule_file).parent / p


_CACHE: dict[tuple[str, str], tuple[int, dict[str, float]]] = {}


def load_table(table: str, column: str, rule_file: str | None) -> dict[str, float]:
    """entity id -> threshold of ``column``; an empty cell means "no threshold" (the entity is left
    out). Raises TableError ``file:line: message`` for a missing file, a missing column or a bad row."""
    path = table_path(table, rule_file)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TableError(f"{path}:1: threshold table not readable: {exc.strerror or exc}") from None
    if st.st_size > MAX_BYTES:
        raise TableError(f"{path}:1: threshold table is over {MAX_BYTES // 2**20} MiB")
    cached = _CACHE.get((str(path), column))
    if cached is not None and cached[0] == st.st_mtime_ns:
        return cached[1]
    out: dict[str, float] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise TableError(f"{path}:1: empty threshold table: expected a header 'entity,{column}'")
        header = [h.strip() for h in header]
        ids = [c for c in ENTITY_COLUMNS if c in header]
        if not ids:
            raise TableError(f"{path}:1: no 'entity' column in the header {header}")
        if column not in header:
            raise TableError(f"{path}:1: no column '{column}' in the header {header}")
        id_at, col_at = header.index(ids[0]), header.index(column)
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise TableError(f"{path}:{line}: {len(row)} cells, the header has {len(header)}")
            entity, cell = row[id_at].strip(), row[col_at].strip()
            if not entity:
                raise TableError(f"{path}:{line}: empty entity id")
            if entity in out:
                raise TableError(f"{path}:{line}: entity {entity!r} is listed twice")
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                raise TableError(f"{path}:{line}: '{column}' is not a number: {cell!r}") from None
            if not math.isfinite(value):
                raise TableError(f"{path}:{line}: '{column}' is not a finite number: {cell!r}")
            out[entity] = value
    _CACHE[(str(path), column)] = (st.st_mtime_ns, out)
    return out
