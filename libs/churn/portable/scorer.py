"""A fitted model's arithmetic as plain arrays: evaluated with numpy alone, stored without pickle.

Why: the API only needs the arithmetic of the production model, not scikit-learn (which pulls
in scipy, joblib and threadpoolctl: ~200 MB of the image, ~0.7 s of import). At registration
the ML side compiles the model into one of these forms (churn.compiled), checks it equals
`predict_proba` on the holdout within 1e-9 and writes it next to the model; the API loads
only this file (`read_scorer`).

Two forms, one logit each (the risk is its sigmoid):

- `LinearForm` (a LogisticRegression after imputation, scaling and one-hot encoding):
  intercept + per-column terms; a numeric term is affine in the imputed value and its
  missingness, a categorical one a table from category code to coefficient (unknown: 0).
- `ForestForm` (binary gradient-boosted trees): every tree's nodes in flat arrays (leaves
  point at themselves), thresholds on schema columns, categorical splits as goes-left
  tables by raw code (0..255, then the missing slot), plus the baseline.

Row independence: sums are row-wise (`einsum`, per-row gathers), never a BLAS product whose
blocking would change the rounding with the number of rows, so one row scores the same alone,
in a batch or in a shard.

File format (`write_scorer`/`read_scorer`): one `.npz` (numpy's zip of `.npy` arrays, read
with `allow_pickle=False`), its arrays named `<part>.<field>`, plus `meta.json` bytes in the
array `__meta__` (kind, format version, free metadata such as the feature schema).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import numpy as np

FORMAT_VERSION = 1
CHUNK_ROWS = 65_536  # bounds the temporaries of a large batch (trees: rows x trees per level)
MISSING_SLOT = 256  # category codes that are NaN, negative or >= 256 follow the missing rule
META_KEY = "__meta__"

LogitFunction = Callable[[np.ndarray], np.ndarray]
RiskFunction = Callable[[np.ndarray], np.ndarray]


class PortableFormError(ValueError):
    """A scorer file that is not a readable portable form: `str()` names the file and the
    problem, `problem` alone holds no path (for answers to API callers)."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.problem = problem


@dataclass(frozen=True)
class NumericTerm:
    """sum_j weights[j] * (x[columns[j]] or fill[j] if NaN) + sum_k flag_weights[k] * isnan(x[flags[k]]) + offset."""

    columns: np.ndarray  # int64
    fill: np.ndarray  # float64, NaN = no imputation for that column
    weights: np.ndarray  # float64
    flags: np.ndarray  # int64
    flag_weights: np.ndarray  # float64
    offset: float


@dataclass(frozen=True)
class TableTerm:
    """table[x[column] - lowest] for known integral codes (NaN filled with `fill` first), else the last slot (0)."""

    column: int
    table: np.ndarray  # float64, last slot = unknown codes
    lowest: int
    fill: float  # NaN = no imputation


@dataclass(frozen=True)
class LinearForm:
    intercept: float
    numeric: tuple[NumericTerm, ...] = ()
    tables: tuple[TableTerm, ...] = ()
    kind: str = field(default="linear", init=False)


@dataclass(frozen=True)
class ForestForm:
    baseline: float
    roots: np.ndarray  # int64, first node of each tree
    left_child: np.ndarray  # int64 (leaves: themselves)
    right_child: np.ndarray  # int64
    feature: np.ndarray  # int64 schema column per node
    threshold: np.ndarray  # float64: left if x <= threshold
    missing_left: np.ndarray  # bool: NaN goes left
    value: np.ndarray  # float64 (0 except leaves)
    category_row: np.ndarray  # int64 node -> row of category_left, -1 for numeric nodes
    category_left: np.ndarray  # bool (categorical nodes, 257): goes left by raw code / missing slot
    depth: int
    width: int  # schema columns
    kind: str = field(default="trees", init=False)


Form = Union[LinearForm, ForestForm]


