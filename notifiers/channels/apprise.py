"""SMS and email through apprise: one apprise plugin instance per target, so each target's result
is its own (a single notify to many URLs would hide which one failed).

Apprise sends synchronously and some plugins throttle themselves (``request_rate_per_sec``: 5.5 s
between two requests of the same plugin instance, e.g. email and the SMS gateways). We run each
send in a thread pool (targets in parallel) and set the plugin throttle from the target's
``throttle`` (default 0): pacing is the pipeline's non-blocking per-target rate limit instead of
a ``time.sleep`` that holds a worker thread.

Measured cost (``benchmarks/notifiers_bench.py``): apprise's email plugin builds a new
``ssl.create_default_context()`` (loading the CA store) for every message, even for plain SMTP:
tens of ms of CPU per email, so bulk email was CPU-bound at ≈18/s here. :class:`_CachedSSL`
reuses one context per verify setting during our sends (≈10× more emails/s).

SMTP commit point: email is ``commit_point`` (``notifiers/commit.py``). ``smtplib.SMTP.data`` is
wrapped once, process-wide: while one of our sends runs, the thread carries the lane's hook, and
the wrapper splits the one ``send`` of the bytes ending in the DATA terminator ``\r\n.\r\n`` (not
the ``DATA`` command itself) and calls it right before the final ``.\r\n`` — the server may
deliver only after that.

SMTP replies: apprise answers a bool. The smtplib methods it calls (``connect``, ``starttls``,
``login``, ``sendmail``) are wrapped once too; during our sends the thread records each refusal
(command, code, text, recipient) and each recipient accepted, and :func:`smtp_result` makes a
5xx about a recipient or the message ``permanent`` and anything else (a 4xx, a 5xx refusing the
session, a mailbox full) ``retryable``, with the server's words (notifiers/README.md).
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import logging
import re
import smtplib
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from atalaia.notifiers.channels.base import Channel, ChannelContext
from atalaia.notifiers.commit import COMMIT_HOOK
from atalaia.notifiers.model import DeliveryResult, Notification
from atalaia.notifiers.render import render
from atalaia.notifiers.sms import fit, fit_keeping, segments

_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="apprise")


class _PerThread(logging.Handler):
    """Collects apprise's warnings per thread, so a failure's reason reaches the delivery log."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        bucket = self.records.get(threading.get_ident())
        if bucket is not None:
            bucket.append(record.getMessage())


_CAPTURE = _PerThread()
logging.getLogger("apprise").addHandler(_CAPTURE)


class _CachedSSL:
    """Stands in for the ``ssl`` module inside apprise's SMTP controller, which calls
    ``ssl.create_default_context()`` (loading the whole CA store, ~10-100 ms of CPU) for every
    email, TLS or not. While one of our sends runs, the thread carries the plugin's
    ``verify_certificate`` flag and gets a context cached per flag: the controller's only change
    to it (``check_hostname``/``verify_mode`` off when not verifying) is the same for every user
    of that cache entry. Other callers get the real function."""

    def __init__(self, real: types.ModuleType):
        self._real, self._cache, self._lock = real, {}, threading.Lock()
        self.flag = threading.local()

    def create_default_context(self, *args, **kwargs):
        verify = getattr(self.flag, "verify", None)
        if verify is None or args or kwargs:
            return self._real.create_default_context(*args, **kwargs)
        with self._lock:
            ctx = self._cache.get(verify)
            if ctx is None:
                ctx = self._cache[verify] = self._real.create_default_context()
        return ctx

    def __getattr__(self, name: str):
        return getattr(self._real, name)


def _install_ssl_cache() -> _CachedSSL | None:
    try:
        from apprise.plugins.email import smtp as apprise_smtp
    except ImportError:  # pragma: no cover - apprise reorganised: keep its own behaviour
        return None
    real = getattr(apprise_smtp, "ssl", None)
    if isinstance(real, _CachedSSL):
        return real
    if not isinstance(real, types.ModuleType):  # pragma: no cover
        return None
    apprise_smtp.ssl = _CachedSSL(real)
    return apprise_smtp.ssl


