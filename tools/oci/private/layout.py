"""Assemble an OCI image layout directory from layer blobs and an image config (stdlib only).

Inputs: layer blobs (.tar.gz) each with its descriptor JSON (from tarball.write_layer), and a
JSON of the container config (entrypoint, cmd, env, user, workdir, labels, exposed ports). With
--stamp FILE (Bazel's stable-status.txt, only under --stamp), `{KEY}` in label values is replaced
by the status value; unstamped, labels holding `{...}` are left out. Output: DIR with
oci-layout, index.json and blobs/sha256/*, and a file holding the manifest digest. Deterministic:
compact key-sorted JSON, `created` at the epoch.
"""

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

EPOCH = "1970-01-01T00:00:00Z"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def put_blob(out: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (out / "blobs/sha256" / digest).write_bytes(data)
    return "sha256:" + digest, len(data)


def stamp_values(path: Path | None) -> dict[str, str]:
    """KEY value lines of a Bazel workspace status file."""
    if path is None:
        return {}
    pairs = (line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)
    return {key: value for key, value in pairs}


def expand_labels(labels: dict[str, str], status: dict[str, str]) -> dict[str, str]:
    """Substitutes {KEY} from the status; drops labels whose placeholders have no value."""
    result = {}
    for name, value in labels.items():
        keys = re.findall(r"\{([A-Z0-9_]+)\}", value)
        if all(key in status for key in keys):
            result[name] = re.sub(r"\{([A-Z0-9_]+)\}", lambda m: status[m.group(1)], value)
    return result


def image_config(spec: dict, diff_ids: list[str], status: dict[str, str]) -> dict:
    """The OCI image config: only set fields appear (rules_oci's behaviour)."""
    config = {
        "Entrypoint": spec.get("entrypoint"),
        "Cmd": spec.get("cmd"),
        "Env": [f"{k}={v}" for k, v in sorted(spec.get("env", {}).items())] or None,
        "User": spec.get("user"),
        "WorkingDir": spec.get("workdir"),
        "Labels": expand_labels(spec.get("labels", {}), status) or None,
        "ExposedPorts": {p if "/" in p else p + "/tcp": {} for p in spec.get("exposed_ports", [])} or None,
    }
    return {
        "architecture": spec.get("architecture", "amd64"),
        "os": "linux",
        "created": EPOCH,
        "config": {k: v for k, v in config.items() if v},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": EPOCH, "created_by": "bazel: //tools/oci"} for _ in diff_ids],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="container config JSON")
    parser.add_argument("--layer", nargs=2, action="append", default=[], metavar=("BLOB", "DESCRIPTOR"))
    parser.add_argument("--stamp", type=Path, help="stable-status.txt (only with --stamp)")
    parser.add_argument("--out", type=Path, required=True, help="image layout directory")
    parser.add_argument("--digest", type=Path, required=True, help="file for the manifest digest")
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    (args.out / "blobs/sha256").mkdir(parents=True)
    layers, diff_ids = [], []
    for blob, descriptor_path in args.layer:
        descriptor = json.loads(Path(descriptor_path).read_text())
        shutil.copyfile(blob, args.out / "blobs/sha256" / descriptor["digest"].removeprefix("sha256:"))
        diff_ids.append(descriptor.pop("diff_id"))
        layers.append(descriptor)
    spec = json.loads(args.config.read_text())
    config_digest, config_size = put_blob(args.out, canonical(image_config(spec, diff_ids, stamp_values(args.stamp))))
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
                "layers": layers}
    digest, size = put_blob(args.out, canonical(manifest))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": MANIFEST, "digest": digest, "size": size}]}
    (args.out / "index.json").write_bytes(canonical(index))
    (args.out / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    args.digest.write_text(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
