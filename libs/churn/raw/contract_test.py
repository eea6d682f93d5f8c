"""The documented contract is the enforced one: the README's tables are contract.markdown()."""

from __future__ import annotations

import json
from pathlib import Path

from churn.raw import contract

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_readme_shows_exactly_the_contract() -> None:
    assert contract.markdown() in README.read_text(encoding="utf-8"), \
        "README.md's contract tables are stale: paste `ml_jobs schema` into 'The raw-data contract'"


def test_the_data_package_names_every_column_with_a_frictionless_type() -> None:
    package = json.loads(json.dumps(contract.data_package()))
    assert package["profile"] == "tabular-data-package"
    by_name = {r["name"]: r["schema"] for r in package["resources"]}
    assert [f["name"] for f in by_name["users"]["fields"]] == [c.name for c in contract.USERS]
    assert by_name["events"]["foreignKeys"][0]["reference"] == {"resource": "users", "fields": ["user_id"]}
    types = {f["type"] for r in by_name.values() for f in r["fields"]}
    assert types <= {"integer", "number", "string", "date", "datetime"}
    plan = next(f for f in by_name["users"]["fields"] if f["name"] == "plan")
    assert plan["constraints"] == {"required": True, "enum": ["free", "paid"]}
    ids = next(f for f in by_name["events"]["fields"] if f["name"] == "event_id")
    assert ids["constraints"]["maximum"] == 2**63 - 1
