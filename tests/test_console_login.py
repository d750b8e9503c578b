"""Sign-in with a username and password: argon2id hashes in the users file, session tokens used as
Bearer tokens, logout, failures limited per user and per client address (and counted), the
``atalaia users passwd`` command; then the same through the live console API."""

from __future__ import annotations

import hashlib
import ipaddress
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from atalaia.console.auth import (
    Authenticator,
    DeviceCookies,
    LoginLimited,
    LoginRefused,
    User,
    UsersFileError,
    hash_password,
    load_users,
)
from tests.conftest import non_loopback_address
from tests.test_console_board import chromium, publish  # noqa: F401  (fixtures)

ATALAIA = str(Path(sys.executable).parent / "atalaia")


class Clock:
    def __init__(self) -> None:
        self.t = 1_769_594_400.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def ana_hash() -> str:
    return hash_password("correct horse")


def test_a_password_gives_a_session_token_that_identifies_until_logout_or_expiry(ana_hash):
    clock = Clock()
    auth = Authenticator(
        [User(actor="ana", role="operator", password_argon2=ana_hash, tenants=["porto"])],
        session_ttl=3600,
        clock=clock,
    )
    token, session = auth.login("ana", "correct horse", "10.0.0.1")
    who = auth.identify(f"Bearer {token}")
    assert (who.actor, who.role, who.tenants) == ("ana", "operator", frozenset({"porto"}))
    assert session.expires == clock.t + 3600
    assert token not in repr(auth.sessions), "only a hash of the session token is held"
    assert auth.logout(f"Bearer {token}") and auth.identify(f"Bearer {token}") is None
    assert not auth.logout(f"Bearer {token}"), "a session ends once"

    token, _ = auth.login("ana", "correct horse", "10.0.0.1")
    clock.t += 3599
    assert auth.identify(f"Bearer {token}").actor == "ana"
    clock.t += 2
    assert auth.identify(f"Bearer {token}") is None, "an expired session is refused"
    assert auth.counts == {"ok": 2, "refused": 0, "limited": 0}


def test_wrong_passwords_are_refused_then_limited_per_user_and_per_address(ana_hash):
    clock = Clock()
    auth = Authenticator(
        [
            User(actor="ana", role="operator", password_argon2=ana_hash),
            User(actor="rui", role="supervisor", password_argon2=ana_hash),
        ],
        clock=clock,
    )
    for _ in range(5):
        with pytest.raises(LoginRefused):
            auth.login("ana", "wrong", "10.0.0.1")
    with pytest.raises(LoginLimited) as limited:
        auth.login("ana", "correct horse", "10.0.0.2")  # right password, another address: still ana
    assert 0 < limited.value.retry_after <= 60
    with pytest.raises(LoginLimited):
        auth.login("rui", "correct horse", "10.0.0.1")  # the address that failed five times
    assert auth.login("rui", "correct horse", "10.0.0.3")[1].identity.actor == "rui"
    with pytest.raises(LoginRefused):
        auth.login("nobody", "x", "10.0.0.4")  # an unknown user is refused like a wrong password
    clock.t += 61  # the window has passed
    assert auth.login("ana", "correct horse", "10.0.0.1")[1].identity.actor == "ana"
    assert auth.counts == {"ok": 2, "refused": 6, "limited": 2}


def test_an_ipv6_client_is_limited_as_its_whole_64_not_per_address(ana_hash):
    """A client on IPv6 holds a whole /64 and can give each attempt an address of its own: each
    was a fresh client for the per-address limit, so one host could spray passwords over every
    user (five per user per minute) and make the console check argon2 hashes without end. Its
    failures now count against its /64, as the front's and the live streams' per-client limits
    do; another network is not held to them."""
    auth = Authenticator([User(actor="ana", role="operator", password_argon2=ana_hash)], clock=Clock())
    for i in range(5):  # five names, five addresses of one /64
        with pytest.raises(LoginRefused):
            auth.login(f"guess{i}", "wrong", f"2001:db8:1:2::{i + 1:x}")
    with pytest.raises(LoginLimited):
        auth.login("guess9", "wrong", "2001:db8:1:2:ffff:ffff:ffff:fffe")  # the same /64
    with pytest.raises(LoginLimited):
        auth.login("ana", "correct horse", "2001:db8:1:2::99")
    assert auth.login("ana", "correct horse", "2001:db8:1:3::1")[1].identity.actor == "ana"  # another /64
    # an IPv4 client is its address, whether written plainly or IPv4-mapped (a dual-stack listener)
    for i in range(5):
        with pytest.raises(LoginRefused):
            auth.login(f"other{i}", "wrong", "::ffff:198.51.100.7" if i % 2 else "198.51.100.7")
    with pytest.raises(LoginLimited):
        auth.login("ana", "correct horse", "198.51.100.7")
    assert auth.login("ana", "correct horse", "198.51.100.8")[1].identity.actor == "ana"


