"""`pytest_test`: a py_test whose main runs pytest on its own sources."""

load("@pip//:requirements.bzl", "requirement")
load("@rules_python//python:defs.bzl", "py_test")

def pytest_test(name, srcs, deps = [], args = [], **kwargs):
    """A py_test that runs pytest over `srcs`, so tests are plain pytest modules.

    Args:
      name: target name.
      srcs: the pytest modules of this target.
      deps: libraries under test.
      args: extra pytest arguments.
      **kwargs: passed to py_test (data, size, tags, env, ...).
    """
    py_test(
        name = name,
        srcs = srcs + ["//tools/pytest:pytest_main.py"],
        main = "//tools/pytest:pytest_main.py",
        args = ["$(location %s)" % src for src in srcs] + args,
        deps = deps + [requirement("pytest")],
        **kwargs
    )
