"""Every policy rule holds for every pod and container of every workload, and every rule
reports a single offender wherever it is (each rule is broken at each place in turn)."""

from __future__ import annotations

import copy

import pytest

from tests.k8s import k8s_policy as policy


@pytest.mark.parametrize("name", sorted(policy.RULES))
def test_rule_holds(name: str, docs: list[dict]) -> None:
    assert policy.RULES[name].check(docs) == []


def test_rules_see_every_pod_and_container(full_docs: list[dict]) -> None:
    """Guards the walkers themselves: a workload they skipped would pass every rule."""
    assert {w for w, _ in policy.pods(full_docs)} == {
        "Deployment/churn-api", "Job/churn-bootstrap", "Job/churn-batch-score-indexed",
        "CronJob/churn-daily", "CronJob/churn-drift-check", "CronJob/churn-retrain", "CronJob/churn-simulator",
    }
    assert {w for w, _, _ in policy.containers(full_docs)} == {
        "Deployment/churn-api[api]", "Job/churn-bootstrap[bootstrap]",
        "Job/churn-batch-score-indexed[batch-score]", "CronJob/churn-daily[daily]",
        "CronJob/churn-drift-check[drift-check]", "CronJob/churn-retrain[retrain]",
        "CronJob/churn-simulator[generate]",
    }


@pytest.mark.parametrize("name", sorted(policy.RULES))
def test_rule_reports_one_broken_place(name: str, full_docs: list[dict]) -> None:
    rule = policy.RULES[name]
    places = policy.targets(full_docs, rule.scope)
    assert places
    for index, (where, _) in enumerate(places):
        mutated = copy.deepcopy(full_docs)
        rule.break_one(policy.targets(mutated, rule.scope)[index][1])
        violations = rule.check(mutated)
        assert violations, f"{name} did not notice {where} broken"
        assert {v.split(": ", 1)[0] for v in violations} == {where}, violations
