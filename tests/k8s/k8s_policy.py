"""Policy rules over a rendered manifest stream.

Every rule is one function `rule(docs) -> list[str]` returning one violation per offending
object, pod or container ("Kind/name" or "Kind/name[container]"), over every pod spec of
every workload (Deployment, Job, CronJob jobTemplate, ...) and every container, init
containers included. RULES also says how to break each rule in ONE place, so that the
tests can prove that every rule notices a single offender anywhere in the stream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

UID = GID = 10001
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of", "app.kubernetes.io/component")
PINNED_IMAGE = re.compile(r"[^@\s]+/churn-(api|ml)@sha256:[0-9a-f]{64}")

Doc = dict
Violations = list[str]


# --- walking the stream -----------------------------------------------------------------

def pod_spec_paths(doc: Doc) -> Iterator[tuple[str, dict]]:
    """(where, pod template) of a workload, whatever its kind."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    spec = doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield f"{kind}/{name}", spec["template"]
    elif kind == "CronJob":
        yield f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]
    elif kind == "Pod":
        yield f"{kind}/{name}", doc


def pods(docs: list[Doc]) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) for every pod any workload of the stream would create."""
    for doc in docs:
        for where, template in pod_spec_paths(doc):
            yield where, template["spec"]


def containers(docs: list[Doc]) -> Iterator[tuple[str, dict, dict]]:
    """(where, pod spec, container) for every container, init containers included."""
    for where, pod in pods(docs):
        for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            yield f"{where}[{c['name']}]", pod, c


def objects(docs: list[Doc]) -> Iterator[tuple[str, dict]]:
    """(where, metadata) for every object and every pod template (they carry labels too)."""
    for doc in docs:
        yield f"{doc['kind']}/{doc['metadata']['name']}", doc["metadata"]
        for where, template in pod_spec_paths(doc):
            yield f"{where} pod template", template.setdefault("metadata", {})


def effective(pod: dict, container: dict, key: str) -> object:
    """A securityContext field as the kubelet sees it: the container's wins over the pod's."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def env_of(container: dict) -> dict[str, object]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --- the rules ------------------------------------------------------------------------------

def run_as_non_root(docs: list[Doc]) -> Violations:
    return [f"{w}: runAsNonRoot is not true" for w, pod, c in containers(docs)
            if effective(pod, c, "runAsNonRoot") is not True]


def run_as_user(docs: list[Doc]) -> Violations:
    return [f"{w}: runAsUser is {effective(pod, c, 'runAsUser')!r}, not {UID}"
            for w, pod, c in containers(docs) if effective(pod, c, "runAsUser") != UID]


def run_as_group(docs: list[Doc]) -> Violations:
    return [f"{w}: runAsGroup is {effective(pod, c, 'runAsGroup')!r}, not {GID}"
            for w, pod, c in containers(docs) if effective(pod, c, "runAsGroup") != GID]


def fs_group(docs: list[Doc]) -> Violations:
    return [f"{w}: fsGroup is not {GID}" for w, pod in pods(docs)
            if pod.get("securityContext", {}).get("fsGroup") != GID]


def seccomp_runtime_default(docs: list[Doc]) -> Violations:
    return [f"{w}: seccompProfile is not RuntimeDefault" for w, pod, c in containers(docs)
            if (effective(pod, c, "seccompProfile") or {}).get("type") != "RuntimeDefault"]


def read_only_root_filesystem(docs: list[Doc]) -> Violations:
    return [f"{w}: readOnlyRootFilesystem is not true" for w, _, c in containers(docs)
            if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True]


def no_privilege_escalation(docs: list[Doc]) -> Violations:
    # the API default is true: it must be set explicitly
    return [f"{w}: allowPrivilegeEscalation is not false" for w, _, c in containers(docs)
            if c.get("securityContext", {}).get("allowPrivilegeEscalation") is not False]


def capabilities_drop_all(docs: list[Doc]) -> Violations:
    out = []
    for w, _, c in containers(docs):
        caps = c.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or caps.get("add"):
            out.append(f"{w}: capabilities must drop ALL and add none, got {caps!r}")
    return out


def no_host_access(docs: list[Doc]) -> Violations:
    out = [f"{w}: uses the host's namespaces or hostPath" for w, pod in pods(docs)
           if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
           or any("hostPath" in v for v in pod.get("volumes", []))]
    out += [f"{w}: privileged" for w, _, c in containers(docs)
            if c.get("securityContext", {}).get("privileged")]
    return out


def resources_requests_and_limits(docs: list[Doc]) -> Violations:
    out = []
    for w, _, c in containers(docs):
        res = c.get("resources", {})
        for part in ("requests", "limits"):
            missing = [r for r in ("cpu", "memory") if r not in res.get(part, {})]
            if missing:
                out.append(f"{w}: resources.{part} lacks {', '.join(missing)}")
    return out


