"""The real `ml_jobs` CLI in a subprocess on a tiny config: shared by the CLI's test files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from churn.pipeline.testing import TINY_YAML

MAIN = Path(__file__).with_name("main.py")


class Cli:
    """Runs `ml_jobs --config <tiny config for root> ...` and keeps the data root at hand."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root.parent / f"{root.name}.yaml"
        self.config.write_text(TINY_YAML.format(root=root, users=300, days=90))

    def _command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        env.pop("CHURN_DATA_ROOT", None)
        env.pop("CHURN_MLOPS_CONFIG", None)
        return [sys.executable, str(MAIN), "--config", str(self.config), *args], env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        command, env = self._command(*args)
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The command running in the background (several at once, as the pods of a Job)."""
        command, env = self._command(*args)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result

    def copy(self, root: Path) -> "Cli":
        """A Cli on a copy of this data root at `root` (a test's private root, or a reference run)."""
        shutil.copytree(self.root, root, symlinks=True)
        return Cli(root)

    def history(self) -> list[dict]:
        path = self.root / "registry" / "history.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def production(self) -> str:
        return json.loads((self.root / "registry" / "aliases" / "production.json").read_text())["version"]
