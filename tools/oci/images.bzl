"""Project defaults shared by the churn-mlops images (used in apps/*/BUILD.bazel)."""

load(":defs.bzl", "oci_image", "oci_load", "oci_push", "py_image_layers")

# Non-root user of every image (created in //tools/oci:python_base's /etc/passwd as `app`).
APP_USER = "10001:10001"

# Environment of every image: no bytecode writes (the image ships .pyc), unbuffered logs,
# writable HOME / matplotlib cache in /tmp, the data root owned by the app user.
APP_ENV = {
    "CHURN_DATA_ROOT": "/var/lib/churn",
    "HOME": "/tmp",
    "MPLCONFIGDIR": "/tmp",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}

def image_labels(title):
    """OCI labels: a fixed version (MODULE.bazel's), revision and source only under --stamp.

    `{STABLE_...}` values come from tools/oci/workspace_status.sh and are filled only when
    building with --stamp, so unstamped builds keep their digests and cache hits.

    Args:
      title: org.opencontainers.image.title.
    Returns:
      a labels dict for oci_image.
    """
    return {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.version": native.module_version() or "0.0.0",
        "org.opencontainers.image.revision": "{STABLE_GIT_COMMIT}",
        "org.opencontainers.image.source": "{STABLE_GIT_REMOTE_URL}",
    }

def py_app_image(binary, repository, cmd = [], exposed_ports = []):
    """The image targets of one app, named as in rules_oci: :image, :image.digest, :push, :load.

    Layers: the Python runtime (pinned .debs) | the binary's third-party wheels | its runfiles.
    Both apps use this, so their images differ only in what they run.

    Args:
      binary: the py_binary to ship (its name is the entrypoint under /app/bin).
      repository: where `bazel run :push` pushes by default (`-r` overrides it).
      cmd: default arguments of the entrypoint.
      exposed_ports: e.g. ["8000/tcp"].
    """
    app = binary.lstrip(":")
    title = repository.rsplit("/", 1)[-1]
    py_image_layers(
        name = "image_layers",
        binary = binary,
    )
    oci_image(
        name = "image",
        tars = [
            "//tools/oci:python_base",
            ":image_layers",
        ],
        cmd = cmd,
        entrypoint = ["/app/bin/" + app],
        env = APP_ENV,
        exposed_ports = exposed_ports,
        labels = image_labels(title),
        user = APP_USER,
        workdir = "/app",
    )
    oci_push(
        name = "push",
        image = ":image",
        remote_tags = [native.module_version() or "latest"],
        repository = repository,
    )
    oci_load(
        name = "load",
        image = ":image",
        repo_tags = ["localhost/%s:%s" % (title, native.module_version() or "latest")],
    )
