"""Sans-I/O pieces of the security layer: token buckets, the Origin list, key files, redaction, SSE frames."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from app.auth import ApiKeys, Authenticator, RedactingFilter, redact
from app.limits import OriginPolicy, RateLimiter, retry_after_header
from app.settings import Settings
from tests.security.helpers import SECRET, make_token


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_and_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 4, clock=clock)
    assert [limiter.acquire("k") for _ in range(4)] == [0.0] * 4
    assert limiter.acquire("k") == 0.5
    assert limiter.acquire("other") == 0.0
    clock.now += 0.5
    assert limiter.acquire("k") == 0.0
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"
    assert RateLimiter(0).acquire("k") == 0.0  # off


def test_token_bucket_memory_is_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 1, max_keys=10, clock=clock)
    for n in range(100):
        limiter.acquire(f"k{n}")
        clock.now += 0.01
    assert len(limiter._buckets) <= 10


def test_origin_policy() -> None:
    policy = OriginPolicy("https://app.example.com, https://*.trusted.dev/")
    assert policy.allows(None) and policy.allows("https://APP.example.com")
    assert policy.allows("https://a.trusted.dev") and not policy.allows("https://trusted.dev.evil.io")
    assert not policy.allows("null")
    assert OriginPolicy("").allows("https://anything")


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.io/.trusted.dev",  # a path: no browser sends one, and '*' must not cross '/'
        "https://evil.io/x.trusted.dev",
        "https://a.trusted.dev/",
        "https://a.trusted.dev/path",
        "javascript:alert(1)//a.trusted.dev",
        "",
    ],
)
def test_origin_globs_do_not_cross_slashes_and_origins_must_be_well_formed(origin: str) -> None:
    assert not OriginPolicy("https://*.trusted.dev").allows(origin)
    assert not OriginPolicy("*").allows(origin)


def test_origin_star_alone_matches_every_well_formed_origin_and_null_when_listed() -> None:
    assert OriginPolicy("*").allows("https://x.example:8443")
    assert OriginPolicy("*").allows("http://[::1]:8000")
    assert not OriginPolicy("*").allows("null")
    assert OriginPolicy("null").allows("null")


def test_api_keys_file_reloads_on_change(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# comment\nkey-a\n\nkey-b  # trailing comment\n")
    keys = ApiKeys("inline-key", str(path))
    assert keys.check("key-a") and keys.check("key-b") and keys.check("inline-key")
    assert keys.check("key-c") is None and keys.check("") is None
    path.write_text("key-c\n")
    stamp = time.time_ns() + 10**9
    os.utime(path, ns=(stamp, stamp))
    assert keys.check("key-a") is None and keys.check("key-c")
    assert keys.check("key-c") != "key-c"  # the id is a hash, never the key


def test_redact_masks_credentials() -> None:
    token = make_token(["a"])
    line = f"GET /ws/events?channels=a&token={token}&x=1 HTTP/1.1 authorization: Bearer {token}"
    cleaned = redact(line, ["s3cret-value"])
    assert token not in cleaned and "channels=a" in cleaned and "&x=1" in cleaned
    assert redact("password is s3cret-value", ["s3cret-value"]) == "password is [redacted]"
    assert "abc" not in redact("x-api-key: abc")


def test_redacting_filter_keeps_record_arguments() -> None:
    auth = Authenticator(Settings(jwt_secret=SECRET, api_keys="key-123456"))
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", "/sse?token=abc"),
        None,
    )
    assert RedactingFilter(auth).filter(record)
    assert record.args == ("1.2.3.4", "GET", "/sse?token=[redacted]")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"key-123456 and {SECRET}", None, None)
    RedactingFilter(auth).filter(record)
    assert record.getMessage() == "[redacted] and [redacted]"
