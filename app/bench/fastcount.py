"""The per-frame bookkeeping of `client.Tracker`, in C (fastcount.c), for the raw client: one ctypes call per
receive buffer walks its frames and counts every bench event, so a load process is not limited by Python's
cost per frame (see docs/benchmarks.md, "The load generator").

The C file is compiled with the system C compiler (`cc`) on first use into a cache directory named after its
source's hash, and loaded with ctypes; `available()` says whether that worked (without a compiler the bench
keeps the Python `Tracker`, and the report's `machine.frame_counter` gives the reason instead of "c"). `CPhase` and `CTracker` have the interface of
`client.Phase` and `client.Tracker` that the workers use; `tests/bench/test_units.py` checks that both count
the same frames alike.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from app.bench import stats

SOURCE = Path(__file__).with_name("fastcount.c")
_I64 = ctypes.c_int64
_P = ctypes.c_void_p


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "eventcast-bench"


def build() -> Path:
    """Compile fastcount.c (once per source version) and return the shared library's path."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = _cache_dir() / f"fastcount-{digest}.so"
    if target.exists():
        return target
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) for the bench's frame counter: apt-get install gcc")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, suffix=".so")
    os.close(handle)
    try:
        subprocess.run(
            [compiler, "-O2", "-shared", "-fPIC", "-o", partial, str(SOURCE), "-lm"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(partial, target)  # atomic: several processes may build at once
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


@cache
def library() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(build()))
    lib.bench_phase_new.restype = _P
    lib.bench_phase_new.argtypes = [_I64, _I64]
    lib.bench_phase_free.argtypes = [_P]
    lib.bench_phase_export.restype = ctypes.c_int
    lib.bench_phase_export.argtypes = [_P, _I64, _P, _P, _P, _P, _P, _P, _P]
    lib.bench_client_new.restype = _P
    lib.bench_client_new.argtypes = [_I64]
    lib.bench_client_free.argtypes = [_P]
    lib.bench_client_reset.argtypes = [_P, _P]
    lib.bench_client_close.argtypes = [_P]
    lib.bench_client_stats.argtypes = [_P, _I64, _P]
    lib.bench_progress.argtypes = [_P, _I64, _P]
    lib.bench_account.restype = ctypes.c_int
    lib.bench_account.argtypes = [_P, ctypes.c_char_p, _I64, ctypes.c_double]
    lib.bench_consume.restype = _I64
    lib.bench_consume.argtypes = [_P, ctypes.c_char_p, _I64, _I64, ctypes.c_double, ctypes.POINTER(_I64)]
    return lib


def available() -> str | None:
    """None when the C counter can be used, else why not."""
    try:
        library()
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return f"{type(error).__name__}: {error}"
    return None


class CPhase:
    """A measurement phase whose per-seq arrays and histogram live in C (see `client.Phase`)."""

    def __init__(self, phase_id: int = -1, streams: int = 1) -> None:
        self.phase_id = phase_id
        self.streams = max(1, streams)
        self.pointer: int = library().bench_phase_new(phase_id, self.streams)
        if not self.pointer:
            raise MemoryError("bench_phase_new")

    def export(
        self, expected: int
    ) -> tuple[list[float], list[float], list[float], list[int], list[int], float, float, int]:
        """event_ts, first_arrival, last_arrival, arrivals (first `expected` seqs), histogram, latency sum,
        latency max, stray."""
        size = max(0, expected)
        event_ts, first, last = (
            (ctypes.c_double * size)(),
            (ctypes.c_double * size)(),
            (ctypes.c_double * size)(),
        )
        arrivals = (_I64 * size)()
        histogram = (_I64 * stats.BUCKETS)()
        sums = (ctypes.c_double * 2)()
        stray = _I64()
        if library().bench_phase_export(
            self.pointer,
            size,
            ctypes.addressof(event_ts),
            ctypes.addressof(first),
            ctypes.addressof(last),
            ctypes.addressof(arrivals),
            ctypes.addressof(histogram),
            ctypes.addressof(sums),
            ctypes.addressof(stray),
        ):
            raise MemoryError("bench_phase_export")
        return (
            list(event_ts),
            list(first),
            list(last),
            list(arrivals),
            list(histogram),
            sums[0],
            sums[1],
            stray.value,
        )

    def __del__(self) -> None:
        pointer, self.pointer = getattr(self, "pointer", 0), 0
        if pointer:
            library().bench_phase_free(pointer)


class CTracker:
    """One client's bookkeeping in C (see `client.Tracker`); `consume` counts a whole receive buffer."""

    __slots__ = ("_stats", "consume_fn", "phase", "pointer")

    def __init__(self, phase: CPhase, welcome: int = 1) -> None:
        lib = library()
        self.pointer: int = lib.bench_client_new(int(welcome))
        if not self.pointer:
            raise MemoryError("bench_client_new")
        self._stats = (_I64 * 7)()
        self.consume_fn = lib.bench_consume
        self.phase = phase
        self.reset(phase)

    def reset(self, phase: CPhase) -> None:
        self.phase = phase
        library().bench_client_reset(self.pointer, phase.pointer)

    def _read(self, expected: int = 0) -> ctypes.Array[ctypes.c_int64]:
        library().bench_client_stats(self.pointer, expected, ctypes.addressof(self._stats))
        return self._stats

    @property
    def unique(self) -> int:
        return int(self._read()[0])

    @property
    def dups(self) -> int:
        return int(self._read()[1])

    @property
    def ooo(self) -> int:
        return int(self._read()[2])

    @property
    def max_seq(self) -> int:
        return int(self._read()[3])

    @property
    def welcomed(self) -> bool:
        return bool(self._read()[5])

    @property
    def closed(self) -> bool:
        return bool(self._read()[6])

    @closed.setter
    def closed(self, value: bool) -> None:
        if value:
            library().bench_client_close(self.pointer)

    def lost(self, expected: int) -> int:
        """Events 0..expected-1 this client never received."""
        return int(self._read(expected)[4])

    def on_text(self, payload: bytes | bytearray, arrived_ms: float) -> None:
        if library().bench_account(self.pointer, bytes(payload), len(payload), arrived_ms):
            raise MemoryError("bench_account")

    def __del__(self) -> None:
        pointer, self.pointer = getattr(self, "pointer", 0), 0
        if pointer:
            library().bench_client_free(pointer)


def progress(trackers: list[CTracker]) -> tuple[int, int, int]:
    """(lowest max_seq, lowest unique count, live clients) over the trackers, in one C call."""
    pointers = (ctypes.c_void_p * len(trackers))(*(t.pointer for t in trackers))
    out = (_I64 * 3)()
    library().bench_progress(ctypes.addressof(pointers), len(trackers), ctypes.addressof(out))
    return int(out[0]), int(out[1]), int(out[2])