# ---------------------------------------------------------------- evaluation


def linear_logit(form: LinearForm) -> LogitFunction:
    numeric = [_numeric_term(term) for term in form.numeric]
    tables = [_table_term(term) for term in form.tables]

    def logit(matrix: np.ndarray) -> np.ndarray:
        raw = np.full(matrix.shape[0], form.intercept)
        for term in numeric:
            raw += term(matrix)
        for term in tables:
            raw += term(matrix)
        return raw

    return logit


def _numeric_term(term: NumericTerm) -> LogitFunction:
    index, fill, weights = term.columns, term.fill, term.weights
    needs_fill = bool(np.any(~np.isnan(fill)))

    def value(matrix: np.ndarray) -> np.ndarray:
        # take(axis=1) keeps rows contiguous: einsum sums every row with the same kernel
        # whatever the number of rows, one row included
        values = matrix.take(index, axis=1)
        filled = np.where(np.isnan(values), fill, values) if needs_fill else values
        total = np.einsum("ij,j->i", filled, weights) + term.offset
        if term.flags.size:
            total += np.einsum("ij,j->i", np.isnan(matrix.take(term.flags, axis=1)), term.flag_weights)
        return total

    return value


def _table_term(term: TableTerm) -> LogitFunction:
    table, unknown = term.table, term.table.size - 1

    def value(matrix: np.ndarray) -> np.ndarray:
        values = matrix[:, term.column]
        if not np.isnan(term.fill):
            values = np.where(np.isnan(values), term.fill, values)
        slots = values - term.lowest
        known = np.isfinite(slots) & (slots >= 0) & (slots < unknown) & (slots == np.floor(slots))
        return table[np.where(known, slots, unknown).astype(np.int64)]

    return value


def _category_slots(x: np.ndarray) -> np.ndarray:
    """Raw category values -> column of a decision table (NaN, < 0, >= 256: MISSING_SLOT)."""
    valid = (x >= 0) & (x < MISSING_SLOT)  # False for NaN
    return np.where(valid, x, MISSING_SLOT).astype(np.int64)


