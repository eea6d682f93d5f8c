"""Engine benchmark: the pipeline's hot steps in the current code (numpy kernels on pandas and
pyarrow) beside the same work in Polars, DuckDB and pyarrow compute, in one run.

Why: #16 asks for the well-kept engine that gets 1,000,000 users through one 2-core machine in
bounded memory. This measures the candidates on what dominates a seed and a daily update:

- grid: raw events (one Parquet file) -> the dense user x day grid of daily counts and sums
  (one row per user and day from signup to the data end; what `prepare` / `update` build);
- features, 120 days: the grid (one Parquet file) -> window sums (7/14/30 days) of the nine
  daily columns and the quiz score sum for every (user, day) with full history;
- features, one day: the same sums as of the newest day only (batch scoring, the daily update);
- write: the generated events to Parquet partitioned by day (the generator's output).

Each candidate reads the same file with its own reader and its result is checked against the
current code's (row count and the sum of every output column; a mismatch aborts). The current
code computes the complete feature rows (ratios, categories, days since last active) where the
candidates compute only the window sums: that favours the candidates. Peak RSS is the growth of
this process's resident memory during the step (sampled every 10 ms), so the steps run one after
the other in one process, current code first. Polars and DuckDB use every core (2 here); numpy
one.

    bazel run //bench:engine_bench [-- --users 100000 --days 120]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from bench.rss import PeakRss
from churn.config.settings import load_config
from churn.data.generate import draw_population, iter_event_chunks
from churn.data.prepare import EVENT_INPUT_COLUMNS, build_user_days, clean_events, clean_users
from churn.features.compute import compute_features, features_as_of
from churn.invocation.workdir import enter_invocation_directory
from churn.raw.store import BatchWriter
from churn.storage.paths import DataPaths

WINDOWS = (7, 14, 30)
# grid column -> event type counted (None = every event); the sums follow
COUNTS: dict[str, str | None] = {
    "events": None, "logins": "login", "enrolls": "course_enroll", "quiz_attempts": "quiz_attempt",
    "payment_success": "payment_success", "payment_failed": "payment_failed", "tickets": "support_ticket",
}
SUMS: dict[str, tuple[str, str]] = {"watch_minutes": ("video_watch", "watch_minutes"),
                                    "quiz_score_sum": ("quiz_attempt", "quiz_score")}
WINDOW_SOURCES = ("active",) + tuple(COUNTS) + tuple(SUMS)  # the columns summed over windows


@dataclass
class Row:
    step: str
    engine: str
    seconds: float
    peak_mb: float
    rows: int


def same(got: tuple[int, tuple[float, ...]], want: tuple[int, tuple[float, ...]]) -> bool:
    """Equal row counts and column sums within 1e-6 relative (float32 vs float64 accumulation)."""
    return got[0] == want[0] and all(abs(a - b) <= 1e-6 * max(abs(b), 1.0) for a, b in zip(got[1], want[1]))


def checksum(frame: pd.DataFrame | pl.DataFrame | pa.Table, columns: tuple[str, ...]) -> tuple[int, tuple[float, ...]]:
    """(rows, per-column sums rounded) of an engine's output: equal outputs give equal checksums."""
    table = frame if isinstance(frame, pa.Table) else (frame.to_arrow() if isinstance(frame, pl.DataFrame)
                                                         else pa.Table.from_pandas(frame[list(columns)]))
    sums = []
    for c in columns:
        s = pc.sum(pc.cast(table.column(c), pa.float64())).as_py()
        sums.append(float(s or 0.0))
    return table.num_rows, tuple(sums)


# ---------------------------------------------------------------- the grid


