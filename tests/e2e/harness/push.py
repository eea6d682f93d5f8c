"""Push an image with the build's own `:push` executable and check what landed in the registry."""

from __future__ import annotations

import re
from pathlib import Path

from harness.proc import log, run

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def read_digest(path: Path) -> str:
    text = path.read_text().strip()
    if not DIGEST_RE.fullmatch(text):
        raise ValueError(f"{path}: not a sha256 digest: {text[:80]!r}")
    return text


def push(executable: Path, repository: str, tag: str, timeout: float = 300) -> str:
    """Run `executable -r REPOSITORY -t TAG`; return the digest it printed (the last one)."""
    proc = run([str(executable), "-r", repository, "-t", tag], timeout=timeout)
    found = DIGEST_RE.findall(proc.stdout) or DIGEST_RE.findall(proc.stderr)
    if not found:
        raise AssertionError(f"{executable} printed no digest:\n{proc.stdout}\n{proc.stderr}")
    log(f"pushed {repository}:{tag} = {found[-1]}")
    return found[-1]
