"""Shared fixtures: a data root with a promoted model and a live uvicorn server on it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest

from apps.api.app import create_app
from apps.api.testkit import LiveServer, card_for, logistic_pipeline, register, serving_config_for, start_server, wait_for
from churn.features.schema import feature_specs


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A real server on 127.0.0.1 serving a freshly promoted logistic model."""
    root: Path = tmp_path_factory.mktemp("root")
    specs = feature_specs()
    version = register(root, logistic_pipeline(specs), card_for(specs))
    server = start_server(create_app(serving_config_for(root, max_batch_size=50, max_body_bytes=64 * 1024)))
    with httpx.Client(base_url=server.url) as client:
        assert wait_for(lambda: client.get("/ready").status_code == 200)
    yield server, version
    server.stop()


@pytest.fixture()
def client(served: tuple[LiveServer, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0].url, timeout=10) as c:
        yield c
