"""Run an image under podman (in the toolchain root): serve and answer /live, or run a CLI.

Environment: IMAGE (`$(rootpaths)` of an oci_image), NAME (short image name), MODE: `serve`
(args `--host 127.0.0.1 --port P`, then GET /live) or `cli` (run with `--help`, expect usage).
The ML image also runs `update` in pieces on worker processes (`sharding.workers`: spawned
interpreters, semaphores in /dev/shm) with the Kubernetes Jobs' read-only root filesystem.
Tagged no-sandbox/requires-network/exclusive: podman does not work in Bazel's sandbox.
"""

import os
import re
import subprocess
import tempfile
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


# 300 users in pieces of 70: the update's 5 pieces on `sharding.workers` (2) processes
PIECES_CONFIG = """\
generator: {n_users: 300, days: 45, signup_rate: 0.01}
churn: {window_days: 7}
sharding: {shard_users: 70, workers: 2}
"""


@pytest.mark.skipif(NAME != "ml", reason="the ML image only")
def test_update_computes_its_pieces_on_worker_processes(image: str) -> None:
    """generate, validate, update in containers as the Jobs run them (read-only root, /tmp a
    tmpfs, no network), the data root a volume: the update's pieces are computed by processes
    other than the step's own, which writes them."""
    with tempfile.TemporaryDirectory() as tmp:
        root, conf = os.path.join(tmp, "data"), os.path.join(tmp, "churn.yaml")
        os.mkdir(root)
        os.chmod(root, 0o777)  # the image's user 10001 is another user on the host
        with open(conf, "w") as fh:
            fh.write(PIECES_CONFIG)
        env = run_python(image, "import os; print(os.environ['CHURN_DATA_ROOT'])")

        def ml_jobs(*args: str) -> subprocess.CompletedProcess:
            return podman("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                          "-v", f"{root}:{env}", "-v", f"{conf}:/etc/churn.yaml:ro",
                          "-e", "CHURN_MLOPS_CONFIG=/etc/churn.yaml", "-e", "MPLCONFIGDIR=/tmp",
                          image, *args, check=False)

        for step in ("generate", "validate"):
            done = ml_jobs(step)
            assert done.returncode == 0, done.stderr
        update = ml_jobs("update")
        assert update.returncode == 0, update.stderr
        assert re.search(r"update: raw events .* partitioned to 5 pieces", update.stderr), update.stderr
        pids = re.findall(r"update: piece \d/5 in .*s \(computed in .*s by worker process (\d+)\)", update.stderr)
        assert len(pids) == 5, update.stderr
