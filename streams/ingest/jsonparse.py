"""Strict JSON decoding for ingest: RFC 8259 only, duplicate keys detected.

orjson is the fast path. It already refuses ``NaN``/``Infinity`` tokens, invalid UTF-8 and lone
surrogates, but it keeps the last of two equal keys silently. Duplicate detection costs two
``bytes.count`` calls and one ``orjson.dumps``: every key contributes one structural colon, and
orjson never escapes a colon, so without duplicates the compact re-serialisation holds exactly the
body's literal colons plus its ``\\u003a`` escapes; a dropped duplicate removes at least its own
colon, so the counts can only differ (a backslash-escaped ``\\\\u003a`` over-counts, which only costs
the slow path). Only when they differ is the body parsed again with the standard library and an
``object_pairs_hook`` that marks every object holding a duplicate key, so the normaliser can refuse
exactly the entity concerned. Error messages for a refused body come from the standard library with
``parse_constant``/``parse_float`` hooks, which name the offending token and its line/column.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_loads = orjson.loads
_dumps = orjson.dumps


class JSONRejected(ValueError):
    """The body is not acceptable JSON; ``str(exc)`` is a reason a person can read."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


Duplicates = dict[int, tuple[str, ...]]  # id() of a decoded object -> keys it had more than once


def _colons_written(body: bytes) -> int:
    """Colons the decoded value holds, or more: literal ones plus ``\\u003X`` escapes."""
    n = body.count(b":")
    # \\u003X over-counts: slow path only. A one-byte search (memchr) is much cheaper than a
    # two-byte one, and without a backslash there is no escape to count.
    return n + body.count(b"\\u003") if b"\\" in body else n


def _marking_hook(table: Duplicates):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d: dict[str, Any] = {}
        dups: list[str] = []
        for k, v in pairs:
            if k in d:
                dups.append(k)
            d[k] = v
        if dups:
            table[id(d)] = tuple(dict.fromkeys(dups))
        return d

    return hook


class _NonFinite(ValueError):
    pass


def _bad_constant(token: str) -> Any:
    raise _NonFinite(f"bare {token} is not JSON (RFC 8259); send null or leave the attribute out")


class _Overflow(_NonFinite):
    pass


def _finite_float(token: str) -> float:
    x = float(token)
    if not math.isfinite(x):
        raise _Overflow(f"number {token} overflows a double")
    return x


def _in_64_bits(token: str, n: int) -> bool:
    """``n`` (parsed from ``token``) is an integer orjson reads: within 64 bits, signed or not."""
    return len(token) < 19 or -(2**63) <= n < 2**64


def _wide_int(token: str) -> int | float:
    """An integer as orjson would give it, or past 64 bits a float (``inf`` past a double: the
    attribute holding it is refused as not finite, not the whole body)."""
    n = int(token)
    return n if _in_64_bits(token, n) else float(token)


def _explain_failure(
    body: bytes, fast_error: Exception, numbers: bool = True
) -> JSONRejected | tuple[Any, Duplicates | None]:
    """Why orjson refused ``body``, or, when the only fault is a number beyond a double (``1e400``,
    a 400-digit integer: a sensor's fault, not the notification's), the body decoded with those
    numbers as ``inf``, which the normaliser refuses attribute by attribute (``non-finite-number``)
    while the other entities and attributes are read."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return JSONRejected(f"body is not UTF-8 text (byte {exc.start}: {exc.reason})", "encoding")
    if text.startswith("\ufeff"):
        return JSONRejected("body starts with a UTF-8 byte-order mark, which JSON forbids", "encoding")
    try:
        if numbers:
            json.loads(text, parse_constant=_bad_constant, parse_float=_finite_float, parse_int=_finite_int)
        else:  # past its overflowing numbers: what else is wrong
            json.loads(text, parse_constant=_bad_constant, parse_int=_wide_int)
    except _Overflow:
        decoded = _decode_overflowing(text)
        return decoded if decoded is not None else _explain_failure(body, fast_error, numbers=False)
    except _NonFinite as exc:
        return JSONRejected(str(exc), "non-finite-number")
    except json.JSONDecodeError as exc:
        return JSONRejected(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", "malformed-json"
        )
    except RecursionError:
        return JSONRejected("JSON nested too deeply", "too-deep")
    except ValueError as exc:
        return JSONRejected(f"malformed JSON: {exc}", "malformed-json")
    if "recursion" in str(fast_error) or "depth limit" in str(fast_error):
        return JSONRejected("JSON nested too deeply", "too-deep")
    if not numbers:  # orjson stopped at the number; what it refuses beyond it is in a string
        return JSONRejected(
            "malformed JSON: a string is not Unicode text (a lone surrogate)", "malformed-json"
        )
    return JSONRejected(f"malformed JSON: {fast_error}", "malformed-json")


def _finite_int(token: str) -> int:
    """An integer orjson reads (64 bits), else ``_Overflow``: read as a float instead."""
    n = int(token)
    if not _in_64_bits(token, n):
        raise _Overflow(f"integer {token[:24]}{'…' if len(token) > 24 else ''} overflows a double")
    return n


def _decode_overflowing(text: str) -> tuple[Any, Duplicates | None] | None:
    """``text`` decoded with overflowing numbers as ``inf`` (and duplicate keys marked), or None
    when it holds anything else orjson refuses (malformed JSON, ``NaN``, a lone surrogate)."""
    table: Duplicates = {}
    try:
        value = json.loads(
            text, parse_constant=_bad_constant, parse_int=_wide_int, object_pairs_hook=_marking_hook(table)
        )
        _dumps(value)  # what orjson refuses besides the numbers: lone surrogates, depth
    except (ValueError, RecursionError, orjson.JSONEncodeError):
        return None
    return value, (table or None)


def decode(body: bytes) -> tuple[Any, Duplicates | None]:
    """Decode ``body``; returns ``(value, duplicates)``. Raises :class:`JSONRejected`.

    ``duplicates`` is None when no key was written twice; otherwise it maps ``id()`` of each
    decoded object that had a duplicate key to those keys (the objects stay alive with ``value``).
    """
    try:
        value = _loads(body)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        why = _explain_failure(body, exc)
        if type(why) is JSONRejected:
            raise why from None
        return why  # type: ignore[return-value]
    t = type(value)
    if t is dict or t is list:  # what orjson returns for objects and arrays
        n = body.count(b":")
        if n:
            try:
                kept = _dumps(value)
            except orjson.JSONEncodeError:
                raise JSONRejected("JSON nested too deeply", "too-deep") from None
            if b"\\" in body:  # _colons_written, inlined
                n += body.count(b"\\u003")
            if kept.count(b":") != n:
                table: Duplicates = {}
                return _decode_marking_duplicates(body, table), table
    return value, None


def _decode_marking_duplicates(body: bytes, table: Duplicates) -> Any:
    try:
        return json.loads(
            body.decode("utf-8"), object_pairs_hook=_marking_hook(table), parse_constant=_bad_constant
        )
    except (ValueError, RecursionError) as exc:  # pragma: no cover - orjson accepted it already
        raise JSONRejected(f"malformed JSON: {exc}", "malformed-json") from None


def duplicates_in(value: Any, table: Duplicates) -> list[str]:
    """Keys written twice anywhere inside ``value``."""
    found: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            found.extend(table.get(id(v), ()))
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
    return found