_SSL = _install_ssl_cache()

_SMTP_HOOK = threading.local()  # .fn: called right before this thread's DATA terminator
_TERMINATOR = b"\r\n.\r\n"


def _install_smtp_commit_hook() -> bool:
    """Wrap ``smtplib.SMTP.data`` (once per process): with a hook set for the current thread,
    ``self.send`` is wrapped for the duration of the call and the hook runs right before the
    payload that ends with the terminator (smtplib sends it in one ``self.send(q)``). Without a
    hook (not one of our sends) the original runs untouched. With a reply recorder set for the
    thread (:class:`SmtpReplies`), it notes that the message and its terminator went out, so a
    refusal after that is told apart from one at the ``DATA`` command."""
    real = smtplib.SMTP.data
    if getattr(real, "_atalaia_commit_hook", False):
        return True

    def data(self, msg):
        hook = getattr(_SMTP_HOOK, "fn", None)
        out = real(self, msg) if hook is None else _data_with_hook(self, msg, hook)
        rec = getattr(_SMTP_REPLIES, "rec", None)
        if rec is not None:  # the terminator went out and the server answered (maybe a refusal)
            rec.data_sent = True
        return out

    def _data_with_hook(self, msg, hook):
        had, prev = "send" in self.__dict__, self.__dict__.get("send")
        send = self.send
        passed = []  # what the hook returned at this message's commit point

        def send_marked(s):
            if not (isinstance(s, bytes | bytearray) and bytes(s[-5:]) == _TERMINATOR):
                return send(s)
            # everything up to the final "\r\n" first: the server holds it and delivers nothing
            # until ".\r\n" completes the terminator; the marker goes in between, so a kill
            # leaves either no marker and nothing committed, or a marker (in doubt)
            send(s[:-3])
            durable = hook()  # if it fails, nothing is committed
            passed.append(durable)
            sent = send(s[-3:])
            if callable(durable):
                durable()
            return sent

        def answered(code) -> None:
            # the server replied to the terminator: this message is settled, not in doubt (an
            # email to several recipients passes one commit point per recipient)
            note = getattr(passed[-1], "answered", None) if passed else None
            if note is not None:
                rec = getattr(_SMTP_REPLIES, "rec", None)
                note(code, getattr(rec, "current", None))

        self.send = send_marked
        try:
            out = real(self, msg)
        except smtplib.SMTPResponseException as e:
            answered(e.smtp_code)
            raise
        else:
            answered(out[0] if isinstance(out, tuple) and out else 250)
            return out
        finally:
            if had:
                self.send = prev
            else:
                del self.send

    data._atalaia_commit_hook = True  # type: ignore[attr-defined]
    data.__wrapped__ = real  # type: ignore[attr-defined]
    smtplib.SMTP.data = data  # type: ignore[method-assign]
    return True


_SMTP_COMMIT = _install_smtp_commit_hook()

# -- SMTP replies: the server's code and text reach the delivery log ---------------------------
# apprise answers a bool and logs an SMTP refusal's reason at DEBUG, if at all; a mailbox that does
# not exist (550 at RCPT) was retried like an outage for the whole budget, its reason lost. The
# methods apprise calls on smtplib are wrapped once per process; while one of our sends runs, the
# thread carries a recorder that notes each refusal (command, code, text, recipient) and each
# recipient the server accepted. Other users of smtplib run the originals untouched.

_SMTP_REPLIES = threading.local()  # .rec: the SmtpReplies of this thread's send, else None


