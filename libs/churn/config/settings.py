"""Typed, frozen settings for every pipeline step, loaded from one YAML file (pydantic).

Why one typed place: the reference project re-read an untyped YAML dict everywhere (and on
every API request); a typo in a key silently fell back to a default. Here every section is a
frozen pydantic dataclass: an unknown or ill-typed key is a `ConfigError` that names the
dotted key (`generator.n_users: expected int, got 'abc'`), and the defaults below are the one
source of truth (config/example.yaml is generated from them and tested against them).

Resolution order: `load_config(path)` argument, else env `CHURN_MLOPS_CONFIG`, else the
embedded defaults. Env `CHURN_DATA_ROOT` then overrides `paths.root`: the images set it to
the directory where every workload mounts the data volume, so the cluster's ConfigMap does
not name the data root at all.

Adding a key: give its section a field with a type from the aliases below (`Int`, `Float`,
`Str`, `Bool`, `Positive`, `Probability`, `tuple[Int, ...]`, ...) and a default; a rule that
involves two fields goes into the section's `__post_init__` as `_require(ok, field, message)`.
Then regenerate config/example.yaml (`./bazelw run //libs/churn/config:example_yaml >
config/example.yaml`); config_test fails until it matches. Values are strict: YAML `"5"` is
not an int, `yes` is not a float.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from dataclasses import field
from typing import Annotated, Any, Callable, Mapping

import pydantic
import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Strict, TypeAdapter

from churn.errors import ConfigError

ENV_CONFIG = "CHURN_MLOPS_CONFIG"
ENV_DATA_ROOT = "CHURN_DATA_ROOT"


class _Problem(ValueError):
    """A rule on `key` of a section failed (raised in validators, reported as `<section>.<key>: ...`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise _Problem(key, message)


def _rule(ok: Callable[[Any], bool], expected: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"expected {expected}, got {value!r}")
        return value

    return AfterValidator(check)


def _iso_date(value: Any) -> Any:
    """YAML reads 2025-01-01 as a date; the setting keeps the ISO text."""
    return value.isoformat() if isinstance(value, dt.date) else value


def _is_iso_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # ints are accepted (as floats), booleans are not
Str = Annotated[str, Strict()]
Bool = Annotated[bool, Strict()]
Positive = Annotated[int, Strict(), _rule(lambda v: v > 0, "> 0")]
PositiveFloat = Annotated[float, Strict(), _rule(lambda v: v > 0, "> 0")]
NonNegativeFloat = Annotated[float, Strict(), _rule(lambda v: v >= 0, ">= 0")]
Probability = Annotated[float, Strict(), _rule(lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]")]
Names = Annotated[tuple[Str, ...], _rule(len, "a non-empty list")]
IsoDate = Annotated[Str, _rule(_is_iso_date, "an ISO date YYYY-MM-DD"), BeforeValidator(_iso_date)]

section = pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))


@section
class PathsSettings:
    """Where all data lives; `churn.storage.paths.DataPaths` derives the layout from it."""

    root: Str = "./var"


@section
class ShiftSettings:
    """The `--simulate-shift` knobs: degrade behaviour in the last `last_days` days.

    Why: drift demos and drift tests need a dataset whose recent window really differs.
    Multipliers apply to engagement (which drives every behaviour), to the daily activity
    probability and to the mean watch minutes.
    """

    enabled: Bool = False
    last_days: Positive = 30
    engagement_multiplier: NonNegativeFloat = 0.6
    active_multiplier: NonNegativeFloat = 0.6
    watch_multiplier: NonNegativeFloat = 0.5
    # A continued world (`generate --next-days --shift-from`) also changes who churns: users of
    # `churn_source` churn `churn_multiplier` times as often, a relation the old model never saw.
    churn_multiplier: NonNegativeFloat = 3.0
    churn_source: Str = "ads"


