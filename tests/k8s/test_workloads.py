"""What each object must say: API Deployment, Service, PDB, PVC, ConfigMap, bootstrap Job,
NetworkPolicies, the Indexed Job and the RWO component."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from tests.k8s import k8s_policy as policy
from tests.k8s.k8s_stream import by_kind, churn_config

API_LABELS = {"app.kubernetes.io/name": "churn-mlops", "app.kubernetes.io/component": "api"}


def one(docs: list[dict], kind: str, name: str) -> dict:
    return by_kind(docs, kind)[name]


def test_api_deployment(docs: list[dict]) -> None:
    dep = one(docs, "Deployment", "churn-api")
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert spec["selector"]["matchLabels"] == API_LABELS
    assert API_LABELS.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert 10 <= pod["terminationGracePeriodSeconds"] <= 60
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["labelSelector"]["matchLabels"] == API_LABELS
    (api,) = pod["containers"]
    assert api["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert api["args"] == ["--host", "0.0.0.0", "--port", "8000"]
    probes = {k: api[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {k: p["httpGet"]["path"] for k, p in probes.items()} == {
        "startupProbe": "/live", "livenessProbe": "/live", "readinessProbe": "/ready"}
    assert all(p["httpGet"]["port"] in ("http", 8000) and p["timeoutSeconds"] >= 1 for p in probes.values())
    assert probes["startupProbe"]["periodSeconds"] * probes["startupProbe"]["failureThreshold"] >= 30
    assert probes["readinessProbe"]["periodSeconds"] <= probes["livenessProbe"]["periodSeconds"]
    # preStop sleep fits in the grace period
    assert api["lifecycle"]["preStop"]["sleep"]["seconds"] < pod["terminationGracePeriodSeconds"]
    env = policy.env_of(api)
    assert env["CHURN_MLOPS_CONFIG"] == "/etc/churn/config.yaml"


def test_api_mounts_data_read_only_and_jobs_read_write(docs: list[dict]) -> None:
    for where, pod, c in policy.containers(docs):
        data_volumes = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        mounts = [m for m in c.get("volumeMounts", []) if m["name"] in data_volumes]
        assert [m["mountPath"] for m in mounts] == ["/var/lib/churn"], where
        read_only = mounts[0].get("readOnly", False)
        assert read_only == where.startswith("Deployment/churn-api"), where
    api_pod = one(docs, "Deployment", "churn-api")["spec"]["template"]["spec"]
    assert [v["persistentVolumeClaim"] for v in api_pod["volumes"] if "persistentVolumeClaim" in v] == [
        {"claimName": "churn-data", "readOnly": True}]


def test_every_main_container_reads_the_config_map(docs: list[dict]) -> None:
    config_map = churn_config(docs)
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    # the data root is the images' CHURN_DATA_ROOT (tests/images checks it), where every
    # workload mounts the volume (test above): a paths.root here would be overridden, i.e. dead
    assert "paths" not in (config or {})
    for where, pod in policy.pods(docs):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"]:
            assert policy.env_of(c)["CHURN_MLOPS_CONFIG"] == "/etc/churn/config.yaml", where
            (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/etc/churn"]
            assert mount["readOnly"] and volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]


def test_service_is_scraped_by_prometheus(docs: list[dict]) -> None:
    svc = one(docs, "Service", "churn-api")
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["selector"] == API_LABELS
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8000", "prometheus.io/path": "/metrics"}


def test_pod_disruption_budget(docs: list[dict]) -> None:
    pdb = one(docs, "PodDisruptionBudget", "churn-api")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"] == API_LABELS
    assert one(docs, "Deployment", "churn-api")["spec"]["replicas"] > pdb["spec"]["minAvailable"]


def test_shared_volume_is_read_write_many(default_docs: list[dict]) -> None:
    pvc = one(default_docs, "PersistentVolumeClaim", "churn-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]


def test_rwo_component_pins_every_pod_to_the_data_node(full_docs: list[dict]) -> None:
    assert one(full_docs, "PersistentVolumeClaim", "churn-data")["spec"]["accessModes"] == ["ReadWriteOnce"]
    term = {"matchExpressions": [{"key": "churn-mlops.io/data-node", "operator": "In", "values": ["true"]}]}
    for where, pod in policy.pods(full_docs):
        terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        assert terms == [term], where


def test_bootstrap_job(docs: list[dict]) -> None:
    job = one(docs, "Job", "churn-bootstrap")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["activeDeadlineSeconds"] > 0
    assert "ttlSecondsAfterFinished" not in job["spec"]     # a deleted bootstrap Job would run again on apply
    assert "initContainers" not in pod   # `bootstrap` itself creates the layout (DataPaths.ensure)
    assert [c["args"] for c in pod["containers"]] == [["bootstrap"]]


def test_network_policies(docs: list[dict]) -> None:
    policies = by_kind(docs, "NetworkPolicy")
    deny = policies["default-deny-all"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}   # no rule = nothing allowed
    allow = policies["churn-api-ingress"]["spec"]
    assert allow["podSelector"]["matchLabels"] == API_LABELS and allow["policyTypes"] == ["Ingress"]
    assert [p["port"] for rule in allow["ingress"] for p in rule["ports"]] == [8000]
    assert not any("egress" in p["spec"] for p in policies.values())   # jobs and API need no network


def test_namespace_enforces_restricted_pod_security(docs: list[dict]) -> None:
    labels = one(docs, "Namespace", "churn-mlops")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_service_account_has_no_token(docs: list[dict]) -> None:
    assert one(docs, "ServiceAccount", "churn-mlops")["automountServiceAccountToken"] is False


def assert_shards_match_completions(spec: dict, command: str) -> None:
    """An Indexed Job spec whose one container runs `command --shard $(JOB_COMPLETION_INDEX)/N`
    with N = completions and the index from the downward API."""
    assert spec["completionMode"] == "Indexed" and 1 <= spec["parallelism"] <= spec["completions"]
    (c,) = spec["template"]["spec"]["containers"]
    shard = c["args"][c["args"].index("--shard") + 1]
    assert c["args"][0] == command
    match = re.fullmatch(r"\$\(JOB_COMPLETION_INDEX\)/(\d+)", shard)
    assert match and int(match.group(1)) == spec["completions"]
    (index_env,) = [e for e in c["env"] if e["name"] == "JOB_COMPLETION_INDEX"]
    assert index_env["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def test_indexed_job_shards_match_completions(full_docs: list[dict]) -> None:
    assert_shards_match_completions(one(full_docs, "Job", "churn-batch-score-indexed")["spec"], "batch-score")


def test_indexed_daily_runs_every_shard_at_once(full_docs: list[dict], default_docs: list[dict]) -> None:
    """The pods meet at barriers (churn.pipeline.indexed_daily): all N must run together, each
    with the memory of one shard (k8s/components/indexed-daily: the measured peak)."""
    cronjob = one(full_docs, "CronJob", "churn-daily")
    spec = cronjob["spec"]["jobTemplate"]["spec"]
    assert_shards_match_completions(spec, "daily")
    assert spec["parallelism"] == spec["completions"] > 1
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"  # the base's, kept by the patch
    (c,) = spec["template"]["spec"]["containers"]
    assert c["volumeMounts"] and c["securityContext"]["readOnlyRootFilesystem"] is True
    base = one(default_docs, "CronJob", "churn-daily")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert c["resources"] != base["containers"][0]["resources"]  # the patch's, not the 2,000-user default's


def test_indexed_job_is_opt_in(default_docs: list[dict]) -> None:
    assert "churn-batch-score-indexed" not in by_kind(default_docs, "Job")
    daily = one(default_docs, "CronJob", "churn-daily")["spec"]["jobTemplate"]["spec"]
    assert "completionMode" not in daily and daily["template"]["spec"]["containers"][0]["args"] == ["daily"]


def test_cluster_config_loads_with_the_project_settings(docs: list[dict], tmp_path) -> None:
    """The config the pods get is valid for churn.config (unknown keys are errors there)."""
    try:
        from churn.config.settings import load_config
    except ImportError:   # outside Bazel: the library of this same tree
        sys.path.insert(0, str(Path(__file__).absolute().parents[2] / "libs"))
        from churn.config.settings import load_config
    config_map = churn_config(docs)
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    assert load_config(str(path), env={"CHURN_DATA_ROOT": "/var/lib/churn"}).paths.root == "/var/lib/churn"
