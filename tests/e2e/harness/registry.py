"""Debian's `docker-registry` (Docker Distribution) on a free loopback port, storage in a temp dir."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from harness.net import http, wait_until
from tools.testing.loopback import free_port
from harness.proc import die_with_parent, log, stop_server

CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


class LocalRegistry:
    """`start()` writes the config, spawns the server and waits for /v2/; `stop()` ends it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, deadline_s: float = 20) -> "LocalRegistry":
        exe = shutil.which("docker-registry")
        if exe is None:
            raise RuntimeError("docker-registry is not on PATH: run the test inside the toolchain root (./bazelw test)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.workdir / "config.yml"
        config.write_text(CONFIG.format(root=self.workdir / "data", port=self.port))
        self.log_path = self.workdir / "registry.log"
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen([exe, "serve", str(config)], stdout=logf, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent)
        log(f"docker-registry pid {self.proc.pid} on {self.host}")

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            return http("GET", f"http://{self.host}/v2/", timeout=1).status == 200

        wait_until("registry /v2/ answers 200", up, deadline_s, 0.1)
        return self

    def catalog(self) -> list[str]:
        return list(http("GET", f"http://{self.host}/v2/_catalog").json().get("repositories") or [])

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The registry's Docker-Content-Digest for repository:reference (None if absent)."""
        accept = ",".join([
            "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json"])
        resp = http("HEAD", f"http://{self.host}/v2/{repository}/manifests/{reference}", headers={"Accept": accept})
        return resp.headers.get("docker-content-digest") if resp.status == 200 else None

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_server(self.proc, "docker-registry")
        self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