def forest_logit(form: ForestForm) -> LogitFunction:
    """The logit of every row: one row by `forest_one_row`, many by a level-by-level walk of
    all trees for every row at once."""
    one_row = forest_one_row(form)
    children = np.stack([form.right_child, form.left_child], axis=1).ravel()

    def goes_left(x: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        left = (x <= form.threshold[nodes]) | ((x != x) & form.missing_left[nodes])
        if form.category_left.size:
            # only the (row, tree) pairs at a categorical node look up a table: most are numeric
            row = form.category_row[nodes]
            at = np.nonzero(row >= 0)
            left[at] = form.category_left[row[at], _category_slots(x[at])]
        return left

    def many_rows(matrix: np.ndarray) -> np.ndarray:
        flat = np.ascontiguousarray(matrix).ravel()
        row_start = (np.arange(matrix.shape[0], dtype=np.int64) * matrix.shape[1])[:, None]
        current = np.broadcast_to(form.roots, (matrix.shape[0], form.roots.size))
        for _ in range(form.depth):
            x = flat[row_start + form.feature[current]]
            current = children[2 * current + goes_left(x, current)]
        return form.baseline + form.value[current].sum(axis=1)

    def logit(matrix: np.ndarray) -> np.ndarray:
        if matrix.shape[0] == 1:
            return np.array([one_row(matrix[0])])
        return many_rows(matrix)

    return logit


def forest_one_row(form: ForestForm) -> Callable[[np.ndarray], float]:
    """One row's logit: every node's decision at once (a few vector operations over all
    nodes), giving a "next node" table; then `depth` gathers move all trees down one level each."""
    left_child, right_child = form.left_child.astype(np.int32), form.right_child.astype(np.int32)
    spread_feature = form.feature + form.width * (~form.missing_left)
    categorical = np.flatnonzero(form.category_row >= 0)
    by_feature = tuple(
        (int(column), at, form.category_left[form.category_row[at]].T.copy())
        for column in sorted(set(form.feature[categorical].tolist()))  # np.unique would import numpy.ma
        for at in [categorical[form.feature[categorical] == column]]
    )

    def one_row(row: np.ndarray) -> float:
        # A missing value must go to the node's missing side: read it as -inf where that side
        # is left (-inf <= any threshold) and as NaN where it is right (NaN <= t is False).
        spread = np.concatenate((np.where(row != row, -np.inf, row), row))
        left = spread.take(spread_feature) <= form.threshold
        for column, at, decisions in by_feature:
            code = row[column]  # the rule of _category_slots, on one value
            left[at] = decisions[int(code) if 0 <= code < MISSING_SLOT else MISSING_SLOT]
        step = np.where(left, left_child, right_child)
        current = form.roots
        for _ in range(form.depth):
            current = step.take(current)
        return form.baseline + float(form.value.take(current).sum())

    return one_row


def one_row_logit(form: Form) -> Callable[[np.ndarray], float]:
    """The logit of one row (a 1-D schema vector) as a float, equal to `logit_function`'s."""
    if isinstance(form, ForestForm):
        return forest_one_row(form)
    logit = linear_logit(form)
    return lambda row: float(logit(row.reshape(1, -1))[0])


def one_row_risk(form: Form) -> Callable[[np.ndarray], float]:
    """The risk of one row as a float, equal to `risk_function`'s (the API's /predict path).

    Why apart: the array path's chunking, error-state context and array wrapping cost more
    than the arithmetic for one row. The sigmoid is the same numpy exp; only a logit whose
    exp could overflow (or NaN) takes the array path, which silences numpy's warning.
    """
    logit_of = one_row_logit(form)
    array_risk = risk_function(form)

    def risk(row: np.ndarray) -> float:
        logit = logit_of(row)
        if -700.0 < logit < 700.0:
            return 1.0 / (1.0 + float(np.exp(-logit)))
        return float(array_risk(row.reshape(1, -1))[0])

    return risk


def logit_function(form: Form) -> LogitFunction:
    return linear_logit(form) if isinstance(form, LinearForm) else forest_logit(form)


def risk_function(form: Form) -> RiskFunction:
    """float64 schema matrix -> P(churn) per row, in chunks of CHUNK_ROWS rows."""
    return risk_from_logit(logit_function(form))


def risk_from_logit(logit: LogitFunction) -> RiskFunction:
    """The sigmoid of `logit`, in chunks of CHUNK_ROWS rows (also churn.compiled's fast paths)."""

    def risk(matrix: np.ndarray) -> np.ndarray:
        # exp overflow for logits < -709 gives the right limit, 0; extreme inputs that make
        # the logit NaN are answered 422 by the API, so numpy need not warn either
        with np.errstate(over="ignore", invalid="ignore"):
            return 1.0 / (1.0 + np.exp(-logit(matrix)))

    return in_chunks(risk)


def in_chunks(risk: RiskFunction) -> RiskFunction:
    """`risk` over at most CHUNK_ROWS rows at a time (one call for an API request).

    CHUNK_ROWS is read at call time, so tests can make chunk boundaries fall inside small batches.
    """

    def chunked(matrix: np.ndarray) -> np.ndarray:
        if len(matrix) <= CHUNK_ROWS:
            return np.ascontiguousarray(risk(matrix), dtype=np.float64)
        out = np.empty(len(matrix), dtype=np.float64)
        for start in range(0, len(matrix), CHUNK_ROWS):
            out[start:start + CHUNK_ROWS] = risk(matrix[start:start + CHUNK_ROWS])
        return out

    return chunked


# ---------------------------------------------------------------- files


@dataclass(frozen=True)
class PortableScorer:
    """A loaded scorer file: its form, metadata and risk function."""

    form: Form
    meta: Mapping[str, Any]
    risk: RiskFunction
    risk_one: Callable[[np.ndarray], float]  # one 1-D row -> its risk, equal to `risk`'s

    @property
    def kind(self) -> str:
        return self.form.kind


def scorer_bytes(form: Form, meta: Mapping[str, Any]) -> bytes:
    """The .npz bytes of `form` (deterministic: fixed zip timestamps and order)."""
    arrays = _to_arrays(form)
    header = {"format_version": FORMAT_VERSION, "kind": form.kind, **dict(meta)}
    arrays[META_KEY] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            payload = io.BytesIO()
            np.lib.format.write_array(payload, np.asarray(arrays[name]), allow_pickle=False)
            archive.writestr(entry, payload.getvalue())
    return buffer.getvalue()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_scorer(path: Path, expected_sha256: str | None = None) -> PortableScorer:
    """Load a scorer file; PortableFormError naming the file if it is unreadable or its digest differs."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PortableFormError(str(path), f"cannot read the scorer file: {exc.strerror or exc}") from exc
    actual = sha256_hex(data)
    if expected_sha256 is not None and actual != expected_sha256:
        raise PortableFormError(str(path), f"sha256 {actual[:12]} differs from the card's {str(expected_sha256)[:12]} "
                                           "(scorer.sha256): corrupt or replaced")
    return scorer_from_bytes(data, str(path))


def scorer_from_bytes(data: bytes, name: str = "<bytes>") -> PortableScorer:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(bytes(arrays.pop(META_KEY)).decode())
        form = _from_arrays(meta["kind"], arrays)
    except Exception as exc:  # a truncated zip, a missing array, a foreign file, an unknown kind
        raise PortableFormError(name, f"not a portable scorer file ({type(exc).__name__}: {exc})") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise PortableFormError(name, f"format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    return PortableScorer(form, meta, risk_function(form), one_row_risk(form))


def _to_arrays(form: Form) -> dict[str, np.ndarray]:
    if isinstance(form, ForestForm):
        return {f"forest.{f.name}": np.asarray(getattr(form, f.name)) for f in fields(form) if f.name != "kind"}
    arrays: dict[str, np.ndarray] = {"linear.intercept": np.asarray(form.intercept)}
    for i, term in enumerate(form.numeric):
        arrays.update({f"numeric{i}.{f.name}": np.asarray(getattr(term, f.name)) for f in fields(term)})
    for i, table in enumerate(form.tables):
        arrays.update({f"table{i}.{f.name}": np.asarray(getattr(table, f.name)) for f in fields(table)})
    return arrays


def _from_arrays(kind: str, arrays: dict[str, np.ndarray]) -> Form:
    if kind == "trees":
        values = {f.name: arrays[f"forest.{f.name}"] for f in fields(ForestForm) if f.name != "kind"}
        for scalar, cast in (("baseline", float), ("depth", int), ("width", int)):
            values[scalar] = cast(values[scalar])
        return ForestForm(**values)
    if kind != "linear":
        raise ValueError(f"unknown scorer kind {kind!r}")
    numeric = tuple(
        NumericTerm(**{f.name: arrays[f"numeric{i}.{f.name}"] for f in fields(NumericTerm)})
        for i in range(_count(arrays, "numeric"))
    )
    numeric = tuple(NumericTerm(t.columns, t.fill, t.weights, t.flags, t.flag_weights, float(t.offset)) for t in numeric)
    tables = tuple(
        TableTerm(int(arrays[f"table{i}.column"]), arrays[f"table{i}.table"], int(arrays[f"table{i}.lowest"]),
                  float(arrays[f"table{i}.fill"]))
        for i in range(_count(arrays, "table"))
    )
    return LinearForm(float(arrays["linear.intercept"]), numeric, tables)


def _count(arrays: Mapping[str, np.ndarray], prefix: str) -> int:
    return len({key.split(".", 1)[0] for key in arrays if key.startswith(prefix)})
