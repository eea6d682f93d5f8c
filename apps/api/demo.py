"""`bazel run //:demo`: bootstrap the data root if it has no production model, then serve the API.

Why the bootstrap runs in a child process (`ml_jobs bootstrap`): the pipeline needs pandas and
builds large frames; the serving process stays as lean as in production (no pandas,
no leftover training memory). The API then starts exactly as `//apps/api` does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from apps.api import main as api_main
from churn.config.settings import load_config
from churn.invocation.workdir import enter_invocation_directory
from churn.registry.registry import ModelRegistry


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (default: $CHURN_MLOPS_CONFIG, else built-in defaults)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--force-bootstrap", action="store_true",
                        help="bootstrap even if the data root already holds data (but no production model)")
    return parser.parse_args(argv)


def has_production_model(root: str) -> bool:
    return ModelRegistry(root).get_alias("production") is not None


def ml_jobs_command() -> list[str]:
    """The `ml_jobs` binary beside us in Bazel's runfiles, else its module (dev checkout)."""
    launcher = Path(__file__).parent.parent / "ml_jobs" / "ml_jobs"  # runfiles path, not resolved
    if launcher.is_file() and os.access(launcher, os.X_OK):
        return [str(launcher)]
    return [sys.executable, "-m", "apps.ml_jobs.main"]


def bootstrap(config: str | None, force: bool) -> int:
    """Run `ml_jobs bootstrap` in a child process."""
    command = ml_jobs_command()
    if config:
        command += ["--config", config]
    command += ["bootstrap"] + (["--force"] if force else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(command, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    enter_invocation_directory()
    args = parse_args(argv)
    root = load_config(args.config).paths.root
    if not has_production_model(root):
        print(f"demo: no production model under {root}: running `ml_jobs bootstrap` (about a minute)", file=sys.stderr)
        code = bootstrap(args.config, args.force_bootstrap)
        if code != 0 or not has_production_model(root):
            print(f"demo: bootstrap failed (exit {code}); see above. An existing, partial data root needs "
                  "--force-bootstrap.", file=sys.stderr)
            return code or 1
    print(f"demo: serving {root} on http://{args.host}:{args.port} (docs: /docs)", file=sys.stderr)
    api_args = ["--host", args.host, "--port", str(args.port)] + (["--config", args.config] if args.config else [])
    return api_main.main(api_args)


if __name__ == "__main__":
    raise SystemExit(main())
