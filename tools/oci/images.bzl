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

def py_app_image(name, binary, repository, cmd = [], exposed_ports = [], push_name = "push", load_name = "load", **kwargs):
    """One app's image, named as in rules_oci: `:<name>`, `:<name>.digest`, `:push`, `:load`.

    `py_app_image(name = "image", ...)` declares the oci_image `:image` (with `:image.digest`)
    over `:image_layers`, and, as rules_oci's examples name them, `oci_push(name = "push")`
    and `oci_load(name = "load")` of it. Layers: the Python runtime (pinned .debs) | the
    binary's third-party wheels | its runfiles. Both apps use this, so their images differ only
    in what they run.

    Args:
      name: the oci_image target (`<name>.digest` is its digest file).
      binary: the py_binary to ship (its name is the entrypoint under /app/bin).
      repository: where `bazel run :<push_name>` pushes by default (`-r` overrides it).
      cmd: default arguments of the entrypoint.
      exposed_ports: e.g. ["8000/tcp"].
      push_name: name of the oci_push target.
      load_name: name of the oci_load target.
      **kwargs: common attributes (tags, visibility, ...) of every target declared.
    """
    app = binary.lstrip(":")
    title = repository.rsplit("/", 1)[-1]
    py_image_layers(
        name = name + "_layers",
        binary = binary,
        **kwargs
    )
    oci_image(
        name = name,
        tars = [
            "//tools/oci:python_base",
            ":%s_layers" % name,
        ],
        cmd = cmd,
        entrypoint = ["/app/bin/" + app],
        env = APP_ENV,
        exposed_ports = exposed_ports,
        labels = image_labels(title),
        user = APP_USER,
        workdir = "/app",
        **kwargs
    )
    oci_push(
        name = push_name,
        image = ":" + name,
        remote_tags = [native.module_version() or "latest"],
        repository = repository,
        **kwargs
    )
    oci_load(
        name = load_name,
        image = ":" + name,
        repo_tags = ["localhost/%s:%s" % (title, native.module_version() or "latest")],
        **kwargs
    )
