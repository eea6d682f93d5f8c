"""Render the churn-mlops manifests and apply them to the current kubectl context.

    apply.py --api-digest-file F --ml-digest-file F [--registry R] [--component C]...
             [--dry-run]

Prints what it applies (kind/name), then runs `kubectl apply --server-side -f -`.
Jobs are immutable once created: a Job that already exists in the cluster (e.g. the
bootstrap Job) is left out, with a note. --dry-run prints the rendered stream on stdout and
calls no kubectl at all.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

# render.py sits beside this file; said explicitly because with PYTHONSAFEPATH (set by
# some Python launchers) the script's own directory is not on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
import render  # noqa: E402

FIELD_MANAGER = "churn-mlops"


def describe(doc: dict) -> str:
    meta = doc.get("metadata", {})
    where = f" -n {meta['namespace']}" if "namespace" in meta else ""
    return f"{doc['kind']}/{meta['name']}{where}"


def existing_jobs(kubectl: str, jobs: list[dict]) -> set[str]:
    """Names of the given Jobs that already exist in the cluster."""
    found = set()
    for job in jobs:
        meta = job["metadata"]
        proc = subprocess.run(
            [kubectl, "get", "job", meta["name"], "-n", meta["namespace"], "--ignore-not-found", "-o", "name"],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise render.RenderError(f"kubectl get job {meta['name']} failed:\n{proc.stderr.strip()}")
        if proc.stdout.strip():
            found.add(meta["name"])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    render.add_render_args(parser)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the rendered stream only; do not call kubectl apply")
    args = parser.parse_args(argv)
    try:
        stream = render.render_from_args(args)
        if args.dry_run:
            sys.stdout.write(stream)
            return 0
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            raise render.RenderError("`kubectl` was not found on PATH (Debian package `kubectl`)")
        # (text, parsed) per document, so that exactly the rendered text is applied
        chunks = [c for c in re.split(r"^---[ \t]*$", stream, flags=re.MULTILINE) if c.strip()]
        docs = [(c, yaml.safe_load(c)) for c in chunks]
        skip = existing_jobs(kubectl, [d for _, d in docs if d["kind"] == "Job"])
        docs = [(c, d) for c, d in docs if not (d["kind"] == "Job" and d["metadata"]["name"] in skip)]
    except render.RenderError as err:
        print(f"apply: error: {err}", file=sys.stderr)
        return 1
    for name in sorted(skip):
        print(f"skip   Job/{name}: exists already (Jobs are immutable; delete it to run it again)",
              file=sys.stderr)
    for _, doc in docs:
        print(f"apply  {describe(doc)}", file=sys.stderr)
    proc = subprocess.run(
        [kubectl, "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-"],
        input="---\n".join(c.strip("\n") + "\n" for c, _ in docs), text=True, check=False,
    )
    if proc.returncode != 0:
        print(f"apply: error: kubectl apply failed (exit {proc.returncode})", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