@section
class GeneratorSettings:
    """Every knob of the synthetic generator (docs/domain.md); defaults reproduce the reference.

    Additions to the reference (all off by default, so the reference counts hold):
    `late_signup_share` lets some users sign up during the data period.
    """

    n_users: Positive = 2000
    days: Positive = 120
    seed: Int = 42
    start_date: IsoDate = "2025-01-01"
    # users
    paid_share: Probability = 0.35
    engagement_alpha: Float = 2.0
    engagement_beta: Float = 2.5
    signup_spread_days: Positive = 40
    late_signup_share: Probability = 0.0
    countries: Names = ("IN", "US", "UK", "CA", "AU", "SG")
    marketing_sources: Names = ("organic", "referral", "ads", "youtube", "community")
    courses: Names = (
        "k8s-mastery", "devops-warrior", "mlops-foundation", "argo-cd",
        "terraform", "linux-pro", "observability",
    )
    # churn: p = min(churn_max, base * (offset + scale * (1 - e) ** power)), base x paid multiplier
    churn_base: Probability = 0.35
    paid_churn_multiplier: Float = 0.75
    churn_max: Probability = 0.95
    churn_offset: Float = 0.4
    churn_scale: Float = 1.4
    churn_power: Float = 1.6
    churn_start_fraction: Probability = 0.25
    # daily activity
    active_base: Probability = 0.15
    active_engagement: Float = 0.8
    sessions_min: Positive = 1
    sessions_max: Int = 3
    # per session
    video_base: Probability = 0.5
    video_engagement: Float = 0.4
    watch_mean_base: Float = 20.0
    watch_mean_engagement: Float = 40.0
    watch_sd: Float = 10.0
    watch_min: Float = 2.0
    watch_max: Float = 180.0
    quiz_base: Probability = 0.25
    quiz_engagement: Float = 0.35
    quiz_mean_base: Float = 50.0
    quiz_mean_engagement: Float = 40.0
    quiz_sd: Float = 15.0
    enroll_p: Probability = 0.05
    # per active day
    payment_days_of_month: Annotated[int, Strict(), _rule(lambda v: 0 <= v <= 31, "0..31")] = 3
    payment_success_p: Probability = 0.93
    amount_mean: Float = 499.0
    amount_sd: Float = 80.0
    amount_min: Float = 199.0
    amount_max: Float = 999.0
    ticket_p: Probability = 0.005
    # a continued world (`generate --next-days`): new sign-ups per day as a share of n_users
    signup_rate: Probability = 0.005
    shift: ShiftSettings = field(default_factory=ShiftSettings)

    def __post_init__(self) -> None:
        _require(self.sessions_max >= self.sessions_min, "sessions_max",
                 f"expected >= sessions_min ({self.sessions_min}), got {self.sessions_max}")


@section
class FeaturesSettings:
    """Rolling windows (days); must match the schema the model was trained with."""

    windows_days: tuple[Positive, ...] = (7, 14, 30)

    def __post_init__(self) -> None:
        _require(bool(self.windows_days), "windows_days", "expected a non-empty list of positive ints, got []")
        _require(len(set(self.windows_days)) == len(self.windows_days), "windows_days",
                 f"duplicate windows in {list(self.windows_days)}")


@section
class ChurnSettings:
    """Label definition: churned at t = no active day in (t, t + window_days]."""

    window_days: Positive = 30


@section
class SplitSettings:
    """Honest time split: train as-of dates, then `gap_days` unused, then `test_days`.

    Why a gap >= churn window: a training label at t looks at (t, t + W]; without the gap the
    last training labels would see the test period (a leak of the reference project).
    """

    gap_days: Int = 30
    test_days: Positive = 14
    min_train_days: Positive = 7


@section
class TrainingSettings:
    """Model fitting knobs (owned by `churn.training`; extend freely)."""

    # the operating point of every model: card metrics, the promotion gate, the score
    # distribution's share of users at or above it (read from the production card)
    threshold: Probability = 0.5
    random_state: Int = 42
    # deterministic subsample of users beyond this many training rows: bounds fit time and
    # memory at 100k+ users (the bootstrap's largest step there)
    max_train_rows: Positive = 500_000
    # the stored holdout (card metrics and the promotion gate) keeps at most this many rows
    max_holdout_rows: Positive = 300_000
    # OpenMP/BLAS threads while fitting (0 = library default = all cores). 1 by default:
    # with more threads than free cores (shared nodes, CPU limits) OpenMP spin-waits and
    # gradient boosting ran 17x slower in a measurement here.
    threads: Int = 1
    # models fitted, evaluated and checked at once, each on a thread of the step
    # (`churn.training.threads`): 2, the two model kinds; their kernels release the
    # interpreter lock at 100,000 users and more (README "Scale"). 1: one after the other.
    parallel_models: Positive = 2


@section
class RegistrySettings:
    """Promotion gate: a candidate must beat production on `metric` by `min_improvement`."""

    metric: Str = "pr_auc"
    min_improvement: Float = 0.0


@section
class ScoringSettings:
    """Batch scoring output knobs (owned by `churn.scoring`; extend freely)."""

    top_k: Positive = 100
    # OpenMP threads for sklearn predict_proba (0 = all cores); see training.threads
    threads: Int = 1


