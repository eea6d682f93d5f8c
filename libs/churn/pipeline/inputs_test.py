"""Readers bound to the bytes that were checked, and readers noticing stale inputs (#14).

One tiny root (200 users, 90 days) is bootstrapped once; each test works on a copy (the
generation pointers are relative symlinks, copied as links). Files are really replaced and
really republished: no mocks.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from churn.errors import DataError, StaleInput
from churn.pipeline import steps
from churn.pipeline.testing import tiny_settings
from churn.raw.store import day_files, raw_digest
from churn.registry.registry import ModelRegistry
from churn.storage import generations
from churn.storage.paths import DataPaths


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeded") / "root"
    results = steps.bootstrap(tiny_settings(root, users=200, days=90))
    assert all(r.exit_code == 0 for r in results), [r.message for r in results]
    return root


@pytest.fixture()
def root(seeded: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "root"
    shutil.copytree(seeded, dest, symlinks=True)
    return dest


def _replace_part(paths: DataPaths, day_index: int) -> Path:
    """Rewrite one committed raw part in place with other (still valid) values."""
    part = list(day_files(paths).values())[day_index][0]
    frame = pq.read_table(part).to_pandas()
    frame["watch_minutes"] = frame["watch_minutes"].fillna(0) + 1.0
    frame.to_parquet(part, index=False)
    return part


def test_prepare_and_update_refuse_a_raw_part_replaced_after_validation(root: Path) -> None:
    """The verdict names the raw digest of the manifest's recorded file digests; `prepare` and a
    full `update` read each part once and compare its bytes: a part replaced after validation
    is one line naming it, never used. Broken once (the store's comparison disabled): both
    steps read the replaced part and published tables from it."""
    settings = tiny_settings(root, users=200, days=90)
    paths = DataPaths.from_root(root)
    part = _replace_part(paths, 10)
    for run in (lambda: steps.step_prepare(settings),
                lambda: steps.step_update(dataclasses.replace(  # another shape: a full rebuild reads every part
                    settings, features=dataclasses.replace(settings.features, windows_days=(7, 14))))):
        tables_before = (root / "tables").resolve()
        with pytest.raises(DataError) as err:
            run()
        assert str(err.value).startswith(f"{part}: changed since its raw batch was committed") and "\n" not in str(err.value)
        assert (root / "tables").resolve() == tables_before  # nothing published


def test_train_refuses_a_training_set_of_older_tables(root: Path) -> None:
    """The training set records the tables generation it was sampled from; after another
    publish of the tables `train` refuses it, naming both generations and the command. Broken
    once (the comparison removed from step_train): the model was trained on the old set."""
    settings = tiny_settings(root, users=200, days=90)
    before = (root / "tables").resolve().name
    assert steps.step_features(settings).exit_code == 0  # publishes another tables generation
    now = (root / "tables").resolve().name
    assert now != before
    versions = ModelRegistry(root).versions()
    with pytest.raises(StaleInput, match=f"training_set.parquet: sampled from tables generation {before}, "
                                         f"the current one is {now} .*run `ml_jobs training-set`, then `ml_jobs train`"):
        steps.step_train(settings)
    assert ModelRegistry(root).versions() == versions  # nothing registered
    assert steps.step_training_set(settings).exit_code == 0
    assert steps.step_train(settings).exit_code == 0


def test_the_gate_refuses_a_holdout_that_is_not_the_registered_one(root: Path) -> None:
    """A model card records the sha256 of its holdout; the holdout gate evaluates only those
    bytes: a holdout replaced after registration is refused, naming the file, production
    unchanged. Broken once (the gate reading the file by path): the candidate was evaluated
    on the replaced holdout."""
    settings = tiny_settings(root, users=200, days=90)
    registry = ModelRegistry(root)
    production = registry.alias_record()["version"]
    candidate = next(v for v in steps.last_complete_run(DataPaths.from_root(root))["versions"] if v != production)
    holdout = registry.version_dir(candidate) / "holdout.npz"
    with np.load(holdout) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["y"] = 1.0 - arrays["y"]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    holdout.write_bytes(buf.getvalue())
    with pytest.raises(StaleInput, match=f"{holdout}: not the file version {candidate} was registered with"):
        steps.step_promote(settings, version=candidate)
    assert registry.alias_record()["version"] == production


def test_scoring_and_drift_warn_on_tables_of_older_raw_data_and_the_cycle_clears_it(root: Path) -> None:
    """After a new raw batch and before `update`, batch-score and drift-check run (exit as
    usual) with a warning naming the tables' generation, the raw digest they were computed
    from and the current one, and `ml_jobs update`; after the update the warning is gone.
    Broken once (the comparison removed): no warning."""
    settings = tiny_settings(root, users=200, days=90)
    paths = DataPaths.from_root(root)
    assert steps.step_generate_next(settings, 1).exit_code == 0
    assert steps.step_ingest_inbox(settings).exit_code == 0
    generation = (root / "tables").resolve().name
    for result in (steps.step_batch_score(settings), steps.step_drift_check(settings)):
        assert result.exit_code in (0, 2)
        warning = result.detail["stale_tables"]
        assert warning and f"generation {generation} was computed from raw data" in warning
        assert f"the raw data now is {raw_digest(paths)[:12]}" in warning and "run `ml_jobs update`" in warning
        assert result.message.startswith(f"WARNING: {warning}")
    assert steps.step_update(settings).exit_code == 0
    assert steps.step_batch_score(settings).detail["stale_tables"] is None


def test_a_published_parquet_file_changed_in_place_is_refused_by_its_reader(root: Path) -> None:
    """`storage.tables.read_parquet` reads a file once and checks it against its generation's
    MANIFEST: a day's scores (read by score-distribution) and the tables' users snapshot (read
    by update) changed in place are one error naming the file. Broken once (read_parquet
    parsing the path again): both were read."""
    settings = tiny_settings(root, users=200, days=90)
    scores = next((root / "predictions").glob("*/scores.parquet"))
    frame = pq.read_table(scores).to_pandas()
    frame["risk"] = 1.0 - frame["risk"]
    frame.to_parquet(scores.resolve(), index=False)
    with pytest.raises(DataError, match="scores.parquet: changed since it was published"):
        steps.step_score_distribution(settings)
    snapshot = (root / "tables" / "users.parquet").resolve()
    users = pq.read_table(snapshot).to_pandas()
    users.iloc[::-1].to_parquet(snapshot, index=False)
    assert steps.step_generate_next(settings, 1).exit_code == 0
    assert steps.step_ingest_inbox(settings).exit_code == 0
    with pytest.raises(DataError, match="users.parquet: changed since it was published"):
        steps.step_update(settings)


def test_drift_check_warns_when_its_inputs_changed_while_it_ran(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """drift-check compares what it records (the features digest of its windows, the model
    version) with the state current when it publishes, as score-distribution does for the
    scores: run alone, nothing is stale; with the features recomputed (other windows) and
    another model promoted while it reads the features (the storage layer's `after_check`
    hook runs them, for real, after its first checked read), the report, the step's detail and
    message and a log WARNING name both inputs and both values; the exit code is the one of
    the same drift without them. Broken once (the check left out of step_drift_check): no
    warning, `stale_inputs` empty."""
    from churn.storage import faults

    settings = tiny_settings(root, users=200, days=90)
    quiet = steps.step_drift_check(settings)
    assert quiet.detail["stale_inputs"] == {} and "WARNING" not in quiet.message
    report_path = Path(quiet.outputs[0])
    assert json.loads(report_path.read_text())["stale_inputs"] == {}
    registry = ModelRegistry(root)
    production = registry.get_alias()
    other = next(v for v in registry.versions() if v != production)
    other_windows = dataclasses.replace(settings, features=dataclasses.replace(settings.features, windows_days=(7, 14)))
    ran: list[str] = []

    def meanwhile(op: str, path: Path) -> None:
        if not ran:  # once, after drift-check's first checked read of the features
            ran.append(str(path))
            assert steps.step_features(other_windows).exit_code == 0
            assert steps.step_promote(settings, version=other, force=True, reason="test: meanwhile").exit_code == 0

    with faults.after_check(meanwhile):
        stale = steps.step_drift_check(settings)
    assert ran and stale.exit_code == quiet.exit_code
    found = stale.detail["stale_inputs"]
    assert set(found) == {"features", "model"}
    assert found["model"] == {"recorded": production, "current": other}
    recorded = generations.read_manifest((root / "monitoring" / "drift").resolve())["inputs"]
    assert found["features"]["recorded"] == recorded["features"] != found["features"]["current"]
    assert json.loads(report_path.read_text())["stale_inputs"] == found
    day = report_path.stem
    assert stale.message.startswith(f"WARNING: drift report {day}: features {recorded['features']} recorded, "
                                    f"{found['features']['current']} now")
    assert f"model {production} recorded, {other} now" in stale.message
    assert any(r.levelname == "WARNING" and f"computed from model {production}, the current model is {other}"
               in r.getMessage() for r in caplog.records)
