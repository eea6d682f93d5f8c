"""oci_image / oci_push / oci_load, shaped like rules_oci's so that a later swap is mechanical."""

load(":layers.bzl", "OciLayerInfo")

def _layers_of(ctx):
    """Layers of `tars` in order: OciLayerInfo targets as they are, plain .tar files gzipped."""
    layers = []
    for target in ctx.attr.tars:
        if OciLayerInfo in target:
            layers.extend(target[OciLayerInfo].layers)
            continue
        for tar in target.files.to_list():
            blob = ctx.actions.declare_file("%s/layers/%s.gz" % (ctx.label.name, tar.short_path))
            descriptor = ctx.actions.declare_file("%s/layers/%s.json" % (ctx.label.name, tar.short_path))
            ctx.actions.run(
                executable = ctx.executable._layer,
                arguments = ["--from-tar", tar.path, "--out", blob.path, "--descriptor", descriptor.path],
                inputs = [tar],
                outputs = [blob, descriptor],
                mnemonic = "OciGzipLayer",
            )
            layers.append(struct(blob = blob, descriptor = descriptor))
    return layers

def _oci_image_impl(ctx):
    layers = _layers_of(ctx)
    layout = ctx.actions.declare_directory(ctx.label.name)
    digest = ctx.actions.declare_file(ctx.label.name + ".digest")
    config = ctx.actions.declare_file(ctx.label.name + ".config.json")
    ctx.actions.write(config, json.encode({
        "entrypoint": ctx.attr.entrypoint or None,
        "cmd": ctx.attr.cmd or None,
        "env": ctx.attr.env,
        "user": ctx.attr.user or None,
        "workdir": ctx.attr.workdir or None,
        "labels": ctx.attr.labels,
        "exposed_ports": ctx.attr.exposed_ports,
    }))
    args = ctx.actions.args()
    args.add("--config", config).add("--out", layout.path).add("--digest", digest)
    inputs = [config]
    for layer in layers:
        args.add_all("--layer", [layer.blob, layer.descriptor])
        inputs += [layer.blob, layer.descriptor]
    if ctx.attr.stamp_enabled:
        args.add("--stamp", ctx.info_file)
        inputs.append(ctx.info_file)
    ctx.actions.run(
        executable = ctx.executable._layout,
        arguments = [args],
        inputs = inputs,
        outputs = [layout, digest],
        mnemonic = "OciImage",
        progress_message = "Assembling OCI image %{label}",
    )
    return [
        DefaultInfo(files = depset([layout, digest])),
        OutputGroupInfo(digest = depset([digest]), layout = depset([layout])),
    ]

_oci_image = rule(
    implementation = _oci_image_impl,
    attrs = {
        "tars": attr.label_list(allow_files = True, doc = "layers, bottom first"),
        "entrypoint": attr.string_list(),
        "cmd": attr.string_list(),
        "env": attr.string_dict(),
        "user": attr.string(),
        "workdir": attr.string(),
        "labels": attr.string_dict(doc = "`{STATUS_KEY}` in a value is filled only under --stamp"),
        "exposed_ports": attr.string_list(),
        "stamp_enabled": attr.bool(),
        "_layer": attr.label(default = "//tools/oci/private:layer", executable = True, cfg = "exec"),
        "_layout": attr.label(default = "//tools/oci/private:layout", executable = True, cfg = "exec"),
    },
)

