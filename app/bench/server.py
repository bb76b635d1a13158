"""The servers under test: spawn a local gateway or the naive baseline, or point at a remote one; probe their
readiness, memory and CPU.

Memory comes from the process tree (psutil, summing uvicorn's supervisor and workers) when the bench spawned
the server, and from `process_resident_memory_bytes` in `/metrics` otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REDIS_READY_TIMEOUT_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_base(ws_url: str) -> str:
    """http(s)://host:port of a ws(s):// URL."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def with_channel(ws_url: str, channel: str) -> str:
    """The subscribe URL for one channel (the path defaults to /ws/events)."""
    parts = urlsplit(ws_url)
    path = parts.path if parts.path not in ("", "/") else "/ws/events"
    return urlunsplit((parts.scheme, parts.netloc, path, f"channels={channel}", ""))


def parse_metric(text: str, name: str) -> float | None:
    """Sum of every sample of `name` in a Prometheus text exposition (workers report one sample each)."""
    total: float | None = None
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest and rest[0] not in " {":
            continue
        with contextlib.suppress(ValueError, IndexError):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


EVENT_TYPE = "bench.tick"
NCHAN_CONF = Path(__file__).with_name("peers") / "nchan.conf"
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
SOCKETIO_DIR = Path(__file__).with_name("peers") / "socketio"
NPM_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Dialect:
    """How the bench talks to one kind of server: where subscribers connect, what a publish body is, which
    answer accepts it, and which frames come before the events (the events stay the same bench data)."""

    name: str
    welcome: int  # frames after the upgrade before events: a welcome (1), none (0), open + connect (2)
    batches: bool  # one POST may carry a list of events
    accepted: tuple[int, ...]  # HTTP statuses that mean "published"
    stamps: bool = True  # the server stamps each event with its own "ts" (else the publisher's clock is used)
    greeting: bytes = b""  # a text frame each subscriber sends once upgraded

    def subscribe_url(self, ws_url: str, channel: str) -> str:
        if self.name == "nchan":
            return ws_url.rstrip("/") + "/" + channel
        if self.name == "socketio":  # one namespace, every client gets every event
            return ws_url.rstrip("/") + "/socket.io/?EIO=4&transport=websocket"
        return with_channel(ws_url, channel)

    def body(
        self, channel: str, phase_id: int, seqs: Sequence[int], pad: str, sent_ms: float | None = None
    ) -> bytes:
        """One event (one seq) or a batch. `data` keeps "bench", "seq" (and the publisher's "ts") first: the
        client reads them with one regex. nchan delivers the body as is, so its body is the data alone."""

        def data(seq: int) -> dict[str, object]:
            item: dict[str, object] = {"bench": phase_id, "seq": seq}
            if sent_ms is not None:
                item["ts"] = round(sent_ms, 3)
            item["pad"] = pad
            return item

        if not self.batches:
            if len(seqs) != 1:
                raise ValueError(f"{self.name} takes one message per publish")
            return json.dumps(data(seqs[0]), separators=(",", ":")).encode()
        events = [{"channel": channel, "type": EVENT_TYPE, "data": data(seq)} for seq in seqs]
        return json.dumps(events[0] if len(events) == 1 else events, separators=(",", ":")).encode()


EVENTCAST_DIALECT = Dialect("eventcast", welcome=1, batches=True, accepted=(202,))
NCHAN_DIALECT = Dialect("nchan", welcome=0, batches=False, accepted=(200, 201, 202), stamps=False)
# engine.io's open packet, then the namespace's connect answer to the client's "40"; events come as
# 42["event",{...}], whose data the bench reads as from any other server
SOCKETIO_DIALECT = Dialect(
    "socketio", welcome=2, batches=False, accepted=(202,), stamps=False, greeting=b"40"
)


