"""The rendered manifest stream as parsed objects, and what podman needs changed in them.

Everything here edits the PARSED objects of the stream that `k8s/render.py` produced (never a
second copy of the manifests): unique names per run, a CronJob's jobTemplate turned into a
Job, a host port on the API Deployment, and reading the probe paths back out.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import yaml

Obj = dict[str, Any]

# Kinds `podman kube play` acts on. Everything else (Namespace, ServiceAccount, Service, PDB,
# NetworkPolicy, CronJob) is not played; CronJobs are run by the harness as Jobs.
PLAYABLE = {"ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "Pod", "Secret"}


def load_stream(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def dump_stream(objs: Iterable[Obj]) -> str:
    return yaml.safe_dump_all(list(objs), sort_keys=False)


def find(objs: Iterable[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objs if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: Iterable[Obj], kind: str, component: str | None = None) -> Obj:
    """The single object of `kind` (whose app.kubernetes.io/component label is `component`)."""
    found = [o for o in find(objs, kind)
             if component is None or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    if len(found) != 1:
        names = [o["metadata"]["name"] for o in find(objs, kind)]
        raise LookupError(f"expected one {kind} with component={component!r} in the rendered stream, "
                          f"found {len(found)} (all {kind}: {names})")
    return found[0]


def pod_spec(obj: Obj) -> Obj:
    """The pod spec inside a Job, Deployment, CronJob or Pod."""
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def containers(obj: Obj, init: bool = False) -> list[Obj]:
    spec = pod_spec(obj)
    return list(spec.get("initContainers") or []) if init else list(spec.get("containers") or [])


def container(obj: Obj, name: str | None = None) -> Obj:
    """The container named `name`, or the only container."""
    cs = containers(obj)
    if name is None:
        if len(cs) != 1:
            raise LookupError(f"{obj['metadata']['name']} has {len(cs)} containers; name one")
        return cs[0]
    for c in cs:
        if c["name"] == name:
            return c
    raise LookupError(f"{obj['metadata']['name']} has no container {name!r}")


def rename_all(objs: list[Obj], prefix: str) -> dict[tuple[str, str], str]:
    """Prefix every object's name and every reference to a renamed ConfigMap/Secret/PVC.

    Podman's state (pods, containers, volumes) is global to the namespace: the prefix keeps
    each run apart. Namespaces are dropped (podman has none). Returns {(kind, old): new}.
    """
    mapping: dict[tuple[str, str], str] = {}
    for o in objs:
        meta = o["metadata"]
        new = f"{prefix}-{meta['name']}"
        mapping[(o["kind"], meta["name"])] = new
        meta["name"] = new
        meta.pop("namespace", None)
    for o in objs:
        if o["kind"] in ("Job", "Deployment", "CronJob", "Pod", "StatefulSet", "DaemonSet"):
            _rename_refs(pod_spec(o), mapping)
    return mapping


def _rename_refs(spec: Obj, mapping: dict[tuple[str, str], str]) -> None:
    def ref(kind: str, name: str) -> str:
        return mapping.get((kind, name), name)

    for vol in spec.get("volumes") or []:
        if "configMap" in vol:
            vol["configMap"]["name"] = ref("ConfigMap", vol["configMap"]["name"])
        if "secret" in vol:
            vol["secret"]["secretName"] = ref("Secret", vol["secret"]["secretName"])
        if "persistentVolumeClaim" in vol:
            pvc = vol["persistentVolumeClaim"]
            pvc["claimName"] = ref("PersistentVolumeClaim", pvc["claimName"])
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                src["configMapRef"]["name"] = ref("ConfigMap", src["configMapRef"]["name"])
            if "secretRef" in src:
                src["secretRef"]["name"] = ref("Secret", src["secretRef"]["name"])
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                vf["configMapKeyRef"]["name"] = ref("ConfigMap", vf["configMapKeyRef"]["name"])
            if "secretKeyRef" in vf:
                vf["secretKeyRef"]["name"] = ref("Secret", vf["secretKeyRef"]["name"])
    if "serviceAccountName" in spec:
        spec["serviceAccountName"] = ref("ServiceAccount", spec["serviceAccountName"])


def job_from_cronjob(cronjob: Obj, name: str, args: dict[str, list[str]] | None = None) -> Obj:
    """What `kubectl create job NAME --from=cronjob/X` makes: a Job from the jobTemplate.

    `args` optionally overrides the args of named containers (e.g. a one-off `generate`).
    """
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    meta = copy.deepcopy(template.get("metadata") or {})
    meta["name"] = name
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]}
    for cname, cargs in (args or {}).items():
        found = [c for c in containers(job) + containers(job, init=True) if c["name"] == cname]
        if not found:
            raise LookupError(f"{name}: no container {cname!r} to give args {cargs}")
        found[0]["args"] = list(cargs)
    return job


def expose_on_host(deployment: Obj, container_port: int, host_port: int) -> list[str]:
    """Publish `container_port` on 127.0.0.1-reachable `host_port`; 1 replica. Returns notes."""
    notes = []
    replicas = deployment["spec"].get("replicas", 1)
    if replicas != 1:
        notes.append(f"replicas {replicas} -> 1 (podman kube play runs one replica per Deployment)")
        deployment["spec"]["replicas"] = 1
    for c in containers(deployment):
        for p in c.get("ports") or []:
            if p.get("containerPort") == container_port:
                p["hostPort"] = host_port
                p["hostIP"] = "127.0.0.1"
                notes.append(f"{c['name']}: containerPort {container_port} -> hostPort 127.0.0.1:{host_port}")
                return notes
    raise LookupError(f"{deployment['metadata']['name']}: no containerPort {container_port}")


def resolve_port(c: Obj, port: int | str) -> int:
    """A probe's port (number or the name of a container port) as a number."""
    if isinstance(port, int):
        return port
    if str(port).isdigit():
        return int(port)
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise LookupError(f"container {c['name']}: no port named {port!r}")


