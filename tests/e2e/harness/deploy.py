"""Bring-up shared by the end-to-end scenarios: registry, both images pushed, manifests rendered."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness import kube, podman
from harness.cleanup import Cleanup
from harness.proc import log
from harness.push import push, read_digest
from harness.registry import LocalRegistry
from harness.render import render
from harness.timing import Timings


def input_path(name: str) -> Path:
    """A path set by tests/e2e/BUILD.bazel (relative to the runfiles directory)."""
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set (run through Bazel: ./bazelw test //tests/e2e:...)")
    paths = [Path(p) for p in value.split()]
    # a target whose outputs are several files (e.g. an image: layout dir + .digest)
    if len(paths) > 1 and name.endswith("_DIGEST"):
        paths = [p for p in paths if p.name.endswith("digest")] or paths
    path = paths[0].absolute()  # not resolved: render.py finds k8s/base beside it in runfiles
    if not path.exists():
        raise RuntimeError(f"{name}={value}: {path} does not exist")
    return path


def bring_up(timings: Timings, cleanup: Cleanup, workdir: Path, prefix: str, pulled: list[str],
             components: tuple[str, ...] = ()) -> tuple[LocalRegistry, list[kube.Obj]]:
    """Start the registry, push both images (digests checked three ways), render, prefix names."""
    registry = LocalRegistry(workdir / "registry")
    with timings.stage("registry: start docker-registry"):
        registry.start()
        cleanup.add("stop docker-registry", registry.stop)
        cleanup.add("remove the pulled images from local storage", lambda: podman.rmi(*pulled))
    with timings.stage("push: both images (:push executables)"):
        digests = {}
        for name, exe_var, digest_var in (("churn-api", "E2E_API_PUSH", "E2E_API_DIGEST"),
                                          ("churn-ml", "E2E_ML_PUSH", "E2E_ML_DIGEST")):
            pushed = push(input_path(exe_var), f"{registry.host}/{name}", prefix)
            built = read_digest(input_path(digest_var))
            served = registry.manifest_digest(name, prefix)
            assert pushed == built == served, (name, pushed, built, served)
            digests[name] = built
        log(f"registry catalog: {registry.catalog()}")
    with timings.stage("render: k8s/render.py against the registry"):
        stream = render(input_path("E2E_RENDER"), input_path("E2E_API_DIGEST"), input_path("E2E_ML_DIGEST"),
                        registry.host, workdir / "rendered.yaml", components)
        objs = kube.load_stream(stream)
        images = {c["image"] for o in objs if o["kind"] in ("Job", "Deployment", "CronJob")
                  for c in kube.containers(o) + kube.containers(o, init=True)}
        assert images == {f"{registry.host}/{n}@{d}" for n, d in digests.items()}, images
        pulled.extend(sorted(images))
        kube.rename_all(objs, prefix)
        log(f"rendered {len(objs)} objects: {[(o['kind'], o['metadata']['name']) for o in objs]}")
    return registry, objs


def production_alias(root: Path) -> dict:
    """The registry's production alias, read straight from the volume's data root."""
    path = root / "registry" / "aliases" / "production.json"
    assert path.exists(), f"no production alias in the volume: {sorted(p.name for p in root.iterdir())}"
    return json.loads(path.read_text())
