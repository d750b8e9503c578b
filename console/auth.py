"""Who is acting: operator API tokens, and sign-in with a username and password.

``ATALAIA_CONSOLE_USERS=users.yaml`` names a file of users::

    users:
      - {actor: ana, role: operator, token_sha256: 9f86d08...}   # sha256 of the token
      - {actor: rui, role: supervisor, password_argon2: "$argon2id$v=19$m=65536,t=3,p=4$..."}
      - {actor: eva, role: approver, token_sha256: ..., password_argon2: ...}   # both
      - {actor: gil, role: operator, token_sha256: ..., tenants: [gaia]}   # only tenant gaia

Only hashes are stored: sha256 for API tokens (long random secrets), argon2id for passwords
(``atalaia users passwd NAME`` writes one). Each ``actor`` appears once (sign-in and ``users
passwd`` would otherwise take different entries) and is a name: not blank, no spaces around it, no
control characters, at most 128 characters; one ``token_sha256`` belongs to one user. The loader
refuses anything else with ``file:line:col``; a password has 8 to 1024 characters, not all spaces. ``POST /api/login`` with a username and password gives
a *session token*: random, held in this console's memory (as a sha256) until it expires
(``SESSION_TTL_S``) or ``POST /api/logout``; it is sent as ``Authorization: Bearer <token>`` like
an API token, and a restart of the console signs everybody out. Failed sign-ins are limited per
user and per client address (an IPv6 client: its /64) (``FAILURES`` within ``WINDOW_S``: then 429 until the window passes,
without checking the password) and counted in ``atalaia_console_logins_total{result}``. A user
holds at most ``SESSIONS_PER_USER`` live sessions (a further sign-in ends their own oldest) and
the console ``MAX_SESSIONS`` in all; when all of those are live, a sign-in ends the user's own
oldest session or, if they hold none, is refused (503, ``result="full"``): nobody is ever signed
out by someone else signing in. A browser
where the user signed in before presents its device cookie and is limited by its own failures
only, so nobody can lock a user out of it by failing on purpose (:class:`DeviceCookies`). With the file configured, every command must carry
``Authorization: Bearer <token>``; the actor and role come from the token, never from the
body (an operator cannot claim to be a supervisor). Without it (the demo), commands are taken as
sent and the console says so in ``/api/whoami``.

A user with ``tenants:`` sees and acts only on incidents of those tenants (the incident's
``correlation.tenant``): the list, the live stream, the incident pages and deliveries leave the
others out, and a command for another tenant's incident is answered 404 like an unknown one.
Without ``tenants:`` a user sees every tenant.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from atalaia.console.problem import client_group
from atalaia.streams.config_yaml import (
    YamlError,
    YamlErrors,
    YamlLimits,
    load_file,
    located,
    position,
    validate,
)

MAX_ACTOR_CHARS = 128
#: a password: at least this many characters, not all of them spaces
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


def actor_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user name (the audit trail's actor, the sign-in name), or None.
    Refused: empty or blank, longer than ``MAX_ACTOR_CHARS``, spaces around it, control or
    invisible format characters (a newline would forge a line in a log or in the users file)."""
    if not name or not name.strip():
        return "a user name must not be empty"
    if len(name) > MAX_ACTOR_CHARS:
        return f"a user name has at most {MAX_ACTOR_CHARS} characters"
    if name != name.strip():
        return "a user name must not begin or end with spaces"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name):
        return "a user name must not contain control characters (a newline, a tab ...)"
    from atalaia.streams.lookalike import invisible

    if invisible(name):
        return "a user name must not contain invisible characters (a joiner, a variation selector ...)"
    return None


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be set, or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"a password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"a password has at most {MAX_PASSWORD_CHARS} characters"
    if not password.strip():
        return "a password must not be only spaces"
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return "the password is not UTF-8 text"
    return None


