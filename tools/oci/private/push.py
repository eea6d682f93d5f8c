"""Push an OCI image layout to a registry and check that the registry got the expected digest.

Called by the launcher of an `oci_push` target (`bazel run //apps/api:push -- -r REPO -t TAG`).
Uses skopeo from the toolchain (crane if skopeo is missing). Registries on loopback addresses
are reached over plain HTTP; everything else needs TLS.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LOOPBACK = ("localhost", "127.", "[::1]")


def insecure(repository: str) -> bool:
    return repository.split("/", 1)[0].startswith(LOOPBACK)


def push_skopeo(image: Path, reference: str) -> str:
    """Copies the layout to `reference`; returns the digest the registry stored."""
    with tempfile.TemporaryDirectory() as tmp:
        digest_file = Path(tmp, "digest")
        tls = ["--dest-tls-verify=false"] if insecure(reference) else []
        run(["skopeo", "copy", "--quiet", *tls, "--digestfile", str(digest_file),
             f"oci:{image}", f"docker://{reference}"])
        return digest_file.read_text().strip()


def push_crane(image: Path, reference: str) -> str:
    tls = ["--insecure"] if insecure(reference) else []
    out = run(["crane", "push", *tls, str(image), reference])
    return out.strip().rsplit("@", 1)[-1]


def run(command: list[str]) -> str:
    proc = subprocess.run(command, text=True, capture_output=True)
    if proc.returncode != 0:
        sys.exit(f"push: {' '.join(command[:2])} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description="Push the image; -r/-t override the target's defaults.")
    parser.add_argument("--image", type=Path, required=True, help=argparse.SUPPRESS)
    parser.add_argument("--digest", type=Path, required=True, help=argparse.SUPPRESS)
    parser.add_argument("--default-tag", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("-r", "--repository", required=True, help="e.g. 127.0.0.1:5000/churn-api")
    parser.add_argument("-t", "--tag", action="append", help="remote tag (repeatable)")
    args = parser.parse_args()

    expected = args.digest.read_text().strip()
    push = push_skopeo if shutil.which("skopeo") else push_crane
    if push is push_crane and not shutil.which("crane"):
        sys.exit("push: neither skopeo nor crane is on PATH (both are in the toolchain root)")
    for tag in args.tag or args.default_tag or ["latest"]:
        reference = f"{args.repository}:{tag}"
        pushed = push(args.image.resolve(), reference)
        if pushed != expected:
            sys.exit(f"push: {reference} has digest {pushed}, but the build produced {expected}")
        print(f"{reference}@{pushed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
