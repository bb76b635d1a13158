"""Subscriber auth on WebSocket: 4401 for missing, invalid or expired tokens (also mid-connection), 4403 for
channels outside the token's globs; HS256, RS256 (PEM file) and ES256 (JWKS file)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from app.causes import CloseCode
from tests.clients import Subscriber, close_code, publish
from tests.security.helpers import SECRET, bearer, make_token
from tests.servers import Gateway


def hs256_signed_with(key: bytes, claims: dict[str, object]) -> str:
    """An HS256 token signed by hand (PyJWT refuses PEM keys as HMAC secrets, as it should)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = json.dumps({"alg": "HS256", "typ": "JWT"}).encode()
    signing_input = b64(header) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def pub() -> dict[str, str]:
    return bearer(make_token(publish=["*"]))


@pytest.fixture
def secured(gateway_factory: Callable[..., Gateway]) -> Gateway:
    return gateway_factory(env={"EVENTCAST_JWT_SECRET": SECRET})


async def test_missing_token_closes_4401(secured: Gateway) -> None:
    code, reason = await close_code(f"{secured.ws}/ws/events?channels=a.b")
    assert code == CloseCode.UNAUTHENTICATED and reason.startswith("missing token")


@pytest.mark.parametrize(
    "token",
    ["not-a-jwt", make_token(["*"], key="some-other-secret-of-sufficient-length"), make_token(["*"]) + "x"],
    ids=["garbage", "wrong-secret", "bad-signature"],
)
async def test_invalid_token_closes_4401(secured: Gateway, token: str) -> None:
    code, reason = await close_code(f"{secured.ws}/ws/events?channels=a.b&token={token}")
    assert (code, reason) == (CloseCode.UNAUTHENTICATED, "invalid token")


async def test_expired_token_closes_4401(secured: Gateway) -> None:
    token = make_token(["*"], exp_in=-60)
    code, reason = await close_code(f"{secured.ws}/ws/events", additional_headers=bearer(token))
    assert (code, reason) == (CloseCode.UNAUTHENTICATED, "token expired")


async def test_token_without_exp_is_refused(secured: Gateway) -> None:
    code, reason = await close_code(f"{secured.ws}/ws/events?token={make_token(['*'], exp_in=None)}")
    assert code == CloseCode.UNAUTHENTICATED and "exp" in reason


async def test_channel_globs_allow_a_star_and_forbid_b(secured: Gateway) -> None:
    token = make_token(["a.*"])
    sub = await Subscriber.open(f"{secured.ws}/ws/events?channels=a.b&token={token}")
    in_header = await Subscriber.open(
        f"{secured.ws}/ws/events?channels=a.c", additional_headers=bearer(token)
    )
    assert (
        await publish(secured.http, {"channel": "a.b", "type": "t", "data": 1}, headers=pub())
    ).status_code == 202
    assert (
        await publish(secured.http, {"channel": "a.c", "type": "t", "data": 2}, headers=pub())
    ).status_code == 202
    assert [e["data"] for e in await sub.collect(1)] == [1]
    assert [e["data"] for e in await in_header.collect(1)] == [2]
    for channels in ("b", "a.b,b", "a"):
        code, reason = await close_code(f"{secured.ws}/ws/events?channels={channels}&token={token}")
        assert code == CloseCode.FORBIDDEN, channels
        assert reason.startswith("forbidden: this token may not read")
    await sub.close()
    await in_header.close()


async def test_token_expiring_mid_connection_closes_4401(secured: Gateway) -> None:
    token = make_token(["live"], exp_in=2)
    sub = await Subscriber.open(f"{secured.ws}/ws/events?channels=live&token={token}")
    assert (
        await publish(secured.http, {"channel": "live", "type": "t", "data": 1}, headers=pub())
    ).status_code == 202
    started = time.monotonic()
    code, reason = await sub.closed(timeout=10)
    assert (code, reason) == (CloseCode.UNAUTHENTICATED, "token expired")
    assert time.monotonic() - started < 4
    assert [e["data"] for e in sub.events] == [1]  # what was queued before expiry was delivered


async def test_rs256_public_key_file(gateway_factory: Callable[..., Gateway], tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "jwt.pub.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    gw = gateway_factory(env={"EVENTCAST_JWT_PUBLIC_KEY_FILE": str(pem)})
    good = make_token(["x"], key=private, algorithm="RS256")
    sub = await Subscriber.open(f"{gw.ws}/ws/events?channels=x&token={good}")
    await sub.close()
    # An HS256 token signed with the public key text must not pass (algorithm confusion).
    forged = hs256_signed_with(pem.read_bytes(), {"channels": ["x"], "exp": int(time.time()) + 60})
    code, _ = await close_code(f"{gw.ws}/ws/events?channels=x&token={forged}")
    assert code == CloseCode.UNAUTHENTICATED


async def test_es256_jwks_file_picks_key_by_kid(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("k1", "k2")}
    jwks = {"keys": []}
    for kid, key in keys.items():
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, alg="ES256", use="sig")
        jwks["keys"].append(jwk)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    gw = gateway_factory(env={"EVENTCAST_JWT_JWKS_FILE": str(path)})
    for kid, key in keys.items():
        token = make_token(["y"], key=key, algorithm="ES256", headers={"kid": kid})
        sub = await Subscriber.open(f"{gw.ws}/ws/events?channels=y&token={token}")
        await sub.close()
    wrong = make_token(["y"], key=keys["k1"], algorithm="ES256", headers={"kid": "k2"})
    code, reason = await close_code(f"{gw.ws}/ws/events?channels=y&token={wrong}")
    assert (code, reason) == (CloseCode.UNAUTHENTICATED, "invalid token")


async def test_auth_is_off_without_a_key(gateway: Gateway) -> None:
    sub = await Subscriber.open(f"{gateway.ws}/ws/events?channels=anything")
    await asyncio.wait_for(sub.close(), 5)