#: commands whose refusal is the relay's refusing this client (all its messages), not one recipient
_SESSION = frozenset({"connect", "EHLO/HELO", "STARTTLS", "AUTH", "MAIL FROM"})
_MAILBOX_FULL = re.compile(r"[245]\.2\.2\b")  # RFC 3463 X.2.2: mailbox full
#: a 5xx whose text says to come back (a greylisting or rate-limiting relay misusing 5xx for 4xx)
_COME_BACK = re.compile(r"gr[ae]y-?list|try (again )?later|please retry|temporar", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One refusal or failure of an SMTP session: the command it answered (``connect``,
    ``STARTTLS``, ``AUTH``, ``MAIL FROM``, ``RCPT``, ``DATA``, ``end of DATA``: after the message
    and its terminator), the reply code (None: no reply, e.g. connection refused or closed) and
    text, the recipient (of ``RCPT``; else the message's recipients, within a ``sendmail``) and,
    for ``connect``, the server's ``host:port`` (a wrong host or port in the target's URL, or in
    the variables it reads, is then seen in the delivery log)."""

    command: str
    code: int | None
    text: str
    recipient: str | None = None
    server: str | None = None

    @property
    def permanent(self) -> bool:
        """A 5xx reply about a recipient or the message (RFC 5321 §4.2.1): retrying changes
        nothing. Not permanent, though 5xx: a refusal of the session (greeting, ``EHLO``,
        ``STARTTLS``, ``AUTH``, ``MAIL FROM``: the relay refuses us — rotated credentials, a
        blocklist, a policy change — and so every message until a person fixes it; retried, the
        target's breaker opens and ``/health`` names it, and the pages go once it is fixed), a
        552 to ``RCPT`` (RFC 5321 §4.5.3.1.10: to be treated as 452), a mailbox full
        (enhanced status X.2.2, RFC 3463: a persistent transient failure) and a 5xx whose text
        says to come back (greylisting or rate limiting answered with the wrong class)."""
        if self.code is None or not 500 <= self.code < 600 or self.command in _SESSION:
            return False
        if self.code == 552 and self.command == "RCPT":
            return False
        return not (_MAILBOX_FULL.match(self.text) or _COME_BACK.search(self.text))

    def __str__(self) -> str:
        where = self.command
        if self.server:
            where += f" to {self.server}"
        if self.recipient:
            where += f" {self.recipient}" if self.command == "RCPT" else f", to {self.recipient}"
        if self.code is None:
            return f"SMTP {where} failed: {self.text}"
        return f"SMTP {self.code} {self.text} ({where})".replace(" ()", "")


@dataclass(slots=True)
class SmtpReplies:
    """What the server answered during one send (one apprise ``notify``: a session, one message
    per recipient)."""

    failures: list[SmtpReply] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # recipients whose message the server took
    data_sent: bool = False  # (within one sendmail) the message and its terminator went out
    current: str | None = None  # (within one sendmail) the recipient apprise tracks the message by
    # messages the server took for their recipient but not for all their cc/bcc: (the message's
    # recipient, as apprise tracks it; the refusals). Sent again, they would reach the others twice
    partial: list[tuple[str, list[SmtpReply]]] = field(default_factory=list)

    def add_error(
        self, command: str, e: BaseException, to: str | None = None, server: str | None = None
    ) -> None:
        if isinstance(e, smtplib.SMTPRecipientsRefused):
            for addr, (code, text) in e.recipients.items():
                self.failures.append(SmtpReply("RCPT", code, _text(text), addr))
            return
        if isinstance(e, smtplib.SMTPSenderRefused):
            command = "MAIL FROM"
        elif isinstance(e, smtplib.SMTPDataError):
            command = "end of DATA" if self.data_sent else "DATA"
        elif isinstance(e, smtplib.SMTPHeloError):
            command = "EHLO/HELO"
        elif isinstance(e, smtplib.SMTPAuthenticationError):
            command = "AUTH"
        code = getattr(e, "smtp_code", None)
        if isinstance(code, int) and code > 0:
            self.failures.append(SmtpReply(command, code, _text(getattr(e, "smtp_error", b"")), to, server))
            return
        command = command or ("end of DATA" if self.data_sent else "session")  # (within sendmail)
        what = str(e) or "connection closed"
        if isinstance(e, smtplib.SMTPServerDisconnected) and what == "please run connect() first":
            what = "the server had closed the session"  # (smtplib's words for a socket already shut)
        elif not isinstance(e, smtplib.SMTPException):
            what = f"{type(e).__name__}: {what}"
        self.failures.append(SmtpReply(command, None, what, to, server))

    def sent(self, to_addrs, refused) -> None:
        rcpts = _rcpts(to_addrs)
        refused = refused or {}
        refusals = [SmtpReply("RCPT", code, _text(text), addr) for addr, (code, text) in refused.items()]
        self.failures.extend(refusals)
        self.accepted.extend(a for a in rcpts if a not in refused)
        if refusals and rcpts and rcpts[0] not in refused:  # (its recipient refused: retried, cc and all)
            self.partial.append((rcpts[0], refusals))


def _rcpts(to_addrs) -> list[str]:
    return [to_addrs] if isinstance(to_addrs, str) else list(to_addrs or ())


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    return " ".join(text.split())[:200]  # a multi-line reply on one line


def _server(smtp: smtplib.SMTP, args: tuple, kwargs: dict) -> str:
    """The ``host:port`` an ``smtplib.SMTP.connect(host, port)`` call reaches (as smtplib reads
    them: ``host:port`` in the host when no port is given, else the class's default port)."""
    host = args[0] if args else kwargs.get("host", "localhost")
    port = args[1] if len(args) > 1 else kwargs.get("port", 0)
    host = str(host)
    if not port and host.count(":") == 1:
        return host
    return f"{host}:{port or smtp.default_port}"


def _install_smtp_replies() -> bool:
    """Wrap the smtplib methods apprise calls (``connect`` from the constructor, ``starttls``,
    ``login``, ``sendmail``), once per process: with a recorder set for the thread, an exception
    that leaves one of them, and the recipients ``sendmail`` reports refused or accepted, are
    recorded; the exception goes on to apprise as before."""
    if getattr(smtplib.SMTP.sendmail, "_atalaia_replies", False):
        return True

    def wrap(name: str, command: str):
        real = getattr(smtplib.SMTP, name)

        def method(self, *args, **kwargs):
            rec = getattr(_SMTP_REPLIES, "rec", None)
            if rec is None:
                return real(self, *args, **kwargs)
            rec.data_sent = False
            to = (args[1] if len(args) > 1 else kwargs.get("to_addrs", ())) if name == "sendmail" else None
            if name == "sendmail":
                rec.current = next(iter(_rcpts(to)), None)
            server = _server(self, args, kwargs) if name == "connect" else None
            try:
                out = real(self, *args, **kwargs)
            except Exception as e:
                rec.add_error(command, e, ", ".join(_rcpts(to)) if to else None, server)
                raise
            if name == "sendmail":
                rec.sent(to, out)
            elif name == "connect" and isinstance(out, tuple) and out and out[0] != 220:
                # the greeting refused: smtplib's constructor raises on it, outside connect
                rec.failures.append(SmtpReply("connect", out[0], _text(out[1]), None, server))
            return out

        method.__name__, method.__qualname__ = real.__name__, real.__qualname__
        method.__doc__ = real.__doc__
        method.__wrapped__ = real  # type: ignore[attr-defined]
        method._atalaia_replies = True  # type: ignore[attr-defined]
        setattr(smtplib.SMTP, name, method)

    for name, command in (
        ("connect", "connect"),
        ("starttls", "STARTTLS"),
        ("login", "AUTH"),
        ("sendmail", ""),
    ):
        wrap(name, command)
    return True


_SMTP_REPLIES_ON = _install_smtp_replies()


def smtp_result(
    replies: SmtpReplies, refused_before: list[SmtpReply], detail: str | None, settled: list[SmtpReply] = ()
) -> DeliveryResult:
    """A failed email send (apprise said False) as a result, from what the server answered.

    Every refusal permanent (:attr:`SmtpReply.permanent`: a mailbox that does not exist, a
    message refused after its DATA terminator): ``permanent`` — not retried, the server's words in
    the log. Anything else (a 4xx, a mailbox full, the session refused — bad credentials, a
    sender or client refused —, no answer: refused or dropped connection, timeout): ``retryable``.
    Several recipients: each message the server took is not sent again on a retry (apprise skips
    the recipients marked delivered); recipients refused for good are not tried again either and
    are named in the result, with the ones that got it. ``settled``: refusals not to be retried
    whatever their code (a cc refused while the server took the message for its other
    recipients: re-sending it would page them again)."""
    failures = refused_before + replies.failures
    retry = any(not f.permanent and f not in settled for f in replies.failures)
    text = "; ".join(str(f) for f in failures)
    if replies.accepted:
        text += f"; delivered to {', '.join(dict.fromkeys(replies.accepted))}"
    first = next((f for f in failures if f.code is not None), None)
    return DeliveryResult(
        "retryable" if retry else "permanent",
        error=text[:500],
        detail=f"SMTP {first.code}" if first is not None else detail,
    )


#: apprise plugins that post anywhere (generic web hooks, another apprise server): not an SMS gateway
_GENERIC = {"json", "jsons", "xml", "xmls", "form", "forms", "apprise", "apprises"}


def _schemes(plugin) -> set[str]:
    out: set[str] = set()
    for attr in ("protocol", "secure_protocol"):
        v = getattr(plugin, attr, None)
        out.update([v] if isinstance(v, str) else list(v or ()))
    return {x.lower() for x in out}


def _check_kind(plugin, kind: str) -> None:
    """An email target is apprise's ``mailto://``/``mailtos://`` with at least one valid
    recipient; an SMS target is not an email nor a generic web hook (``json://`` would post the
    message to any host, e.g. a cloud metadata address)."""
    from apprise.plugins.email import NotifyEmail

    is_email = isinstance(plugin, NotifyEmail)
    if kind == "email":
        if not is_email:
            raise ValueError("an email target needs a mailto:// or mailtos:// URL")
        if not getattr(plugin, "targets", None):
            raise ValueError("the email URL has no valid recipient (to=… must be an email address)")
    elif is_email or _schemes(plugin) & _GENERIC:
        raise ValueError(
            "an sms target needs an SMS gateway URL (e.g. smseagles://TOKEN@gateway/+351…), "
            f"not {sorted(_schemes(plugin))[0]}://"
        )
    if getattr(plugin, "invalid_targets", None):
        raise ValueError(f"the URL has {len(plugin.invalid_targets)} invalid recipient(s)")


_SECRETISH = re.compile(r"token|key|secret|pass|auth|sid", re.I)


def _plugin_secrets(plugin) -> tuple[str, ...]:
    """The values apprise marks private, or whose field names a credential (tokens, passwords,
    keys), of this plugin: scrubbed from its failure texts."""
    found: set[str] = set()
    specs = {**getattr(plugin, "template_tokens", {}), **getattr(plugin, "template_args", {})}
    for key, spec in specs.items():
        if isinstance(spec, dict) and (spec.get("private") or _SECRETISH.search(key)):
            value = getattr(plugin, spec.get("map_to", key), None)
            if isinstance(value, str) and len(value) >= 4:
                found.add(value)
    for attr in ("password",):
        value = getattr(plugin, attr, None)
        if isinstance(value, str) and len(value) >= 4:
            found.add(value)
    return tuple(sorted(found, key=len, reverse=True))


def _apprise_tracker():
    """apprise's context variable of the targets that accepted the current notification (set by
    its own retries; a plugin skips them), or None if this apprise has none."""
    try:
        from apprise.plugins import base as apprise_base
    except ImportError:  # pragma: no cover
        return None
    return getattr(apprise_base, "_delivery_tracker", None)


_TRACKER = _apprise_tracker()


@dataclass(slots=True)
class _Progress:
    """An email notification's recipients so far: what apprise skips on the next attempt
    (``tracker``), the recipients the server refused for good and those that got it."""

    tracker: set = field(default_factory=set)
    refused: list[SmtpReply] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)

    def dump(self) -> dict | None:
        """As JSON for the delivery log (``DeliveryResult.progress``), None if there is nothing
        to keep. apprise's entries are ``(piece, (type, repr(key)))``; its email keys are the
        messages' recipients (str)."""
        done = [[piece, ast.literal_eval(r)] for piece, (typ, r) in self.tracker if typ is str]
        if not (done or self.refused or self.accepted):
            return None
        return {
            "done": sorted(done, key=lambda x: (x[0] is None, x[0] or 0, x[1])),
            "refused": [[f.command, f.code, f.text, f.recipient] for f in self.refused],
            "accepted": list(self.accepted),
        }

    @classmethod
    def load(cls, data: dict) -> _Progress:
        return cls(
            {(piece, (str, repr(key))) for piece, key in data.get("done", ())},
            [SmtpReply(c, code, text, r) for c, code, text, r in data.get("refused", ())],
            list(data.get("accepted", ())),
        )


class AppriseChannel(Channel):
    """``kind`` is ``sms`` (short text fitted to ``max_segments``) or ``email`` (subject + body)."""

    idempotent = False

    def __init__(
        self,
        name: str,
        ctx: ChannelContext,
        url: str,
        kind: str,
        *,
        lang: str | None = None,
        throttle: float = 0.0,
        timeout: float = 10.0,
        max_segments: int = 3,
    ):
        import apprise

        super().__init__(name, ctx)
        if kind not in ("sms", "email"):
            raise ValueError(f"apprise channel kind must be sms or email, not {kind!r}")
        self.kind, self.lang, self.max_segments = kind, lang or ctx.lang, max_segments
        # apprise's mailto/mailtos plugin speaks SMTP through smtplib: its commit point is known
        self.commit_point = kind == "email" and _SMTP_COMMIT
        self.plugin = apprise.Apprise.instantiate(url)
        if self.plugin is None:
            raise ValueError("apprise does not accept this URL (check scheme and fields)")
        _check_kind(self.plugin, kind)
        self.secrets = _plugin_secrets(self.plugin)
        self.plugin.request_rate_per_sec = throttle
        self.plugin.socket_connect_timeout = min(timeout, self.plugin.socket_connect_timeout or timeout)
        self.plugin.socket_read_timeout = timeout
        self.timeout = timeout
        self.text = apprise.NotifyFormat.TEXT
        self._progress: dict[str, _Progress] = {}  # email: recipients reached / refused, per id

    def _send_sync(
        self, title: str, body: str, hook=None, progress: _Progress | None = None
    ) -> tuple[bool, list[str], SmtpReplies | None]:
        me = threading.get_ident()
        _CAPTURE.records[me] = []
        _SMTP_HOOK.fn = hook  # set here, in the pool thread that runs smtplib
        replies = SmtpReplies() if self.kind == "email" else None
        _SMTP_REPLIES.rec = replies
        # apprise skips the recipients this notification's earlier attempts reached (its own
        # retry bookkeeping, a context variable we hand each attempt's set)
        token = _TRACKER.set(progress.tracker) if _TRACKER is not None and progress is not None else None
        if _SSL is not None:
            _SSL.flag.verify = bool(getattr(self.plugin, "verify_certificate", True))
        try:
            # the plugin itself, in this thread: Apprise.notify would hop to its own thread pool
            # body_format TEXT: our text is text; apprise escapes it where it sends HTML (an email's
            # HTML part), so a label a sensor sent cannot put markup or a link into the message
            ok = bool(self.plugin.notify(body=body, title=title, body_format=self.text))
        finally:
            msgs = _CAPTURE.records.pop(me, [])
            _SMTP_HOOK.fn = None
            _SMTP_REPLIES.rec = None
            if token is not None:
                _TRACKER.reset(token)
            if _SSL is not None:
                _SSL.flag.verify = None
        return ok, msgs, replies

    def _warning(self, n: Notification) -> tuple[str, str, str | None]:
        """A population warning: SMS in the target's language (pt-PT by default), as
        :func:`~atalaia.notifiers.warning.sms_message` writes it (GSM-7, fitted to ``max_segments``,
        the link to the CAP document kept whole: what the console's preview showed the approver);
        email in every language of the CAP document."""
        from atalaia.notifiers import warning as wmsg

        w = n.warning or {}
        link = wmsg.warning_link(self.ctx.console_url, w["identifier"])
        if self.kind == "sms":
            msg = wmsg.sms_message(w, self.ctx.tz, self.lang, link, self.max_segments)
            return "", msg.text, f"{msg.segments} segment(s) {msg.encoding}"
        title, body = wmsg.email(w, self.ctx.tz, self.lang, link)
        return title, body, None

    async def send(self, n: Notification) -> DeliveryResult:
        if n.kind == "warning":
            title, body, detail = self._warning(n)
            return await self._deliver(title, body, detail, n.id)
        msg = render(n, self.lang, self.ctx.tz, self.ctx.console_url, self.ctx.rules)
        if self.kind == "sms":
            if msg.link and msg.short.endswith(msg.link):  # the link to act on is never cut
                body = fit_keeping(msg.short[: -len(msg.link)], msg.link, self.max_segments)
            else:
                body = fit(msg.short, self.max_segments)
            title = ""
            count, enc = segments(body)
            detail = f"{count} segment(s) {enc}"
        else:
            title, body, detail = msg.subject, msg.body, None
        return await self._deliver(title, body, detail, n.id)

    async def _deliver(
        self, title: str, body: str, detail: str | None, nid: str | None = None
    ) -> DeliveryResult:
        result = await self._attempt(title, body, detail, nid)
        kept = self._progress.get(nid) if nid is not None and not result.ok else None
        if kept is not None:  # the delivery log keeps it: the next attempt, also after a restart
            result = dataclasses.replace(result, progress=kept.dump())
        return result

    async def _attempt(
        self, title: str, body: str, detail: str | None, nid: str | None = None
    ) -> DeliveryResult:
        loop = asyncio.get_running_loop()
        hook = COMMIT_HOOK.get() if self.commit_point else None  # the lane's, for this notification
        progress = None
        if self.kind == "email" and nid is not None:
            progress = self._progress.pop(nid, None) or _Progress()
        try:
            ok, msgs, replies = await asyncio.wait_for(
                loop.run_in_executor(_POOL, self._send_sync, title, body, hook, progress), self.timeout * 2
            )
        except TimeoutError:
            if progress is not None:
                self._keep(nid, progress)
            return DeliveryResult("retryable", error=f"apprise send did not finish in {self.timeout * 2:g}s")
        if replies is None or (not ok and not replies.failures):  # not SMTP, or no SMTP answer to tell
            if ok:
                return DeliveryResult("delivered", detail=detail)
            if progress is not None:
                self._keep(nid, progress)
            return DeliveryResult(
                "retryable", error="; ".join(msgs)[-300:] or "apprise reported a failure", detail=detail
            )
        if progress is not None:
            replies.accepted[:0] = progress.accepted
        if ok and not (progress and progress.refused):
            return DeliveryResult("delivered", detail=detail)
        slot = getattr(self.plugin, "_slot", None)
        settled: list[SmtpReply] = []
        if progress is not None and slot is not None:
            # a message the server took for some of its recipients (a cc refused, even with a
            # 4xx) is not sent again: the others would get it again at every retry; its refusals
            # are said in the final result, as a recipient refused for good is
            for key, refusals in replies.partial:
                progress.tracker.add(slot(key, False))
                settled.extend(refusals)
        result = smtp_result(replies, progress.refused if progress else [], detail, settled)
        if result.status == "retryable" and progress is not None:
            # a recipient refused for good (its RCPT, or its message after the terminator) is
            # not tried again: marked as done for apprise, and said in the final result
            for f in replies.failures:
                if f in settled:
                    progress.refused.append(f)
                elif f.permanent and f.recipient and ", " not in f.recipient and slot is not None:
                    progress.refused.append(f)
                    progress.tracker.add(slot(f.recipient, False))
            progress.accepted = list(dict.fromkeys(replies.accepted))
            self._keep(nid, progress)
        return result

    def forget(self, notification_id: str) -> None:
        self._progress.pop(notification_id, None)

    def restore(self, notification_id: str, data: dict) -> None:
        """Take up what the delivery log kept of an email's recipients (``DeliveryResult.progress``
        of its last attempt before a restart): who got it is not sent it again, who refused it
        for good is not asked again."""
        if self.kind == "email":
            self._keep(notification_id, _Progress.load(data))

    def _keep(self, nid: str, progress: _Progress) -> None:
        """Remember a notification's partial progress for its next attempt (in this process)."""
        self._progress[nid] = progress
        while len(self._progress) > 10_000:
            self._progress.pop(next(iter(self._progress)))
