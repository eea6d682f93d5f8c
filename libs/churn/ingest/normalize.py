"""A table as read from a file -> the contract's columns and types, every bad value reported.

Why a separate step before the rules: a source says `"2024-03-01T10:00:00+02:00"`, `true`,
`"3000000000"` or int32 ids; the rules (churn.data.validate) judge typed values. Each
contract column is converted here; values that do not convert are a violation naming the
file, the column, the rule (`<table>.<column>.parses_as_<type>`) and examples, and the
column is then left out of the value rules (one clear error, not two confusing ones).

Times follow churn.raw.contract.TIME_RULE: with an offset -> converted to UTC; without ->
taken as UTC; a date alone -> midnight UTC. Stored times are UTC without a zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churn.data.validate import MAX_EXAMPLES, Violation
from churn.raw.contract import TABLES, Column

_INT64_MAX = float(2**63 - 1)
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclass
class Normalized:
    """The typed frame, the parse violations and the columns they make unusable."""

    frame: pd.DataFrame
    violations: list[Violation] = field(default_factory=list)
    unusable: set[str] = field(default_factory=set)
    extra_columns: list[str] = field(default_factory=list)


def rename(table: pa.Table, mapping: Mapping[str, str], table_name: str, file: str) -> tuple[pa.Table, list[Violation]]:
    """Apply `ingest.columns.<table>` ({contract name: source name}); a mapped source column
    that is missing is reported (with the file's columns) instead of a bare 'missing'."""
    names = list(table.column_names)
    problems: list[Violation] = []
    rename_to = {}
    for ours, theirs in mapping.items():
        if theirs in names:
            rename_to[theirs] = ours
        else:
            problems.append(Violation(f"{table_name}.{ours}.mapped_column_present", table_name, ours, table.num_rows,
                                      names[:20], f"ingest.columns.{table_name}.{ours} names column {theirs!r}, "
                                      "which the file does not have", file))
    return table.rename_columns([rename_to.get(n, n) for n in names]), problems


def normalize(table: pa.Table, table_name: str, file: str) -> Normalized:
    """Contract columns of `table` converted to their types (absent optional columns are null)."""
    spec = TABLES[table_name]
    names = set(table.column_names)
    out = Normalized(pd.DataFrame(index=pd.RangeIndex(table.num_rows)))
    out.extra_columns = [n for n in table.column_names if n not in {c.name for c in spec}]
    for col in spec:
        if col.name not in names:
            if not col.required:
                out.frame[col.name] = _empty(col, table.num_rows)
            continue  # a missing required column is the schema rule's to report
        values, bad, shown = _convert(table.column(col.name), col, table_name)
        out.frame[col.name] = values
        if bad is not None and bad.any():
            out.unusable.add(col.name)
            examples = [_show(v) for v in shown[bad][:MAX_EXAMPLES]]
            out.violations.append(Violation(
                f"{table_name}.{col.name}.parses_as_{col.kind}", table_name, col.name, int(bad.sum()), examples,
                f"values that are not {_KIND_TEXT[col.kind]}", file))
    return out


_KIND_TEXT = {"integer": "64-bit integers", "number": "numbers", "datetime": "ISO-8601 date-times",
              "date": "ISO-8601 dates", "string": "text"}


def _show(v: object) -> object:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _empty(col: Column, n: int) -> pd.Series:
    if col.kind == "number":
        return pd.Series(np.full(n, np.nan, dtype=np.float32))
    return pd.Series(pd.Categorical([None] * n))


def _convert(arr: pa.ChunkedArray, col: Column, table_name: str
             ) -> tuple[pd.Series | np.ndarray | pd.Categorical, np.ndarray | None, np.ndarray]:
    """(values, bad mask or None, the source values to show for bad rows)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if col.kind in ("datetime", "date"):
        return _times(arr)
    if col.kind == "integer":
        return _integers(arr, boolean_words=col.name == "is_paid")
    if col.kind == "number":
        return _numbers(arr, np.float32 if table_name == "events" else np.float64)
    return _strings(arr, lower=col.name == "plan")


def _source(arr: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(arr.to_pandas().astype("object"))


def _integers(arr: pa.ChunkedArray, boolean_words: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 values; missing, fractional, out-of-range and non-numeric values are bad.

    Why integers stay exact: a float64 detour would round ids above 2^53 (and ids are 64-bit).
    """
    t = arr.type
    if pa.types.is_boolean(t):
        arr, t = arr.cast(pa.int8()), pa.int8()
    if pa.types.is_integer(t) and not (pa.types.is_uint64(t) and pc.max(arr).as_py() and pc.max(arr).as_py() > _INT64_MAX):
        values = arr.cast(pa.int64()).to_numpy(zero_copy_only=False) if arr.null_count == 0 else None
        if values is not None:
            return values, np.zeros(len(values), dtype=bool), np.empty(0)
    source = _source(arr)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        text = pd.Series(source, dtype="object").str.strip()
        if boolean_words:
            low = text.str.lower()
            text = low.map(lambda s: "1" if s in _TRUE else "0" if s in _FALSE else s)
        parsed = pd.to_numeric(text, errors="coerce")
    else:
        parsed = pd.to_numeric(pd.Series(source, dtype="object"), errors="coerce")
    as_float = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(as_float) | (np.mod(as_float, 1) != 0) | (np.abs(as_float) > _INT64_MAX)
    exact = np.zeros(len(source), dtype=np.int64)
    good = ~bad
    if good.any():  # exact from the text or the integer, not via the float
        exact[good] = np.array([int(str(v).strip()) if isinstance(v, str) else int(v)
                                for v in (text if pa.types.is_string(t) or pa.types.is_large_string(t)
                                          else pd.Series(source))[good]], dtype=np.int64)
    return exact, bad, source


def _numbers(arr: pa.ChunkedArray, dtype: type) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Floats; missing stays NaN (allowed for optional columns), non-numeric text is bad."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t) or pa.types.is_boolean(t):
        values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(dtype)
        return values, None, np.empty(0)
    source = _source(arr)
    parsed = pd.to_numeric(pd.Series(source, dtype="object").str.strip(), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan)
    bad = np.isnan(parsed) & pd.notna(source) & (pd.Series(source, dtype="object").str.strip() != "").to_numpy()
    return parsed.astype(dtype), bad, source


def _times(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """UTC datetime64[us] without a zone (see the module doc for the rule)."""
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return arr.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False), None, np.empty(0)
    source = _source(arr)
    text = pd.Series(source, dtype="object")
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
        text = text.map(lambda v: None if v is None else str(v))
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    values = parsed.dt.tz_convert(None).astype("datetime64[us]").to_numpy()
    bad = np.isnat(values) & text.notna().to_numpy()
    return values, bad, source


def _strings(arr: pa.ChunkedArray, lower: bool) -> tuple[pd.Categorical, None, np.ndarray]:
    """Text as a categorical (numbers in a text column, e.g. numeric course ids, become text)."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    if lower:
        arr = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
    if arr.num_chunks == 0:
        return pd.Categorical([]), None, np.empty(0)
    return pd.Categorical(arr.dictionary_encode().to_pandas()), None, np.empty(0)


def missing_required(table: pa.Table, table_name: str) -> Sequence[str]:
    return [c.name for c in TABLES[table_name] if c.required and c.name not in table.column_names]
