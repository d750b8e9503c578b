"""Ingest and monitoring tokens (``streams.httpauth``) and ``atalaia tokens``: header parsing
fuzzed with hypothesis, tenant binding, the token file, the demo token kept across restarts."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from atalaia.streams.ingest.auth import (
    Caller,
    IngestAuth,
    MetricsAuth,
    Refusal,
    TokenEntry,
    credentials,
    hash_token,
    new_token,
    request_tenant,
)
from tests.conftest import ATALAIA

PORTO, DEFAULT = new_token(), new_token()
AUTH = IngestAuth(
    [
        TokenEntry(source="orion-porto", tenant="porto", token_sha256=hash_token(PORTO)),
        TokenEntry(source="iot-agent", token_sha256=hash_token(DEFAULT).upper()),
    ]
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
HEADER_NAMES = st.sampled_from(
    ["Authorization", "authorization", "X-Auth-Token", "NGSILD-Tenant", "Fiware-Service", "Content-Type"]
)
header_values = st.one_of(
    st.text(max_size=80),
    st.sampled_from([PORTO, DEFAULT, "porto", "lisboa", ""]).map(lambda t: t),
    st.sampled_from(["Bearer ", "bearer ", "BEARER  ", "Basic ", "Bearer", ""]).flatmap(
        lambda p: st.sampled_from([PORTO, DEFAULT, "x", PORTO + " ", " " + PORTO, PORTO[:-1]]).map(
            lambda t: p + t
        )
    ),
)
headers_lists = st.lists(st.tuples(HEADER_NAMES, header_values), max_size=6)


def multi(pairs) -> CIMultiDict:
    return CIMultiDict(pairs)


@FUZZ
@given(headers_lists)
def test_auth_never_raises_and_only_a_known_token_for_the_right_tenant_passes(pairs):
    h = multi(pairs)
    out = AUTH.check(h)
    assert isinstance(out, Caller | Refusal)
    if isinstance(out, Refusal):
        assert out.status in (401, 403) and out.reason and out.detail
        return
    # accepted: every credential presented is the same known token, well formed
    presented = [v for k, v in pairs if k.lower() == "x-auth-token"] + [
        v.split(None, 1)[1].strip() if len(v.split(None, 1)) == 2 else ""
        for k, v in pairs
        if k.lower() == "authorization"
    ]
    assert presented and all(t.strip(" ") in (PORTO, DEFAULT) for t in presented)
    token = presented[0].strip(" ")
    assert len({t.strip(" ") for t in presented}) == 1
    # the tenant the request names (if any; a blank header names none) is the token's, ignoring
    # case as Orion does, and all tenant headers agree
    named = {
        v.strip().casefold()
        for k, v in pairs
        if k.lower() in ("ngsild-tenant", "fiware-service") and v.strip()
    }
    assert len(named) <= 1 and named <= ({"porto"} if token == PORTO else set())
    assert out == (Caller("orion-porto", "porto") if token == PORTO else Caller("iot-agent", None))


@FUZZ
@given(st.text(max_size=600), st.text(max_size=600))
def test_credentials_parsing_never_raises_on_arbitrary_text(a, b):
    tokens, err = credentials(CIMultiDict([("Authorization", a), ("X-Auth-Token", b)]))
    assert (err is None) or tokens == []
    for t in tokens:
        assert t.isascii() and 0 < len(t) <= 512


def test_bearer_and_x_auth_token_and_the_tenant_binding():
    assert AUTH.check({"Authorization": f"Bearer {PORTO}"}) == Caller("orion-porto", "porto")
    assert AUTH.check({"X-Auth-Token": PORTO, "NGSILD-Tenant": "porto"}) == Caller("orion-porto", "porto")
    assert AUTH.check({"X-Auth-Token": DEFAULT}) == Caller("iot-agent", None)
    # Orion reads Fiware-Service ignoring case; a blank tenant header names no tenant
    assert AUTH.check({"X-Auth-Token": PORTO, "Fiware-Service": "Porto"}) == Caller("orion-porto", "porto")
    # both headers, one tenant spelled two ways (Orion lowers Fiware-Service, the agent did not)
    both = {"X-Auth-Token": PORTO, "NGSILD-Tenant": "porto", "Fiware-Service": "PORTO"}
    assert AUTH.check(both) == Caller("orion-porto", "porto")
    assert request_tenant({"NGSILD-Tenant": "Porto", "Fiware-Service": " porto"}) == ("Porto", None)
    assert AUTH.check({"X-Auth-Token": PORTO, "NGSILD-Tenant": ""}) == Caller("orion-porto", "porto")
    assert AUTH.check({"X-Auth-Token": DEFAULT, "NGSILD-Tenant": " "}) == Caller("iot-agent", None)
    for h in (
        {"Authorization": f"Bearer {PORTO}", "NGSILD-Tenant": "lisboa"},
        {"X-Auth-Token": PORTO, "Fiware-Service": "lisboa"},
        {"X-Auth-Token": DEFAULT, "Fiware-Service": "porto"},
        {"X-Auth-Token": PORTO, "NGSILD-Tenant": "porto", "Fiware-Service": "lisboa"},
    ):
        assert AUTH.check(h).status == 403, h
    # a repeated tenant header is seen whole (the pipeline must not read another tenant than auth)
    twice = CIMultiDict([("X-Auth-Token", PORTO), ("NGSILD-Tenant", "porto"), ("NGSILD-Tenant", "lisboa")])
    assert AUTH.check(twice).status == 403
    for h in (
        {},
        {"Authorization": PORTO},
        {"Authorization": f"Basic {PORTO}"},
        {"Authorization": "Bearer nope"},
        {"X-Auth-Token": ""},
        {"Authorization": f"Bearer {PORTO}", "X-Auth-Token": DEFAULT},
        {"Authorization": f"Bearer {PORTO}\u00e9"},
    ):
        r = AUTH.check(h)
        assert isinstance(r, Refusal) and r.status == 401, h
    assert IngestAuth(None).check({}) == Caller("anonymous", None)  # no token file: open (as before)


def test_an_empty_or_bad_token_file_fails_closed(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    auth = IngestAuth.from_file(empty)
    assert auth.enabled and auth.check({}).status == 401
    assert auth.check({"Authorization": f"Bearer {PORTO}"}).status == 401
    bad = tmp_path / "bad.yaml"
    bad.write_text("tokens:\n  - {source: x, token_sha256: not-a-hash}\n")
    with pytest.raises(ValueError):
        IngestAuth.from_file(bad)
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"tokens:\n  - {{source: x, token: {PORTO}}}\n")  # a clear-text token is refused
    with pytest.raises(ValueError):
        IngestAuth.from_file(plain)


def test_metrics_token():
    token = new_token()
    m = MetricsAuth(hash_token(token))
    assert m.check({"Authorization": f"Bearer {token}"}) is None
    assert m.check({}).status == 401
    assert m.check({"Authorization": f"Bearer {PORTO}"}).status == 401
    assert MetricsAuth(None).check({}) is None
    with pytest.raises(ValueError):
        MetricsAuth("abc")


def test_tokens_new_appends_a_hashed_entry_that_authenticates(tmp_path):
    path = tmp_path / "tokens.yaml"
    out = []
    for source, tenant in (("orion", "porto"), ("agent", None)):
        args = [ATALAIA, "tokens", "new", "--source", source, "--file", str(path)]
        r = subprocess.run(args + (["--tenant", tenant] if tenant else []), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out.append(r.stdout.strip())
    text = path.read_text()
    assert out[0] not in text and out[1] not in text, "only hashes are stored"
    auth = IngestAuth.from_file(path)
    assert auth.check({"X-Auth-Token": out[0], "NGSILD-Tenant": "porto"}) == Caller("orion", "porto")
    assert auth.check({"Authorization": f"Bearer {out[1]}"}) == Caller("agent", None)
    r = subprocess.run([ATALAIA, "tokens", "hash"], input=out[0] + "\n", capture_output=True, text=True)
    assert r.stdout.strip() == hash_token(out[0])


def test_the_demo_token_survives_a_restart(tmp_path):
    from atalaia.streams.tokens import ensure_demo_token

    path, token = ensure_demo_token(tmp_path)
    again_path, again = ensure_demo_token(tmp_path)
    assert (again_path, again) == (path, token)
    assert (tmp_path / "ingest-token").stat().st_mode & 0o077 == 0
    assert IngestAuth.from_file(path).check({"Authorization": f"Bearer {token}"}) == Caller("demo", None)
    (tmp_path / "ingest-tokens.yaml").unlink()  # a lost hash file: a new token, never an open ingest
    _, fresh = ensure_demo_token(tmp_path)
    assert fresh != token


def test_the_tenant_of_a_bound_token_is_the_tenant_of_its_observations() -> None:
    """Fiware-Service "Porto" with porto's token is accepted (Orion ignores case): the
    observations are porto's, spelled as the token's tenant, not a second tenant "Porto"."""
    import orjson

    from atalaia.streams.ingest import parse_payload

    body = orjson.dumps(
        {"id": "urn:w", "type": "WaterObserved", "height": 3.1, "dateObserved": "2026-12-06T10:00:00Z"}
    )
    r = parse_payload(body, headers={"fiware-service": "Porto", "auth-tenant": "porto"})
    assert [o.tenant for o in r.observations] == ["porto"]
    r = parse_payload(body, headers={"fiware-service": "Porto"})  # no token bound: the header as sent
    assert [o.tenant for o in r.observations] == ["Porto"]
