"""The directory the user ran a command in: where every relative path of a binary resolves.

`bazel run` starts a binary inside its runfiles tree and names the directory the user ran the
command in in BUILD_WORKING_DIRECTORY (Bazel's convention for `bazel run`). Without this, the
README's `./bazelw run //apps/ml_jobs -- seed` would write `./var` deep inside Bazel's output
base and a relative `--config` would not be found. Outside Bazel (tests, images, a plain
`python -m`) the variable is absent and the current directory is already the right one.

Two ways to use it, one source for both:
- `enter_invocation_directory()` at the start of `main` for binaries that read no runfiles by
  relative path (ml_jobs, the API, the demo, the benches): every relative path, `./var`,
  `--config`, `CHURN_DATA_ROOT`, then means what the user typed;
- `from_invocation(path)` for tools that stay in their runfiles directory because their own
  inputs are runfiles-relative (k8s render and apply), for the paths the user gives them.
"""

from __future__ import annotations

import os
from pathlib import Path

WORKING_DIRECTORY_ENV = "BUILD_WORKING_DIRECTORY"


def invocation_directory() -> Path:
    """The user's directory under `bazel run`, else the current directory."""
    directory = os.environ.get(WORKING_DIRECTORY_ENV)
    return Path(directory) if directory else Path.cwd()


def enter_invocation_directory() -> Path:
    """Change into the user's directory; exit with a message naming it when it is not there."""
    directory = invocation_directory()
    try:
        os.chdir(directory)
    except OSError as err:
        raise SystemExit(
            f"error: cannot enter the directory the command was run in ({directory}, from "
            f"{WORKING_DIRECTORY_ENV}): {err.strerror}"
        ) from err
    return directory


def from_invocation(path: str | os.PathLike[str]) -> Path:
    """`path` as the user meant it: relative paths resolve from the user's directory."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else invocation_directory() / candidate
