"""The rendered streams validate against the official Kubernetes 1.32 schemas, strictly
(unknown fields are errors), offline."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest

from tests.k8s import crd_schemas

KUBERNETES_VERSION = "1.32.0"


def test_every_document_validates_strictly(docs: list[dict]) -> None:
    errors = []
    for doc in docs:
        try:
            if crd_schemas.is_custom(doc):  # prometheus-operator kinds: the strict schemas of crd_schemas
                crd_schemas.validate(doc)
            else:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as err:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {err.message} at {list(err.path)}")
    assert not errors, "\n".join(errors)


def test_the_stream_holds_the_expected_objects(docs: list[dict]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"])
             for d in docs}
    assert {
        ("Namespace", "churn-mlops"), ("ServiceAccount", "churn-mlops"),
        ("PersistentVolumeClaim", "churn-data"), ("ConfigMap", "churn-config"),
        ("Job", "churn-bootstrap"), ("Deployment", "churn-api"), ("Service", "churn-api"),
        ("PodDisruptionBudget", "churn-api"), ("CronJob", "churn-daily"),
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


@pytest.mark.parametrize("kind,mutate", [
    ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(expresion="up")),   # unknown field
    ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update({"for": "2 minutes"})),  # bad duration
    ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("alert")),          # neither alert nor record
    ("ServiceMonitor", lambda d: d["spec"].update(endpoint=[{"port": "http"}])),            # unknown field
    ("ServiceMonitor", lambda d: d["spec"].pop("selector")),                                  # required field
], ids=["rule-unknown-field", "rule-bad-duration", "rule-no-alert", "monitor-unknown-field", "monitor-no-selector"])
def test_the_custom_schemas_reject_broken_objects(full_docs: list[dict], kind: str, mutate) -> None:
    doc = copy.deepcopy(next(d for d in full_docs if d["kind"] == kind))
    crd_schemas.validate(doc)
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        crd_schemas.validate(doc)
