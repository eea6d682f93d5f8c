"""Stale outputs are noticed through the input digests every output records."""

from __future__ import annotations

import json
from pathlib import Path

import faultkit as fk


def test_stale_inputs_are_refused_and_stale_predictions_reported(tmp_path: Path) -> None:
    cli = fk.load_cli()
    root = fk.seed_root(cli, tmp_path / "root")
    config = fk.write_config(root)
    assert fk.run_cli(cli, config, ["generate", "--simulate-shift"]).code == 0  # new raw data
    run = fk.run_cli(cli, config, ["features"])  # processed/ still from the old raw data
    assert run.code == 1 and "processed" in run.stderr and "stale" in run.stderr, run.stderr
    assert "rerun `ml_jobs prepare`" in run.stderr
    for step in ("validate", "prepare"):
        assert fk.run_cli(cli, config, [step]).code == 0, step
    for step in ("labels", "batch-score", "drift-check"):  # features/ is from the old processed/
        run = fk.run_cli(cli, config, [step])
        assert run.code == 1 and "features" in run.stderr and ("rerun `ml_jobs features`" in run.stderr or "rerun `ml_jobs update`" in run.stderr), (step, run.stderr)
    assert fk.run_cli(cli, config, ["features"]).code == 0
    assert fk.run_cli(cli, config, ["labels"]).code == 0
    # the bootstrap's predictions were scored from features that are no longer current
    assert fk.run_cli(cli, config, ["score-distribution"]).code == 0
    report = json.loads(next((root / "monitoring" / "score_distribution").glob("*.json")).read_text())
    assert any("features/" in why for why in report["stale_inputs"]), report["stale_inputs"]
