"""score-distribution noticing scores of stale inputs, through the real `ml_jobs` CLI (#14).

One tiny root is bootstrapped; the features are then recomputed (another config's windows)
and another model is promoted, for real: no mocks. Broken once (`recorded_inputs.is_stale`
answering False): no warning, `stale_inputs` empty, the test failed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from churn.storage import generations

from cli_testing import Cli


def distribution(cli: Cli) -> tuple[str, dict]:
    """The newest predictions' day and its score-distribution report as written."""
    path = max((cli.root / "monitoring" / "score_distribution").glob("*.json"))
    return path.stem, json.loads(path.read_text())


def recorded(cli: Cli, day: str) -> dict:
    return generations.read_manifest((cli.root / "predictions" / day).resolve())["inputs"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("stale") / "root")
    cli.ok("bootstrap")
    return cli


def feature_files(cli: Cli) -> dict[str, str]:
    """{day file: sha256} of the current features (what the recorded digest is made of)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((cli.root / "tables" / "features.parquet").glob("*.parquet"))}


def test_rerunning_features_labels_or_update_on_unchanged_data_flags_nothing(cli: Cli) -> None:
    """One encoding of day files (`daytables.DayFiles`): `features` and `labels` recomputing
    every day of unchanged data write the bytes `update` wrote, so the scores' recorded features
    digest is still the current one. Seen failing before the fix: `features` wrote pandas'
    `to_parquet` and score-distribution warned that every score was stale."""
    cli.ok("score-distribution")
    day, report = distribution(cli)
    assert report["stale_inputs"] == {}
    before = feature_files(cli)
    cli.ok("features")
    cli.ok("labels")
    updated = cli.ok("update")
    assert "no new data" in updated.stdout + updated.stderr
    assert feature_files(cli) == before, "features rerun on unchanged data wrote other bytes"
    again = cli.ok("score-distribution")
    assert distribution(cli)[0] == day and distribution(cli)[1]["stale_inputs"] == {}
    assert "WARNING" not in again.stdout + again.stderr


def test_score_distribution_warns_on_recomputed_features_and_another_model(cli: Cli) -> None:
    fresh = cli.ok("score-distribution")
    day, report = distribution(cli)
    assert report["stale_inputs"] == {} and "WARNING" not in fresh.stdout + fresh.stderr
    inputs = recorded(cli, day)

    original = cli.config.read_text()
    cli.config.write_text(original + "features: {windows_days: [7, 14]}\n")  # every day recomputed, other bytes
    cli.ok("features")
    cli.config.write_text(original)
    stale = cli("score-distribution")
    assert stale.returncode == 0, stale.stdout + stale.stderr  # exit unchanged: a warning
    _, report = distribution(cli)
    features = report["stale_inputs"]["features"]
    assert features["recorded"] == inputs["features"] and features["current"] != inputs["features"]
    assert set(report["stale_inputs"]) == {"features"}
    assert (f"WARNING churn.monitoring.scores: {cli.root / 'predictions' / day}: scored from features "
            f"{inputs['features']}, the current features is {features['current']}") in stale.stderr
    assert stale.stdout.startswith(f"WARNING: predictions {day}: features {inputs['features']} recorded, "
                                   f"{features['current']} now (run `ml_jobs batch-score`)")

    cli.ok("features")  # the original windows again: the same rows, so the same bytes: current again
    assert distribution(cli)[1]["stale_inputs"]["features"]["current"] != inputs["features"]
    cli.ok("score-distribution")
    assert distribution(cli)[1]["stale_inputs"] == {}
    cli.ok("batch-score")
    cli.ok("score-distribution")
    assert distribution(cli)[1]["stale_inputs"] == {}

    production = cli.production()
    cards = sorted(p.parent.name for p in (cli.root / "registry" / "models").glob("*/card.json"))
    other = next(v for v in cards if v != production)
    cli.ok("promote", "--version", other, "--force", "--reason", "test: another model")
    stale = cli("score-distribution")
    assert stale.returncode == 0
    _, report = distribution(cli)
    assert report["stale_inputs"] == {"model": {"recorded": production, "current": other}}
    assert f"scored from model {production}, the current model is {other}" in stale.stderr

    cli.ok("batch-score")  # scored again with the current model: nothing stale
    again = cli.ok("score-distribution")
    assert distribution(cli)[1]["stale_inputs"] == {} and "WARNING" not in again.stdout


def test_a_merged_day_records_the_features_its_shards_read_and_is_compared_too(cli: Cli) -> None:
    """`merge-shards` publishes the day again with its shards' files as inputs; it also
    records the features digest every shard read (each shard's summary names it, and shards
    of two states of the tables are refused), so score-distribution compares a merged day's
    features as well. Broken once (merge recording no features): no warning."""
    for i in range(2):
        cli.ok("batch-score", "--shard", f"{i}/2")
    cli.ok("merge-shards", "2")
    cli.ok("score-distribution")
    day, _ = distribution(cli)
    inputs = recorded(cli, day)
    assert {"shard 0/2", "shard 1/2", "features", "model_version"} <= set(inputs)
    assert distribution(cli)[1]["stale_inputs"] == {}
    original = cli.config.read_text()
    cli.config.write_text(original + "features: {windows_days: [7, 14]}\n")
    cli.ok("features")
    cli.config.write_text(original)
    stale = cli.ok("score-distribution")
    assert distribution(cli)[1]["stale_inputs"]["features"]["recorded"] == inputs["features"]
    assert stale.stdout.startswith(f"WARNING: predictions {day}: features {inputs['features']} recorded")
