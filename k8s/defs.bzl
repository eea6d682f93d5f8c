"""`k8s_render`: the manifest stream with both images pinned by the build's digests.

`bazel build //k8s:render` writes `out` (for the registry of the `registry` attribute);
`bazel run //k8s:render -- [--registry R] [--component C] [--output F]` runs the same tool
with the same digest files and prints the stream (default registry: render.py's).
"""

def _k8s_render_impl(ctx):
    args = ctx.actions.args()
    args.add("--api-digest-file", ctx.file.api_digest)
    args.add("--ml-digest-file", ctx.file.ml_digest)
    args.add("--registry", ctx.attr.registry)
    args.add_all(ctx.attr.components, before_each = "--component")
    args.add("--output", ctx.outputs.out)
    ctx.actions.run(
        executable = ctx.executable.tool,
        arguments = [args],
        inputs = [ctx.file.api_digest, ctx.file.ml_digest],
        outputs = [ctx.outputs.out],
        mnemonic = "KustomizeRender",
        progress_message = "Rendering Kubernetes manifests %{output}",
        use_default_shell_env = True,  # `kustomize` or `kubectl` from the toolchain's PATH
    )

    # `bazel run` starts in the runfiles root of the workspace: short paths resolve there.
    tool = ctx.attr.tool_for_run[DefaultInfo].files_to_run.executable
    launcher = ctx.actions.declare_file(ctx.label.name + "_launcher.sh")
    ctx.actions.write(
        output = launcher,
        is_executable = True,
        content = """#!/usr/bin/env bash
exec "./{tool}" --api-digest-file "{api}" --ml-digest-file "{ml}" "$@"
""".format(tool = tool.short_path, api = ctx.file.api_digest.short_path, ml = ctx.file.ml_digest.short_path),
    )
    runfiles = ctx.runfiles(files = [tool, ctx.file.api_digest, ctx.file.ml_digest])
    runfiles = runfiles.merge(ctx.attr.tool_for_run[DefaultInfo].default_runfiles)
    return [DefaultInfo(files = depset([ctx.outputs.out]), executable = launcher, runfiles = runfiles)]

_k8s_render = rule(
    implementation = _k8s_render_impl,
    executable = True,
    attrs = {
        "api_digest": attr.label(allow_single_file = True, mandatory = True),
        "ml_digest": attr.label(allow_single_file = True, mandatory = True),
        "registry": attr.string(default = "localhost:5000"),
        "components": attr.string_list(),
        "out": attr.output(mandatory = True),
        "tool": attr.label(executable = True, cfg = "exec", mandatory = True),
        "tool_for_run": attr.label(executable = True, cfg = "target", mandatory = True),
    },
)

def k8s_render(name, tool, **kwargs):
    """Renders with `tool` (k8s/render.py as a py_binary); see the module docstring.

    Args:
      name: target name (runnable).
      tool: the render py_binary; built for the action (exec) and for `bazel run` (target).
      **kwargs: api_digest, ml_digest, out, registry, components, visibility, tags.
    """
    _k8s_render(name = name, tool = tool, tool_for_run = tool, **kwargs)
