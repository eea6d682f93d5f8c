"""The API takes its data root and feature windows from the one config, read once."""

from __future__ import annotations

from pathlib import Path

from apps.api.settings import serving_config
from churn.config.settings import load_config
from churn.features.schema import feature_names, feature_specs


def test_windows_and_root_come_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"paths:\n  root: {tmp_path / 'data'}\nfeatures:\n  windows_days: [7, 14]\n")
    serving = serving_config(load_config(str(config), env={}))
    assert serving.data_root == tmp_path / "data"
    assert serving.specs == feature_specs((7, 14))
    assert "logins_30d" not in feature_names(serving.specs)


def test_env_data_root_overrides_the_file(tmp_path: Path) -> None:
    serving = serving_config(load_config(None, env={"CHURN_DATA_ROOT": str(tmp_path)}))
    assert serving.registry_root == tmp_path
    assert serving.specs == feature_specs()
    assert serving.api.max_body_bytes > 0 and serving.api.reload_interval_seconds > 0
