"""Several uvicorn workers, each with a listening socket of its own, so the kernel spreads clients evenly.

uvicorn's supervisor binds one socket and hands it to every worker; the workers then race to accept, and the
one that is least busy at that instant wins. Long-lived WebSocket connections never move afterwards, so the
race decides the balance for good: a bench of 10,000 clients on two workers ended 68/32 and 60/40. Here the
parent binds one ``SO_REUSEPORT`` socket per worker on the same address, and the kernel hashes each new
connection to one of them: an even split, decided before any worker is involved.

Everything else (signals, health checks, restarting a dead worker, SIGHUP restarts) is uvicorn's
``Multiprocess``; a worker that is replaced gets the socket of the slot it takes over. While a slot has no
worker (a crash, until its replacement is up), the connections hashed to its socket wait in its backlog.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
import socket

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("uvicorn.error")


def bind_reuseport(host: str, port: int, count: int, backlog: int) -> list[socket.socket]:
    """``count`` listening sockets on ``host:port`` with SO_REUSEPORT (port 0 picks a free port).

    Raises OSError (EADDRINUSE) when anything listens there already, even another SO_REUSEPORT group of the
    same user, which the kernel would otherwise let us join silently and share its clients with.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:  # no SO_REUSEPORT: fails if the port is taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class ReusePortSupervisor(Multiprocess):
    """uvicorn's ``Multiprocess`` with one socket per worker slot instead of one socket for all."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        if len(sockets) != config.workers:
            raise ValueError(f"{config.workers} workers need {config.workers} sockets, got {len(sockets)}")
        super().__init__(config, sockets=sockets)

    def _start(self, slot: int) -> Process:
        process = Process(self.config, [self.sockets[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        for slot in range(self.processes_num):
            self.processes.append(self._start(slot))

    def restart_all(self) -> None:
        """SIGHUP: replace each worker, its replacement ready (on the same socket) before the old one stops."""
        for slot, old_process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new_process = self._start(slot)
            if not new_process.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new_process.kill()
                new_process.join()
                if not self.should_exit.is_set():
                    log.error(
                        "worker [%s] was not ready in time; keeping [%s]", new_process.pid, old_process.pid
                    )
                return
            old_process.terminate()
            old_process.join()
            self.processes[slot] = new_process

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung or dead
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # broken app or config: every restart would fail too
                log.error("worker [%s] failed to start, stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("worker [%s] died; starting a new one on its socket", process.pid)
            self.processes[slot] = self._start(slot)


# ------------------------------------------------------------------------------------ worker side
#: prctl(2) option: the signal this process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1
#: How often a worker checks that its supervisor is still its parent (where prctl is not available).
PARENT_CHECK_SECONDS = 1.0


def exit_with_supervisor(supervisor_pid: int) -> asyncio.Task[None]:
    """Make this worker drain and exit when its supervisor dies (kill -9, the OOM killer).

    Orphaned workers would otherwise keep answering on the port, and a gateway started again would share it
    with them through SO_REUSEPORT. The kernel sends SIGTERM on the parent's death (``PR_SET_PDEATHSIG``),
    which drains like any SIGTERM; a task also checks the parent once a second, for systems without prctl
    and for a supervisor that died before this worker asked. Returns that task (cancel it on shutdown).
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        try:
            ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux: the check below does it alone
            pass
    return asyncio.create_task(_watch_parent(supervisor_pid), name="eventcast-supervisor-watch")


async def _watch_parent(supervisor_pid: int) -> None:
    while os.getppid() == supervisor_pid:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("the supervisor [%s] is gone: draining and exiting", supervisor_pid)
    os.kill(os.getpid(), signal.SIGTERM)
