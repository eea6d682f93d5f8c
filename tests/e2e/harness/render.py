"""Render the manifests with k8s/render.py, pinned to the local registry and the built digests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from harness.proc import run


def render(render_script: Path, api_digest_file: Path, ml_digest_file: Path, registry: str, output: Path,
           components: tuple[str, ...] = ()) -> str:
    """Run render.py (the real one, from the test's runfiles) and return the YAML stream."""
    cmd = [str(render_script)] if render_script.suffix != ".py" else [sys.executable, str(render_script)]
    run(cmd + ["--api-digest-file", str(api_digest_file), "--ml-digest-file", str(ml_digest_file),
               "--registry", registry, "--output", str(output)] + [f"--component={c}" for c in components],
        timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))  # render.py imports churn.invocation
    return output.read_text()
