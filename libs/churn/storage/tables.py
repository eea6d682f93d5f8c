"""Parquet tables, written atomically and read with errors that name the file.

Why apart from files.py: these need pandas and pyarrow, which the API must not import;
the registry and the API use files.py alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn.storage.files import DataError, atomic_path, read_verified


def atomic_write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a pandas DataFrame as Parquet (pyarrow, zstd, no index) atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, engine="pyarrow", compression="zstd", index=False)
    return Path(path)


def read_parquet(path: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file (or a day-partitioned folder, `churn.storage.daytables`) into pandas;
    a missing, corrupt or changed file is a DataError naming it.

    The bytes are read once and checked against the generation's manifest (`read_verified`),
    then parsed from memory: what is parsed is what was checked.
    """
    p = Path(path)
    if p.is_dir():
        from churn.storage.daytables import read_days

        return read_days(p, columns=columns)
    if not p.is_file():
        raise DataError(f"{p}: file not found (run the step that produces it first)")
    data = read_verified(p)
    try:
        table = pq.read_table(pa.BufferReader(data), columns=list(columns) if columns is not None else None)
        return table.to_pandas()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{p}: cannot read Parquet ({type(exc).__name__}: {exc})") from exc
