"""Webhook signatures: HMAC-SHA256 over ``timestamp + "." + body``.

Headers sent with every signed webhook::

    X-Atalaia-Timestamp: 1767225600                 (Unix seconds, when it was signed)
    X-Atalaia-Signature: v1=<64 hex digits>         (several, comma-separated, during key rotation)
    X-Atalaia-Delivery:  <notification id>          (stable across retries: dedupe on it)

A receiver recomputes ``hex(hmac_sha256(secret, f"{timestamp}.".encode() + raw_body))``,
compares in constant time and rejects timestamps older than a tolerance (replay protection):

>>> body = b'{"incident": "i-1"}'
>>> headers = sign_headers("s3cret", body, timestamp=1767225600)
>>> verify_signature("s3cret", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], now=1767225630)
True
>>> verify_signature("wrong", body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], now=1767225630)
False
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Atalaia-Timestamp"
SIGNATURE_HEADER = "X-Atalaia-Signature"
DELIVERY_HEADER = "X-Atalaia-Delivery"
SCHEME = "v1"


def signature(secret: str | bytes, body: bytes, timestamp: int | str) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_headers(secret: str | bytes, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: f"{SCHEME}={signature(secret, body, timestamp)}",
    }


def verify_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str | None,
    signature_header: str | None,
    now: float | None = None,
    tolerance: float = 300.0,
) -> bool:
    """True if one ``v1=`` signature in the header matches and the timestamp is within
    ``tolerance`` seconds of ``now`` (default: the wall clock)."""
    if not timestamp or not signature_header:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance:
        return False
    expected = signature(secret, body, timestamp)
    ok = False
    for part in signature_header.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == SCHEME and hmac.compare_digest(value.strip(), expected):
            ok = True
    return ok
