"""Real processes for tests: a redis-server and eventcast gateways, each on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server of our own that tests can kill and restart (empty, or from its AOF)."""

    def __init__(self, *, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: run `make test` (it installs it) or apt-get install redis-server"
            )
        self.binary = binary
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="eventcast-redis-")
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--dir",
            self.dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        args += (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        )
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._pong, 10, f"redis-server on port {self.port}")

    def _pong(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self, *, wipe: bool = True) -> None:
        self.kill()
        if wipe:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir, exist_ok=True)
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Gateway:
    """An `eventcast serve` process on 127.0.0.1 and a free port."""

    def __init__(
        self,
        *,
        broker: str = "memory://",
        workers: int = 1,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        admin_token: str | None = "test-admin-token",
    ) -> None:
        self.host = host
        self.admin_token = admin_token
        self.port = free_port(host)
        self.broker = broker
        self.workers = workers
        self.extra_env = env or {}
        self.log = Path(tempfile.mkstemp(prefix="eventcast-gw-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def admin(self) -> dict[str, str]:
        """Headers for /admin/* (the gateway's admin token, unless a test's env set another)."""
        token = self.extra_env.get("EVENTCAST_ADMIN_TOKEN", self.admin_token)
        return {"authorization": f"Bearer {token}"}

    def start(self, *, wait_ready: bool = True) -> Gateway:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTCAST_")}
        env.update({"EVENTCAST_REPLICA": f"gw-{self.port}", "EVENTCAST_LOG_LEVEL": "warning"})
        if self.admin_token is not None:
            env["EVENTCAST_ADMIN_TOKEN"] = self.admin_token
        env.update(self.extra_env)
        args = [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--broker",
            self.broker,
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        path = "/readyz" if wait_ready else "/healthz"
        wait_for(lambda: self._status(path) == 200, 30, f"gateway {self.http}{path}\n{self.tail()}")
        if self.workers > 1:  # every worker must be up before tests count on fan-out to all of them
            time.sleep(1.0)
        return self

    def wait_ready(self, why: str, timeout: float = 20) -> None:
        """Block until /readyz answers 200 (e.g. after the broker came back)."""
        wait_for(lambda: self._status("/readyz") == 200, timeout, f"gateway ready: {why}\n{self.tail()}")

    def _status(self, path: str) -> int:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{self.tail()}")
        return httpx.get(self.http + path, timeout=1).status_code

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self) -> None:
        """SIGTERM, as Kubernetes sends it: the gateway drains, then exits."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
        with contextlib.suppress(OSError):
            self.log.unlink()