def http_probes(c: Obj) -> dict[str, tuple[str, int]]:
    """{"startup"|"liveness"|"readiness": (path, container port)} for the httpGet probes of `c`."""
    out = {}
    for kind in ("startup", "liveness", "readiness"):
        probe = c.get(f"{kind}Probe") or {}
        get = probe.get("httpGet")
        if get:
            out[kind] = (get.get("path", "/"), resolve_port(c, get["port"]))
    return out


def play_documents(objs: Iterable[Obj], workload: Obj) -> list[Obj]:
    """The documents of one `podman kube play` file: the ConfigMaps and Secrets the workload
    uses (podman resolves them only from the same file), then the workload itself."""
    spec = pod_spec(workload)
    used_cm = {v["configMap"]["name"] for v in spec.get("volumes") or [] if "configMap" in v}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        used_cm |= {s["configMapRef"]["name"] for s in c.get("envFrom") or [] if "configMapRef" in s}
    docs = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] in used_cm]
    return docs + [workload]


def volume_owner_annotations(pvc: Obj, workload: Obj) -> list[str]:
    """Podman has no fsGroup: give the PVC's volume the owner the pod's securityContext asks for.

    Kubernetes makes a volume writable by `fsGroup`; podman creates named volumes owned by
    root. Its PVC annotations `volume.podman.io/uid|gid` set the owner instead: uid from
    runAsUser, gid from fsGroup (else runAsGroup). Returns notes of what was set.
    """
    sc = pod_spec(workload).get("securityContext") or {}
    owner = {"uid": sc.get("runAsUser"), "gid": sc.get("fsGroup", sc.get("runAsGroup"))}
    notes = []
    annotations = pvc["metadata"].setdefault("annotations", {})
    for key, value in owner.items():
        if value is not None:
            annotations[f"volume.podman.io/{key}"] = str(value)
            notes.append(f"volume.podman.io/{key}={value}")
    return notes


def claim_names(workload: Obj) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in pod_spec(workload).get("volumes") or []
            if "persistentVolumeClaim" in v]


def job_with_steps(cronjob: Obj, name: str, container_name: str, steps: list[list[str]]) -> Obj:
    """A Job from `cronjob`'s template running `steps` (ml_jobs args) in order, in one pod.

    Kubernetes runs init containers one after another and stops at the first failure, so all
    steps but the last become init containers copied from the template's container (same
    image, env, mounts, limits); the last step is the main container.
    """
    job = job_from_cronjob(cronjob, name)
    spec = pod_spec(job)
    base = container(job, container_name)
    chain = []
    for i, args in enumerate(steps):
        c = copy.deepcopy(base)
        c["name"] = f"step{i}-{args[0]}"
        c["args"] = list(args)
        for key in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
            c.pop(key, None)
        chain.append(c)
    spec["initContainers"] = chain[:-1]
    spec["containers"] = chain[-1:]
    return job
