"""`ml_jobs <command>`: the batch side of churn-mlops (one binary, one subcommand per step).

Thin by design: argument parsing and printing only; the steps live in `churn.pipeline.steps`
so Jobs, tests and `bootstrap` run the same code. Exit codes (churn.errors): 0 ok, 1 an
expected failure (a churn.errors.ChurnError: bad input, missing file, failed validation, an
unknown config key; one line naming the file, key or rule), 2 drift FAIL (drift-check) or a
bad command line (argparse), 70 a bug (any other exception: its traceback is printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Callable, Sequence

from churn.config.settings import Settings, load_config
from churn.errors import EXIT_BUG, EXIT_OK, ChurnError
from churn.invocation.workdir import enter_invocation_directory
from churn.ingest.readers import FORMATS
from churn.pipeline import steps
from churn.pipeline.steps import StepResult
from churn.raw import contract
from churn.sampling.users import parse_shard

log = logging.getLogger("ml_jobs")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    try:
        shard = parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert shard is not None
    return shard


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ml_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--config", metavar="PATH", help="YAML config (default: $CHURN_MLOPS_CONFIG, else built-in)")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="debug logging, and the traceback of expected errors too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text)

    p = add("ingest", "bring your own users and/or events (CSV, JSON Lines, Parquet; .gz) into raw/")
    p.add_argument("--users", metavar="PATH", help="users export (see `ml_jobs schema`)")
    p.add_argument("--events", metavar="PATH", help="events export (see `ml_jobs schema`)")
    p.add_argument("--format", choices=FORMATS, help="file format (default: from the extension)")
    add("schema", "print the raw-data contract (the tables ingest accepts)").add_argument(
        "--json", action="store_true", help="as a Frictionless Tabular Data Package (JSON)")
    p = add("generate", "generate synthetic raw data into raw/, or continue the world into the inbox")
    p.add_argument("--simulate-shift", action="store_true", help="degrade behaviour in the last days (drift demo)")
    p.add_argument("--next-days", type=_positive, metavar="N",
                   help="continue the world from its last day by N days, as one batch folder in inbox/")
    p.add_argument("--shift-from", type=_date, metavar="DATE",
                   help="with --next-days: behaviour shift from DATE on (kept for later batches)")
    add("ingest-inbox", "ingest every batch folder waiting in inbox/ (exit 1 on a rejected batch)")
    p = add("update", "bring grid, features and labels up to the newest raw day, recomputing only what changed")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="compute only users of shard I of N (stable user hash) into shards/update/; then merge-update N")
    p = add("merge-update", "merge the outputs of update --shard 0/N..N-1/N into the day files and the update state")
    p.add_argument("shards", type=_positive, metavar="N", help="number of shards (the N of --shard I/N)")
    p = add("daily", "the daily cycle: ingest-inbox -> update -> batch-score (newest day) -> score-distribution")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="as pod I of an Indexed Job of N: the sharded steps for shard I, the merges once")
    add("validate", "validate raw data; exit 1 with a report on any violation")
    add("prepare", "clean raw data and build the user x day grid (needs validated raw data)")
    add("features", "compute features for every user and as-of date")
    add("labels", "point-in-time churn labels and the training set")
    add("training-set", "the training set again from the tables as they are (after an update; train refuses an older one)")
    add("train", "train baseline + candidate, register both, print the metrics table")
    p = add("promote", "promote a registered version to production through the holdout gate")
    p.add_argument("--version", help="version to promote (default: best model of the last training run)")
    p.add_argument("--force", action="store_true", help="skip the gate (requires --reason)")
    p.add_argument("--reason", help="why (recorded in the registry history)")
    p = add("batch-score", "score eligible users as of a date with the production model")
    p.add_argument("--as-of", type=_date, help="as-of date YYYY-MM-DD (default: latest feature date)")
    p.add_argument("--top-k", type=_positive, help="rows in top_k.csv (default: scoring.top_k)")
    p.add_argument("--shard", type=_shard, metavar="I/N", help="score only shard I of N (stable user hash)")
    p = add("merge-shards", "merge the outputs of batch-score --shard 0/N..N-1/N into global ranks and top-K")
    p.add_argument("shards", type=_positive, metavar="N", help="number of shards (the N of --shard I/N)")
    p.add_argument("--as-of", type=_date, help="scored date YYYY-MM-DD (default: latest feature date)")
    p.add_argument("--top-k", type=_positive, help="rows in top_k.csv (default: scoring.top_k)")
    add("score-distribution", "distribution of predicted risk -> monitoring/score_distribution/").add_argument(
        "--as-of", type=_date, help="scored date (default: latest scored date)")
    add("drift-check", "feature drift, training window vs recent window; exit 2 on FAIL")
    add("retrain", "refresh features and labels, train, promote through the gate")
    p = add("rollback", "point production back at an earlier version")
    p.add_argument("--to", dest="to_version", metavar="VERSION", help="target (default: previous production)")
    p.add_argument("--reason", default="rollback", help="why (recorded in the history)")
    add("bootstrap", "run every step in order into an empty data root").add_argument(
        "--force", action="store_true", help="bootstrap even if the data root is not empty")
    return parser


def _dispatch(args: argparse.Namespace, settings: Settings) -> list[StepResult]:
    commands: dict[str, Callable[[], StepResult | list[StepResult]]] = {
        "ingest": lambda: steps.step_ingest(settings, args.users, args.events, args.format),
        "generate": lambda: (steps.step_generate_next(settings, args.next_days, args.shift_from) if args.next_days
                             else steps.step_generate(settings, args.simulate_shift)),
        "ingest-inbox": lambda: steps.step_ingest_inbox(settings),
        "update": lambda: steps.step_update(settings, args.shard),
        "merge-update": lambda: steps.step_merge_update(settings, args.shards),
        "daily": lambda: steps.step_daily(settings, args.shard),
        "validate": lambda: steps.step_validate(settings),
        "prepare": lambda: steps.step_prepare(settings),
        "features": lambda: steps.step_features(settings),
        "labels": lambda: steps.step_labels(settings),
        "training-set": lambda: steps.step_training_set(settings),
        "train": lambda: steps.step_train(settings),
        "promote": lambda: steps.step_promote(settings, args.version, args.force, args.reason),
        "batch-score": lambda: steps.step_batch_score(settings, args.as_of, args.top_k, args.shard),
        "merge-shards": lambda: steps.step_merge_shards(settings, args.shards, args.as_of, args.top_k),
        "score-distribution": lambda: steps.step_score_distribution(settings, args.as_of),
        "drift-check": lambda: steps.step_drift_check(settings),
        "retrain": lambda: steps.step_retrain(settings),
        "rollback": lambda: steps.step_rollback(settings, args.to_version, args.reason),
        "bootstrap": lambda: steps.bootstrap(settings, args.force),
    }
    out = commands[args.command]()
    return out if isinstance(out, list) else [out]


def _print_results(results: list[StepResult]) -> None:
    for r in results:
        if r.message:
            print(r.message)
        print(f"{r.name}: {r.rows} rows in {r.seconds:.2f}s (exit {r.exit_code})")
    if len(results) > 1:
        print(steps.format_table([{"step": r.name, "rows": r.rows, "seconds": round(r.seconds, 2),
                                   "exit": r.exit_code} for r in results]))


def _schema(as_json: bool) -> None:
    print(json.dumps(contract.data_package(), indent=2) if as_json else contract.markdown(), end="\n" if as_json else "")


def main(argv: Sequence[str] | None = None) -> int:
    enter_invocation_directory()  # ./var, --config and CHURN_DATA_ROOT as the user typed them
    args = build_parser().parse_args(argv)
    if args.command == "schema":  # no config, no data root: the contract is code
        _schema(args.json)
        return EXIT_OK
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_config(args.config)
        results = _dispatch(args, settings)
    except ChurnError as exc:
        if args.verbose:
            log.exception("%s failed", args.command)
        print(f"ml_jobs {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:  # a bug, not the user's input: keep everything needed to fix it
        log.exception("%s: unexpected error (a bug; please report it with this traceback)", args.command)
        return EXIT_BUG
    _print_results(results)
    return next((r.exit_code for r in results if r.exit_code != EXIT_OK), EXIT_OK)


if __name__ == "__main__":
    sys.exit(main())
