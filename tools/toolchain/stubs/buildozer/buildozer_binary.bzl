"""Offline stub of buildozer's module extension (rules_python's graph asks for it, nothing uses it)."""

def _stub_repo_impl(rctx):
    rctx.file("BUILD.bazel", "")

_stub_repo = repository_rule(implementation = _stub_repo_impl)

def _impl(mctx):
    _stub_repo(name = "buildozer_binary")

buildozer_binary = module_extension(implementation = _impl)