@section
class MonitoringSettings:
    """Drift thresholds (docs/drift.md): a FAIL needs the PSI bound and a significant test."""

    psi_warn: Float = 0.10
    psi_fail: Float = 0.25
    bins: Positive = 10
    # family-wise alpha of all the run's tests (KS / chi-square / Fisher), Bonferroni-corrected
    ks_alpha: Probability = 0.01
    # below this many rows in either window the report is flagged `small_sample`
    min_sample_size: Positive = 500
    recent_days: Positive = 14
    # a subset of the production model's features to check (empty = all of them); a name the
    # model does not have is an error
    features: tuple[Str, ...] = ()
    # users in each window's sample: above it, a stable hash subset of about this many users,
    # so drift-check's memory stops growing with the users (#16; at 1,000,000 users one row
    # per user and window was its 2.35 GiB peak) while the tests keep ~200,000 rows a side
    max_sample_users: Positive = 200_000

    def __post_init__(self) -> None:
        _require(self.psi_fail >= self.psi_warn, "psi_fail",
                 f"expected >= psi_warn ({self.psi_warn}), got {self.psi_fail}")


@section
class ApiSettings:
    """Online API knobs (owned by apps/api): read once at startup, never per request.

    Every resource a client can make the server spend is bounded here; each limit has its
    own answer or counter (apps/api/README.md, "Limits"): header bytes and count (431),
    header and body read timeouts (408), idle keep-alive timeout, concurrent connections
    (503), error list length (422 with `error_count`), and batch work off the event loop.
    """

    host: Str = "127.0.0.1"
    port: Positive = 8000
    max_body_bytes: Positive = 1_048_576  # /predict/batch body (413 above)
    max_predict_body_bytes: Positive = 16_384  # /predict body: one row is ~1.5 KB (413 above)
    max_batch_size: Positive = 1000
    max_header_bytes: Positive = 16_384  # request line + headers (431 above)
    max_headers: Positive = 64  # header lines per request (431 above)
    header_timeout_seconds: PositiveFloat = 5.0  # from connection (or first byte of a request) to end of headers (408)
    body_timeout_seconds: PositiveFloat = 10.0  # from end of headers to end of body (408)
    keepalive_timeout_seconds: PositiveFloat = 5.0  # idle time between requests before the server closes
    max_connections: Positive = 512  # open connections; one more is answered 503 and closed
    max_errors: Positive = 20  # a 422 lists the first N problems and counts them all
    max_feature_value: PositiveFloat = 1e9  # cap of numeric features whose schema has no maximum (counts, days)
    batch_chunk_rows: Positive = 100  # a batch is validated and scored this many rows at a time, off the loop
    batch_workers: Positive = 1  # processes that parse, validate and score batches (the rest queue); ~10-20 MiB each
    protocol_error_log_interval_seconds: PositiveFloat = 10.0  # at most one log line per interval for malformed HTTP
    reload_interval_seconds: PositiveFloat = 2.0
    log_level: Str = "INFO"


@section
class ValidationSettings:
    """Raw-data rules that are a choice (the rest is the contract, churn.raw.contract).

    `unknown_event_types`: `ignore` counts event types outside the seven known ones in the
    report and keeps them out of every feature; `reject` makes them a violation.
    """

    unknown_event_types: Annotated[Str, _rule(lambda v: v in ("ignore", "reject"), "ignore or reject")] = "ignore"


@section
class IngestColumns:
    """Per table, {contract column: column name in your files} for sources named otherwise."""

    users: dict[Str, Str] = field(default_factory=dict)
    events: dict[Str, Str] = field(default_factory=dict)


@section
class IngestSettings:
    """How `ml_jobs ingest` reads exports: CSV delimiter and the column mapping.

    `retention_days`: how far before the newest stored day a batch's events are still
    ordinary late data. Older days are accepted with a warning (they make the next update
    recompute that far back, and lie outside what drift and a retrain look at).
    """

    delimiter: Annotated[Str, _rule(lambda v: len(v) == 1, "one character")] = ","
    columns: IngestColumns = field(default_factory=IngestColumns)
    retention_days: Positive = 180


