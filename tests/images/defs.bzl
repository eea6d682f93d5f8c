"""`image_tests`: the contents, container and push tests of one image."""

load("//tools/pytest:defs.bzl", "pytest_test")

# podman and the registry do not work in Bazel's sandbox; podman state is global to the
# toolchain namespace, so these run one at a time.
CONTAINER_TAGS = ["no-sandbox", "requires-network", "exclusive"]

def image_tests(name, image, push, mode, max_unpacked_mb, forbidden = [], required = []):
    """Tests `<name>_contents_test`, `<name>_container_test` and `<name>_push_test`.

    Args:
      name: short image name (also the registry repository name in the push test).
      image: the oci_image target.
      push: its oci_push target.
      mode: "serve" (GET /live after `--host 127.0.0.1 --port P`) or "cli" (`--help`).
      forbidden: top-level Python packages that must not be in the image.
      required: top-level Python packages that must be in the image.
      max_unpacked_mb: size budget of all layers unpacked, MB (files, upper layers winning).
    """
    images = "$(rootpaths %s)" % image
    pytest_test(
        name = name + "_contents_test",
        size = "medium",
        srcs = ["contents_test.py"],
        data = [image],
        deps = [":oci_layout"],
        env = {
            "IMAGE": images,
            "FORBIDDEN": " ".join(forbidden),
            "REQUIRED": " ".join(required),
            "MAX_UNPACKED_MB": str(max_unpacked_mb),
        },
    )
    pytest_test(
        name = name + "_container_test",
        size = "medium",
        srcs = ["container_test.py"],
        data = [image],
        deps = [":oci_layout"],
        env = {"IMAGE": images, "NAME": name, "MODE": mode},
        tags = CONTAINER_TAGS,
    )
    pytest_test(
        name = name + "_push_test",
        size = "medium",
        srcs = ["push_test.py"],
        data = [image, push],
        deps = [":oci_layout"],
        env = {"IMAGE": images, "PUSH": "$(rootpath %s)" % push, "NAME": "churn-" + name},
        tags = CONTAINER_TAGS,
    )
