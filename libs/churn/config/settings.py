"""Typed, frozen settings for every pipeline step, loaded from one YAML file.

Why one typed place: the reference project re-read an untyped YAML dict everywhere (and on
every API request); a typo in a key silently fell back to a default. Here an unknown or
ill-typed key is a `ConfigError` that names the dotted key, and the defaults live in the
dataclasses below (the embedded laptop defaults), so there is exactly one source of truth.

Resolution order: `load_config(path)` argument, else env `CHURN_MLOPS_CONFIG`, else the
embedded defaults. Env `CHURN_DATA_ROOT` then overrides `paths.root` (the cluster mounts
its PVC there without editing the ConfigMap).

Extending a section: add a field with a default to its dataclass. Supported field types:
int, float, str, bool, `tuple[int, ...]` / `tuple[float, ...]` / `tuple[str, ...]`
(YAML lists), `dict[str, str]` (YAML mappings), `X | None`, and nested frozen dataclasses. A section may define
`problems(self) -> list[tuple[str, str]]` returning (field, message) for value checks.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

ENV_CONFIG = "CHURN_MLOPS_CONFIG"
ENV_DATA_ROOT = "CHURN_DATA_ROOT"


class ConfigError(ValueError):
    """A configuration problem; the message starts with the dotted key (or the file path)."""


def _prob(obj: Any, *names: str) -> list[tuple[str, str]]:
    return [(n, f"expected a probability in [0, 1], got {getattr(obj, n)!r}")
            for n in names if not 0.0 <= getattr(obj, n) <= 1.0]


def _positive(obj: Any, *names: str) -> list[tuple[str, str]]:
    return [(n, f"expected > 0, got {getattr(obj, n)!r}") for n in names if not getattr(obj, n) > 0]


@dataclass(frozen=True)
class PathsSettings:
    """Where all data lives; `churn.storage.paths.DataPaths` derives the layout from it."""

    root: str = "./var"


@dataclass(frozen=True)
class ShiftSettings:
    """The `--simulate-shift` knobs: degrade behaviour in the last `last_days` days.

    Why: drift demos and drift tests need a dataset whose recent window really differs.
    Multipliers apply to engagement (which drives every behaviour), to the daily activity
    probability and to the mean watch minutes.
    """

    enabled: bool = False
    last_days: int = 30
    engagement_multiplier: float = 0.6
    active_multiplier: float = 0.6
    watch_multiplier: float = 0.5

    def problems(self) -> list[tuple[str, str]]:
        out = _positive(self, "last_days")
        out += [(n, f"expected >= 0, got {getattr(self, n)!r}")
                for n in ("engagement_multiplier", "active_multiplier", "watch_multiplier")
                if getattr(self, n) < 0]
        return out


@dataclass(frozen=True)
class GeneratorSettings:
    """Every knob of the synthetic generator (DOMAIN.md); defaults reproduce the reference.

    Additions to the reference (all off by default, so the reference counts hold):
    `late_signup_share` lets some users sign up during the data period.
    """

    n_users: int = 2000
    days: int = 120
    seed: int = 42
    start_date: str = "2025-01-01"
    chunk_users: int = 50_000
    # users
    paid_share: float = 0.35
    engagement_alpha: float = 2.0
    engagement_beta: float = 2.5
    signup_spread_days: int = 40
    late_signup_share: float = 0.0
    countries: tuple[str, ...] = ("IN", "US", "UK", "CA", "AU", "SG")
    marketing_sources: tuple[str, ...] = ("organic", "referral", "ads", "youtube", "community")
    courses: tuple[str, ...] = (
        "k8s-mastery", "devops-warrior", "mlops-foundation", "argo-cd",
        "terraform", "linux-pro", "observability",
    )
    # churn: p = min(churn_max, base * (offset + scale * (1 - e) ** power)), base x paid multiplier
    churn_base: float = 0.35
    paid_churn_multiplier: float = 0.75
    churn_max: float = 0.95
    churn_offset: float = 0.4
    churn_scale: float = 1.4
    churn_power: float = 1.6
    churn_start_fraction: float = 0.25
    # daily activity
    active_base: float = 0.15
    active_engagement: float = 0.8
    sessions_min: int = 1
    sessions_max: int = 3
    # per session
    video_base: float = 0.5
    video_engagement: float = 0.4
    watch_mean_base: float = 20.0
    watch_mean_engagement: float = 40.0
    watch_sd: float = 10.0
    watch_min: float = 2.0
    watch_max: float = 180.0
    quiz_base: float = 0.25
    quiz_engagement: float = 0.35
    quiz_mean_base: float = 50.0
    quiz_mean_engagement: float = 40.0
    quiz_sd: float = 15.0
    enroll_p: float = 0.05
    # per active day
    payment_days_of_month: int = 3
    payment_success_p: float = 0.93
    amount_mean: float = 499.0
    amount_sd: float = 80.0
    amount_min: float = 199.0
    amount_max: float = 999.0
    ticket_p: float = 0.005
    shift: ShiftSettings = field(default_factory=ShiftSettings)

    def problems(self) -> list[tuple[str, str]]:
        out = _positive(self, "n_users", "days", "chunk_users", "signup_spread_days", "sessions_min")
        out += _prob(self, "paid_share", "late_signup_share", "churn_base", "churn_max",
                     "churn_start_fraction", "active_base", "video_base", "quiz_base", "enroll_p",
                     "payment_success_p", "ticket_p")
        if self.sessions_max < self.sessions_min:
            out.append(("sessions_max", f"expected >= sessions_min ({self.sessions_min}), got {self.sessions_max}"))
        if not 0 <= self.payment_days_of_month <= 31:
            out.append(("payment_days_of_month", f"expected 0..31, got {self.payment_days_of_month}"))
        for name in ("countries", "marketing_sources", "courses"):
            if not getattr(self, name):
                out.append((name, "expected a non-empty list"))
        try:
            _parse_date(self.start_date)
        except ValueError:
            out.append(("start_date", f"expected an ISO date YYYY-MM-DD, got {self.start_date!r}"))
        return out


def _parse_date(text: str) -> Any:
    import datetime as _dt

    return _dt.date.fromisoformat(text)


@dataclass(frozen=True)
class FeaturesSettings:
    """Rolling windows (days); must match the schema the model was trained with."""

    windows_days: tuple[int, ...] = (7, 14, 30)

    def problems(self) -> list[tuple[str, str]]:
        if not self.windows_days or any(w <= 0 for w in self.windows_days):
            return [("windows_days", f"expected a non-empty list of positive ints, got {list(self.windows_days)}")]
        if len(set(self.windows_days)) != len(self.windows_days):
            return [("windows_days", f"duplicate windows in {list(self.windows_days)}")]
        return []


@dataclass(frozen=True)
class ChurnSettings:
    """Label definition: churned at t = no active day in (t, t + window_days]."""

    window_days: int = 30

    def problems(self) -> list[tuple[str, str]]:
        return _positive(self, "window_days")


@dataclass(frozen=True)
class SplitSettings:
    """Honest time split: train as-of dates, then `gap_days` unused, then `test_days`.

    Why a gap >= churn window: a training label at t looks at (t, t + W]; without the gap the
    last training labels would see the test period (a leak of the reference project).
    """

    gap_days: int = 30
    test_days: int = 14
    min_train_days: int = 7

    def problems(self) -> list[tuple[str, str]]:
        return _positive(self, "test_days", "min_train_days")


@dataclass(frozen=True)
class TrainingSettings:
    """Model fitting knobs (owned by `churn.training`; extend freely)."""

    threshold: float = 0.5
    random_state: int = 42
    # deterministic subsample of users beyond this many training rows: bounds fit time and
    # memory at 100k+ users (the bootstrap's largest step there)
    max_train_rows: int = 500_000
    # the stored holdout (card metrics and the promotion gate) keeps at most this many rows
    max_holdout_rows: int = 300_000
    # OpenMP/BLAS threads while fitting (0 = library default = all cores). 1 by default:
    # with more threads than free cores (shared nodes, CPU limits) OpenMP spin-waits and
    # gradient boosting ran 17x slower in a measurement here.
    threads: int = 1

    def problems(self) -> list[tuple[str, str]]:
        return _prob(self, "threshold") + _positive(self, "max_train_rows", "max_holdout_rows")


@dataclass(frozen=True)
class RegistrySettings:
    """Promotion gate: a candidate must beat production on `metric` by `min_improvement`."""

    metric: str = "pr_auc"
    min_improvement: float = 0.0


@dataclass(frozen=True)
class ScoringSettings:
    """Batch scoring output knobs (owned by `churn.scoring`; extend freely)."""

    top_k: int = 100
    # OpenMP threads for sklearn predict_proba (0 = all cores); see training.threads
    threads: int = 1

    def problems(self) -> list[tuple[str, str]]:
        return _positive(self, "top_k")


@dataclass(frozen=True)
class MonitoringSettings:
    """Drift thresholds; `min_sample_size` keeps PSI from crying wolf on small samples."""

    psi_warn: float = 0.10
    psi_fail: float = 0.25
    bins: int = 10
    ks_alpha: float = 0.01
    min_sample_size: int = 500
    recent_days: int = 14
    score_threshold: float = 0.5
    # features to check (empty = every schema feature); an unknown name is an error
    features: tuple[str, ...] = ()

    def problems(self) -> list[tuple[str, str]]:
        out = _positive(self, "bins", "min_sample_size", "recent_days")
        out += _prob(self, "ks_alpha", "score_threshold")
        if self.psi_fail < self.psi_warn:
            out.append(("psi_fail", f"expected >= psi_warn ({self.psi_warn}), got {self.psi_fail}"))
        return out


@dataclass(frozen=True)
class ApiSettings:
    """Online API knobs (owned by apps/api): read once at startup, never per request.

    Every resource a client can make the server spend is bounded here; each limit has its
    own answer or counter (apps/api/README.md, "Limits"): header bytes and count (431),
    header and body read timeouts (408), idle keep-alive timeout, concurrent connections
    (503), error list length (422 with `error_count`), and batch work off the event loop.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1_048_576  # /predict/batch body (413 above)
    max_predict_body_bytes: int = 16_384  # /predict body: one row is ~1.5 KB (413 above)
    max_batch_size: int = 1000
    max_header_bytes: int = 16_384  # request line + headers (431 above)
    max_headers: int = 64  # header lines per request (431 above)
    header_timeout_seconds: float = 5.0  # from connection (or first byte of a request) to end of headers (408)
    body_timeout_seconds: float = 10.0  # from end of headers to end of body (408)
    keepalive_timeout_seconds: float = 5.0  # idle time between requests before the server closes
    max_connections: int = 512  # open connections; one more is answered 503 and closed
    max_errors: int = 20  # a 422 lists the first N problems and counts them all
    max_feature_value: float = 1e9  # cap of numeric features whose schema has no maximum (counts, days)
    batch_chunk_rows: int = 100  # a batch is validated and scored this many rows at a time, off the loop
    batch_workers: int = 2  # threads that validate and score batches (the rest queue)
    protocol_error_log_interval_seconds: float = 10.0  # at most one log line per interval for malformed HTTP
    reload_interval_seconds: float = 2.0
    log_level: str = "INFO"

    def problems(self) -> list[tuple[str, str]]:
        return _positive(self, "port", "max_body_bytes", "max_predict_body_bytes", "max_batch_size",
                         "max_header_bytes", "max_headers", "header_timeout_seconds", "body_timeout_seconds",
                         "keepalive_timeout_seconds", "max_connections", "max_errors", "max_feature_value", "batch_chunk_rows",
                         "batch_workers", "protocol_error_log_interval_seconds", "reload_interval_seconds")