def test_parallel_sign_ins_cannot_check_more_passwords_than_the_limit(ana_hash):
    """Twenty wrong passwords at once for one user checked ten: the limit was read before the
    (slow) check and the failure written after it. Each attempt now counts before its check."""
    from concurrent.futures import ThreadPoolExecutor

    auth = Authenticator([User(actor="ana", role="operator", password_argon2=ana_hash)])
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(lambda i: _attempt(auth, "ana", "wrong", f"10.0.1.{i}"), range(20)))
    assert outcomes.count("refused") == 5 and outcomes.count("limited") == 15
    # a right password from a fresh address, once the window passes, is not held against it
    ok = Authenticator([User(actor="rui", role="operator", password_argon2=ana_hash)])
    for _ in range(10):
        assert ok.login("rui", "correct horse", "10.0.2.1")[1].identity.actor == "rui"


def test_a_browser_that_signed_in_before_is_not_locked_out_by_someone_elses_failures(ana_hash, tmp_path):
    """Five wrong passwords as the duty operator, sent from anywhere, locked the operator out of
    every browser for a minute, again and again. A browser where she signed in presents its
    device cookie and is limited by its own failures only."""
    clock = Clock()
    key_file = tmp_path / "data" / "console-device.key"
    users = [
        User(actor="ana", role="operator", password_argon2=ana_hash),
        User(actor="rui", role="supervisor", password_argon2=ana_hash),
    ]
    auth = Authenticator(users, clock=clock, devices=DeviceCookies.from_file(key_file))
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32
    ana_device = auth.login("ana", "correct horse", "10.0.0.9")[1].device
    rui_device = auth.login("rui", "correct horse", "10.0.0.9")[1].device
    for _ in range(5):
        with pytest.raises(LoginRefused):
            auth.login("ana", "guess", "203.0.113.66")  # someone else, without her cookie
    with pytest.raises(LoginLimited):
        auth.login("ana", "correct horse", "10.0.0.10")  # a browser she never used: limited
    changed = ana_device[:-1] + ("1" if ana_device.endswith("0") else "0")  # (one character differs)
    for wrong in (rui_device, changed, ana_device + "x", "", "a.b.c", "x" * 500):
        with pytest.raises(LoginLimited):  # another user's, altered or malformed: no cookie at all
            auth.login("ana", "correct horse", "10.0.0.9", wrong)
    _, session = auth.login("ana", "correct horse", "10.0.0.9", ana_device)
    assert session.identity.actor == "ana" and session.device and session.device != ana_device

    # the cookie outlives a restart of the console (its key is kept in the data directory) ...
    again = Authenticator(users, clock=clock, devices=DeviceCookies.from_file(key_file))
    for _ in range(5):
        with pytest.raises(LoginRefused):
            again.login("ana", "guess", "203.0.113.66")
    assert again.login("ana", "correct horse", "10.0.0.9", session.device)[1].identity.actor == "ana"
    # ... and guessing at her browser is limited there: five failures with the cookie
    for _ in range(5):
        with pytest.raises(LoginRefused):
            again.login("ana", "guess", "10.0.0.9", session.device)
    with pytest.raises(LoginLimited):
        again.login("ana", "correct horse", "10.0.0.9", session.device)
    # a month later it has expired: the browser is limited as any other
    clock.t += 31 * 86400
    for _ in range(5):
        with pytest.raises(LoginRefused):
            again.login("ana", "guess", "203.0.113.66")
    with pytest.raises(LoginLimited):
        again.login("ana", "correct horse", "10.0.0.9", session.device)