@dataclass
class ServerUnderTest:
    """One server the scenarios run against."""

    label: str  # "eventcast", "baseline" or a peer's name ("nginx+nchan")
    ws_url: str
    publish_url: str
    token: str | None = None
    process: subprocess.Popen[bytes] | None = None
    workers: int = 1
    broker: str | None = None
    log_path: Path | None = None
    cpus: Sequence[int] | None = None
    has_metrics: bool = True
    dialect: Dialect = EVENTCAST_DIALECT
    workdir: Path | None = None  # a private directory the bench made for this server (removed on stop)
    companions: list[RedisProcess] = field(default_factory=list)  # what it needs, stopped after it
    _client: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def spawned(self) -> bool:
        return self.process is not None

    @property
    def base_url(self) -> str:
        return http_base(self.ws_url)

    def http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            self._client = httpx.AsyncClient(base_url=self.base_url, timeout=5.0, headers=headers)
        return self._client

    def _tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def process_rss(self) -> int | None:
        tree = self._tree()
        if not tree:
            return None
        total = 0
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def process_cpu_seconds(self) -> float | None:
        split = self.process_cpu_times()
        return None if split is None else split[0] + split[1]

    def process_cpu_times(self) -> tuple[float, float] | None:
        """(user, system) CPU seconds so far of the whole spawned process tree; None for a remote server."""
        tree = self._tree()
        if not tree:
            return None
        user = system = 0.0
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                user += times.user
                system += times.system
        return user, system

    def worker_processes(self) -> list[psutil.Process]:
        """The processes that serve clients: the spawned process itself with one worker, uvicorn's spawned
        children with several (not its supervisor, nor multiprocessing's resource tracker)."""
        tree = self._tree()
        if self.workers <= 1 or len(tree) <= 1:
            return tree[:1]
        workers = []
        for proc in tree[1:]:
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(proc.cmdline()):
                    workers.append(proc)
        return workers

    def clients_per_worker(self, client_pids: Sequence[int]) -> list[int] | None:
        """Per worker process, the established TCP connections on the server's port whose other end is one
        of `client_pids` (the load generator's processes: the bench's own /metrics client is not counted).
        Spawned servers only."""
        port = urlsplit(self.ws_url).port
        workers = self.worker_processes()
        if not workers or port is None:
            return None
        try:
            client_ends = {
                (c.laddr.ip, c.laddr.port)
                for pid in client_pids
                for c in psutil.Process(pid).net_connections(kind="tcp")
                if c.raddr and c.raddr.port == port
            }
            counts = []
            for proc in workers:
                counts.append(
                    sum(
                        1
                        for c in proc.net_connections(kind="tcp")
                        if c.status == psutil.CONN_ESTABLISHED
                        and c.laddr
                        and c.laddr.port == port
                        and c.raddr
                        and (c.raddr.ip, c.raddr.port) in client_ends
                    )
                )
        except psutil.Error:
            return None
        return counts

    async def metrics_text(self) -> str | None:
        if not self.has_metrics:
            return None
        try:
            response = await self.http().get("/metrics")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            self.has_metrics = False
            return None
        return response.text

    async def rss(self) -> tuple[int | None, str]:
        """Resident memory of the whole server and where it came from ("process" or "metrics")."""
        if self.spawned:
            return self.process_rss(), "process"
        text = await self.metrics_text()
        value = parse_metric(text, "process_resident_memory_bytes") if text else None
        return (int(value) if value is not None else None), "metrics"

    async def server_connections(self) -> int | None:
        text = await self.metrics_text()
        value = parse_metric(text, "eventcast_connections") if text else None
        return int(value) if value is not None else None

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                response = await self.http().get("/readyz")
                if response.status_code == 200:
                    return
                last = f"/readyz {response.status_code}"
            except httpx.HTTPError as error:
                last = type(error).__name__
            await asyncio.sleep(0.1)
        raise RuntimeError(
            f"{self.label} at {self.base_url} not ready after {timeout_s}s ({last}) {self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5.0)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        companions, self.companions = self.companions, []
        for companion in companions:
            await companion.stop()


def _spawn(
    label: str, argv: list[str], port: int, cpus: Sequence[int] | None, env: dict[str, str]
) -> ServerUnderTest:
    log = Path(tempfile.mkstemp(prefix=f"eventcast-bench-{label}-", suffix=".log")[1])
    pinned = set(cpus) if cpus else None

    def before_exec() -> None:
        if pinned:
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setaffinity(0, pinned)

    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,  # one process group, so stop() reaches uvicorn's workers too
            preexec_fn=before_exec,
        )
    ws_url = f"ws://127.0.0.1:{port}/ws/events"
    return ServerUnderTest(
        label, ws_url, f"http://127.0.0.1:{port}/events", process=process, log_path=log, cpus=cpus
    )


