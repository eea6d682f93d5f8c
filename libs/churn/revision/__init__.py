"""The git revision the running code was built from (docs/architecture.md#build-revision).

Bazel writes it at build time (`_build.py`, generated): the commit under `--stamp`, which
`bazel run` and the image builds of `//k8s:apply` use, and "unstamped" otherwise, so that
plain builds and tests keep their cache. It is what model cards record as `code_revision`.
"""

from churn.revision._build import REVISION

UNSTAMPED = "unstamped"


def code_revision() -> str:
    """The 40-hex git commit of this build, or "unstamped"."""
    return REVISION