def test_a_device_cookie_guessed_at_or_of_an_old_password_is_trusted_no_more(ana_hash, tmp_path):
    clock = Clock()
    key_file = tmp_path / "console-device.key"
    key_file.write_bytes(b"")  # a key file left empty (a crash as it was made): never a key
    devices = DeviceCookies.from_file(key_file)
    assert len(key_file.read_bytes()) == 32 and devices.key == key_file.read_bytes()
    assert DeviceCookies.from_file(key_file).key == devices.key, "a whole key is kept"
    ana = User(actor="ana", role="operator", password_argon2=ana_hash)
    auth = Authenticator([ana], clock=clock, devices=devices)
    device = auth.login("ana", "correct horse", "10.0.0.9")[1].device
    for _ in range(5):  # someone at her browser, guessing: the cookie's own limit ...
        with pytest.raises(LoginRefused):
            auth.login("ana", "guess", "10.0.0.9", device)
    clock.t += 61  # ... and once its window has passed, the cookie is still not trusted again
    assert devices.check(device, "ana", clock.t, ana_hash) is None
    fresh = auth.login("ana", "correct horse", "10.0.0.9")[1].device  # (limited per user and address)
    assert devices.check(fresh, "ana", clock.t, ana_hash)
    # a new password voids the cookies of the old one
    renewed = Authenticator(
        [User(actor="ana", role="operator", password_argon2=hash_password("battery staple"))],
        clock=clock,
        devices=devices,
    )
    for _ in range(5):
        with pytest.raises(LoginRefused):
            renewed.login("ana", "guess", "203.0.113.66")
    with pytest.raises(LoginLimited):
        renewed.login("ana", "battery staple", "10.0.0.9", fresh)
    assert devices.check("a.1.\u00e9", "ana", 0.0) is None  # not ASCII: no cookie, no error


@given(st.text(max_size=300), st.text(min_size=1, max_size=40))
def test_no_made_up_device_cookie_is_taken(value: str, username: str) -> None:
    devices = DeviceCookies(b"k" * 32)
    assert devices.check(value, username, 0.0) is None
    issued = devices.issue(username, 0.0)
    assert devices.check(issued, username, 0.0) is not None
    assert devices.check(issued, username + "x", 0.0) is None


def _attempt(auth, user: str, password: str, client: str) -> str:
    try:
        auth.login(user, password, client)
    except LoginRefused:
        return "refused"
    except LoginLimited:
        return "limited"
    return "ok"


def test_api_tokens_still_work_and_a_user_needs_some_secret(tmp_path, ana_hash):
    auth = Authenticator(
        [User(actor="eva", role="approver", token_sha256=hashlib.sha256(b"t0k").hexdigest())]
    )
    assert auth.identify("Bearer t0k").actor == "eva"
    with pytest.raises(LoginRefused):
        auth.login("eva", "t0k", "10.0.0.1"), "a token is not a password"
    bad = tmp_path / "users.yaml"
    bad.write_text("users:\n  - {actor: x, role: operator}\n")
    with pytest.raises(UsersFileError, match="token_sha256 or password_argon2"):
        load_users(bad)
    bad.write_text("users:\n  - {actor: x, role: operator, password_argon2: plain}\n")
    with pytest.raises(UsersFileError, match="not an argon2 hash"):
        load_users(bad)