@dataclass(frozen=True)
class ValidationSettings:
    """Raw-data rules that are a choice (the rest is the contract, churn.raw.contract).

    `unknown_event_types`: `ignore` counts event types outside the seven known ones in the
    report and keeps them out of every feature; `reject` makes them a violation.
    """

    unknown_event_types: str = "ignore"

    def problems(self) -> list[tuple[str, str]]:
        if self.unknown_event_types not in ("ignore", "reject"):
            return [("unknown_event_types", f"expected ignore or reject, got {self.unknown_event_types!r}")]
        return []


@dataclass(frozen=True)
class IngestColumns:
    """Per table, {contract column: column name in your files} for sources named otherwise."""

    users: dict[str, str] = field(default_factory=dict)
    events: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestSettings:
    """How `ml_jobs ingest` reads exports: CSV delimiter and the column mapping."""

    delimiter: str = ","
    columns: IngestColumns = field(default_factory=IngestColumns)

    def problems(self) -> list[tuple[str, str]]:
        if len(self.delimiter) != 1:
            return [("delimiter", f"expected one character, got {self.delimiter!r}")]
        return []


@dataclass(frozen=True)
class Settings:
    """All settings. Build with `load_config`; derive variants with `dataclasses.replace`."""

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

    def problems(self) -> list[tuple[str, str]]:
        if self.split.gap_days < self.churn.window_days:
            return [("split.gap_days",
                     f"expected >= churn.window_days ({self.churn.window_days}), got {self.split.gap_days}")]
        return []


