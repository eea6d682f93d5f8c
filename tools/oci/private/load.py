"""Load an OCI image layout into the local container engine: podman's storage, or docker.

Called by the launcher of an `oci_load` target (`bazel run //apps/api:load -- -t NAME:TAG`).
podman (containers-storage) is preferred; docker is used when podman is absent.
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path


def destination(name: str) -> str:
    """The skopeo destination for a `name:tag` in the available engine's storage."""
    if shutil.which("podman"):
        return f"containers-storage:{name}"
    if shutil.which("docker"):
        return f"docker-daemon:{name}"
    sys.exit("load: neither podman nor docker is installed")


def main() -> int:
    parser = argparse.ArgumentParser(description="Load the image; -t overrides the target's repo_tags.")
    parser.add_argument("--image", type=Path, required=True, help=argparse.SUPPRESS)
    parser.add_argument("--digest", type=Path, required=True, help=argparse.SUPPRESS)
    parser.add_argument("--default-tag", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("-t", "--tag", action="append", help="local NAME:TAG (repeatable)")
    args = parser.parse_args()
    if not shutil.which("skopeo"):
        sys.exit("load: skopeo is missing (it is in the toolchain root: run through ./bazelw)")
    for name in args.tag or args.default_tag:
        proc = subprocess.run(["skopeo", "copy", "--quiet", f"oci:{args.image.resolve()}", destination(name)],
                              text=True, capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"load: skopeo copy to {name} failed:\n{proc.stderr.strip()}")
        print(f"loaded {name} ({args.digest.read_text().strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