def test_users_passwd_writes_an_argon2_hash_and_keeps_the_file(tmp_path):
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n  # the duty officers\n"
        f"  - {{actor: ana, role: operator, token_sha256: {hashlib.sha256(b'x').hexdigest()}}}\n"
    )

    def passwd(*args: str, password: str = "s3cret-pass") -> subprocess.CompletedProcess:
        return subprocess.run(
            [ATALAIA, "users", "passwd", *args, "--password-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert passwd("ana", "--file", str(users)).returncode == 0
    assert passwd("rui", "--file", str(users)).returncode == 1, "a new user needs --role"
    out = passwd("rui", "--file", str(users), "--role", "supervisor", password="other-pass")
    assert out.returncode == 0, out.stderr
    text = users.read_text()
    assert "# the duty officers" in text and "s3cret-pass" not in text
    loaded = {u.actor: u for u in load_users(users)}
    assert loaded["ana"].token_sha256 and loaded["ana"].password_argon2.startswith("$argon2id$")
    auth = Authenticator(list(loaded.values()))
    assert auth.login("ana", "s3cret-pass", "x")[1].identity.role == "operator"
    assert auth.login("rui", "other-pass", "x")[1].identity.role == "supervisor"
    assert passwd("x", password="short").returncode == 1, "at least 8 characters"
    printed = passwd("x", "--file", "")
    assert printed.returncode == 0 and printed.stdout.startswith("$argon2id$")


def _console_with_users(make_worker, tmp_path):
    """A live console whose users are ana (password "correct horse", operator), eva (token
    v13w, viewer) and gil (token g1l, viewer)."""
    users = tmp_path / "users.yaml"
    users.write_text(
        "users:\n"
        f'  - {{actor: ana, role: operator, password_argon2: "{hash_password("correct horse")}"}}\n'
        f"  - {{actor: eva, role: viewer, token_sha256: {hashlib.sha256(b'v13w').hexdigest()}}}\n"
        f"  - {{actor: gil, role: viewer, token_sha256: {hashlib.sha256(b'g1l').hexdigest()}}}\n"
    )
    w = make_worker("--stages", "incidents,projection", extra_env={"ATALAIA_CONSOLE_USERS": str(users)})
    return w.start(("incidents", "projection"))


@pytest.mark.broker
def test_login_logout_and_rate_limit_through_the_api(make_worker, tmp_path):
    w = _console_with_users(make_worker, tmp_path)
    url = f"{w.url}/api/login"

    r = httpx.post(url, json={"username": "ana", "password": "correct horse"}, timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and (body["actor"], body["role"]) == ("ana", "operator")
    auth = {"Authorization": f"Bearer {body['token']}"}
    who = httpx.get(f"{w.url}/api/whoami", headers=auth, timeout=5).json()
    assert who["actor"] == "ana" and who["session_expires_at"] == body["expires_at"]
    assert httpx.get(f"{w.url}/api/incidents", headers=auth, timeout=5).status_code == 200

    r = httpx.post(f"{w.url}/api/logout", headers=auth, timeout=5)
    assert r.status_code == 200 and r.json() == {"signed_out": True}
    assert httpx.get(f"{w.url}/api/incidents", headers=auth, timeout=5).status_code == 401
    assert httpx.post(f"{w.url}/api/logout", headers=auth, timeout=5).status_code == 401
    tok = {"Authorization": "Bearer v13w"}
    assert httpx.post(f"{w.url}/api/logout", headers=tok, timeout=5).json() == {"signed_out": False}

    r = httpx.post(url, content=b"username=ana", headers={"Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 415
    r = httpx.post(url, json={"username": "ana"}, timeout=5)
    assert r.status_code == 422 and r.json()["field"] == "password"

    for _ in range(5):
        r = httpx.post(url, json={"username": "ana", "password": "guess"}, timeout=10)
        assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["detail"] == "wrong username or password"
    r = httpx.post(url, json={"username": "ana", "password": "correct horse"}, timeout=10)
    assert r.status_code == 429, "limited: even the right password waits for the window"
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and r.json()["retry_after"] >= 1
    metrics = httpx.get(f"{w.url}/metrics", timeout=5).text
    assert 'atalaia_console_logins_total{result="refused"} 5.0' in metrics
    assert 'atalaia_console_logins_total{result="limited"} 1.0' in metrics
    assert 'atalaia_console_logins_total{result="ok"} 1.0' in metrics


@pytest.mark.broker
def test_a_browser_keeps_signing_in_while_someone_else_fails_as_its_user(make_worker, tmp_path):
    w = _console_with_users(make_worker, tmp_path)
    url = f"{w.url}/api/login"
    with httpx.Client(timeout=10) as browser:
        r = browser.post(url, json={"username": "ana", "password": "correct horse"})
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("atalaia_device_"), cookie
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/api/login", "Max-Age=2592000"):
            assert attribute.lower() in cookie.lower(), cookie
        for _ in range(6):  # someone else, without the cookie
            assert httpx.post(url, json={"username": "ana", "password": "guess"}).status_code in (401, 429)
        assert httpx.post(url, json={"username": "ana", "password": "correct horse"}).status_code == 429
        r = browser.post(url, json={"username": "ana", "password": "correct horse"})
        assert r.status_code == 200, r.text
        assert (
            browser.get(
                f"{w.url}/api/whoami", headers={"Authorization": f"Bearer {r.json()['token']}"}
            ).json()["actor"]
            == "ana"
        )


@pytest.mark.broker
def test_board_sign_in_with_a_password_in_a_browser(make_worker, publish, chromium, tmp_path):  # noqa: F811
    """A wrong password is refused with the message shown; the right one loads the board; signing
    out ends the session on the server too."""
    from datetime import UTC, datetime

    from tests.test_console_board import SHOTS, alarm, row

    users = tmp_path / "users.yaml"
    users.write_text(
        f'users:\n  - {{actor: ana, role: operator, password_argon2: "{hash_password("correct horse")}"}}\n'
    )
    w = make_worker(
        "--stages", "incidents,projection", extra_env={"ATALAIA_CONSOLE_USERS": str(users)}
    ).start(("incidents", "projection"))
    publish(alarm("p1", datetime.now(UTC).replace(microsecond=0), "high", parish="Paranhos"))

    page = chromium.new_context(locale="en-GB").new_page()
    page.goto(w.url + "/")
    page.wait_for_selector("#login:not([hidden])", timeout=10000)
    assert page.is_hidden("#board"), "no board before sign-in"
    page.fill("#username", "ana")
    page.fill("#password", "wrong horse")
    page.click("#login button")
    page.wait_for_function("document.getElementById('login-msg').textContent.includes('refused')")
    assert page.inner_text("#login-msg") == "Username or password refused. Try again."
    assert page.is_hidden("#board") and page.input_value("#password") == ""
    page.screenshot(path=str(SHOTS / "login-refused.png"))

    page.fill("#password", "correct horse")
    page.click("#login button")
    row(page, "Paranhos").wait_for(timeout=15000)
    assert "ana (operator)" in page.inner_text("#userline")
    assert page.is_hidden("#login")
    assert "acknowledge" in row(page, "Paranhos").inner_text().lower()
    page.screenshot(path=str(SHOTS / "login-board.png"))
    token = page.evaluate("sessionStorage.getItem('atalaia.token')")
    assert httpx.get(f"{w.url}/api/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    page.reload()  # kept for the browser session
    row(page, "Paranhos").wait_for(timeout=15000)
    page.click("#logout")
    page.wait_for_selector("#login:not([hidden])", timeout=10000)
    assert httpx.get(f"{w.url}/api/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    page.context.close()


@pytest.mark.broker
def test_the_warnings_pages_take_a_password_too(make_worker, chromium, tmp_path):  # noqa: F811
    """An approver who opens the warnings (or a warning's link) in a new tab signs in there with
    their password. Before, the warnings pages' own start-up function had the name of the
    console's password sign-in and replaced it: the form sent no password and answered "That token
    was refused. Sign in again." (only an API token signed in there)."""
    users = tmp_path / "users.yaml"
    users.write_text(
        f'users:\n  - {{actor: rui, role: approver, password_argon2: "{hash_password("correct horse")}"}}\n'
    )
    w = make_worker("--stages", "warnings", extra_env={"ATALAIA_CONSOLE_USERS": str(users)}).start(
        ("warnings",)
    )
    page = chromium.new_context(locale="en-GB").new_page()
    page.goto(w.url + "/warnings")
    page.wait_for_selector("#login:not([hidden])", timeout=10000)
    page.fill("#username", "rui")
    page.fill("#password", "correct horse")
    page.click("#login button")
    page.wait_for_function(
        "document.getElementById('userline').textContent.includes('rui (approver)')"
        " || document.getElementById('login-msg').textContent.includes('refused')",
        timeout=15000,
    )
    assert page.is_hidden("#login"), page.inner_text("#login-msg")
    assert page.evaluate("sessionStorage.getItem('atalaia.token')"), "the session token is kept for the tab"
    page.context.close()


@pytest.mark.broker
def test_sign_in_limits_and_live_streams_are_per_client_behind_the_front(make_worker, tmp_path):
    """Behind ``atalaia up``'s front every request reaches the ops process from 127.0.0.1: five
    failed sign-ins by anyone blocked sign-in for everyone, and 100 open boards took the
    console. The front names the client in X-Forwarded-For (trusted from this machine only);
    limits are per client."""
    from atalaia.console.api import STREAMS_PER_CLIENT

    w = _console_with_users(make_worker, tmp_path)
    url = f"{w.url}/api/login"
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    for i in range(6):
        r = httpx.post(url, json={"username": f"nobody{i}", "password": "x"}, headers=attacker, timeout=10)
    assert r.status_code == 429, "the attacker's address is limited"
    r = httpx.post(
        url,
        json={"username": "ana", "password": "correct horse"},
        headers={"X-Forwarded-For": "198.51.100.2"},
        timeout=10,
    )
    assert r.status_code == 200, "another client signs in"
    ana = {"Authorization": f"Bearer {r.json()['token']}"}

    # live streams: at most STREAMS_PER_CLIENT per client (here of two users, each under their
    # own cap STREAMS_PER_USER); another client still gets one
    tok, gil = {"Authorization": "Bearer v13w"}, {"Authorization": "Bearer g1l"}
    with httpx.Client(timeout=10) as client:
        held = []
        try:
            for i in range(STREAMS_PER_CLIENT):
                who = tok if i % 2 else ana
                s = client.stream("GET", f"{w.url}/api/stream", headers={**who, **attacker})
                held.append(s)
                assert s.__enter__().status_code == 200
            with client.stream("GET", f"{w.url}/api/stream", headers={**gil, **attacker}) as over:
                assert over.status_code == 429, "this client's cap (gil holds none)"
                assert over.headers["content-type"].startswith("application/problem+json")
            with client.stream(
                "GET", f"{w.url}/api/stream", headers={**gil, "X-Forwarded-For": "198.51.100.2"}
            ) as ok:
                assert ok.status_code == 200
            # and the console answers while they are open
            assert client.get(f"{w.url}/api/incidents", headers=tok).status_code == 200
        finally:
            for s in held:
                s.__exit__(None, None, None)


def test_the_client_address_is_the_peer_unless_this_machine_forwarded_the_request():
    from types import SimpleNamespace

    from atalaia.console.problem import client_address, forwarded_for

    def req(remote, xff=None):
        return SimpleNamespace(remote=remote, headers={"X-Forwarded-For": xff} if xff else {})

    assert client_address(req("203.0.113.7", "10.0.0.1")) == "203.0.113.7", "a remote client cannot claim"
    assert client_address(req("127.0.0.1", "203.0.113.7")) == "203.0.113.7"
    assert client_address(req("127.0.0.1", "10.9.9.9, 203.0.113.7, 127.0.0.1")) == "203.0.113.7"
    assert client_address(req("::1")) == "::1"
    assert forwarded_for(req("203.0.113.7", "1.1.1.1")) == "203.0.113.7", "a client's own header is dropped"
    assert forwarded_for(req("127.0.0.1", "203.0.113.7")) == "203.0.113.7, 127.0.0.1"


def test_a_reverse_proxy_elsewhere_is_believed_only_when_trusted():
    """ATALAIA_TRUSTED_PROXIES: behind a proxy in another container every client had the proxy's
    address, so one client's failed sign-ins locked everyone out; its X-Forwarded-For is now
    believed when it is named, and still not from anyone else."""
    from types import SimpleNamespace

    from atalaia.console.problem import client_address, forwarded_for, proxy_networks

    def req(remote, xff=None):
        return SimpleNamespace(remote=remote, headers={"X-Forwarded-For": xff} if xff else {})

    proxies = proxy_networks(["172.18.0.0/16", "2001:db8::7"])
    behind = req("172.18.0.5", "198.51.100.9")
    assert client_address(behind) == "172.18.0.5", "not trusted unless named"
    assert client_address(behind, proxies) == "198.51.100.9"
    assert client_address(req("2001:db8::7", "198.51.100.9"), proxies) == "198.51.100.9"
    assert client_address(req("::ffff:172.18.0.5", "198.51.100.9"), proxies) == "198.51.100.9"
    # a client cannot get past the proxy by naming a trusted hop after its own claim
    chain = req("172.18.0.5", "10.1.1.1, 198.51.100.9, 172.18.0.3")
    assert client_address(chain, proxies) == "198.51.100.9"
    assert client_address(req("172.19.0.5", "198.51.100.9"), proxies) == "172.19.0.5", "another network"
    assert client_address(req("172.18.0.5", "172.18.0.6"), proxies) == "172.18.0.6", "a client in it"
    assert forwarded_for(behind, proxies) == "198.51.100.9, 172.18.0.5"
    assert forwarded_for(req("172.19.0.5", "1.1.1.1"), proxies) == "172.19.0.5"
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300' is not an IP address or network"):
        proxy_networks(["10.0.0.300"])
    with pytest.raises(ValueError, match="would trust every client"):
        proxy_networks(["0.0.0.0/0"])
    # an IPv4-mapped entry is judged as peers are (it was never matched)
    assert (
        client_address(req("10.0.0.7", "198.51.100.9"), proxy_networks(["::ffff:10.0.0.0/104"]))
        == "198.51.100.9"
    )

    # a proxy that adds its own X-Forwarded-For line after the client's (HAProxy): both lines are
    # read, so the client's claim is not taken for the proxy's
    from multidict import CIMultiDict

    two = SimpleNamespace(
        remote="172.18.0.5",
        headers=CIMultiDict([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")]),
    )
    assert client_address(two, proxies) == "203.0.113.9"
    assert forwarded_for(two, proxies) == "6.6.6.6, 203.0.113.9, 172.18.0.5"


@given(
    remote=st.ip_addresses().map(str),
    xff=st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)), max_size=5).map(", ".join),
)
def test_an_untrusted_peer_is_its_own_address_whatever_it_claims(remote, xff):
    from types import SimpleNamespace

    from atalaia.console.problem import client_address, proxy_networks

    proxies = proxy_networks(["172.18.0.0/16"])
    request = SimpleNamespace(remote=remote, headers={"X-Forwarded-For": xff})
    got = client_address(request, proxies)
    ip = ipaddress.ip_address(remote)
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if not ip.is_loopback and ip not in ipaddress.ip_network("172.18.0.0/16"):
        assert got == remote
    else:
        assert len(got) <= 64 and (got == remote or got in [h.strip()[:64] for h in xff.split(",")])


@pytest.mark.broker
def test_sign_in_limits_are_per_client_behind_a_trusted_proxy(make_worker, tmp_path):
    """A console behind a reverse proxy on another address (ATALAIA_TRUSTED_PROXIES names it):
    one client's failed sign-ins limit that client, not everyone behind the proxy."""
    proxy = non_loopback_address()
    if proxy is None:
        pytest.skip("this machine has no non-loopback IPv4 address to play the proxy from")
    users = tmp_path / "users.yaml"
    users.write_text(
        f'users:\n  - {{actor: ana, role: operator, password_argon2: "{hash_password("correct horse")}"}}\n'
    )
    env = {
        "ATALAIA_CONSOLE_USERS": str(users),
        "ATALAIA_HTTP_HOST": "0.0.0.0",
        "ATALAIA_TRUSTED_PROXIES": f'["{proxy}"]',
    }
    w = make_worker("--stages", "incidents,projection", "--http-role", "console", extra_env=env)
    w.start(("incidents", "projection"))
    url = f"http://{proxy}:{w.port}/api/login"

    def sign_in(client: str, username: str, password: str = "guess") -> int:
        headers = {"X-Forwarded-For": client}
        return httpx.post(
            url, json={"username": username, "password": password}, headers=headers, timeout=10
        ).status_code

    assert [sign_in("198.51.100.1", "ana") for _ in range(5)] == [401] * 5
    assert sign_in("198.51.100.1", "bob") == 429, "this client is limited, whichever user it tries"
    assert sign_in("198.51.100.2", "bob") == 401, "another client behind the same proxy is not"
    assert sign_in("198.51.100.2", "ana", "correct horse") == 429, "and ana's own limit still holds"


@pytest.mark.broker
def test_a_live_stream_ends_when_its_session_does(make_worker, tmp_path):
    """The identity was checked once, when the board's stream opened: after sign-out (or the
    session's expiry) the stream went on sending every incident change. It now ends within a
    heartbeat, saying why, and the board's reconnect then asks for a sign-in."""
    import time

    w = _console_with_users(make_worker, tmp_path)
    token = httpx.post(
        f"{w.url}/api/login", json={"username": "ana", "password": "correct horse"}, timeout=10
    ).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30) as client, client.stream("GET", f"{w.url}/api/stream", headers=auth) as s:
        assert s.status_code == 200
        lines = s.iter_lines()
        assert next(lines).startswith("retry:")
        assert httpx.post(f"{w.url}/api/logout", headers=auth, timeout=5).json() == {"signed_out": True}
        t0, seen = time.monotonic(), []
        for line in lines:  # ends when the server closes the stream
            seen.append(line)
            assert time.monotonic() - t0 < 20, seen
        assert "event: signed-out" in seen, seen
        assert time.monotonic() - t0 < 12, "within a heartbeat or two"
    r = httpx.get(f"{w.url}/api/stream", headers=auth, timeout=5)
    assert r.status_code == 401


@pytest.fixture(scope="module")
def quick_hash() -> str:
    """An argon2id hash of "correct horse" that is quick to check (many sign-ins per test)."""
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse")


def _live(auth: Authenticator) -> dict[str, list[str]]:
    """The live sessions' digests per user, oldest first."""
    out: dict[str, list[str]] = {}
    for digest, s in auth.sessions.items():
        out.setdefault(s.identity.actor, []).append(digest)
    return out


def test_a_user_signing_in_again_and_again_ends_only_their_own_sessions(quick_hash):
    """One global table of 10 000 sessions, the oldest dropped when full: a viewer signing in in a
    loop signed every operator out. A user now holds SESSIONS_PER_USER sessions at most, a
    further sign-in ending their own oldest; the operator's session lives on."""
    from atalaia.console.auth import MAX_SESSIONS, SESSIONS_PER_USER

    auth = Authenticator(
        [
            User(actor="ana", role="operator", password_argon2=quick_hash),
            User(actor="eve", role="viewer", password_argon2=quick_hash),
        ]
    )
    ana, _ = auth.login("ana", "correct horse", "10.0.0.1")
    first, _ = auth.login("eve", "correct horse", "10.0.0.2")
    tokens = [auth.login("eve", "correct horse", "10.0.0.2")[0] for _ in range(MAX_SESSIONS + 1)]
    assert auth.identify(f"Bearer {ana}").actor == "ana", "the operator is still signed in"
    assert len(_live(auth)["eve"]) == SESSIONS_PER_USER
    assert auth.identify(f"Bearer {first}") is None, "eve's own oldest sessions ended"
    assert all(auth.identify(f"Bearer {t}").actor == "eve" for t in tokens[-SESSIONS_PER_USER:])


def test_with_every_place_taken_a_sign_in_ends_its_own_oldest_or_is_refused(quick_hash):
    from atalaia.console.auth import SessionsFull

    users = [User(actor=n, role="viewer", password_argon2=quick_hash) for n in ("ana", "rui", "eva")]
    auth = Authenticator(users, per_user=3, max_sessions=4)
    ana = [auth.login("ana", "correct horse", "10.0.0.1")[0] for _ in range(2)]
    rui = [auth.login("rui", "correct horse", "10.0.0.1")[0] for _ in range(2)]
    with pytest.raises(SessionsFull):
        auth.login("eva", "correct horse", "10.0.0.1")  # holds none: nobody else is signed out
    assert [auth.identify(f"Bearer {t}").actor for t in ana + rui] == ["ana", "ana", "rui", "rui"]
    newer, _ = auth.login("rui", "correct horse", "10.0.0.1")  # full: ends rui's own oldest
    assert auth.identify(f"Bearer {rui[0]}") is None and auth.identify(f"Bearer {newer}").actor == "rui"
    assert all(auth.identify(f"Bearer {t}").actor == "ana" for t in ana)
    auth.logout(f"Bearer {ana[0]}")
    assert auth.login("eva", "correct horse", "10.0.0.1")[1].identity.actor == "eva", "a place is free"


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["ana", "rui", "eva", "gil"]), st.sampled_from(["in", "out", "wait"])),
        max_size=40,
    )
)
def test_nobody_is_ever_signed_out_by_someone_elses_sign_in(quick_hash, steps):
    """Whatever the order of sign-ins, sign-outs and expiries: a sign-in ends no session of
    another user, a user holds at most ``per_user`` sessions and the console ``max_sessions``."""
    from atalaia.console.auth import SessionsFull

    clock = Clock()
    users = [User(actor=n, role="viewer", password_argon2=quick_hash) for n in ("ana", "rui", "eva", "gil")]
    auth = Authenticator(users, session_ttl=100, clock=clock, per_user=3, max_sessions=7)
    tokens: dict[str, list[str]] = {}
    for who, what in steps:
        if what == "wait":
            clock.t += 30
            continue
        if what == "out" and tokens.get(who):
            auth.logout(f"Bearer {tokens[who].pop(0)}")
            continue
        others = {d for d, v in auth.sessions.items() if v.identity.actor != who and v.expires > clock.t}
        live = sum(v.expires > clock.t for v in auth.sessions.values())
        try:
            tokens.setdefault(who, []).append(auth.login(who, "correct horse", "10.0.0.1")[0])
        except SessionsFull:
            assert live >= 7 and not _live(auth).get(who), "refused only when full and holding none"
        assert others <= set(auth.sessions), "another user's live session ended"
        after = _live(auth)
        assert all(len(d) <= 3 for d in after.values()) and sum(map(len, after.values())) <= 7