def spawn_gateway(
    workers: int = 1,
    broker: str | None = None,
    cpus: Sequence[int] | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> ServerUnderTest:
    """Start `eventcast serve` on 127.0.0.1 and a free port."""
    port = port or free_port()
    argv = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--workers", str(workers)]
    if broker:
        argv += ["--broker", broker]
    # Quiet logs (an access-log line per publish would be measured too) and a short drain at the end.
    # The publish flood outruns any subscriber by design; a 16 MB queue keeps it a measure of publishing
    # rather than of slow-consumer cuts (which tests/test_session.py covers).
    settings = {
        "EVENTCAST_LOG_LEVEL": "warning",
        "EVENTCAST_DRAIN_SECONDS": "1",
        "EVENTCAST_SEND_QUEUE_BYTES": str(16 << 20),
        **(env or {}),
    }
    server = _spawn("eventcast", argv, port, cpus, settings)
    server.workers = workers
    server.broker = broker or "memory://"
    return server


def spawn_baseline(cpus: Sequence[int] | None = None, port: int | None = None) -> ServerUnderTest:
    """Start the naive FastAPI broadcast app (app.bench.baseline) on 127.0.0.1 and a free port."""
    port = port or free_port()
    argv = [sys.executable, "-m", "app.bench.baseline", "--host", "127.0.0.1", "--port", str(port)]
    server = _spawn("baseline", argv, port, cpus, {})
    server.has_metrics = False
    return server


def nchan_missing() -> str | None:
    """Why nginx + nchan cannot run here (None: it can)."""
    if shutil.which("nginx") is None:
        return "nginx not found on PATH (Debian: apt-get install nginx libnginx-mod-nchan; make system-deps)"
    if not NCHAN_MODULE.exists():
        return f"{NCHAN_MODULE} missing (Debian: apt-get install libnginx-mod-nchan; make system-deps)"
    return None


def spawn_nchan(cpus: Sequence[int] | None = None, port: int | None = None) -> ServerUnderTest:
    """Start Debian's nginx with the nchan module, one worker, from the repo's config (app/bench/peers), on
    127.0.0.1 and a free port, in a private directory."""
    missing = nchan_missing()
    if missing:
        raise RuntimeError(missing)
    port = port or free_port()
    workdir = Path(tempfile.mkdtemp(prefix="eventcast-bench-nchan-"))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    config = string.Template(NCHAN_CONF.read_text()).substitute(dir=workdir, port=port, nofile=nofile)
    (workdir / "nginx.conf").write_text(config)
    argv = ["nginx", "-c", str(workdir / "nginx.conf"), "-p", str(workdir), "-e", str(workdir / "error.log")]
    server = _spawn("nchan", argv, port, cpus, {})
    server.label = "nginx+nchan"
    server.ws_url = f"ws://127.0.0.1:{port}/sub"
    server.publish_url = f"http://127.0.0.1:{port}/pub/bench"
    server.has_metrics = False
    server.dialect = NCHAN_DIALECT
    server.workdir = workdir
    return server


def socketio_missing() -> str | None:
    """Why the socket.io peer cannot run here (None: it can)."""
    for tool, package in (("node", "nodejs"), ("npm", "npm"), ("redis-server", "redis-server")):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH (Debian: apt-get install {package}; make system-deps)"
    return None


def socketio_modules() -> Path:
    """The socket.io peer's npm packages (app/bench/peers/socketio/package.json), installed once into the
    bench's cache directory (named after package.json's hash) with npm; returns its node_modules."""
    manifest = (SOCKETIO_DIR / "package.json").read_bytes()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    target = Path(base) / "eventcast-bench" / f"socketio-{hashlib.sha256(manifest).hexdigest()[:16]}"
    modules = target / "node_modules"
    if (modules / ".eventcast-complete").exists():
        return modules
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_bytes(manifest)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
        cwd=target,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm install for the socket.io peer failed: {done.stderr[-500:]}")
    (modules / ".eventcast-complete").write_text("")
    return modules


def spawn_socketio(cpus: Sequence[int] | None = None, port: int | None = None) -> ServerUnderTest:
    """Start socket.io 4 with @socket.io/redis-adapter (one Node process, app/bench/peers/socketio/server.js)
    on 127.0.0.1 and a free port, with a throwaway redis-server for its adapter."""
    missing = socketio_missing()
    if missing:
        raise RuntimeError(missing)
    modules = socketio_modules()
    redis = spawn_redis()
    port = port or free_port()
    env = {"PORT": str(port), "REDIS_URL": redis.url, "NODE_PATH": str(modules), "NODE_ENV": "production"}
    server = _spawn("socketio", ["node", str(SOCKETIO_DIR / "server.js")], port, cpus, env)
    server.label = "socket.io"
    server.ws_url = f"ws://127.0.0.1:{port}"
    server.publish_url = f"http://127.0.0.1:{port}/pub/bench"
    server.has_metrics = False
    server.dialect = SOCKETIO_DIALECT
    server.companions = [redis]
    return server


def remote(ws_url: str, publish_url: str | None, token: str | None) -> ServerUnderTest:
    """A server the bench did not start (memory from its /metrics)."""
    if not ws_url.startswith(("ws://", "wss://")):
        raise ValueError(f"--url must be ws:// or wss://, got {ws_url!r}")
    publish = publish_url or http_base(ws_url) + "/events"
    return ServerUnderTest("eventcast", ws_url, publish, token=token)


@dataclass
class RedisProcess:
    """A throwaway redis-server the bench started (no persistence) for the publish scenario's Redis engine."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def wait_ready(self, timeout_s: float = REDIS_READY_TIMEOUT_S) -> None:
        """PING until PONG (bounded); raises RuntimeError with the log's tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 1.0)
                try:
                    writer.write(b"PING\r\n")
                    if (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG"):
                        return
                finally:
                    writer.close()
            await asyncio.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-500:] if self.log_path.exists() else ""
        raise RuntimeError(f"redis-server on port {self.port} not ready after {timeout_s}s: {tail}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the redis-server process so far."""
        try:
            times = psutil.Process(self.process.pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    async def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5.0)


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def spawn_redis(port: int | None = None) -> RedisProcess:
    """Start `redis-server` on 127.0.0.1 and a free port, without persistence (RDB and AOF off)."""
    binary = redis_server_path()
    if binary is None:
        raise RuntimeError("redis-server not found on PATH")
    port = port or free_port()
    log = Path(tempfile.mkstemp(prefix="eventcast-bench-redis-", suffix=".log")[1])
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return RedisProcess(process, port, log)


def is_loopback(ws_url: str) -> bool:
    host = urlsplit(ws_url).hostname or ""
    return host == "localhost" or host.startswith("127.")
