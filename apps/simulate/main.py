"""`./bazelw run //:simulate -- --days 28 [--shift-from DAY] [--root DIR]`: a month of operation, locally.

Bootstraps the data root (120 days of the synthetic world, the first production model) when it
has none, then runs DAYS daily cycles: a new day into the inbox, ingest, update, batch-score,
score-distribution, drift check, and on every 7th day the retrain through the gate. Ends with the
per-day table and a PNG timeline (drift PSI of the top features, mean predicted risk, the
production model's PR-AUC on labels as they mature, promotions marked) under DIR/simulation/.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from churn.config.settings import load_config
from churn.invocation.workdir import enter_invocation_directory
from churn.daily.month import month_frame, run_month, table, timeline_png
from churn.pipeline.steps import with_root
from churn.storage.files import atomic_write_bytes, atomic_write_text

# config/month.yaml in the runfiles tree (not resolved: the runfiles path, like //:demo's ml_jobs)
MONTH_CONFIG = Path(__file__).parent.parent.parent / "config" / "month.yaml"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=28, help="daily cycles to run (default 28)")
    parser.add_argument("--shift-from", type=int, metavar="DAY", help="behaviour shift from this day (1-based) on")
    parser.add_argument("--root", default="./var-month", help="data root (default ./var-month; created if missing)")
    parser.add_argument("--config", help="YAML config (default: config/month.yaml of this checkout)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = args.config or str(MONTH_CONFIG.absolute())
    enter_invocation_directory()  # under `bazel run`: relative paths from the caller's directory
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(args.root).absolute()
    settings = with_root(load_config(config), root)
    t0 = time.perf_counter()

    def progress(row) -> None:  # one line per day while the month runs
        print(f"day {row.day:2d} {row.date}: {row.users_scored} scored, drift {row.drift}, "
              f"production {row.production}, mean risk {row.mean_risk:.4f} {row.retrain}", flush=True)

    rows = run_month(settings, args.days, args.shift_from, progress)
    out = root / "simulation"
    png = atomic_write_bytes(out / "timeline.png",
                             timeline_png(rows, args.shift_from, settings.monitoring.psi_fail))
    atomic_write_text(out / "days.csv", month_frame(rows).to_csv(index=False))
    print(table(rows))
    print(f"{args.days} days in {time.perf_counter() - t0:.1f}s; timeline: {png}; table: {out / 'days.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
