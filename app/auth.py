"""Who is asking: JWT verification for subscribers and publishers, and publisher API keys.

Sans-I/O apart from reading key files: callers pass header and query values in and get a ``Principal`` or an
``AuthError`` out. Secrets never leave this module: a key is identified by a short hash (``key_id``), and
``redact`` scrubs credentials from any text about to be logged.

Errors raised to callers:
    AuthError(status, code, message)   401 (missing, invalid, expired) or 403 (not allowed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from app.settings import Settings

log = logging.getLogger("eventcast.auth")

#: Algorithms accepted for each kind of key; never mixed, so a public key can't be abused as an HMAC secret.
HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")


class AuthError(Exception):
    """A credential is missing or invalid (401) or does not allow what was asked (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message[:120]  # also used as a WebSocket close reason (<= 123 bytes)


def unauthenticated(message: str) -> AuthError:
    return AuthError(401, "unauthenticated", message)


def forbidden(message: str) -> AuthError:
    return AuthError(403, "forbidden", message)


def globs_match(globs: Iterable[str], name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def key_id(secret: str) -> str:
    """A stable, non-reversible name for a credential: safe for logs and rate-limit buckets."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: what it may read and publish (channel globs), and until when."""

    name: str  # "key:<hash>" or "jwt:<hash of token>": never the secret itself
    read: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    expires_at: float | None = None  # unix seconds

    def can_read(self, channel: str) -> bool:
        return globs_match(self.read, channel)

    def can_publish(self, channel: str) -> bool:
        return globs_match(self.publish, channel)


def _claim_globs(claims: Mapping[str, Any], name: str) -> tuple[str, ...]:
    """``channels`` / ``publish`` claims: a list of globs, or one string of comma-separated globs."""
    value = claims.get(name)
    if value is None or value is False:
        return ()
    if value is True:
        return ("*",)
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise unauthenticated(f"invalid token: the {name!r} claim must be a list of channel globs")
    return tuple(g.strip() for g in value if g.strip())


class WatchedFile:
    """A small file re-read whenever it changes (mtime, size or inode), so secrets rotate without restart."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._signature: tuple[int, int, int] | None = None
        self._text = ""

    def text(self) -> str:
        try:
            stat = os.stat(self.path)
        except OSError:
            if self._signature is not None:
                log.warning("secret file vanished; keeping the last keys", extra={"path": str(self.path)})
            return self._text
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature != self._signature:
            try:
                self._text = self.path.read_text()
            except OSError:
                return self._text
            self._signature = signature
        return self._text


class ApiKeys:
    """Publisher API keys from ``EVENTCAST_API_KEYS`` and/or a file (one a line, ``#`` comments)."""

    def __init__(self, inline: str | None, path: str | None) -> None:
        self._inline = [k.strip() for k in (inline or "").split(",") if k.strip()]
        self._file = WatchedFile(path) if path else None
        self._parsed_from = ""
        self._from_file: list[str] = []

    @property
    def configured(self) -> bool:
        return bool(self._inline) or self._file is not None

    def keys(self) -> list[str]:
        if self._file is not None:
            text = self._file.text()
            if text is not self._parsed_from:
                self._parsed_from = text
                lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
                self._from_file = [line for line in lines if line]
        return self._inline + self._from_file

    def check(self, given: str) -> str | None:
        """The matching key's id, or None. Compares against every key in constant time per key."""
        found: str | None = None
        candidate = hashlib.sha256(given.encode()).digest()  # equal lengths: no length leak either
        for key in self.keys():
            if hmac.compare_digest(candidate, hashlib.sha256(key.encode()).digest()) and found is None:
                found = key
        return key_id(found) if found is not None else None


class JwtVerifier:
    """Verifies JWTs with an HS256 secret, a PEM public key, or a JWKS file (keys chosen by ``kid``)."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._pem = WatchedFile(settings.jwt_public_key_file) if settings.jwt_public_key_file else None
        self._jwks = WatchedFile(settings.jwt_jwks_file) if settings.jwt_jwks_file else None
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.leeway = settings.jwt_leeway_seconds
        self.require = ["exp"] if settings.jwt_require_exp else []
        self._jwks_cache: tuple[str, dict[str, Any]] | None = None

    @property
    def configured(self) -> bool:
        return bool(self._secret) or self._pem is not None or self._jwks is not None

    def _keys(self, token: str) -> list[tuple[Any, tuple[str, ...]]]:
        """Candidate (key, algorithms) pairs for this token."""
        candidates: list[tuple[Any, tuple[str, ...]]] = []
        if self._secret:
            candidates.append((self._secret, HMAC_ALGORITHMS))
        if self._pem is not None:
            candidates.append((self._pem.text(), PUBLIC_KEY_ALGORITHMS))
        if self._jwks is not None:
            candidates.extend(self._jwks_keys(token))
        return candidates

    def _jwks_keys(self, token: str) -> list[tuple[Any, tuple[str, ...]]]:
        assert self._jwks is not None
        text = self._jwks.text()
        if self._jwks_cache is None or self._jwks_cache[0] is not text:
            keys: dict[str, Any] = {}
            try:
                for jwk in json.loads(text).get("keys", []):
                    key = jwt.PyJWK(jwk)
                    keys[str(jwk.get("kid", len(keys)))] = key
            except Exception as exc:
                log.error("cannot read the JWKS file: %s", type(exc).__name__)
            self._jwks_cache = (text, keys)
        keys = self._jwks_cache[1]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return []
        chosen = [keys[kid]] if kid in keys else list(keys.values()) if kid is None else []
        return [(k.key, PUBLIC_KEY_ALGORITHMS) for k in chosen]

    def verify(self, token: str) -> Principal:
        """Decode and check a token, or raise AuthError(401)."""
        last: Exception | None = None
        for key, algorithms in self._keys(token):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=list(algorithms),
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={"require": self.require, "verify_aud": self.audience is not None},
                )
            except jwt.ExpiredSignatureError:
                raise unauthenticated("token expired") from None
            except jwt.MissingRequiredClaimError as exc:
                raise unauthenticated(f"invalid token: missing {exc.claim!r}") from None
            except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.ImmatureSignatureError) as exc:
                raise unauthenticated(f"invalid token: {exc}") from None
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                last = exc
                continue
            for claim in _NUMERIC_DATES:  # PyJWT reads "1700000000" as a date; RFC 7519 says a number
                value = claims.get(claim)
                if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
                    raise unauthenticated(f"invalid token: {claim!r} must be a number (a NumericDate)")
            exp = claims.get("exp")
            return Principal(
                name=f"jwt:{key_id(token)}",
                read=_claim_globs(claims, "channels"),
                publish=_claim_globs(claims, "publish"),
                expires_at=float(exp) if isinstance(exp, int | float) else None,
            )
        log.debug("token refused: %s", type(last).__name__ if last else "no key")
        raise unauthenticated("invalid token")


#: Claims that RFC 7519 4.1 defines as NumericDate: JSON numbers of seconds since the epoch.
_NUMERIC_DATES = ("exp", "nbf", "iat")


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and len(token) > 20


def bearer(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <x>`` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class Authenticator:
    """Authentication for both sides. Off (everything open) until a JWT key or API key is configured."""

    def __init__(self, settings: Settings) -> None:
        self.jwt = JwtVerifier(settings)
        self.api_keys = ApiKeys(settings.api_keys, settings.api_keys_file)
        self._secrets = [s for s in (settings.jwt_secret, settings.admin_token) if s]
        # Algorithms must be available (PyJWT[crypto]) before we promise RS256/ES256.
        missing = set(PUBLIC_KEY_ALGORITHMS) - set(get_default_algorithms())
        if missing and (settings.jwt_public_key_file or settings.jwt_jwks_file):
            raise RuntimeError(f"PyJWT lacks {sorted(missing)}: install PyJWT[crypto]")

    @property
    def subscribers_need_auth(self) -> bool:
        return self.jwt.configured

    @property
    def publishers_need_auth(self) -> bool:
        return self.jwt.configured or self.api_keys.configured

    def subscriber(self, authorization: str | None, token_param: str | None) -> Principal | None:
        """The subscriber's principal (None when auth is off). Raises AuthError(401)."""
        if not self.subscribers_need_auth:
            return None
        token = bearer(authorization) or token_param
        if not token:
            raise unauthenticated("missing token: send Authorization: Bearer <jwt> or ?token=<jwt>")
        return self.jwt.verify(token)

    def publisher(self, authorization: str | None, api_key_header: str | None) -> Principal | None:
        """The publisher's principal (None when auth is off). Raises AuthError(401)."""
        if not self.publishers_need_auth:
            return None
        given = api_key_header or bearer(authorization)
        if not given:
            raise unauthenticated("missing credentials: send Authorization: Bearer <api key or jwt>")
        if self.api_keys.configured:
            found = self.api_keys.check(given)
            if found is not None:
                return Principal(name=f"key:{found}", publish=("*",))
        if self.jwt.configured and looks_like_jwt(given):
            return self.jwt.verify(given)
        raise unauthenticated("invalid credentials")

    def known_secrets(self) -> list[str]:
        """Every configured secret value, for log redaction."""
        return self._secrets + self.api_keys.keys()


_CREDENTIAL_PATTERNS = (
    re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey)=)[^&\s\"']+"),
    re.compile(
        r"(?i)(\b(?:authorization|x-api-key|cookie|proxy-authorization)\b['\"]?\s*[:=,]\s*['\"]?)[^\r\n'\"]+"
    ),
    re.compile(r"(?i)(\bbearer\s+)[^\s'\"]+"),
    re.compile(r"(eyJ[A-Za-z0-9_-]{4,}\.)[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # anything shaped like a JWT
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials (token params, auth headers, JWTs, the given secret values) masked."""
    for pattern in _CREDENTIAL_PATTERNS:
        text = pattern.sub(r"\1[redacted]", text)
    for secret in secrets:
        if len(secret) >= 4 and secret in text:
            text = text.replace(secret, "[redacted]")
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with ``redact`` (uvicorn logs request paths, query strings included)."""

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__("eventcast.redact")
        self._authenticator = authenticator

    def filter(self, record: logging.LogRecord) -> bool:
        # Redact the format string and each argument in place, so structured formatters that read the
        # arguments (uvicorn's access log: client, method, path, ...) keep working.
        secrets = self._authenticator.known_secrets()
        if isinstance(record.msg, str):
            record.msg = redact(record.msg, secrets)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v, secrets) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


#: Loggers whose records may carry request lines or headers.
REDACTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets", "eventcast", "")


def install_log_redaction(authenticator: Authenticator) -> None:
    """Attach the redacting filter to every logger and root handler that may see a credential (idempotent)."""
    flt = RedactingFilter(authenticator)
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    targets += logging.getLogger().handlers
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        targets += logging.getLogger(name).handlers
    for target in targets:
        target.filters = [f for f in target.filters if not isinstance(f, RedactingFilter)]
        target.addFilter(flt)
