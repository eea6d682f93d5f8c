"""Reading a user's export (CSV, JSON Lines, Parquet; gzip too) into Arrow, with clear errors.

Why pyarrow's readers: they are multi-threaded C++ and infer types (ISO-8601 times with an
offset come out as UTC timestamps), so an export of 24M events reads at the speed of the
library itself (bench/ingest_bench.py prints both). What they report badly is turned into
a DataError naming the file: a missing or unreadable file, an empty file, a row with
another number of fields, a file that is not what its extension says, a CSV whose header
is one column holding another delimiter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from churn.storage.files import DataError

FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")
_SUFFIXES: dict[str, str] = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                             ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
_OTHER_DELIMITERS = (";", "\t", "|")


def detect_format(path: Path, fmt: str | None = None) -> str:
    """`fmt` if given, else from the extension (`.csv`, `.csv.gz`, `.jsonl.gz`, `.parquet` ...)."""
    if fmt:
        if fmt not in FORMATS:
            raise DataError(f"{path}: unknown format {fmt!r} (choose one of {', '.join(FORMATS)})")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    found = _SUFFIXES.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise DataError(f"{path}: cannot tell the format from the name (use --format {'|'.join(FORMATS)}; "
                        f"known extensions: {', '.join(sorted(_SUFFIXES))}, optionally + .gz)")
    return found


def read_table(path: str | Path, fmt: str | None = None, delimiter: str = ",",
               integer_columns: Sequence[str] = ()) -> pa.Table:
    """The file as an Arrow table (columns as named in the file).

    `integer_columns` are read as int64 when the format infers types (CSV), so 64-bit ids
    are exact; if one does not parse, the table is read again with them as text, and the
    caller's parse rule reports every bad value with examples.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found" if not p.exists() else f"{p}: not a file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (no header, no rows)")
    kind = detect_format(p, fmt)
    try:
        if kind == "parquet":
            return pq.read_table(p)
        if kind == "jsonl":
            return pajson.read_json(p)
        return _read_csv(p, delimiter, integer_columns)
    except DataError:
        raise
    except (pa.ArrowException, OSError, EOFError, ValueError) as exc:
        raise DataError(f"{p}: cannot read as {kind} ({_reason(exc)})") from exc


def _read_csv(path: Path, delimiter: str, integer_columns: Sequence[str]) -> pa.Table:
    parse = pacsv.ParseOptions(delimiter=delimiter)
    header = _header(path, parse)
    if len(header) == 1 and any(d in header[0] for d in _OTHER_DELIMITERS if d != delimiter):
        found = next(d for d in _OTHER_DELIMITERS if d in header[0])
        raise DataError(f"{path}: the header is one column {header[0][:80]!r}: the file looks "
                        f"{'tab' if found == chr(9) else repr(found)}-delimited, not {delimiter!r}-delimited "
                        "(set ingest.delimiter in the config)")
    wanted = {c: pa.int64() for c in integer_columns if c in header}
    try:
        return pacsv.read_csv(path, parse_options=parse, convert_options=_convert_options(wanted))
    except pa.ArrowInvalid as exc:
        if "conversion error" not in str(exc) or not wanted:
            raise
    return pacsv.read_csv(path, parse_options=parse, convert_options=_convert_options({c: pa.string() for c in wanted}))


def _convert_options(types: dict[str, pa.DataType]) -> pacsv.ConvertOptions:
    """An empty field is a missing value in every column (text too), as the contract says."""
    return pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)


def _header(path: Path, parse: pacsv.ParseOptions) -> list[str]:
    """The column names (reads the first block only)."""
    with pacsv.open_csv(path, parse_options=parse,
                        read_options=pacsv.ReadOptions(block_size=1 << 16)) as reader:
        return list(reader.schema.names)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
