"""Thin wrappers over the podman CLI (podman must run inside the toolchain root)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from harness.proc import CommandFailed, log, run

ENV = {"PODMAN_IGNORE_CGROUPSV1_WARNING": "1"}


def podman(*args: str, check: bool = True, timeout: float | None = 300) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise RuntimeError("podman is not on PATH: run inside the toolchain root (./bazelw test ...)")
    return run(["podman", *args], check=check, timeout=timeout, env=ENV)


def pod_name(workload_name: str) -> str:
    """kube play names the pod of Job/Deployment X `X-pod`."""
    return f"{workload_name}-pod"


def container_name(workload_name: str, container: str) -> str:
    """... and its container C `X-pod-C`."""
    return f"{workload_name}-pod-{container}"


def in_user_namespace() -> bool:
    """True when podman is uid 0 of a user namespace (./bazelw run by a user, not root).

    There podman may not create a bridge in the host's network namespace ("netavark: setns:
    Operation not permitted"), and kube play does not take the toolchain's default network
    (containers.conf `netns`) for its pods: they get slirp4netns explicitly.
    """
    return Path("/proc/self/uid_map").read_text().split()[:3] != ["0", "0", "4294967295"]


def kube_play(path: Path, *, tls_verify: bool = False, timeout: float = 300) -> str:
    """`podman kube play FILE`; returns its output (it returns at once: Jobs and pods run on)."""
    network = ["--network", "slirp4netns"] if in_user_namespace() else []
    return podman("kube", "play", f"--tls-verify={str(tls_verify).lower()}", *network, str(path),
                  timeout=timeout).stdout


def kube_down(path: Path, *, force: bool = True) -> None:
    args = ["kube", "down"] + (["--force"] if force else []) + [str(path)]
    podman(*args, check=False, timeout=120)


def wait_exit(container: str, timeout: float) -> int:
    """Block until `container` exits; its exit code (podman wait's output)."""
    out = podman("wait", container, timeout=timeout).stdout.strip().splitlines()
    return int(out[-1])


def logs(container: str, tail: int | None = None) -> str:
    args = ["logs"] + ([f"--tail={tail}"] if tail else []) + [container]
    proc = podman(*args, check=False, timeout=60)
    return proc.stdout + proc.stderr


def inspect(container: str) -> dict:
    return json.loads(podman("container", "inspect", container, timeout=60).stdout)[0]


def state(container: str) -> str:
    proc = podman("container", "inspect", "--format", "{{.State.Status}}", container, check=False, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else f"absent ({proc.stderr.strip()})"


def names(kind: str, prefix: str) -> list[str]:
    """Names of containers ("ps"), pods ("pod") or volumes ("volume") starting with `prefix`."""
    if kind == "ps":
        out = podman("ps", "-a", "--format", "{{.Names}}", timeout=60).stdout
    elif kind == "pod":
        out = podman("pod", "ps", "--format", "{{.Name}}", timeout=60).stdout
    elif kind == "volume":
        out = podman("volume", "ls", "--format", "{{.Name}}", timeout=60).stdout
    else:
        raise ValueError(kind)
    return [n for n in out.split() if n.startswith(prefix)]


def remove_everything(prefix: str) -> list[str]:
    """Force-remove every pod, container and volume whose name starts with `prefix`; report."""
    removed = []
    for pod in names("pod", prefix):
        podman("pod", "rm", "-f", "-t", "2", pod, check=False, timeout=120)
        removed.append(f"pod {pod}")
    for ctr in names("ps", prefix):
        podman("rm", "-f", "-t", "2", ctr, check=False, timeout=120)
        removed.append(f"container {ctr}")
    for vol in names("volume", prefix):
        podman("volume", "rm", "-f", vol, check=False, timeout=120)
        removed.append(f"volume {vol}")
    return removed


def rmi(*refs: str) -> None:
    for ref in refs:
        proc = podman("rmi", "-f", ref, check=False, timeout=120)
        if proc.returncode != 0 and "image not known" not in proc.stderr:
            log(f"podman rmi {ref}: {proc.stderr.strip()}")


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False, timeout=60).returncode == 0


__all__ = ["CommandFailed", "container_name", "image_exists", "inspect", "kube_down", "kube_play", "logs",
           "names", "pod_name", "podman", "remove_everything", "rmi", "state", "wait_exit"]
