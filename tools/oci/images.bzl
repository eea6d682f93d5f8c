"""Project defaults shared by the churn-mlops images (used in apps/*/BUILD.bazel)."""

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
