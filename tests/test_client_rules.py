"""app.client's rules without a network: close codes, backoff (with an injected random), URLs, tokens; and that
the browser client (app/static/client.js, run by node) follows exactly the same table."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest

from app import client
from app.causes import CloseCode
from app.client import Action, Backoff, Target, close_action, token_expiry
from tests.security.helpers import make_token
from tests.servers import ROOT


def fixed(value: float) -> Callable[[], float]:
    """A ``random`` that always returns ``value``."""
    return lambda: value


LOW = fixed(0.0)  # no jitter taken off: the ceiling
HIGH = fixed(0.999999)  # the most jitter taken off


def test_retry_codes_and_never_retried_codes() -> None:
    for code in (1001, 1005, 1006, 1011, 1012, 1013, 4008):
        assert close_action(code, "") is Action.RETRY, code
    for code in (1000, 1008, 1009, 4400, 4401, 4403, 3000, 4999):
        assert close_action(code, "x") is Action.STOP, code
    assert close_action(CloseCode.UNAUTHENTICATED, "token expired") is Action.REFRESH_TOKEN
    assert close_action(CloseCode.UNAUTHENTICATED, "invalid token: bad signature") is Action.STOP
    assert close_action(CloseCode.FORBIDDEN, "token expired") is Action.STOP


def test_exponential_backoff_capped_with_equal_jitter() -> None:
    backoff = Backoff()
    assert [backoff.delay(1006, n, LOW) for n in (0, 1, 2, 3, 4, 5, 6, 60)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]
    for attempt in range(8):
        ceiling = backoff.delay(1011, attempt, LOW)
        assert ceiling / 2 <= backoff.delay(1011, attempt, HIGH) < ceiling
        assert backoff.delay(1011, attempt, fixed(0.5)) == pytest.approx(ceiling * 0.75)
    assert Backoff(jitter=0).delay(4008, 2, HIGH) == 2.0
    assert Backoff(jitter=5).delay(4008, 2, fixed(0.5)) == 1.0  # jitter is clamped to [0, 1]


def test_overload_waits_longer_and_drain_reconnects_soon() -> None:
    backoff = Backoff()
    assert [backoff.delay(1013, n, LOW) for n in (0, 1, 2, 9)] == [5.0, 10.0, 20.0, 30.0]
    assert backoff.delay(1013, 0, HIGH) > backoff.delay(1006, 0, LOW)
    assert backoff.delay(1012, 0, LOW) == 0.0
    assert backoff.delay(1012, 0, fixed(0.5)) == 0.25
    assert backoff.delay(1012, 1, LOW) == 1.0  # a failed reconnect after a drain backs off as usual


def test_target_urls() -> None:
    target = Target.parse("http://gw:8000")
    assert target.url(["a", "b"], [], {}, None, None) == "ws://gw:8000/ws/events?channels=a%2Cb"
    filtered = Target.parse("https://gw/prefix/").url(["a"], ["node.*"], {"repo": "x", "n": 3}, "ep.1-0", "t")
    assert filtered == (
        "wss://gw/prefix/ws/events/filtered?channels=a&types=node.%2A&where=repo%3Dx&where=n%3D3&since=ep.1-0"
    )  # the token goes in a header unless the URL carried it in its query
    full = Target.parse("ws://gw/ws/events?channels=x&token=q&since=old&foo=1")
    assert full.url(["x"], [], {}, "new", "q2") == "ws://gw/ws/events?foo=1&channels=x&since=new&token=q2"
    for bad in ("ftp://gw", "gw:8000", "ws://"):
        with pytest.raises(ValueError, match="not a gateway URL"):
            Target.parse(bad)


def test_the_url_query_seeds_the_subscription() -> None:
    sub = client.Client("ws://gw/ws/events/filtered?channels=a,b&types=x.*&where=n=3&where=r=s&since=ep.2-0")
    assert (sub.channels, sub.types, sub.where, sub.last_id) == (
        ["a", "b"],
        ["x.*"],
        {"n": 3, "r": "s"},
        "ep.2-0",
    )
    assert client.Client("ws://gw").channels == ["default"]
    with pytest.raises(ValueError):
        client.Client([])


def test_token_expiry() -> None:
    exp = int(time.time()) + 60
    assert token_expiry(make_token(["a"], exp_in=60)) in (exp, exp + 1)
    assert token_expiry(make_token(["a"], exp_in=None)) is None
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.!!!.c") is None


def test_the_browser_client_follows_the_same_rules() -> None:
    """app/static/client.js (what /client.js serves) against app.client and app.causes.CloseCode."""
    node = shutil.which("node")
    assert node, "node is missing: run `make test` (it installs nodejs)"
    codes = [*range(1000, 1016), 3000, 4000, 4008, 4400, 4401, 4403, 4999]
    script = f"""
        import * as c from {json.dumps(str(ROOT / "app" / "static" / "client.js"))};
        const rules = {{}};
        for (const code of {codes}) rules[code] = [c.closeAction(code, ""), c.closeAction(code, "token expired")];
        const delays = [];
        for (const code of [1006, 1012, 1013]) for (const n of [0, 1, 2, 5, 9])
          for (const r of [0, 0.5]) delays.push(c.retryDelay(code, n, c.DEFAULT_BACKOFF, () => r));
        console.log(JSON.stringify({{codes: c.CloseCode, rules, delays, backoff: c.DEFAULT_BACKOFF}}));
    """
    result = subprocess.run(
        [node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    js = json.loads(result.stdout)
    assert js["codes"] == {code.name: code.value for code in CloseCode}
    for code in codes:
        expected = [close_action(code, "").value, close_action(code, "token expired").value]
        assert js["rules"][str(code)] == expected, code
    backoff = Backoff()
    assert js["backoff"] == {
        "initialMs": backoff.initial * 1000,
        "maxMs": backoff.maximum * 1000,
        "overloadMs": backoff.overload * 1000,
        "jitter": backoff.jitter,
    }
    python = [
        int(backoff.delay(code, n, fixed(r)) * 1000)
        for code in (1006, 1012, 1013)
        for n in (0, 1, 2, 5, 9)
        for r in (0, 0.5)
    ]
    assert js["delays"] == python
