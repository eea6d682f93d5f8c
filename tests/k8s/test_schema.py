"""The rendered streams validate against the official Kubernetes 1.32 schemas, strictly
(unknown fields are errors), offline."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

KUBERNETES_VERSION = "1.32.0"


def test_every_document_validates_strictly(docs: list[dict]) -> None:
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")
    assert not errors, "\n".join(errors)


def test_the_stream_holds_the_expected_objects(docs: list[dict]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"])
             for d in docs}
    assert {
        ("Namespace", "churn-mlops"), ("ServiceAccount", "churn-mlops"),
        ("PersistentVolumeClaim", "churn-data"), ("ConfigMap", "churn-config"),
        ("Job", "churn-bootstrap"), ("Deployment", "churn-api"), ("Service", "churn-api"),
        ("PodDisruptionBudget", "churn-api"), ("CronJob", "churn-batch-score"),
        ("CronJob", "churn-drift-check"), ("CronJob", "churn-retrain"),
        ("NetworkPolicy", "default-deny-all"), ("NetworkPolicy", "churn-api-ingress"),
    } <= kinds
    assert all(d["metadata"].get("namespace") == "churn-mlops" for d in docs if d["kind"] != "Namespace")


@pytest.mark.parametrize("mutate", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=7),   # wrong type
    lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}),      # unknown field
    lambda d: d["spec"].pop("selector"),                                                   # required field
], ids=["wrong-type", "unknown-field", "missing-required"])
def test_the_validator_rejects_a_broken_deployment(default_docs: list[dict], mutate) -> None:
    deployment = copy.deepcopy(next(d for d in default_docs if d["kind"] == "Deployment"))
    mutate(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
