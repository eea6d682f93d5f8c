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
    a missing or corrupt file is a DataError naming it."""
    p = Path(path)
    if p.is_dir():
        from churn.storage.daytables import read_days

        return read_days(p, columns=columns)
    if not p.is_file():
        raise DataError(f"{p}: file not found (run the step that produces it first)")
    try:
        return pd.read_parquet(p, engine="pyarrow", columns=list(columns) if columns is not None else None)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{p}: cannot read Parquet ({type(exc).__name__}: {exc})") from exc


def read_parquet_checked(path: str | Path) -> tuple[pd.DataFrame, str]:
    """(a Parquet file as pandas, sha256 of the bytes it was parsed from): read once, so a digest
    recorded of the input (a model card's training data) is of the very bytes used, and checked
    against its generation's MANIFEST when it has one (`files.read_verified`)."""
    import hashlib
    import io

    data = read_verified(path)
    try:
        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from exc
    return frame, hashlib.sha256(data).hexdigest()
