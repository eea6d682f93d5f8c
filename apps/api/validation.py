"""Request validation with bounded work: the first `max_errors` problems and a count of all.

Why not FastAPI's body parameters: FastAPI validates a body on the event loop in one piece
and reports every error, so one 16 KB batch of empty rows produced 36,000 errors (3.6 MB)
and held the loop ~360 ms, failing every other client's readiness probe. Here:

- `/predict` bodies are at most `api.max_predict_body_bytes` (16 KiB): validated on the
  event loop in one pydantic-core call from the raw bytes (no Python JSON parse), a bounded
  cost (a few ms for the worst 16 KiB body, bench/api_bench.py measures it);
- `/predict/batch` is validated in a worker process (batchwork.py) `api.batch_chunk_rows`
  rows at a time, so the errors of one chunk bound the work spent on error reports; a row
  whose feature object has more keys than the schema (e.g. 60,000 unknown keys) is reported
  from a key comparison, never handed to pydantic.

Error reports keep only what a client needs (field path, message, type), never the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from apps.api.schemas import RequestSchemas

Problem = dict[str, Any]


class Problems(Exception):
    """A 422: the first problems (each with loc, msg, type) and how many there are in all."""

    def __init__(self, problems: list[Problem], count: int) -> None:
        super().__init__(f"{count} validation problems")
        self.problems = problems
        self.count = count


@dataclass
class _Collector:
    """Keeps the first `limit` problems and counts all of them."""

    limit: int
    problems: list[Problem]
    count: int = 0

    def add(self, problems: Iterable[Problem], count: int) -> None:
        self.count += count
        for problem in problems:
            if len(self.problems) >= self.limit:
                break
            self.problems.append(problem)

    @property
    def wants_more(self) -> bool:
        return len(self.problems) < self.limit

    def raise_if_any(self) -> None:
        if self.count:
            raise Problems(self.problems, self.count)


def non_finite_problem(loc: list[str | int]) -> Problem:
    """The 422 problem of valid but extreme inputs that overflow the model to NaN/inf.

    Why refuse: such a score is meaningless, and returning it would break the documented answer.
    """
    return {"loc": loc, "type": "non_finite_risk",
            "msg": "feature values far outside the training range give no finite risk"}


def pydantic_problems(exc: ValidationError, prefix: Sequence[str | int], limit: int) -> list[Problem]:
    """The first `limit` errors of `exc` in the API's shape, `prefix` prepended to each loc."""
    out: list[Problem] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        if len(out) >= limit:
            break
        loc = [*prefix, *(part if isinstance(part, (str, int)) else str(part) for part in error["loc"])]
        out.append({"loc": loc, "msg": error["msg"], "type": error["type"]})
    return out


class RequestValidator:
    """Validates /predict and /predict/batch bodies of one app (its schemas and limits)."""

    def __init__(self, schemas: RequestSchemas, feature_names: Sequence[str], max_batch_size: int,
                 chunk_rows: int, max_errors: int) -> None:
        self.single = schemas.predict
        self.rows: TypeAdapter[list[Any]] = TypeAdapter(list[schemas.predict])  # type: ignore[valid-type]
        self.envelope: type[BaseModel] = create_model(  # type: ignore[call-overload]
            "BatchEnvelope",
            __config__=ConfigDict(extra="forbid"),
            instances=(list[Any], Field(min_length=1, max_length=max_batch_size)),
        )
        self.names = tuple(feature_names)
        self.known = frozenset(feature_names)
        self.chunk_rows = chunk_rows
        self.max_errors = max_errors

    def one(self, body: bytes) -> Any:
        """The validated PredictRequest of a /predict body, or Problems."""
        try:
            return self.single.model_validate_json(body)
        except ValidationError as exc:
            raise Problems(pydantic_problems(exc, ["body"], self.max_errors), exc.error_count()) from None

    def batch(self, body: bytes) -> list[Any]:
        """The validated PredictRequests of a /predict/batch body (in order), or Problems."""
        try:
            payload = pydantic_core.from_json(body)
        except ValueError as exc:
            raise Problems([{"loc": ["body"], "msg": f"JSON decode error: {exc}", "type": "json_invalid"}], 1) from None
        try:
            instances = self.envelope.model_validate(payload).instances  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise Problems(pydantic_problems(exc, ["body"], self.max_errors), exc.error_count()) from None
        found = _Collector(self.max_errors, [])
        rows: list[Any] = []
        for start in range(0, len(instances), self.chunk_rows):
            rows.extend(self._chunk(instances, start, found))
        found.raise_if_any()
        return rows

    def _chunk(self, instances: list[Any], start: int, found: _Collector) -> list[Any]:
        part = instances[start:start + self.chunk_rows]
        shaped: list[Any] = []
        positions: list[int] = []
        for offset, item in enumerate(part):
            features = item.get("features") if isinstance(item, dict) else None
            if isinstance(features, dict) and len(features) > len(self.names):
                self._key_problems(start + offset, features, found)
            else:
                shaped.append(item)
                positions.append(start + offset)
        try:
            return self.rows.validate_python(shaped)
        except ValidationError as exc:
            problems = pydantic_problems(exc, [], found.limit - len(found.problems)) if found.wants_more else []
            for problem in problems:  # loc[0] is the index within `shaped`
                problem["loc"] = ["body", "instances", positions[int(problem["loc"][0])], *problem["loc"][1:]]
            found.add(problems, exc.error_count())
            return []

    def _key_problems(self, index: int, features: dict[str, Any], found: _Collector) -> None:
        """Unknown and missing keys of an oversized feature object, from a key comparison only."""
        loc = ["body", "instances", index, "features"]
        unknown = [key for key in features if key not in self.known]
        missing = [name for name in self.names if name not in features]
        problems: list[Problem] = []
        for key in unknown[:found.limit]:
            problems.append({"loc": [*loc, key], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"})
        for name in missing[:found.limit]:
            problems.append({"loc": [*loc, name], "msg": "Field required", "type": "missing"})
        found.add(problems, len(unknown) + len(missing))
