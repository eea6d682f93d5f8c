"""Parquet tables, written atomically and read with errors that name the file.

Why apart from files.py: these need pandas and pyarrow, which the API must not import;
the registry and the API use files.py alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from churn.storage.files import DataError, atomic_path, read_verified


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """A pandas DataFrame as Parquet (pyarrow, zstd, no index) at `path` (a temp of a caller)."""
    df.to_parquet(path, engine="pyarrow", compression="zstd", index=False)


def atomic_write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a pandas DataFrame as Parquet (pyarrow, zstd, no index) atomically."""
    with atomic_path(path) as tmp:
        write_parquet(df, tmp)
    return Path(path)


def read_parquet(path: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file (or a day-partitioned folder, `churn.storage.daytables`) into pandas;
    a missing or corrupt file is a DataError naming it. A file is read once and, inside a
    published generation, checked against its MANIFEST (`files.read_verified`; a users
    snapshot, a day's scores): parsed from the bytes that were checked."""
    p = Path(path)
    if p.is_dir():
        from churn.storage.daytables import read_days

        return read_days(p, columns=columns)
    if not p.is_file():
        raise DataError(f"{p}: file not found (run the step that produces it first)")
    return parse_parquet(p, read_verified(p), columns)


def parse_parquet(path: str | Path, data: bytes, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Parquet bytes (already read from `path` and checked) as pandas; corrupt bytes are a
    DataError naming `path`.

    Parsed from a native Arrow buffer (`pa.BufferReader`), never a Python file object such as
    `io.BytesIO`: pyarrow's threaded read of a Python file leaves work that needs the GIL in
    its thread pool, and the interpreter then intermittently hangs at exit after the step's
    work is done (apache/arrow#50482; `ml_jobs daily` pods and CLI runs hung here, see
    docs/consistency.md, "Exit").
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data), columns=list(columns) if columns is not None else None)
        return table.to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from exc


def read_parquet_checked(path: str | Path) -> tuple[pd.DataFrame, str]:
    """(a Parquet file as pandas, sha256 of the bytes it was parsed from): read once, so a digest
    recorded of the input (a model card's training data) is of the very bytes used, and checked
    against its generation's MANIFEST when it has one (`files.read_verified`)."""
    import hashlib

    data = read_verified(path)
    return parse_parquet(path, data), hashlib.sha256(data).hexdigest()
