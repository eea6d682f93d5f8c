"""Render the churn-mlops manifests with both images pinned by digest.

    render.py --api-digest-file F --ml-digest-file F [--registry R] [--component C]...
              [--output FILE]

Copies the kustomize base (and the chosen components) into a temporary directory, writes
an overlay there whose `images:` map the placeholders `churn-api` and `churn-ml` to
`<registry>/churn-api@sha256:...` and `<registry>/churn-ml@sha256:...`, builds it with
`kustomize build` or `kubectl kustomize` (whichever is on PATH) and writes one YAML stream
to stdout, or atomically to FILE. Standard library only (plus churn.invocation, itself standard
library only: a relative FILE means relative to where the user ran `bazel run`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from churn.invocation.workdir import from_invocation

HERE = Path(__file__).parent  # not resolved: under Bazel the manifests sit in runfiles
DEFAULT_REGISTRY = "localhost:5000"
# placeholder image name in the base -> repository in the registry
IMAGES = {"churn-api": "churn-api", "churn-ml": "churn-ml"}
# Applied in this order: components that add workloads come before the ones that patch
# every workload, so that the patches reach the added workloads too.
COMPONENTS = ("prometheus-operator", "indexed-batch-score", "daily-simulator", "indexed-daily", "rwo-single-node")

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
REGISTRY_RE = re.compile(r"[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*")


class RenderError(Exception):
    """A user-facing error: printed without a traceback."""


def read_digest(path: Path) -> str:
    """Return the `sha256:<64 hex>` held by a .digest file, or fail naming the file."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise RenderError(f"cannot read digest file {path}: {err.strerror}") from None
    if not DIGEST_RE.fullmatch(text):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise RenderError(f"digest file {path} must hold 'sha256:<64 lowercase hex>', got {shown!r}")
    return text


def check_registry(registry: str) -> str:
    registry = registry.rstrip("/")
    if not REGISTRY_RE.fullmatch(registry):
        raise RenderError(
            f"invalid --registry {registry!r}: expected host[:port][/path] without scheme or tag,"
            " e.g. localhost:5000 or registry.example.com/team"
        )
    return registry


def kustomize_command() -> list[str]:
    """`kustomize build` if installed, else `kubectl kustomize`."""
    if exe := shutil.which("kustomize"):
        return [exe, "build"]
    if exe := shutil.which("kubectl"):
        return [exe, "kustomize"]
    raise RenderError(
        "neither `kustomize` nor `kubectl` was found on PATH; install one of them"
        " (Debian packages `kustomize` or `kubectl`)"
    )


def render(digests: dict[str, str], registry: str, components: list[str]) -> str:
    """Build the overlay and return the rendered YAML stream."""
    unknown = sorted(set(components) - set(COMPONENTS))
    if unknown:
        raise RenderError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
    command = kustomize_command()
    with tempfile.TemporaryDirectory(prefix="churn-k8s-") as tmp:
        # Real copies (symlinks followed): kustomize refuses files that resolve outside the
        # kustomization root, which is what Bazel's symlinked runfiles and sandboxes do.
        shutil.copytree(HERE / "base", Path(tmp, "base"))
        shutil.copytree(HERE / "components", Path(tmp, "components"))
        overlay = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["../base"],
            "components": [f"../components/{c}" for c in COMPONENTS if c in components],
            "images": [
                {"name": name, "newName": f"{registry}/{repo}", "digest": digests[name]}
                for name, repo in IMAGES.items()
            ],
        }
        Path(tmp, "overlay").mkdir()
        Path(tmp, "overlay", "kustomization.yaml").write_text(json.dumps(overlay, indent=2))
        proc = subprocess.run(
            [*command, str(Path(tmp, "overlay"))], capture_output=True, text=True, check=False
        )
    if proc.returncode != 0:
        raise RenderError(f"{' '.join(command)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    check_images(proc.stdout, registry, digests)
    return proc.stdout


def check_images(stream: str, registry: str, digests: dict[str, str]) -> None:
    """Every `image:` must be one of the two pinned references (catches a misspelt placeholder)."""
    allowed = {f"{registry}/{IMAGES[name]}@{digest}" for name, digest in digests.items()}
    for ref in re.findall(r"^\s*-?\s*image:\s*(\S+)\s*$", stream, flags=re.MULTILINE):
        if ref.strip("'\"") not in allowed:
            raise RenderError(f"image {ref!r} is not pinned by render.py: use a placeholder of {sorted(IMAGES)}")


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_path(arg: str) -> Path:
    """A relative --output given to `bazel run` means relative to where the user ran it
    (the tool itself stays in its runfiles directory: its manifests are runfiles-relative)."""
    return from_invocation(arg)


def add_render_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-digest-file", required=True, type=Path, metavar="FILE",
                        help="file holding sha256:<hex> of the API image")
    parser.add_argument("--ml-digest-file", required=True, type=Path, metavar="FILE",
                        help="file holding sha256:<hex> of the ML jobs image")
    parser.add_argument("--registry", default=DEFAULT_REGISTRY,
                        help=f"registry (and path) the cluster pulls from (default {DEFAULT_REGISTRY})")
    parser.add_argument("--component", action="append", default=[], choices=COMPONENTS,
                        help="also apply this kustomize component (repeatable)")


def render_from_args(args: argparse.Namespace) -> str:
    digests = {"churn-api": read_digest(args.api_digest_file), "churn-ml": read_digest(args.ml_digest_file)}
    return render(digests, check_registry(args.registry), args.component)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_render_args(parser)
    parser.add_argument("--output", type=output_path, metavar="FILE", help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        stream = render_from_args(args)
    except RenderError as err:
        print(f"render: error: {err}", file=sys.stderr)
        return 1
    if args.output:
        write_atomically(args.output, stream)
    else:
        sys.stdout.write(stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
