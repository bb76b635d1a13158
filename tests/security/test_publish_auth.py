"""Publisher auth: API keys (env and a rotatable file, header or bearer), JWTs with a ``publish`` claim;
401/403 with the JSON error body."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.clients import publish
from tests.security.helpers import SECRET, bearer, make_token
from tests.servers import Gateway

EVENT = {"channel": "a.x", "type": "t", "data": {"n": 1}}
ENV_KEY = "env-key-1111111111111111"
OLD_KEY = "file-key-old-aaaaaaaaaaaaaaaa"
NEW_KEY = "file-key-new-bbbbbbbbbbbbbbbb"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def write_keys(path: Path, *keys: str) -> None:
    path.write_text("# publisher keys\n" + "\n".join(keys) + "\n")
    stamp = time.time_ns() + 1_000_000_000  # a visible mtime change even on coarse filesystems
    os.utime(path, ns=(stamp, stamp))


async def test_api_keys_from_env_and_file_and_rotation(
    gateway_factory: Callable[..., Gateway], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    write_keys(keys, OLD_KEY)
    gw = gateway_factory(env={"EVENTCAST_API_KEYS": ENV_KEY, "EVENTCAST_API_KEYS_FILE": str(keys)})

    assert_error(await publish(gw.http, EVENT), 401, "unauthenticated")
    assert_error(await publish(gw.http, EVENT, headers=bearer("wrong-key")), 401, "unauthenticated")
    assert_error(
        await publish(gw.http, EVENT, headers={"authorization": "Basic xyz"}), 401, "unauthenticated"
    )
    assert (await publish(gw.http, EVENT, headers=bearer(ENV_KEY))).status_code == 202
    assert (await publish(gw.http, EVENT, headers=bearer(OLD_KEY))).status_code == 202
    assert (await publish(gw.http, EVENT, headers={"x-api-key": OLD_KEY})).status_code == 202

    # Rotate: both keys valid during the overlap, then the old one removed, all without a restart.
    write_keys(keys, OLD_KEY, NEW_KEY)
    assert (await publish(gw.http, EVENT, headers=bearer(NEW_KEY))).status_code == 202
    assert (await publish(gw.http, EVENT, headers=bearer(OLD_KEY))).status_code == 202
    write_keys(keys, NEW_KEY)
    assert_error(await publish(gw.http, EVENT, headers=bearer(OLD_KEY)), 401, "unauthenticated")
    assert (await publish(gw.http, EVENT, headers=bearer(NEW_KEY))).status_code == 202
    assert (await publish(gw.http, EVENT, headers=bearer(ENV_KEY))).status_code == 202
    assert gw.process is not None and gw.process.poll() is None


async def test_jwt_publish_claim_limits_channels(gateway_factory: Callable[..., Gateway]) -> None:
    gw = gateway_factory(env={"EVENTCAST_JWT_SECRET": SECRET})
    publisher = bearer(make_token(publish=["a.*"]))
    assert (await publish(gw.http, EVENT, headers=publisher)).status_code == 202
    other = {"channel": "b", "type": "t", "data": 1}
    assert_error(await publish(gw.http, other, headers=publisher), 403, "forbidden")
    # A batch is all or nothing: one forbidden channel refuses the whole request.
    assert_error(await publish(gw.http, [EVENT, other], headers=publisher), 403, "forbidden")
    # A subscriber token (no publish claim) cannot publish.
    assert_error(await publish(gw.http, EVENT, headers=bearer(make_token(["*"]))), 403, "forbidden")
    assert_error(
        await publish(gw.http, EVENT, headers=bearer(make_token(publish=["*"], exp_in=-5))),
        401,
        "unauthenticated",
    )


async def test_publishing_is_open_without_keys(gateway: Gateway) -> None:
    assert (await publish(gateway.http, EVENT)).status_code == 202
