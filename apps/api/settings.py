"""The API's view of the configuration: read once at startup, then frozen.

Why a small adapter: the reference project re-read its YAML on every request. Here the
process loads `churn.config.Settings` once (main.py) and the app only sees this frozen
object. The `api` section of `churn.config` (`Settings.api`) holds the serving knobs, so the API
never reads YAML or environment variables itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from churn.config.settings import ApiSettings, Settings
from churn.features.schema import FeatureSpec, feature_specs


@dataclass(frozen=True)
class ServingConfig:
    """Everything the app needs, resolved from `Settings` once."""

    data_root: Path
    specs: tuple[FeatureSpec, ...]
    api: ApiSettings

    @property
    def registry_root(self) -> Path:
        """The root handed to `ModelRegistry` (it holds `registry/`)."""
        return self.data_root


def serving_config(settings: Settings) -> ServingConfig:
    """`churn.config.Settings` -> ServingConfig (feature windows come from the config)."""
    specs = feature_specs(tuple(settings.features.windows_days))
    return ServingConfig(data_root=Path(settings.paths.root), specs=specs, api=settings.api)
