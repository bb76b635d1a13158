"""Build and run the eventcast image with podman, from a local debootstrap base (no registry is reachable).

The recipe and its gotchas are in shared TOOLBOX.md: runc (crun refuses this host's cgroups), explicit ulimits
(podman's default is above the host's hard limit), fully qualified localhost/ tags, the overlay driver, and the
host's CA bundle handed to pip inside the build (package downloads go through an intercepting proxy).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.servers import ROOT, wait_for

PODMAN = ["podman", "--storage-driver", "overlay", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=1024:1024"]
BASE_IMAGE = "localhost/eventcast-base:bookworm"
BASE_PACKAGES = "python3-minimal,python3-venv"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eventcast"
# What goes into the image (the rest of the repository is kept out by .dockerignore).
IMAGE_INPUTS = ["Dockerfile", ".dockerignore", "pyproject.toml", "README.md"]
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}


def require_tools() -> None:
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"missing {missing}: `make test` installs them (apt-get install {' '.join(missing)})"
        )


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def image_exists(tag: str) -> bool:
    return podman("image", "exists", tag, check=False).returncode == 0


def ensure_base() -> str:
    """The debootstrap base as a local image; its tarball is cached so later runs skip the ~40 s debootstrap."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tarball = CACHE_DIR / f"debootstrap-bookworm-{BASE_PACKAGES.replace(',', '-')}.tar"
    if not tarball.exists():
        with tempfile.TemporaryDirectory(dir=CACHE_DIR) as work:
            rootfs = Path(work) / "rootfs"
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs),
                 "http://deb.debian.org/debian"],
                check=True, capture_output=True, timeout=900,
            )  # fmt: skip
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=300)
            partial.rename(tarball)
    podman("import", str(tarball), BASE_IMAGE)
    return BASE_IMAGE


def content_hash(base: str) -> str:
    """Hash of everything the image is built from, so an unchanged tree reuses the image built before."""
    digest = hashlib.sha256(podman("image", "inspect", "--format", "{{.Id}}", base).stdout.encode())
    files = [ROOT / name for name in IMAGE_INPUTS] + sorted((ROOT / "app").rglob("*.py"))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_image() -> str:
    require_tools()
    base = ensure_base()
    tag = f"localhost/eventcast:test-{content_hash(base)}"
    if image_exists(tag):
        return tag
    podman(
        "build", "--format", "docker",  # docker format: OCI images drop HEALTHCHECK
        *ULIMITS, "--network=host",
        "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}",
        "--build-arg", f"BASE_IMAGE={base}", "--tag", tag, str(ROOT),
        timeout=1200,
    )  # fmt: skip
    for old in podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
        if old.startswith("localhost/eventcast:test-") and old != tag:
            podman("rmi", old, check=False)  # earlier builds of this test; shared layers stay
    return tag


def inspect(name: str, kind: str = "container") -> dict[str, Any]:
    (data,) = json.loads(podman(kind, "inspect", name).stdout)
    result: dict[str, Any] = data
    return result


def logs(name: str) -> str:
    result = podman("logs", name, check=False)
    return (result.stdout + result.stderr)[-4000:]


@contextlib.contextmanager
def running(image: str, args: list[str], *, port: int, ready_path: str = "/healthz") -> Iterator[str]:
    """`podman run -d --network=host` with these run args; yields the container name once `ready_path` is 200."""
    name = f"eventcast-test-{os.getpid()}-{port}"
    podman("rm", "--force", name, check=False)
    # The image's HEALTHCHECK would want systemd timers, which this host lacks: `healthcheck run` does it once.
    podman("run", "--detach", "--name", name, "--network=host", "--health-interval=disable", *ULIMITS, *args)
    try:
        url = f"http://127.0.0.1:{port}{ready_path}"

        def ready() -> bool:
            if not inspect(name)["State"]["Running"]:
                raise RuntimeError(f"container exited:\n{logs(name)}")
            return httpx.get(url, timeout=1).status_code == 200

        wait_for(ready, 60, f"{url}\n{logs(name)}", interval=0.2)
        yield name
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def exec_in(name: str, *command: str) -> str:
    return podman("exec", name, *command).stdout


def stop(name: str, grace: int) -> tuple[int, float]:
    """SIGTERM, as Kubernetes sends it, with `grace` seconds before SIGKILL; returns (exit code, seconds taken)."""
    started = time.monotonic()
    podman("stop", "--time", str(grace), name, timeout=grace + 30)
    return int(inspect(name)["State"]["ExitCode"]), time.monotonic() - started