@section
class ShardingSettings:
    """How many users the heavy steps hold in memory at once (`ml_jobs update`'s grid, features
    and labels are computed shard by shard of the stable user hash, `churn.sampling.users`).

    `shard_users`: users per shard in one process (the update, and generate's chunks); peak
    memory follows it, not the number of users. 12,500: the 120-day update of 100,000 users
    peaked at 1.3 GiB in 8 shards and 2.1 GiB in 4, and took less time (README, Benchmarks).
    A data root of at most this many users is processed in one piece, exactly as before
    sharding. `validate` names the shards of this size that bad rows belong to.

    `wait_seconds`: how long a pod of the sharded daily cycle (`ml_jobs daily --shard I/N`, the
    `indexed-daily` component) waits for the other shards at each barrier before it fails naming
    them; below the Job's activeDeadlineSeconds (7200), so a missing pod is reported, not killed.

    `workers`: processes that compute the pieces of one step at once (`churn.parallel.pool`);
    2, the cores of the machine the targets are set for. Memory is about `workers + 1` pieces
    (the pieces computed and the one being written); 1 computes in the step's own process.

    `raw_workers`: the same for `generate`'s shards and `validate`'s groups of parts. 2: since
    the workers hand generate's first event ids on (no count pass in the step's process),
    two processes are faster at 1,000,000 users (session 13, load 4.5-7: generate 113 s wall
    for 130 s of CPU against 200 s for 117 s, validate 123 s for 92 s against 225 s for
    90 s) and at 100,000 users on a quiet machine (generate 9.9 s against 13.4 s, validate
    6.4 s against 8.0 s, on 149365e); each worker's start costs about 1-2 s of CPU (README "Scale").
    """

    shard_users: Positive = 12_500
    wait_seconds: Positive = 3600
    workers: Positive = 2
    raw_workers: Positive = 2


@section
class Settings:
    """All settings. Build with `load_config`; derive variants with `dataclasses.replace`
    (which validates again)."""

    paths: PathsSettings = field(default_factory=PathsSettings)
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    features: FeaturesSettings = field(default_factory=FeaturesSettings)
    churn: ChurnSettings = field(default_factory=ChurnSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    scoring: ScoringSettings = field(default_factory=ScoringSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    sharding: ShardingSettings = field(default_factory=ShardingSettings)

    def __post_init__(self) -> None:
        _require(self.split.gap_days >= self.churn.window_days, "split.gap_days",
                 f"expected >= churn.window_days ({self.churn.window_days}), got {self.split.gap_days}")


# ---------------------------------------------------------------- loading

_ADAPTER = TypeAdapter(Settings)
_EXPECTED = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool",
             "tuple_type": "a list", "dict_type": "a mapping", "dataclass_type": "a mapping", "dataclass_args_type": "a mapping"}


def _section_at(loc: tuple[Any, ...]) -> Any:
    """The section class at a location (for listing the keys it allows)."""
    cls: Any = Settings
    for key in loc:
        cls = cls.__dataclass_fields__[key].default_factory
    return cls


def _describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as `dotted.key: what was expected, got what`."""
    loc = tuple(error["loc"])
    key = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".") or "config"
    kind, value = error["type"], error.get("input")
    if kind == "unexpected_keyword_argument":
        allowed = ", ".join(_section_at(loc[:-1]).__dataclass_fields__)
        return f"{key}: unknown key (allowed: {allowed})"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, got {value!r}"
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, _Problem):
        return f"{key + '.' if loc else ''}{cause.key}: {cause}"
    return f"{key}: {cause if cause is not None else error['msg']}"


def settings_from_dict(data: Mapping[str, Any] | None) -> Settings:
    """Validate a plain mapping (e.g. parsed YAML) into `Settings`; ConfigError names the key."""
    try:
        return _ADAPTER.validate_python({} if data is None else data)
    except pydantic.ValidationError as exc:
        raise ConfigError("; ".join(_describe(e) for e in exc.errors())) from None


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain dict (lists, not tuples) for YAML/JSON: model cards record their settings."""
    return _ADAPTER.dump_python(settings, mode="json")


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: e.g. an impossible date 2025-13-01
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `path`, else $CHURN_MLOPS_CONFIG, else defaults; $CHURN_DATA_ROOT wins for paths.root.

    `env` defaults to `os.environ` (a parameter so tests need not mutate the process env).
    """
    env = os.environ if env is None else env
    source = path or env.get(ENV_CONFIG) or None
    data = _read_yaml(source) if source else None
    try:
        settings = settings_from_dict(data)
    except ConfigError as exc:
        raise (ConfigError(f"{exc} (in {source})") if source else exc) from None
    root = env.get(ENV_DATA_ROOT)
    if root:
        settings = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, root=root))
    return settings


EXAMPLE_HEADER = """\
# Example churn-mlops configuration: every key with its default value.
# Use: CHURN_MLOPS_CONFIG=config/example.yaml (or `--config`). Unknown keys are errors.
# CHURN_DATA_ROOT, when set, overrides paths.root. The defaults live in
# libs/churn/config/settings.py; a test checks that this file loads and equals them.
# Regenerate after adding a field: ./bazelw run //libs/churn/config:example_yaml > config/example.yaml
"""


def defaults_yaml() -> str:
    """The embedded defaults as commented YAML (the content of config/example.yaml)."""
    body = yaml.safe_dump(settings_to_dict(Settings()), sort_keys=False, default_flow_style=None, width=100)
    return EXAMPLE_HEADER + body


if __name__ == "__main__":
    print(defaults_yaml(), end="")
