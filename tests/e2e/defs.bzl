"""`e2e_test`: a pytest_test that runs a scenario in real containers (podman `kube play`)."""

load("//tools/pytest:defs.bzl", "pytest_test")

# What every container scenario needs: the images' :push executables and digests, the
# manifest renderer and the alert rules, each passed to the test as an env var of its path.
E2E_INPUTS = {
    "E2E_API_PUSH": "//apps/api:push",
    "E2E_ML_PUSH": "//apps/ml_jobs:push",
    "E2E_API_DIGEST": "//apps/api:image.digest",
    "E2E_ML_DIGEST": "//apps/ml_jobs:image.digest",
    "E2E_RENDER": "//k8s:render.py",
    "E2E_RULES": "//observability:rules/churn-mlops.rules.yml",
}

def e2e_test(name, srcs, size, deps = []):
    """A container scenario: the harness, the E2E_* inputs, and the tags podman needs.

    Args:
      name: target name.
      srcs: the pytest module of the scenario.
      size: "large" or "enormous" (the scenario's own time bound is in the test).
      deps: libraries beside the harness.
    """
    pytest_test(
        name = name,
        size = size,
        srcs = srcs,
        # -s: the stage table and podman notes reach test.log also when it passes
        args = ["-s", "--tb=short"],
        data = E2E_INPUTS.values() + ["//k8s:manifests"],
        env = {var: "$(rootpath %s)" % label for var, label in E2E_INPUTS.items()},
        # podman needs the real filesystem (storage.lock, netns): no sandbox. State is global
        # to the namespace and the test binds loopback ports: one at a time (`exclusive`).
        tags = [
            "e2e",
            "exclusive",
            "no-sandbox",
            "requires-network",
        ],
        deps = [":harness"] + deps,
    )
