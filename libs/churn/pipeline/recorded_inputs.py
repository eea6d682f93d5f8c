"""The inputs the predictions and the drift reports recorded, compared with the current state.

Why: `batch-score` and `drift-check` record in their generation's MANIFEST what they read (the
`features` digest of the days read, the `model_version`), but nobody compared it: a day's
scores summarised after `update` had recomputed that day, or after another model was
promoted, were reported as the production model's view of the current features.

`check` rebuilds each recorded fact with the function its writer used, from the current
state: the features digest from the current tables' MANIFEST entries
(`storage.derived.features_digest_now`, the same `files.dataset_digest` the writer's
`features.rows.features_digest` computed; no file read) and the production version from
`ModelRegistry.get_alias`. An input the output did not record (a merged day records its
shards' files instead of the features; an output from before the records), or that cannot
be rebuilt (tables from before generations), is not compared and not in the answer.

Standard library, storage and registry only: the API's `/metrics` calls it at scrape time
and must not import pandas. Readers: `monitoring.scores` (score-distribution warns and
reports `stale_inputs`) and `observability.collector` (`churn_scores_input_stale`,
`churn_drift_input_stale`); docs/consistency.md, "Readers noticing stale inputs".
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Mapping, Sequence

from churn.errors import DataError
from churn.registry.registry import ModelRegistry
from churn.storage import generations
from churn.storage.derived import features_digest_now
from churn.storage.paths import DataPaths, predictions_area

FEATURES = "features"  # the input names of the answer (the label values of the gauges)
MODEL = "model"
INPUTS = (FEATURES, MODEL)


def recorded(generation: Path | None) -> dict[str, Any]:
    """The `inputs` of a generation's MANIFEST ({} without a generation or a MANIFEST)."""
    if generation is None:
        return {}
    try:
        inputs = generations.read_manifest(generation).get("inputs")
    except DataError:
        return {}
    return dict(inputs) if isinstance(inputs, dict) else {}


def check(paths: DataPaths, registry: ModelRegistry, inputs: Mapping[str, Any],
          spans: Sequence[tuple[dt.date, dt.date]] | None) -> dict[str, dict[str, str | None]]:
    """{input: {"recorded", "current"}} for each input of `inputs` (a MANIFEST's) that can be
    compared; stale where they differ (`stale`). `spans`: the feature days the output read."""
    out: dict[str, dict[str, str | None]] = {}
    if inputs.get("features"):
        now = features_digest_now(paths, spans)
        if now is not None:
            out[FEATURES] = {"recorded": str(inputs["features"]), "current": now}
    if inputs.get("model_version"):
        out[MODEL] = {"recorded": str(inputs["model_version"]), "current": registry.get_alias()}
    return out


def is_stale(compared: Mapping[str, str | None]) -> bool:
    """Whether one input of a `check` answer was recorded with another value than the current."""
    return compared["recorded"] != compared["current"]


def stale(checked: Mapping[str, Mapping[str, str | None]]) -> dict[str, dict[str, str | None]]:
    """The inputs of a `check` answer whose recorded value is not the current one."""
    return {name: dict(v) for name, v in checked.items() if is_stale(v)}


def check_predictions(paths: DataPaths, registry: ModelRegistry, day: dt.date,
                      generation: Path | None = None) -> dict[str, dict[str, str | None]]:
    """`check` of the predictions of `day` (`generation`: the one read, default the current)."""
    at = generation if generation is not None else generations.current(paths.root, predictions_area(day))
    return check(paths, registry, recorded(at), [(day, day)])


def drift_spans(report: Mapping[str, Any]) -> list[tuple[dt.date, dt.date]]:
    """The feature days a drift report read: its training and recent windows (what
    `steps.step_drift_check` recorded the features digest of)."""
    return [(dt.date.fromisoformat(str(w[0])), dt.date.fromisoformat(str(w[1])))
            for w in (report["training_window"], report["recent_window"])]


def check_drift(paths: DataPaths, registry: ModelRegistry, generation: Path,
                report: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """`check` of the newest drift report (`report`, parsed) of `generation` (monitoring/drift).

    The MANIFEST's inputs are those of the publish that wrote the newest report: drift-check
    always reports the newest feature day, and the generation carries the earlier days'."""
    inputs = recorded(generation)
    if not (report.get("training_window") and report.get("recent_window")):  # a report naming no windows
        inputs.pop("features", None)
        return check(paths, registry, inputs, None)
    return check(paths, registry, inputs, drift_spans(report))
