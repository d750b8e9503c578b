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
import stat
from pathlib import Path
from typing import Any

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
    if not stat.S_ISREG(st.st_mode):  # a directory, a FIFO or a device (/dev/zero) is never read
        raise TableError(f"{path}:1: threshold table is not a regular file")
    if st.st_size > MAX_BYTES:
        raise TableError(f"{path}:1: threshold table is over {MAX_BYTES // 2**20} MiB")
    cached = _CACHE.get((str(path), column))
    if cached is not None and cached[0] == st.st_mtime_ns:
        return cached[1]
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            out = _read(path, column, reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # never a traceback, nor a stopped rule
        read = reader.line_num if reader is not None else 0  # lines the reader has taken
        if isinstance(exc, UnicodeDecodeError):
            line = _first_bad_line(path)
            why = "not UTF-8 text (save it as 'CSV UTF-8')"
        elif isinstance(exc, OSError):
            line = read + 1  # (the line it was reading)
            why = f"not readable: {exc.strerror or exc}"
        else:
            line = max(read, 1)  # (the line it could not parse is the last it took)
            why = f"not CSV: {exc}"
        raise TableError(f"{path}:{line}: threshold table {why}") from None
    _CACHE[(str(path), column)] = (st.st_mtime_ns, out)
    return out


def _first_bad_line(path: Path) -> int:
    """The line of a file's first byte that is not UTF-8 (the decoder reads in chunks)."""
    try:
        data = path.read_bytes()[: MAX_BYTES + 1]
    except OSError:
        return 1
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return 1


def _read(path: Path, column: str, reader: Any) -> dict[str, float]:
    """The table ``reader`` (a ``csv.reader`` of ``path``) reads, by entity."""
    out: dict[str, float] = {}
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
    return out
