"""Tests for churn.config.settings: defaults, YAML loading, env overrides, errors naming keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydantic
import pytest
import yaml

from churn.config.settings import ConfigError, Settings, load_config, settings_from_dict, settings_to_dict

EXAMPLE = Path(__file__).resolve().parents[3] / "config" / "example.yaml"


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults_without_file_or_env() -> None:
    s = load_config(env={})
    assert s == Settings()
    assert s.paths.root == "./var"
    assert s.generator.n_users == 2000 and s.generator.days == 120 and s.generator.seed == 42
    assert s.features.windows_days == (7, 14, 30)
    assert s.churn.window_days == 30
    assert s.monitoring.psi_warn == 0.10 and s.monitoring.psi_fail == 0.25


def test_example_yaml_loads_and_equals_defaults() -> None:
    assert EXAMPLE.is_file(), EXAMPLE
    s = load_config(str(EXAMPLE), env={})
    assert s == Settings(), "config/example.yaml is stale: python -m churn.config.settings > config/example.yaml"
    assert yaml.safe_load(EXAMPLE.read_text()) == settings_to_dict(Settings())


def test_file_values_and_partial_sections(tmp_path: Path) -> None:
    path = _write(tmp_path, "generator:\n  n_users: 50\n  start_date: 2025-02-01\nfeatures:\n  windows_days: [3, 9]\n")
    s = load_config(path, env={})
    assert s.generator.n_users == 50
    assert s.generator.start_date == "2025-02-01"  # YAML date -> str
    assert s.generator.days == 120
    assert s.features.windows_days == (3, 9)


def test_env_config_path_and_data_root_override(tmp_path: Path) -> None:
    path = _write(tmp_path, "paths:\n  root: /from/file\nscoring:\n  top_k: 7\n")
    s = load_config(env={"CHURN_MLOPS_CONFIG": path, "CHURN_DATA_ROOT": str(tmp_path / "data")})
    assert s.scoring.top_k == 7
    assert s.paths.root == str(tmp_path / "data")
    assert load_config(path, env={}).paths.root == "/from/file"
    assert load_config(env={"CHURN_DATA_ROOT": "/pvc"}).paths.root == "/pvc"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("generator:\n  n_users: abc\n", "generator.n_users: expected int, got 'abc'"),
        ("generator:\n  n_users: '5'\n", "generator.n_users: expected int, got '5'"),
        ("generator:\n  n_users: 5.5\n", "generator.n_users: expected int, got 5.5"),
        ("generator:\n  n_users: 0\n", "generator.n_users: expected > 0, got 0"),
        ("generator:\n  start_date: '2025-13-01'\n", "generator.start_date: expected an ISO date"),
        ("generator:\n  start_date: 2025-13-01\n", "invalid YAML (month must be in 1..12"),
        ("generator:\n  sessions_min: 3\n  sessions_max: 2\n", "generator.sessions_max: expected >= sessions_min (3)"),
        ("api:\n  port: 80\n  host: [a]\n", "api.host: expected str, got ['a']"),
        ("generator:\n  n_userz: 5\n", "generator.n_userz: unknown key"),
        ("nope: 1\n", "nope: unknown key"),
        ("monitoring:\n  psi_warn: yes\n", "monitoring.psi_warn: expected float, got True"),
        ("features:\n  windows_days: [7, x]\n", "features.windows_days[1]: expected int"),
        ("features:\n  windows_days: 7\n", "features.windows_days: expected a list"),
        ("generator:\n  shift:\n    last_dayz: 3\n", "generator.shift.last_dayz: unknown key"),
        ("generator:\n  paid_share: 1.5\n", "generator.paid_share: expected a probability"),
        ("split:\n  gap_days: 10\n", "split.gap_days: expected >= churn.window_days (30), got 10"),
        ("generator: 3\n", "generator: expected a mapping"),
        ("- a\n", "config: expected a mapping"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env={})
    assert fragment in str(info.value)


def test_gap_follows_churn_window() -> None:
    s = settings_from_dict({"churn": {"window_days": 14}, "split": {"gap_days": 14}})
    assert s.split.gap_days == 14
    with pytest.raises(ConfigError, match="split.gap_days"):
        settings_from_dict({"churn": {"window_days": 45}})


def test_missing_and_invalid_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(str(tmp_path / "missing.yaml"), env={})
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(_write(tmp_path, "a: [\n"), env={})


def test_every_bad_key_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "generator:\n  n_users: x\n  days: y\n"), env={})
    assert "generator.n_users: expected int" in str(info.value) and "generator.days: expected int" in str(info.value)


def test_variants_are_validated_too() -> None:
    s = Settings()
    with pytest.raises(pydantic.ValidationError, match="expected a probability"):
        dataclasses.replace(s.training, threshold=2.0)


def test_settings_are_frozen() -> None:
    s = load_config(env={})
    with pytest.raises(AttributeError):
        s.generator.n_users = 3  # type: ignore[misc]
