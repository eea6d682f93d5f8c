"""Run an image under podman (in the toolchain root): serve and answer /live, or run a CLI.

Environment: IMAGE (`$(rootpaths)` of an oci_image), NAME (short image name), MODE: `serve`
(args `--host 127.0.0.1 --port P`, then GET /live) or `cli` (run with `--help`, expect usage).
Tagged no-sandbox/requires-network/exclusive: podman does not work in Bazel's sandbox.
"""

import os
import subprocess
import time
import urllib.request
from typing import Iterator

import pytest

from oci_layout import image_from_env
from tools.testing.loopback import free_port

NAME = os.environ.get("NAME", "image")
UNIQUE = f"churn-imgtest-{NAME}-{os.getpid()}"


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], text=True, capture_output=True, check=check)


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image loaded into podman's storage under a unique name (removed afterwards)."""
    reference = f"localhost/{UNIQUE}:test"
    layout = image_from_env("IMAGE").layout
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}", f"containers-storage:{reference}"],
                   check=True)
    yield reference
    podman("rmi", "-f", reference, check=False)


def run_python(image: str, code: str) -> str:
    """Output of `python3 -c code` in a throw-away container of the image."""
    return podman("run", "--rm", "--network", "none", "--entrypoint", "/usr/bin/python3",
                  image, "-c", code).stdout.strip()


def test_user_is_not_root(image: str) -> None:
    assert run_python(image, "import os; print(os.getuid(), os.getgid())") == "10001 10001"


def test_data_root_is_writable(image: str) -> None:
    code = "import os; p=os.environ['CHURN_DATA_ROOT']+'/probe'; open(p,'w').write('x'); print('ok')"
    assert run_python(image, code) == "ok"


def test_tls_trust_store(image: str) -> None:
    code = "import ssl; print(len(ssl.create_default_context().get_ca_certs()) > 50)"
    assert run_python(image, code) == "True"


@pytest.mark.skipif(os.environ.get("MODE") != "serve", reason="serving images only")
def test_serves_live_on_loopback(image: str) -> None:
    port, name = free_port(), UNIQUE
    podman("run", "-d", "--name", name, "--network", "host", image, "--host", "127.0.0.1", "--port", str(port))
    try:
        deadline, last = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=2) as response:
                    assert response.status == 200
                    return
            except OSError as error:
                last = error
                if podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                    pytest.fail("container exited:\n" + podman("logs", name, check=False).stderr)
                time.sleep(0.5)
        pytest.fail(f"/live never answered ({last}):\n" + podman("logs", name, check=False).stderr)
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


@pytest.mark.skipif(os.environ.get("MODE") != "cli", reason="CLI images only")
def test_cli_help(image: str) -> None:
    result = podman("run", "--rm", "--network", "none", image, "--help", check=False)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
