"""The API against its own OpenAPI document: schemathesis, every check, fixed seed.

Why: the document is the contract clients generate code from; every answer the server can
give (status, content type, headers, body) must be in it, valid input must be accepted and
invalid input refused. Positive and negative cases are generated from the document for
every operation (GET and HEAD of each route, both predict routes), sent over real HTTP to
the production server configuration on 127.0.0.1, and checked with all of schemathesis'
checks. CASES_PER_OPERATION positive + as many negative cases for each predict route (the
GET/HEAD routes have no input: one case each) = about 3,000 cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import CHECKS, load_all_checks

from apps.api.app import create_app
from apps.api.testkit import card_for, logistic_pipeline, register, serving_config_for, start_server, wait_for
from churn.features.schema import feature_specs

CASES_PER_OPERATION = 750
SEED = 15
load_all_checks()  # the registry holds only not_a_server_error until the built-in checks are imported
ALL_CHECKS = [CHECKS.get_one(name) for name in CHECKS.get_all_names()]
assert len(ALL_CHECKS) >= 14, CHECKS.get_all_names()
API = {"max_batch_size": 20}
# The document is built from the config alone, so the cases can be generated at collection
# time; the fixture checks that the live server publishes exactly this document.
DOCUMENT = create_app(serving_config_for(Path("no-data-root"), **API), watch=False).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
CALLS: dict[str, int] = {}  # cases sent per operation


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("root")
    specs = feature_specs()
    register(root, logistic_pipeline(specs), card_for(specs))
    server = start_server(create_app(serving_config_for(root, **API)))
    assert wait_for(lambda: httpx.get(f"{server.url}/ready").status_code == 200)
    assert httpx.get(f"{server.url}/openapi.json").json() == DOCUMENT
    yield server.url
    server.stop()


OPERATIONS = [result.ok() for result in schema.get_all_operations()]
# Negative cases need something to break: operations without parameters or body have none.
RUNS = [(operation, mode) for operation in OPERATIONS for mode in GenerationMode
        if mode is GenerationMode.POSITIVE or operation.body]


@pytest.mark.parametrize(("operation", "mode"), RUNS, ids=[f"{op.label} {mode.value}" for op, mode in RUNS])
def test_every_answer_conforms_to_the_openapi_document(operation: Any, mode: GenerationMode, base_url: str) -> None:
    """Valid (positive) and invalid (negative) requests of one operation, all checks on each answer.

    Hypothesis drives schemathesis' strategies directly (not `schema.parametrize()`, whose
    pytest integration loses failures under pytest 9); a failure shrinks to a minimal case.
    """

    @seed(SEED)
    @settings(max_examples=CASES_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        CALLS[operation.label] = CALLS.get(operation.label, 0) + 1
        case.call_and_validate(base_url=base_url, checks=ALL_CHECKS)

    run()


def test_a_few_thousand_cases_ran() -> None:
    """Runs after the cases above (file order): the run really covered every operation."""
    assert len(CALLS) == len(OPERATIONS), CALLS
    assert sum(CALLS.values()) >= 2000, CALLS
