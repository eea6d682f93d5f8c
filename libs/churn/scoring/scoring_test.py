"""Scoring: scores stay with their users, equal predict_proba per row, outputs and shards."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from churn.compiled.check_rows import edge_rows
from churn.features.matrix import frame_matrix
from churn.features.rows import eligible_mask, feature_dates, read_features
from churn.features.schema import encode_records, feature_names, feature_specs
from churn.monitoring.scores import score_distribution
from churn.pipeline import steps
from churn.pipeline.testing import tiny_settings
from churn.registry.registry import ModelRegistry
from churn.sampling.users import parse_shard, shard_of
from churn.scoring.batch import batch_score, load_production, model_scorer, rank_scores, read_scores, score_frame
from churn.scoring.merge import Shard, check_run
from churn.storage.files import DataError
from churn.storage.paths import DataPaths
from churn.storage.tables import read_parquet
from churn.training.models import predict_risk

SPECS = feature_specs()


@pytest.fixture(scope="module")
def bootstrapped(tmp_path_factory):
    settings = tiny_settings(tmp_path_factory.mktemp("data"))
    # not the default 0.5: the score distribution must use the model's own threshold
    settings = dataclasses.replace(settings, training=dataclasses.replace(settings.training, threshold=0.35))
    results = steps.bootstrap(settings)
    assert [r.exit_code for r in results] == [0] * len(results)
    paths = DataPaths.from_root(settings.paths.root)
    registry = ModelRegistry(paths.root)
    return settings, paths, registry, load_production(registry)


@pytest.fixture(scope="module")
def latest(bootstrapped):
    _, paths, _, _ = bootstrapped
    features = read_features(paths.features_file, [feature_dates(paths.features_file)[-1]])
    assert len(features) > 100
    return features


def test_scores_follow_their_users_when_rows_are_shuffled(bootstrapped, latest):
    loaded = bootstrapped[3]
    first = score_frame(loaded, latest)
    shuffled = latest.sample(frac=1.0, random_state=7)
    shuffled.index = np.arange(len(shuffled))[::-1] * 3  # an index that alignment would trip on
    second = score_frame(loaded, shuffled)
    assert first["risk"].notna().all() and second["risk"].notna().all()
    merged = first.merge(second, on="user_id", validate="one_to_one")
    assert len(merged) == len(latest)
    assert np.array_equal(merged["risk_x"].to_numpy(), merged["risk_y"].to_numpy())
    assert np.array_equal(second["user_id"].to_numpy(), shuffled["user_id"].to_numpy())


def test_risk_equals_predict_proba_of_each_users_own_row(bootstrapped, latest):
    loaded = bootstrapped[3]
    scores = score_frame(loaded, latest).set_index("user_id")["risk"]
    sample = latest.sample(n=40, random_state=3)
    records = sample[feature_names(SPECS)].astype(object).where(sample[feature_names(SPECS)].notna(), None)
    for user_id, record in zip(sample["user_id"], records.to_dict("records")):
        row = encode_records(SPECS, [record])
        expected = loaded.model.predict_proba(row)[0, list(loaded.model.classes_).index(1)]
        assert scores[user_id] == pytest.approx(expected, abs=1e-12), user_id


def test_batch_score_writes_ranked_scores_top_k_and_summary(bootstrapped):
    settings, paths, registry, loaded = bootstrapped
    result = batch_score(paths, registry, settings.churn.window_days, top_k=10)
    scores = read_parquet(result.scores_path)
    assert list(scores.columns) == ["user_id", "as_of_date", "risk", "rank", "model_version"]
    assert scores["user_id"].is_unique and scores["risk"].between(0, 1).all()
    assert scores["rank"].tolist() == list(range(1, len(scores) + 1))
    assert scores["risk"].is_monotonic_decreasing
    assert set(scores["model_version"]) == {loaded.version}
    top = pd.read_csv(result.top_k_path)
    assert top["user_id"].tolist() == scores["user_id"].head(10).tolist()
    summary = json.loads(open(result.summary_path).read())
    assert summary["rows"] == len(scores) == result.eligible
    assert result.eligible < result.candidates  # already-churned users are not scored


def test_eligibility_rule_matches_the_label_population(bootstrapped):
    settings, paths, _, _ = bootstrapped
    features = read_parquet(paths.features_file)
    labels = read_parquet(paths.labels_file)  # the label population (the training set is a sample of it)
    labels = labels[labels["as_of_date"] >= features["as_of_date"].min()]
    last_labelled = labels["as_of_date"].max()
    keep = eligible_mask(features, settings.churn.window_days) & (features["as_of_date"] <= last_labelled).to_numpy()
    eligible = set(zip(features["user_id"][keep], features["as_of_date"][keep]))
    assert eligible == set(zip(labels["user_id"], labels["as_of_date"]))


def test_fast_linear_scorer_equals_predict_proba_and_is_batch_invariant(bootstrapped, latest):
    loaded = bootstrapped[3]
    scorer = model_scorer(loaded)
    assert loaded.card["model_kind"] == "logistic_regression" and scorer.kind == "linear"
    X = np.vstack([frame_matrix(latest, SPECS), edge_rows(SPECS, seed=9)])
    fast = scorer.risk(X)
    assert np.max(np.abs(fast - predict_risk(loaded.model, X))) <= 1e-12
    assert np.array_equal(fast[:5], scorer.risk(X[:5]))


def test_boosted_trees_score_through_sklearn_in_batch(bootstrapped):
    """The tree path is slower than predict_proba on large batches: batch scoring keeps sklearn."""
    _, _, registry, loaded = bootstrapped
    other = next(v for v in registry.versions() if v != loaded.version)
    candidate = registry.load(other)
    scorer = model_scorer(candidate)
    X = edge_rows(SPECS)
    assert candidate.card["model_kind"] == "hist_gradient_boosting" and scorer.kind == "sklearn"
    assert np.array_equal(scorer.risk(X), predict_risk(candidate.model, X))


def test_shards_partition_users_and_parse_errors():
    ids = np.arange(1, 5001)
    shards = shard_of(ids, 4)
    assert set(shards.tolist()) == {0, 1, 2, 3}
    assert all(500 < (shards == i).sum() < 2000 for i in range(4))
    assert np.array_equal(shards, shard_of(ids[::-1], 4)[::-1])  # per user, not per position
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x/2", "1", "-1/3"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_rank_breaks_ties_by_user_id():
    scores = pd.DataFrame({"user_id": [5, 3, 9], "as_of_date": pd.Timestamp("2025-01-01"), "risk": [0.5, 0.5, 0.9]})
    ranked = rank_scores(scores, "v1")
    assert ranked["user_id"].tolist() == [9, 3, 5] and ranked["rank"].tolist() == [1, 2, 3]


def test_merge_checks_name_the_shard_that_does_not_belong_to_the_run():
    day, ids = dt.date(2025, 1, 1), np.arange(1, 201)
    halves = [ids[shard_of(ids, 2) == i] for i in range(2)]

    def shard(i: int, users: np.ndarray, **summary) -> Shard:
        scores = pd.DataFrame({"user_id": users, "as_of_date": pd.Timestamp(day), "risk": 0.5,
                               "rank": np.arange(1, len(users) + 1), "model_version": "v1"})
        return Shard(i, 2, scores, {"as_of": "2025-01-01", "model_version": "v1", "eligible": 200,
                                    "candidates": 250, **summary})

    good = [shard(0, halves[0]), shard(1, halves[1])]
    assert check_run(good, day) == {"as_of": "2025-01-01", "model_version": "v1", "eligible": 200, "candidates": 250,
                                    "features_digest": None}  # shards from before record no features
    bad = {r"shard 1/2 .*model_version 'v2'": shard(1, halves[1], model_version="v2"),
           r"shard 1/2 .*features_digest 'b', the run with None.*one state of the tables": shard(
               1, halves[1], features_digest="b"),
           r"shard 1/2 .*eligible 180": shard(1, halves[1], eligible=180),
           r"shard 1/2 .*users of other shards": shard(1, halves[0]),
           r"199 users, but 200 were eligible": shard(1, halves[1][1:])}
    for message, second in bad.items():
        with pytest.raises(DataError, match=message):
            check_run([good[0], second], day)
    with pytest.raises(DataError, match=r"shard 0/2 .*as_of '2025-01-01'"):
        check_run(good, dt.date(2025, 1, 2))


def test_score_distribution_uses_the_scoring_models_threshold(bootstrapped):
    _, paths, registry, loaded = bootstrapped
    assert loaded.card["threshold"] == 0.35
    _, report = score_distribution(paths, registry)
    _, scores = read_scores(paths)
    assert report["threshold"] == 0.35
    assert report["share_above_threshold"] == pytest.approx(float((scores["risk"] >= 0.35).mean()))
    assert report["reference"]["holdout_flagged_share"] == loaded.card["metrics"]["flagged_share"]


def _outputs(result) -> tuple[pd.DataFrame, bytes, dict]:
    summary = json.loads(open(result.summary_path).read())
    summary.pop("seconds")
    return read_parquet(result.scores_path), open(result.top_k_path, "rb").read(), summary


def test_batch_score_in_pieces_writes_the_files_of_one_piece(bootstrapped):
    """Scored 20 rows at a time (also as shard 1/3 of an Indexed Job), the scores (every
    user, rank and risk), the top-K and the summary equal those of the day read whole."""
    settings, paths, registry, _ = bootstrapped
    day = feature_dates(paths.features_file)[-1]
    for shard in (None, (1, 3)):
        whole = _outputs(batch_score(paths, registry, settings.churn.window_days, top_k=10, shard=shard,
                                     rows_at_once=10**9))
        pieces = _outputs(batch_score(paths, registry, settings.churn.window_days, top_k=10, shard=shard,
                                      rows_at_once=20))
        pd.testing.assert_frame_equal(pieces[0], whole[0])
        assert pieces[1:] == whole[1:] and whole[2]["rows"] == len(whole[0]) > 20 * 3
        if shard is None:  # ... and the read of the whole day before pieces
            features = read_features(paths.features_file, [day])
            assert whole[2]["candidates"] == len(features)
            assert whole[2]["eligible"] == int(eligible_mask(features, settings.churn.window_days).sum())


def test_feature_batches_are_the_day_in_pieces(bootstrapped, tmp_path):
    """In the day files and in a single features file (the layout before day files)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from churn.features.rows import feature_batches

    _, paths, _, _ = bootstrapped
    day = feature_dates(paths.features_file)[-1]
    whole = read_features(paths.features_file, [day])
    single = tmp_path / "features.parquet"
    pq.write_table(pa.Table.from_pandas(read_features(paths.features_file, feature_dates(paths.features_file)[-3:]),
                                        preserve_index=False), single, row_group_size=100)
    for path in (paths.features_file, single):
        pieces = list(feature_batches(path, day, 50))
        assert len(pieces) > 2 and all(len(p) <= 50 for p in pieces)
        pd.testing.assert_frame_equal(pd.concat(pieces, ignore_index=True), read_features(path, [day]))
        pd.testing.assert_frame_equal(read_features(path, [day]), whole, check_categorical=False)
    none = list(feature_batches(single, day + dt.timedelta(days=1), 50))
    assert len(none) == 1 and len(none[0]) == 0 and list(none[0].columns) == list(whole.columns)
