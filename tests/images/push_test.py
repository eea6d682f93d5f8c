"""Push an image to a local Docker Distribution registry through its oci_push launcher.

Starts Debian's docker-registry on a free loopback port (config and storage in the test's temp
dir), runs the push launcher with `-r 127.0.0.1:PORT/NAME -t test` (what `bazel run` would run),
and checks that the registry's Docker-Content-Digest equals the image's `.digest` output.
Environment: IMAGE (`$(rootpaths)` of the oci_image), PUSH (`$(rootpath)` of the oci_push).
"""

import os
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from oci_layout import RUNFILES, image_from_env
from tools.testing.loopback import free_port

TMP = Path(os.environ.get("TEST_TMPDIR", "/tmp"))
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def wait_for_registry(port: int, process: subprocess.Popen, log: Path, seconds: float = 20.0) -> None:
    """Until GET /v2/ answers; a registry that exits or never answers fails the test with its log."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return
        except OSError as err:
            if process.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {process.returncode}" if process.poll() is not None else f"no answer in {seconds:.0f} s"
                pytest.fail(f"docker-registry on port {port}: {state} ({err}); its log:\n{log.read_text()}")
            time.sleep(0.1)


@pytest.fixture
def registry() -> Iterator[str]:
    """host:port of a fresh registry; stopped (and its storage removed with the temp dir) after."""
    port = free_port()
    config = TMP / "registry.yml"
    config.write_text(f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {TMP}/registry}}}}\n"
                      f"http: {{addr: 127.0.0.1:{port}}}\nlog: {{level: warn}}\n")
    log = open(TMP / "registry.log", "w")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    try:
        wait_for_registry(port, process, TMP / "registry.log")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def test_push_reports_and_stores_the_built_digest(registry: str) -> None:
    image = image_from_env("IMAGE")
    push = (RUNFILES / "_main" / os.environ["PUSH"]).resolve()
    repository = f"{registry}/{os.environ.get('NAME', 'image')}"
    start = time.monotonic()
    result = subprocess.run([str(push), "-r", repository, "-t", "test", "-t", "second"],
                            text=True, capture_output=True)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{repository}:test@{image.digest}", f"{repository}:second@{image.digest}"]
    print(f"push took {seconds:.2f} s")
    name = repository.split("/", 1)[1]
    request = urllib.request.Request(f"http://{registry}/v2/{name}/manifests/test", method="HEAD",
                                     headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request) as response:
        assert response.headers["Docker-Content-Digest"] == image.digest


def test_push_fails_when_the_registry_is_unreachable() -> None:
    push = (RUNFILES / "_main" / os.environ["PUSH"]).resolve()
    result = subprocess.run([str(push), "-r", f"127.0.0.1:{free_port()}/nothing", "-t", "x"],
                            text=True, capture_output=True)
    assert result.returncode != 0 and "push:" in result.stderr