# ---------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """YAML value -> value of type `tp`, or ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_convert(k, key_tp, key): _convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        item_tp = typing.get_args(tp)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if hasattr(value, "isoformat"):  # YAML parses 2025-01-01 as a date
            return value.isoformat()
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: Any, data: Any, prefix: str) -> Any:
    """Mapping -> dataclass `cls`; unknown keys and bad types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    _check(obj, prefix)
    return obj


def _check(obj: Any, prefix: str) -> None:
    checker = getattr(obj, "problems", None)
    if checker is None:
        return
    for name, message in checker():
        where = f"{prefix}.{name}" if prefix else name
        raise ConfigError(f"{where}: {message}")


def settings_from_dict(data: Mapping[str, Any] | None) -> Settings:
    """Validate a plain mapping (e.g. parsed YAML) into `Settings`."""
    return _build(Settings, data, "")


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain dict (lists, not tuples) for YAML/JSON: model cards record their settings."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(settings))


def _read_yaml(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
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
        if source:
            raise ConfigError(f"{exc} (in {source})") from None
        raise
    root = env.get(ENV_DATA_ROOT)
    if root:
        settings = dataclasses.replace(settings, paths=dataclasses.replace(settings.paths, root=root))
    return settings


EXAMPLE_HEADER = """\
# Example churn-mlops configuration: every key with its default value.
# Use: CHURN_MLOPS_CONFIG=config/example.yaml (or `--config`). Unknown keys are errors.
# CHURN_DATA_ROOT, when set, overrides paths.root. The defaults live in
# libs/churn/config/settings.py; a test checks that this file loads and equals them.
# Regenerate after adding a field: python -m churn.config.settings > config/example.yaml
"""


def defaults_yaml() -> str:
    """The embedded defaults as commented YAML (the content of config/example.yaml)."""
    body = yaml.safe_dump(settings_to_dict(Settings()), sort_keys=False, default_flow_style=None, width=100)
    return EXAMPLE_HEADER + body


if __name__ == "__main__":
    print(defaults_yaml(), end="")
