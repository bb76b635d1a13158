"""/client.js, /console and /console/stats over HTTP on real gateways; EVENTCAST_CONSOLE=false; and the built
client inside the wheel (what `pip install` and the image get). The page itself runs in Chromium in
clients/js/test/console.e2e.test.mjs (`make js-test`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx

from app.settings import Settings
from tests.clients import Subscriber, batch, publish
from tests.servers import ROOT, Gateway, RedisServer, wait_for

STATIC = ROOT / "app" / "static"


async def test_client_js_is_the_committed_build_as_a_javascript_module_any_origin_may_load(
    gateway: Gateway,
) -> None:
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        response = await http.get("/client.js", headers={"origin": "https://app.example.com"})
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["access-control-allow-origin"] == "*"  # module scripts load in CORS mode
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == (STATIC / "client.js").read_bytes()
        assert b"export {" in response.content and b"EventcastClient" in response.content
        again = await http.get("/client.js", headers={"if-none-match": response.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


async def test_console_page_assets_and_live_counts(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        page = await http.get("/console?channels=a,b")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert '<script type="module" src="/console/console.js">' in page.text
        for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
            asset = await http.get(f"/console/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
            assert asset.content == (STATIC / name).read_bytes()
        script = (await http.get("/console/console.js")).text
        assert 'from "/client.js"' in script  # the page runs on the client the gateway serves
        missing = await http.get("/console/secrets.txt")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

        sub = await Subscriber.open(f"{gateway.ws}/ws/events?channels=counted")
        await publish(gateway.http, batch("counted", 3))
        await sub.collect(3)
        stats = (await http.get("/console/stats")).json()
        await sub.close()
    assert stats == {
        "replica": f"gw-{gateway.port}",
        "connections": 1,
        "published": 3,
        "delivered": 3,
        "broker": "up",
        "draining": False,
        "publish_auth": False,
        "subscribe_auth": False,
    }


async def test_console_turned_off_answers_404_and_still_serves_the_client(
    gateway_factory: Callable[..., Gateway],
) -> None:
    gateway = gateway_factory(env={"EVENTCAST_CONSOLE": "false"})
    async with httpx.AsyncClient(base_url=gateway.http) as http:
        for path in ("/console", "/console?channels=a", "/console/stats", "/console/console.js"):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert "EVENTCAST_CONSOLE=false" in response.json()["error"]["message"]
        assert (await http.get("/client.js")).status_code == 200


async def test_counts_cover_every_worker_of_the_pod(
    redis_server: RedisServer, gateway_factory: Callable[..., Gateway]
) -> None:
    gateway = gateway_factory(broker=redis_server.url, workers=2)
    subs = [await Subscriber.open(f"{gateway.ws}/ws/events?channels=pod") for _ in range(4)]
    await publish(gateway.http, batch("pod", 2))
    for sub in subs:
        await sub.collect(2)

    def counted() -> bool:
        stats = httpx.get(f"{gateway.http}/console/stats", timeout=5).json()
        return (stats["connections"], stats["published"], stats["delivered"]) == (4, 2, 8)

    wait_for(counted, 10, "pod-wide counts from whichever worker answers")  # workers republish every second
    for sub in subs:
        await sub.close()


def test_the_console_setting_is_documented_and_on_by_default() -> None:
    field = Settings.model_fields["console"]
    assert field.default is True and field.description


def test_the_wheel_carries_the_built_client_and_the_console(tmp_path: Path) -> None:
    """`pip install` and the image (Dockerfile: `pip install .`) build this wheel: /client.js needs no Node."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "app", source / "app", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("eventcast-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        for name in ("client.js", "console.html", "console.js", "console.css"):
            assert archive.read(f"app/static/{name}") == (STATIC / name).read_bytes(), name