class User(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    actor: str
    role: Literal["operator", "supervisor", "engineer", "approver", "viewer"]
    token_sha256: str | None = None  # an API token (sha256 of it)
    password_argon2: str | None = None  # a password (argon2id hash: ``atalaia users passwd``)
    tenants: list[str] | None = None  # None: every tenant; else only incidents of these tenants

    @field_validator("actor")
    @classmethod
    def _actor(cls, v: str) -> str:
        problem = actor_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _some_secret(self) -> User:
        if not self.token_sha256 and not self.password_argon2:
            raise ValueError("a user needs token_sha256 or password_argon2")
        if self.password_argon2 is not None and not self.password_argon2.startswith("$argon2"):
            raise ValueError("password_argon2: not an argon2 hash (make one with: atalaia users passwd NAME)")
        return self


class Users(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[User]


class UsersFileError(ValueError):
    """A users file that cannot be used; each line of the message is ``file:line:col: message``."""


def load_users(path: str | Path, limits: YamlLimits | None = None) -> list[User]:
    """The users of a users file (held to the safe-YAML limits of ``atalaia.streams.config_yaml``)."""
    try:
        tree = load_file(path, limits)
    except YamlError as exc:
        raise UsersFileError(str(exc)) from None
    if not isinstance(tree, dict):
        raise UsersFileError(f"{path}:1:1: a users file must be a mapping with 'users:'")
    try:
        users = validate(tree, Users, str(path)).users
    except YamlErrors as exc:
        raise UsersFileError(str(exc)) from None
    problems = _duplicates(tree, str(path), users)
    if problems:
        raise UsersFileError(str(YamlErrors(problems)))
    return users


def name_skeletons(name: str) -> frozenset[str]:
    """Every way a user name may be read (``streams.lookalike.skeletons``). Two users whose
    names look alike (``ana``, ``Ana``, ``аna`` with a Cyrillic a, ``Τiago`` with a Greek Tau, an
    NFD ``joão``) would read as one person in the audit trail while counting as two for four eyes."""
    from atalaia.streams.lookalike import skeletons

    return skeletons(name)


def _duplicates(tree: Any, file: str, users: list[User]) -> list[YamlError]:
    """A user name or an API token listed twice: sign-in would take one entry and ``users passwd``
    write another (a new password that never works), a token would act as whichever came first."""
    problems: list[YamlError] = []
    seen: dict[tuple[str, str], int] = {}
    for i, u in enumerate(users):
        keys = [("actor", k) for k in sorted(name_skeletons(u.actor))]
        keys += [("token_sha256", u.token_sha256.lower())] if u.token_sha256 else []
        said: set[str] = set()
        for field, key in keys:
            first = seen.setdefault((field, key), i)
            if first == i or field in said:  # (one line per field: a name has two readings)
                continue
            said.add(field)
            line, _ = position(tree, ("users", first))
            twice = users[first].actor == u.actor
            why = (
                f"user {u.actor!r} is listed twice (first at line {line}): keep one entry per user"
                if field == "actor" and twice
                else f"user {u.actor!r} looks like {users[first].actor!r} (line {line}): names that differ only by "
                "case, accents' encoding or look-alike letters read as one person in the audit trail"
                if field == "actor"
                else f"the same token as {users[first].actor!r} (line {line}): give each user a token of their own"
            )
            problems.append(located(tree, file, ("users", i, field), f"users.{i}.{field}: {why}", at="value"))
    return problems


@dataclass(frozen=True)
class Identity:
    actor: str
    role: str
    tenants: frozenset[str] | None = None  # None: every tenant

    def sees(self, row: dict | None) -> bool:
        """Whether this user may see (and act on) an incident row: its tenant (the incident's
        ``correlation.tenant``) is one of the user's. A scoped user sees no tenant-less incident."""
        if self.tenants is None:
            return True
        if row is None:
            return False
        tenant = (row.get("correlation") or {}).get("tenant") or row.get("tenant")
        return tenant in self.tenants


SESSION_TTL_S = 12 * 3600.0  # a sign-in lasts a shift
#: live sessions of one user at most: a further sign-in of theirs ends their own oldest session
SESSIONS_PER_USER = 20
#: live sessions in all (memory stays bounded); when they are all live a sign-in ends the user's
#: own oldest session, or is refused (SessionsFull) if they have none: nobody is ever signed out
#: by someone else's sign-in
MAX_SESSIONS = 10_000
FAILURES = 5  # failed sign-ins allowed per user and per client address ...
WINDOW_S = 60.0  # ... within this many seconds
DEVICE_TTL_S = 30 * 86400.0  # a device cookie (a browser where the user signed in) lasts a month
DEVICE_COOKIE = "atalaia_device_"  # + a short hash of the username: one per user per browser


def device_cookie_name(username: str) -> str:
    return DEVICE_COOKIE + hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class DeviceCookies:
    """Device cookies (OWASP's defence against a lockout attack): a sign-in that succeeds gives the
    browser a cookie naming the user, a random id and an expiry, signed with ``key`` (HMAC-SHA256
    over the user, a digest of the user's password hash, the id and the expiry). A sign-in that
    presents a valid one for its user is limited by that cookie's own failures, not by the user's
    or the client address's, so someone who fails on purpose as the duty operator from elsewhere
    cannot lock the operator out of a browser they signed in on. A sign-in without one is limited
    as before (per user and per address). A cookie that reaches the failure limit is no longer
    trusted (``distrust``: its later sign-ins are limited per user and address again), and a new
    password makes every cookie of the user's old one invalid."""

    def __init__(self, key: bytes, ttl: float = DEVICE_TTL_S) -> None:
        if len(key) < 32:
            raise ValueError("a device cookie key has at least 32 bytes")
        self.key, self.ttl = key, ttl
        self.distrusted: OrderedDict[str, float] = OrderedDict()  # id -> its expiry (bounded)

    @classmethod
    def from_file(cls, path: Path) -> DeviceCookies:
        """The key kept in ``path`` (32 random bytes, readable by this user only), made if it is
        absent and made again if it is not a whole key; written to a temporary file, synced and
        linked into place, so no process ever reads a partial one. A key that cannot be kept
        lasts this process (its cookies end with it)."""
        import logging
        import os

        log = logging.getLogger("atalaia.console")
        try:
            key = path.read_bytes()
            if len(key) == 32:
                return cls(key)
            log.warning(
                "%s holds %d bytes, not a 32-byte key: a new key is made (older cookies are void)",
                path,
                len(key),
            )
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot read %s (%s): device cookies last this process", path, e)
            return cls(secrets.token_bytes(32))
        key = secrets.token_bytes(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            if path.exists():  # a short key, replaced whole
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)
                except FileExistsError:  # another process linked its key first: use that one
                    key = path.read_bytes()
        except OSError as e:
            log.warning("cannot keep %s (%s): device cookies last this process", path, e)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return cls(key if len(key) == 32 else secrets.token_bytes(32))

    def _mac(self, username: str, secret: str, body: str) -> str:
        text = f"{username}\0{hashlib.sha256(secret.encode()).hexdigest()}\0{body}"
        return hmac.new(self.key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def issue(self, username: str, now: float, secret: str = "") -> str:
        """A cookie for ``username``; ``secret``: the user's password hash (a new one voids it)."""
        body = f"{secrets.token_hex(12)}.{int(now + self.ttl)}"
        return f"{body}.{self._mac(username, secret, body)}"

    def check(self, value: str | None, username: str, now: float, secret: str = "") -> str | None:
        """The cookie's id if ``value`` is a valid, unexpired, still trusted cookie issued for
        ``username`` with password hash ``secret``."""
        if not value or len(value) > 200 or not value.isascii():
            return None
        parts = value.split(".")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 12:
            return None
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(parts[2], self._mac(username, secret, body)):
            return None
        expires = int(parts[1])
        if expires <= now or parts[0] in self.distrusted:
            return None
        return parts[0]

    def distrust(self, device: str, now: float) -> None:
        """The cookie ``device`` reached the failure limit: no longer trusted until it expires."""
        self.distrusted[device] = now + self.ttl
        while self.distrusted and (
            len(self.distrusted) > 100_000 or next(iter(self.distrusted.values())) <= now
        ):
            self.distrusted.popitem(last=False)


def _identity(u: User) -> Identity:
    return Identity(u.actor, u.role, frozenset(u.tenants) if u.tenants is not None else None)


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (the library's default parameters) for ``password_argon2``."""
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def _verify(stored: str, password: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return PasswordHasher().verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# a hash to check against for an unknown user, so that the answer takes as long as for a known one
_DUMMY: list[str] = []


@dataclass(frozen=True)
class Session:
    identity: Identity
    expires: float  # epoch seconds
    device: str = ""  # the device cookie a sign-in gives its browser (see DeviceCookies)


class LoginRefused(Exception):
    """Wrong username or password (the caller is not told which)."""


class LoginLimited(Exception):
    """Too many failed sign-ins for this user or client address: try again after ``retry_after``."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after:.0f} s")
        self.retry_after = retry_after


class SessionsFull(Exception):
    """Every session place is taken by other users' live sessions: the sign-in is refused rather
    than signing somebody else out; try again after ``retry_after`` seconds."""

    retry_after = 60.0

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the console holds {limit} live sessions, none of them yours: try again later, or ask "
            "others to sign out"
        )


class Limiter:
    """Failed attempts per key (``user:NAME`` / ``ip:ADDR``) within a sliding window; bounded."""

    def __init__(self, limit: int = FAILURES, window: float = WINDOW_S, keys: int = 10_000) -> None:
        self.limit, self.window, self.keys = limit, window, keys
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self.failures.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self.failures[key]
        return q

    def count(self, key: str, now: float) -> int:
        """Failures of ``key`` within the window."""
        return len(self._recent(key, now))

    def blocked(self, keys: list[str], now: float) -> float | None:
        """Seconds until ``keys`` may try again, or None if none of them is over the limit."""
        waits = [q[0] + self.window - now for k in keys if len(q := self._recent(k, now)) >= self.limit]
        return max(waits) if waits else None

    def fail(self, keys: list[str], now: float) -> None:
        for k in keys:
            q = self.failures.pop(k, None) or deque(maxlen=self.limit)
            q.append(now)
            self.failures[k] = q  # most recently failed last
        while len(self.failures) > self.keys:
            self.failures.popitem(last=False)

    def clear(self, key: str) -> None:
        self.failures.pop(key, None)

    def undo(self, key: str, at: float) -> None:
        """Take back one attempt counted at ``at`` (one that turned out right)."""
        q = self.failures.get(key)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(at)
            if not q:
                del self.failures[key]


class Authenticator:
    def __init__(
        self,
        users: list[User] | None,
        session_ttl: float = SESSION_TTL_S,
        clock=time.time,
        devices: DeviceCookies | None = None,
        per_user: int | None = None,
        max_sessions: int | None = None,
    ) -> None:
        self.users = users
        self.per_user = per_user or SESSIONS_PER_USER
        self.max_sessions = max_sessions or MAX_SESSIONS
        self.devices = devices or DeviceCookies(secrets.token_bytes(32))
        self.by_name = {u.actor: u for u in users or ()}
        self.session_ttl = session_ttl
        self.clock = clock
        self.sessions: OrderedDict[str, Session] = OrderedDict()  # sha256(token) -> session
        self.limiter = Limiter()
        self.counts = {"ok": 0, "refused": 0, "limited": 0}
        self._lock = threading.Lock()  # sign-ins verify passwords on worker threads

    @classmethod
    def from_file(
        cls, path: Path | None, limits: YamlLimits | None = None, devices: DeviceCookies | None = None
    ) -> Authenticator:
        """The users of a users file; a bad file raises UsersFileError ``file:line:col: ...``."""
        if path is None:
            return cls(None)
        return cls(load_users(path, limits), devices=devices)

    @property
    def enabled(self) -> bool:
        return self.users is not None

    def identify(self, authorization: str | None) -> Identity | None:
        """The user a ``Bearer`` token (an API token or a session token) belongs to, or None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        digest = hashlib.sha256(authorization[7:].strip().encode()).hexdigest()
        for u in self.users or ():
            if u.token_sha256 and hmac.compare_digest(digest, u.token_sha256.lower()):
                return _identity(u)
        s = self.session(authorization)
        return s.identity if s is not None else None

    def session(self, authorization: str | None) -> Session | None:
        """The live session of a ``Bearer`` session token, or None (unknown or expired)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        digest = hashlib.sha256(authorization[7:].strip().encode()).hexdigest()
        with self._lock:
            s = self.sessions.get(digest)
            if s is not None and s.expires <= self.clock():
                del self.sessions[digest]
                return None
        return s

    def login(
        self, username: str, password: str, client: str, device: str | None = None
    ) -> tuple[str, Session]:
        """A new session token for a right username and password; raises LoginLimited before any
        check when this user or client failed too often lately, else LoginRefused when wrong.
        ``device``: the browser's device cookie for this user, if any; a valid one is limited by
        its own failures only (see :class:`DeviceCookies`). On success the session's
        ``device`` is a fresh cookie to give the browser. Verifying costs tens of milliseconds on
        purpose: call it off the event loop."""
        now = self.clock()
        u = self.by_name.get(username)
        secret = (u.password_argon2 or "") if u is not None else ""
        known = self.devices.check(device, username, now, secret) if u is not None else None
        # an address counts as its client group: an IPv4 address, or an IPv6 client's whole /64
        # (one host holds all of it: an address per attempt was a fresh client each time)
        keys = [f"device:{known}"] if known else [f"user:{username}", f"ip:{client_group(client)}"]
        with self._lock:
            wait = self.limiter.blocked(keys, now)
            if wait is not None:
                self.counts["limited"] += 1
                _count("limited")
                raise LoginLimited(wait)
            # counted as a failure before the (slow) check and taken back if right: parallel
            # attempts cannot all pass the limit while the first ones are being verified
            self.limiter.fail(keys, now)
        if u is None or not u.password_argon2:
            if not _DUMMY:
                _DUMMY.append(hash_password(secrets.token_hex(8)))
            _verify(_DUMMY[0], password)  # as long as for a real user
            ok = False
        else:
            ok = _verify(u.password_argon2, password)
        with self._lock:
            if not ok:
                self.counts["refused"] += 1
                _count("refused")
                if known and self.limiter.count(keys[0], now) >= self.limiter.limit:
                    self.devices.distrust(known, now)  # guessed at too often: trusted no more
                raise LoginRefused("wrong username or password")
            assert u is not None
            self.limiter.clear(keys[0])
            if len(keys) > 1:
                self.limiter.undo(keys[1], now)
            self._make_room(u.actor, now)
            token = secrets.token_urlsafe(32)
            device = self.devices.issue(username, now, u.password_argon2 or "")
            s = Session(_identity(u), self.clock() + self.session_ttl, device)
            self.sessions[hashlib.sha256(token.encode()).hexdigest()] = s
            self.counts["ok"] += 1
            _count("ok")
        return token, s

    def _make_room(self, actor: str, now: float) -> None:
        """Room for one more session of ``actor`` (under the lock): expired sessions go; beyond
        ``per_user`` the user's own oldest go; with every place taken, the user's own oldest
        goes, and if they hold none the sign-in is refused (SessionsFull): one user signing in
        again and again never signs anybody else out."""
        for k in [k for k, v in self.sessions.items() if v.expires <= now]:
            del self.sessions[k]
        mine = [k for k, v in self.sessions.items() if v.identity.actor == actor]  # oldest first
        while mine and len(mine) >= self.per_user:
            del self.sessions[mine.pop(0)]
        if len(self.sessions) >= self.max_sessions:
            if not mine:
                _count("full")
                raise SessionsFull(self.max_sessions)
            del self.sessions[mine.pop(0)]

    def logout(self, authorization: str | None) -> bool:
        """End the session of a ``Bearer`` session token; False if it was none (or already ended)."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return False
        digest = hashlib.sha256(authorization[7:].strip().encode()).hexdigest()
        with self._lock:
            return self.sessions.pop(digest, None) is not None


def _count(result: str) -> None:
    try:
        from prometheus_client import REGISTRY, Counter

        c = getattr(_count, "counter", None)
        if c is None:
            try:
                c = Counter(
                    "atalaia_console_logins",
                    "console sign-ins by result (ok, refused, limited, full)",
                    ["result"],
                )
            except ValueError:  # registered already (another Authenticator in this process)
                c = REGISTRY._names_to_collectors["atalaia_console_logins_total"]
            _count.counter = c  # type: ignore[attr-defined]
        c.labels(result).inc()
    except Exception:  # metrics are best effort
        pass
