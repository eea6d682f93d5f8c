"""Ingest benchmark: `ml_jobs ingest` of the 100,000-user data set from CSV.gz and from Parquet.

Prints rows/s of the whole ingest (read, convert to the contract, validate, write the date
partitions) beside the floor measured in the same run on the same files: pyarrow's own
CSV reader and Parquet reader, which only read. The exports are written first from the
generator's data (users + about 24M events at 100,000 users x 120 days), with times as
ISO-8601 text in the CSV, as a real export would have them.

    bazel run //bench:ingest_bench [-- --users 100000 --days 120 --keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import gzip
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churn.config.settings import Settings
from churn.data.generate import generate
from churn.ingest.ingest import run_ingest
from churn.storage.paths import DataPaths


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _plain(table: pa.Table) -> pa.Table:
    """Dictionary columns as text (what an export from another system holds)."""
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(cols, names=table.column_names)


def write_exports(settings: Settings, out: Path) -> dict[str, Path]:
    """users/events as .csv.gz and .parquet (reused when `out` already has them); their paths."""
    names = [f"{t}.{f}" for t in ("users", "events") for f in ("parquet", "csv.gz")]
    if all((out / n).is_file() for n in names) and (out / "exports.done").is_file():
        return {n: out / n for n in names}
    t0 = time.perf_counter()
    users, events = generate(settings.generator)
    users = users.drop(columns=["engagement_score"])
    tables = {"users": _plain(pa.Table.from_pandas(users, preserve_index=False)),
              "events": _plain(pa.Table.from_pandas(events, preserve_index=False))}
    del users, events
    paths: dict[str, Path] = {}
    for name, table in tables.items():
        paths[f"{name}.parquet"] = out / f"{name}.parquet"
        pq.write_table(table, paths[f"{name}.parquet"], compression="zstd")
        paths[f"{name}.csv.gz"] = out / f"{name}.csv.gz"
        with gzip.open(paths[f"{name}.csv.gz"], "wb", compresslevel=1) as sink:  # fast to write
            pacsv.write_csv(table, sink)
    (out / "exports.done").write_text("ok\n")
    print(f"exports written in {time.perf_counter() - t0:.1f}s: "
          + ", ".join(f"{k} {v.stat().st_size / 1e6:.0f} MB" for k, v in paths.items()))
    return paths


def _timed(run: Callable[[], int]) -> tuple[int, float]:
    gc.collect()
    t0 = time.perf_counter()
    rows = run()
    return rows, time.perf_counter() - t0


def _ingest(settings: Settings, root: Path, users: Path, events: Path) -> int:
    shutil.rmtree(root, ignore_errors=True)
    paths = DataPaths.from_root(root).ensure()
    result = run_ingest(dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, root=str(root))),
                        paths, str(users), str(events))
    if not result.ok:
        raise SystemExit(f"ingest rejected the export:\n{result.report.summary()}")
    return result.counts["events_read"] + result.counts["users_read"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--keep", metavar="DIR", help="write the exports and roots here and keep them "
                        "(a later run with the same DIR reuses the exports)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = Settings()
    settings = dataclasses.replace(base, generator=dataclasses.replace(base.generator, n_users=args.users,
                                                                       days=args.days))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = write_exports(settings, work)
        rows = []
        for fmt, reader in (("csv.gz", lambda p: pacsv.read_csv(p)), ("parquet", lambda p: pq.read_table(p))):
            floor_rows, floor_s = _timed(lambda: sum(reader(files[f"{t}.{fmt}"]).num_rows for t in ("users", "events")))
            ours_rows, ours_s = _timed(lambda: _ingest(settings, work / f"root-{fmt}", files[f"users.{fmt}"],
                                                       files[f"events.{fmt}"]))
            assert ours_rows == floor_rows, (ours_rows, floor_rows)
            rows.append((f"ingest from {fmt} (read + contract + validate + write partitions)", ours_rows, ours_s))
            rows.append((f"pyarrow {'read_csv' if fmt == 'csv.gz' else 'read_table'} alone (floor)", floor_rows, floor_s))
        print(f"\n{args.users:,} users x {args.days} days; peak RSS {_peak_rss_mb():,.0f} MB\n")
        print(f"| {'what':<62} | {'rows':>12} | {'s':>7} | {'rows/s':>12} |")
        print(f"| {'-' * 62} | {'-' * 12}:| {'-' * 7}:| {'-' * 12}:|")
        for name, n, s in rows:
            print(f"| {name:<62} | {n:>12,} | {s:>7.2f} | {n / s:>12,.0f} |")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