def service_account_without_token(docs: list[Doc]) -> Violations:
    return [f"{w}: must use ServiceAccount churn-mlops with automountServiceAccountToken false"
            for w, pod in pods(docs)
            if pod.get("serviceAccountName") != "churn-mlops" or pod.get("automountServiceAccountToken") is not False]


def tmp_is_empty_dir(docs: list[Doc]) -> Violations:
    out = []
    for w, pod, c in containers(docs):
        empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        if not any(m["mountPath"] == "/tmp" and m["name"] in empty_dirs for m in c.get("volumeMounts", [])):
            out.append(f"{w}: /tmp is not a writable emptyDir")
    return out


def matplotlib_cache_in_tmp(docs: list[Doc]) -> Violations:
    return [f"{w}: env MPLCONFIGDIR is not /tmp" for w, _, c in containers(docs)
            if env_of(c).get("MPLCONFIGDIR") != "/tmp"]


def image_pinned_by_digest(docs: list[Doc]) -> Violations:
    return [f"{w}: image {c.get('image')!r} is not <registry>/churn-api|churn-ml@sha256:<digest>"
            for w, _, c in containers(docs) if not PINNED_IMAGE.fullmatch(str(c.get("image")))]


def pull_if_not_present(docs: list[Doc]) -> Violations:
    return [f"{w}: imagePullPolicy is {c.get('imagePullPolicy')!r}, not IfNotPresent"
            for w, _, c in containers(docs) if c.get("imagePullPolicy") != "IfNotPresent"]


def recommended_labels(docs: list[Doc]) -> Violations:
    out = []
    for w, meta in objects(docs):
        missing = [k for k in REQUIRED_LABELS if not meta.get("labels", {}).get(k)]
        if missing:
            out.append(f"{w}: lacks label(s) {', '.join(missing)}")
    return out


# --- how to break each rule at one place -------------------------------------------------

def _sc(d: dict) -> dict:
    return d.setdefault("securityContext", {})


@dataclass(frozen=True)
class Rule:
    check: Callable[[list[Doc]], Violations]
    scope: str                       # "container", "pod" or "object": what break() receives
    break_one: Callable[[dict], None]


RULES: dict[str, Rule] = {
    "run_as_non_root": Rule(run_as_non_root, "container", lambda c: _sc(c).update(runAsNonRoot=False)),
    "run_as_user": Rule(run_as_user, "container", lambda c: _sc(c).update(runAsUser=0)),
    "run_as_group": Rule(run_as_group, "container", lambda c: _sc(c).update(runAsGroup=0)),
    "fs_group": Rule(fs_group, "pod", lambda p: _sc(p).pop("fsGroup")),
    "seccomp_runtime_default": Rule(seccomp_runtime_default, "container",
                                    lambda c: _sc(c).update(seccompProfile={"type": "Unconfined"})),
    "read_only_root_filesystem": Rule(read_only_root_filesystem, "container",
                                      lambda c: _sc(c).pop("readOnlyRootFilesystem")),
    "no_privilege_escalation": Rule(no_privilege_escalation, "container",
                                    lambda c: _sc(c).pop("allowPrivilegeEscalation")),
    "capabilities_drop_all": Rule(capabilities_drop_all, "container",
                                  lambda c: _sc(c).update(capabilities={"drop": ["NET_RAW"]})),
    "no_host_access": Rule(no_host_access, "container", lambda c: _sc(c).update(privileged=True)),
    "resources_requests_and_limits": Rule(resources_requests_and_limits, "container",
                                          lambda c: c["resources"]["limits"].pop("memory")),
    "service_account_without_token": Rule(service_account_without_token, "pod",
                                          lambda p: p.update(automountServiceAccountToken=True)),
    "tmp_is_empty_dir": Rule(tmp_is_empty_dir, "container",
                             lambda c: c.update(volumeMounts=[m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"])),
    "matplotlib_cache_in_tmp": Rule(matplotlib_cache_in_tmp, "container",
                                    lambda c: c.update(env=[e for e in c["env"] if e["name"] != "MPLCONFIGDIR"])),
    "image_pinned_by_digest": Rule(image_pinned_by_digest, "container", lambda c: c.update(image="churn-ml:latest")),
    "pull_if_not_present": Rule(pull_if_not_present, "container", lambda c: c.update(imagePullPolicy="Always")),
    "recommended_labels": Rule(recommended_labels, "object",
                               lambda m: m["labels"].pop("app.kubernetes.io/component")),
}


def targets(docs: list[Doc], scope: str) -> list[tuple[str, dict]]:
    """(where, the dict that Rule.break_one mutates) for every target of a scope."""
    if scope == "container":
        return [(w, c) for w, _, c in containers(docs)]
    if scope == "pod":
        return list(pods(docs))
    return list(objects(docs))