def oci_image(name, tars, entrypoint = [], cmd = [], env = {}, user = "", workdir = "", labels = {}, exposed_ports = [], **kwargs):
    """An OCI image layout directory `name` and `name.digest` (`sha256:<hex>` of the manifest).

    Reproducible: `created` is the epoch, layers are deterministic. Labels may use `{KEY}` from
    the workspace status (e.g. `{STABLE_GIT_COMMIT}`); such labels are set only under --stamp,
    so an unstamped build keeps its digest and its cache hits.

    Args:
      name: target name; `name.digest` is the digest file target.
      tars: layer targets (py_image_layers, deb_layer) or plain .tar files, bottom first.
      entrypoint: container entrypoint.
      cmd: default arguments.
      env: environment.
      user: `uid:gid` to run as.
      workdir: working directory.
      labels: OCI config labels.
      exposed_ports: e.g. ["8000/tcp"].
      **kwargs: common attributes (visibility, tags, ...).
    """
    _oci_image(
        name = name,
        tars = tars,
        entrypoint = entrypoint,
        cmd = cmd,
        env = env,
        user = user,
        workdir = workdir,
        labels = labels,
        exposed_ports = exposed_ports,
        stamp_enabled = select({
            "//tools/oci:stamp": True,
            "//conditions:default": False,
        }),
        **kwargs
    )
    native.filegroup(
        name = name + ".digest",
        srcs = [name],
        output_group = "digest",
        visibility = kwargs.get("visibility"),
        tags = kwargs.get("tags"),
    )

def _runner(ctx, script, args):
    """An executable shell launcher calling python3 `script` with `args` (paths in runfiles)."""
    launcher = ctx.actions.declare_file(ctx.label.name + ".sh")
    quoted = " ".join(["\"$R/%s\"" % a.short_path if type(a) == "File" else "'%s'" % a for a in args])
    ctx.actions.write(launcher, "\n".join([
        "#!/bin/sh",
        "# Generated by //tools/oci for %s." % ctx.label,
        "set -eu",
        "R=${RUNFILES_DIR:-$0.runfiles}/_main",
        "[ -d \"$R\" ] || R=$PWD  # `bazel run` starts in the runfiles' _main directory",
        "exec python3 \"$R/%s\" %s \"$@\"" % (script.short_path, quoted),
        "",
    ]), is_executable = True)
    return launcher

def _image_files(ctx):
    image = ctx.attr.image
    layout = image[OutputGroupInfo].layout.to_list()[0]
    digest = image[OutputGroupInfo].digest.to_list()[0]
    return layout, digest

def _image_script(ctx, args, tags):
    """An executable running `_script` on the image, with `tags` as its default tags."""
    layout, digest = _image_files(ctx)
    args = ["--image", layout, "--digest", digest] + args
    for tag in tags:
        args += ["--default-tag", tag]
    launcher = _runner(ctx, ctx.file._script, args)
    runfiles = ctx.runfiles(files = [layout, digest, ctx.file._script])
    return [DefaultInfo(executable = launcher, runfiles = runfiles)]

def _oci_push_impl(ctx):
    return _image_script(ctx, ["--repository", ctx.attr.repository], ctx.attr.remote_tags)

oci_push = rule(
    implementation = _oci_push_impl,
    executable = True,
    doc = """`bazel run` pushes the image with skopeo (or crane) and checks the pushed digest.

    Run-time flags: `-r/--repository REPO` replaces `repository`; `-t/--tag TAG` (repeatable)
    replaces `remote_tags`. Loopback registries are reached over plain HTTP.""",
    attrs = {
        "image": attr.label(mandatory = True, doc = "an oci_image"),
        "repository": attr.string(mandatory = True, doc = "e.g. localhost:5000/churn-api"),
        "remote_tags": attr.string_list(default = ["latest"]),
        "_script": attr.label(default = "//tools/oci/private:push.py", allow_single_file = True),
    },
)

def _oci_load_impl(ctx):
    return _image_script(ctx, [], ctx.attr.repo_tags)

oci_load = rule(
    implementation = _oci_load_impl,
    executable = True,
    doc = """`bazel run` loads the image into local podman storage (or docker, if it is present).

    Run-time flag `-t/--tag NAME:TAG` (repeatable) replaces `repo_tags`.""",
    attrs = {
        "image": attr.label(mandatory = True, doc = "an oci_image"),
        "repo_tags": attr.string_list(mandatory = True, doc = "e.g. [\"localhost/churn-api:latest\"]"),
        "_script": attr.label(default = "//tools/oci/private:load.py", allow_single_file = True),
    },
)
