"""End-to-end harness: a local registry, image pushes, rendered manifests and podman kube play."""