def grid_current(events_file: Path, users: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    events = pd.read_parquet(events_file, columns=list(EVENT_INPUT_COLUMNS))
    cleaned, _ = clean_events(events, users, start, end)
    return build_user_days(users, cleaned, start, end)


def grid_polars(events_file: Path, users: pd.DataFrame, start: dt.date, end: dt.date) -> pl.DataFrame:
    ev = pl.scan_parquet(events_file).select(["user_id", "event_time", "event_type", "watch_minutes", "quiz_score"])
    day = (pl.col("event_time").dt.date() - pl.lit(start)).dt.total_days().cast(pl.Int32).alias("day")
    etype = pl.col("event_type").cast(pl.String)
    aggs = [pl.len().alias("events")] + [(etype == t).sum().cast(pl.Int32).alias(c) for c, t in COUNTS.items() if t]
    aggs += [pl.col(v).filter(etype == t).fill_nan(0).fill_null(0).sum().cast(pl.Float32).alias(c)
             for c, (t, v) in SUMS.items()]
    daily = ev.with_columns(day).group_by(["user_id", "day"]).agg(aggs)
    n_days = (end - start).days + 1
    u = pl.from_pandas(users[["user_id", "signup_date"]]).lazy().with_columns(
        ((pl.col("signup_date").dt.date() - pl.lit(start)).dt.total_days().clip(0, n_days)).cast(pl.Int32).alias("first"))
    dense = (u.with_columns(pl.int_ranges(pl.col("first"), n_days, dtype=pl.Int32).alias("day")).explode("day")
             .drop_nulls("day").select(["user_id", "day"]))
    grid = dense.join(daily, on=["user_id", "day"], how="left").with_columns(
        [pl.col(c).fill_null(0) for c in list(COUNTS) + list(SUMS)]).with_columns(
        (pl.col("events") > 0).cast(pl.Int8).alias("active")).sort(["user_id", "day"])
    return grid.collect()


def _duck_table(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """A query's result as an Arrow table (the method's name moved between DuckDB releases)."""
    rel = con.sql(sql)
    fetch = getattr(rel, "to_arrow_table", None) or getattr(rel, "fetch_arrow_table", None) or rel.arrow
    out = fetch()
    return out.read_all() if isinstance(out, pa.RecordBatchReader) else out


def grid_duckdb(events_file: Path, users: pd.DataFrame, start: dt.date, end: dt.date) -> pa.Table:
    con = duckdb.connect()
    con.register("u", pa.Table.from_pandas(users[["user_id", "signup_date"]]))
    n_days = (end - start).days + 1
    counts = ",\n".join(f"count(*) FILTER (WHERE event_type = '{t}')::INTEGER AS {c}" for c, t in COUNTS.items() if t)
    sums = ",\n".join(f"coalesce(sum(coalesce(nullif({v}, 'NaN'), 0)) FILTER (WHERE event_type = '{t}'), 0)::FLOAT AS {c}"
                      for c, (t, v) in SUMS.items())
    zero = ", ".join(f"coalesce(d.{c}, 0) AS {c}" for c in list(COUNTS) + list(SUMS))
    sql = f"""
    WITH daily AS (
      SELECT user_id, (date_diff('day', DATE '{start}', event_time::DATE))::INTEGER AS day,
             count(*)::INTEGER AS events, {counts}, {sums}
      FROM read_parquet('{events_file}') GROUP BY ALL),
    dense AS (
      SELECT user_id, unnest(range(least(greatest(date_diff('day', DATE '{start}', signup_date::DATE), 0), {n_days}),
                                   {n_days}))::INTEGER AS day FROM u)
    SELECT dense.user_id, dense.day, {zero}, (coalesce(d.events, 0) > 0)::TINYINT AS active
    FROM dense LEFT JOIN daily d USING (user_id, day) ORDER BY dense.user_id, dense.day"""
    out = _duck_table(con, sql)
    con.close()
    return out


def grid_pyarrow(events_file: Path, users: pd.DataFrame, start: dt.date, end: dt.date) -> pa.Table:
    """pyarrow compute for the per-event work and the group-by; numpy only to lay out the dense rows."""
    t = pq.read_table(events_file, columns=["user_id", "event_time", "event_type", "watch_minutes", "quiz_score"])
    origin = pa.scalar(dt.datetime.combine(start, dt.time()), pa.timestamp("us"))
    day = pc.cast(pc.divide(pc.cast(pc.subtract(t.column("event_time"), origin), pa.int64()), 86_400_000_000),
                  pa.int32())
    etype = pc.cast(t.column("event_type"), pa.string())
    cols = {"user_id": t.column("user_id"), "day": day}
    for c, kind in COUNTS.items():
        if kind:
            cols[c] = pc.cast(pc.equal(etype, kind), pa.int32())
    for c, (kind, v) in SUMS.items():
        vals = pc.fill_null(pc.if_else(pc.is_nan(t.column(v)), 0.0, t.column(v)), 0.0)
        cols[c] = pc.if_else(pc.equal(etype, kind), vals, pa.scalar(0.0, pa.float32()))
    cols["one"] = pa.array(np.ones(t.num_rows, dtype=np.int32))
    agg = pa.table(cols).group_by(["user_id", "day"]).aggregate(
        [("one", "sum")] + [(c, "sum") for c in list(COUNTS)[1:] + list(SUMS)])
    # dense layout: each user's rows from its first day to the end, aggregated values scattered in
    n_days = (end - start).days + 1
    ids = users["user_id"].to_numpy()
    signup = ((users["signup_date"].to_numpy().astype("datetime64[D]") - np.datetime64(start, "D")).astype(np.int64))
    first = np.clip(signup, 0, n_days)
    length = n_days - first
    offsets = np.concatenate([[0], np.cumsum(length)])
    urow = np.repeat(np.arange(len(ids)), length)
    dense_day = (first[urow] + np.arange(offsets[-1]) - offsets[urow]).astype(np.int32)
    a_user = np.searchsorted(ids, agg.column("user_id").to_numpy())
    a_day = agg.column("day").to_numpy()
    keep = (a_day >= first[a_user]) & (a_day < n_days)
    pos = offsets[:-1][a_user[keep]] + a_day[keep] - first[a_user[keep]]
    out = {"user_id": ids[urow], "day": dense_day}
    names = {"one_sum": "events"} | {f"{c}_sum": c for c in list(COUNTS)[1:] + list(SUMS)}
    for src, dst in names.items():
        col = agg.column(src).to_numpy()
        dense = np.zeros(len(urow), dtype=col.dtype)
        dense[pos] = col[keep]
        out[dst] = dense
    out["active"] = (out["events"] > 0).astype(np.int8)
    return pa.table(out)


# ---------------------------------------------------------------- window sums


def window_names() -> tuple[str, ...]:
    return tuple(f"{c}_{w}d" for w in WINDOWS for c in WINDOW_SOURCES)


def features_current(grid_file: Path, data_start: dt.date, as_of: dt.date | None) -> pd.DataFrame:
    grid = pd.read_parquet(grid_file)
    if as_of is None:
        return compute_features(grid, WINDOWS, data_start=data_start)
    return features_as_of(grid, as_of, WINDOWS, data_start=data_start)


def features_polars(grid_file: Path, first_day: int, as_of_day: int | None) -> pl.DataFrame:
    g = pl.scan_parquet(grid_file).select(["user_id", "day_index"] + list(WINDOW_SOURCES))
    if as_of_day is None:
        exprs = [pl.col(c).cast(pl.Float64).rolling_sum(window_size=w, min_samples=1).over("user_id").alias(f"{c}_{w}d")
                 for w in WINDOWS for c in WINDOW_SOURCES]
        return (g.sort(["user_id", "day_index"]).with_columns(exprs)
                .filter(pl.col("day_index") >= first_day + max(WINDOWS) - 1)
                .select(["user_id", "day_index"] + list(window_names())).collect())
    recent = g.filter((pl.col("day_index") <= as_of_day) & (pl.col("day_index") > as_of_day - max(WINDOWS)))
    aggs = [pl.col(c).filter(pl.col("day_index") > as_of_day - w).cast(pl.Float64).sum().alias(f"{c}_{w}d")
            for w in WINDOWS for c in WINDOW_SOURCES]
    return (recent.group_by("user_id").agg([pl.col("day_index").max()] + aggs)
            .filter(pl.col("day_index") == as_of_day).sort("user_id").collect())


def features_duckdb(grid_file: Path, first_day: int, as_of_day: int | None) -> pa.Table:
    con = duckdb.connect()
    if as_of_day is None:
        sums = ",\n".join(f"sum({c}::DOUBLE) OVER (PARTITION BY user_id ORDER BY day_index ROWS BETWEEN {w - 1} PRECEDING "
                          f"AND CURRENT ROW) AS {c}_{w}d" for w in WINDOWS for c in WINDOW_SOURCES)
        sql = f"""SELECT * FROM (SELECT user_id, day_index, {sums} FROM read_parquet('{grid_file}'))
                  WHERE day_index >= {first_day + max(WINDOWS) - 1} ORDER BY user_id, day_index"""
    else:
        sums = ",\n".join(f"sum({c}::DOUBLE) FILTER (WHERE day_index > {as_of_day - w}) AS {c}_{w}d"
                          for w in WINDOWS for c in WINDOW_SOURCES)
        sql = f"""SELECT user_id, max(day_index) AS day_index, {sums} FROM read_parquet('{grid_file}')
                  WHERE day_index <= {as_of_day} AND day_index > {as_of_day - max(WINDOWS)}
                  GROUP BY user_id HAVING max(day_index) = {as_of_day} ORDER BY user_id"""
    out = _duck_table(con, sql)
    con.close()
    return out


def features_pyarrow(grid_file: Path, first_day: int, as_of_day: int | None) -> pa.Table:
    """pyarrow compute: a dataset scan with a filter, group-by sums (one day) or cumulative sums (all days)."""
    if as_of_day is not None:
        ds = pads.dataset(str(grid_file), format="parquet")
        day = pads.field("day_index")
        t = ds.to_table(columns=["user_id", "day_index"] + list(WINDOW_SOURCES),
                        filter=(day <= as_of_day) & (day > as_of_day - max(WINDOWS)))
        parts = []
        for w in WINDOWS:
            sub = t.filter(pc.greater(t.column("day_index"), as_of_day - w))
            agg = sub.group_by("user_id").aggregate([(c, "sum") for c in WINDOW_SOURCES] + [("day_index", "max")])
            agg = agg.filter(pc.equal(agg.column("day_index_max"), as_of_day)).sort_by("user_id")
            parts.append({f"{c}_{w}d": pc.cast(agg.column(f"{c}_sum"), pa.float64()) for c in WINDOW_SOURCES})
            ids = agg.column("user_id")
        cols = {"user_id": ids} | {k: v for p in parts for k, v in p.items()}
        return pa.table(cols)
    t = pq.read_table(grid_file, columns=["user_id", "day_index"] + list(WINDOW_SOURCES))
    uid = t.column("user_id").to_numpy()
    n = len(uid)
    new = np.ones(n, dtype=bool)
    new[1:] = uid[1:] != uid[:-1]
    first_row = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rows = np.flatnonzero(t.column("day_index").to_numpy() >= first_day + max(WINDOWS) - 1)
    out = {"user_id": uid[rows]}
    for c in WINDOW_SOURCES:
        cs = np.concatenate([[0.0], pc.cumulative_sum(pc.cast(t.column(c), pa.float64())).to_numpy()])
        for w in WINDOWS:
            out[f"{c}_{w}d"] = cs[rows + 1] - cs[np.maximum(rows + 1 - w, first_row[rows])]
    return pa.table(out)


# ---------------------------------------------------------------- writing generated events


def write_current(chunks: list[pd.DataFrame], out: Path) -> int:
    """The generator's writer: `churn.raw.store.BatchWriter` (pandas -> pyarrow, one zstd part per day)."""
    with BatchWriter(DataPaths(out), "generate", replace=True) as writer:
        n = sum(writer.add_events(ev) for ev in chunks)
        writer.commit({})
    return n


def write_polars(chunks: list[pd.DataFrame], out: Path) -> int:
    for i, ev in enumerate(chunks):
        pl.from_pandas(ev).with_columns(pl.col("event_time").dt.date().alias("date")).write_parquet(
            out / f"chunk-{i}", partition_by="date")
    return len(chunks)


def write_duckdb(chunks: list[pd.DataFrame], out: Path) -> int:
    con = duckdb.connect()
    for i, ev in enumerate(chunks):
        con.register("ev", ev)
        con.execute(f"COPY (SELECT *, event_time::DATE AS date FROM ev) TO '{out}/chunk-{i}' "
                    "(FORMAT parquet, PARTITION_BY (date))")
        con.unregister("ev")
    con.close()
    return len(chunks)


def write_pyarrow(chunks: list[pd.DataFrame], out: Path) -> int:
    for i, ev in enumerate(chunks):
        t = pa.Table.from_pandas(ev, preserve_index=False)
        t = t.append_column("date", pc.cast(t.column("event_time"), pa.date32()))
        pads.write_dataset(t, out, format="parquet", partitioning=["date"], partitioning_flavor="hive",
                           basename_template=f"chunk-{i}-{{i}}.parquet", existing_data_behavior="overwrite_or_ignore")
    return len(chunks)


# ---------------------------------------------------------------- the run


def measure(step: str, engine: str, fn: Callable[[], object], count: Callable[[object], int]) -> tuple[Row, object]:
    with PeakRss() as rss:
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
    return Row(step, engine, secs, rss.growth_mb, count(out)), out


def run_candidates(step: str, candidates: dict[str, Callable[..., object]], call: Callable[[Callable[..., object]], object],
                   want: tuple[int, tuple[float, ...]], columns: tuple[str, ...]) -> list[Row]:
    """Each candidate engine on one step, its output checked against the current code's checksum."""
    rows = []
    for name, fn in candidates.items():
        row, out = measure(step, name, lambda fn=fn: call(fn), _len)
        got = checksum(out, columns)  # type: ignore[arg-type]
        if not same(got, want):
            raise SystemExit(f"{step}: {name} differs from the current code: {got} != {want}")
        rows.append(row)
        del out
        print(f"{step}: {name} {row.seconds:.2f}s", flush=True)
    return rows


def _len(x: object) -> int:
    return x.num_rows if isinstance(x, pa.Table) else (x.height if isinstance(x, pl.DataFrame) else len(x))  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    enter_invocation_directory()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--steps", default="grid,features,features1,write")
    args = ap.parse_args(argv)
    steps = set(args.steps.split(","))
    base = load_config()
    cfg = dataclasses.replace(base.generator, n_users=args.users, days=args.days)
    tmp = Path(tempfile.mkdtemp(prefix="churn-engine-bench-"))
    rows: list[Row] = []
    try:
        pop = draw_population(cfg)
        chunks = list(iter_event_chunks(cfg, pop))
        events = pd.concat(chunks, ignore_index=True)
        events_file = tmp / "events.parquet"
        events.to_parquet(events_file, index=False)
        n_events = len(events)
        start = dt.date.fromisoformat(cfg.start_date)
        end = start + dt.timedelta(days=cfg.days - 1)
        del events
        users, _ = clean_users(pop.users)
        print(f"engine bench: {args.users:,} users x {args.days} days = {n_events:,} events; "
              f"numpy {np.__version__}, pandas {pd.__version__}, pyarrow {pa.__version__}, "
              f"polars {pl.__version__}, duckdb {duckdb.__version__}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)

        grid_cols = ("events", "logins", "quiz_attempts", "watch_minutes", "quiz_score_sum", "active")
        if steps & {"grid", "features", "features1"}:
            row, grid = measure("grid", "current (numpy on pandas)",
                                lambda: grid_current(events_file, users, start, end), _len)
            rows.append(row)
            want = checksum(grid, grid_cols)
            grid_file = tmp / "grid.parquet"
            grid.to_parquet(grid_file, index=False)
            del grid
            if "grid" in steps:
                candidates = {"polars": grid_polars, "duckdb": grid_duckdb, "pyarrow compute": grid_pyarrow}
                rows += run_candidates("grid", candidates, lambda fn: fn(events_file, users, start, end), want, grid_cols)
        for step, as_of in (("features, 120 days", None), ("features, one day", end)):
            if ("features" if as_of is None else "features1") not in steps:
                continue
            cols = tuple(f"{c}_{w}d" for w in WINDOWS for c in ("events", "watch_minutes", "active"))
            current_cols = tuple(c.replace("active_", "active_days_") for c in cols)
            row, out = measure(step, "current (numpy on pandas)", lambda: features_current(grid_file, start, as_of), _len)
            rows.append(row)
            want = checksum(out.rename(columns={a: b for a, b in zip(current_cols, cols)}), cols)
            del out
            as_of_day = None if as_of is None else (as_of - start).days
            candidates = {"polars": features_polars, "duckdb": features_duckdb, "pyarrow compute": features_pyarrow}
            rows += run_candidates(step, candidates, lambda fn: fn(grid_file, 0, as_of_day), want, cols)
        if "write" in steps:
            for name, fn in (("current (numpy on pandas)", write_current), ("polars", write_polars),
                             ("duckdb", write_duckdb), ("pyarrow compute", write_pyarrow)):
                out_dir = tmp / f"write-{name.split()[0]}"
                out_dir.mkdir()
                row, _ = measure("write events by day", name, lambda fn=fn, o=out_dir: fn(chunks, o), lambda _: n_events)
                rows.append(row)
                shutil.rmtree(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(render(rows))
    return 0


def render(rows: list[Row]) -> str:
    head = f"{'step':<22} {'engine':<27} {'seconds':>8} {'vs current':>10} {'peak RSS +':>11} {'rows':>12}"
    lines = [head, "-" * len(head)]
    current: dict[str, float] = {}
    for r in rows:
        if r.engine.startswith("current"):
            current[r.step] = r.seconds
        ratio = current.get(r.step, r.seconds) / r.seconds if r.seconds else float("nan")
        lines.append(f"{r.step:<22} {r.engine:<27} {r.seconds:>8.2f} {ratio:>9.2f}x {r.peak_mb:>9.0f}MB {r.rows:>12,}")
    lines.append("vs current = current seconds / engine seconds (above 1: the engine is faster)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
