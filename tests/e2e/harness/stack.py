"""One run's podman objects: plays parsed workloads from the rendered stream, runs Jobs to
completion, and removes everything it created (also after a failure)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness import kube, podman
from harness.cleanup import Cleanup
from harness.proc import CommandFailed, log


class Stack:
    def __init__(self, objs: list[kube.Obj], prefix: str, workdir: Path, cleanup: Cleanup) -> None:
        self.objs = objs
        self.prefix = prefix
        self.workdir = workdir
        self.cleanup = cleanup
        self.played: list[Path] = []
        self.notes: list[str] = []
        self.volumes_created: set[str] = set()
        cleanup.add(f"remove every pod/container/volume named {prefix}*", self.sweep)

    def note(self, text: str) -> None:
        log(f"note: {text}")
        if text not in self.notes:
            self.notes.append(text)

    def play(self, workload: kube.Obj, timeout: float = 600) -> Path:
        """kube play the workload with the ConfigMaps it uses, and its PVCs on first use."""
        docs = kube.play_documents(self.objs, workload)
        pvcs = [o for o in kube.find(self.objs, "PersistentVolumeClaim")
                if o["metadata"]["name"] in kube.claim_names(workload)
                and o["metadata"]["name"] not in self.volumes_created]
        for pvc in pvcs:
            notes = kube.volume_owner_annotations(pvc, workload)
            self.note(f"PVC {pvc['metadata']['name']}: podman ignores fsGroup; set {', '.join(notes)} "
                      f"from {workload['metadata']['name']}'s securityContext")
        docs = pvcs + docs
        path = self.workdir / f"play-{len(self.played):02d}-{workload['metadata']['name']}.yaml"
        path.write_text(kube.dump_stream(docs))
        self.played.append(path)
        self.cleanup.add(f"podman kube down --force {path.name}", lambda: podman.kube_down(path, force=True))
        started = time.monotonic()
        out = podman.kube_play(path, timeout=timeout)
        self.volumes_created |= {p["metadata"]["name"] for p in pvcs}
        log(f"kube play {path.name} ({', '.join(d['kind'] for d in docs)}) in {time.monotonic() - started:.1f} s:\n"
            f"{out.strip()}")
        return path

    def run_job(self, job: kube.Obj, timeout: float = 600) -> dict[str, int]:
        """Play a Job and wait for it: {container: exit code} for init and main containers.

        kube play starts the pod at once; init containers run to completion first. The Job's
        result is the exit code of its containers (play itself says nothing about it).
        """
        name = job["metadata"]["name"]
        try:
            self.play(job, timeout=timeout)
        except CommandFailed as err:
            # an init container that fails makes the pod start (and so kube play) fail
            codes = self._codes(job, wait=False)
            self.dump_logs(job)
            raise AssertionError(f"Job {name}: kube play failed; exit codes {codes}\n{err}") from None
        codes = self._codes(job, wait=True, timeout=timeout)
        log(f"Job {name}: exit codes {codes}")
        return codes

    def run_job_expecting(self, job: kube.Obj, exit_code: int = 0, timeout: float = 600) -> dict[str, int]:
        """Run a Job whose main container must exit with `exit_code` and every init container 0.

        On any other outcome the Job's logs are printed before the assertion fails.
        """
        codes = self.run_job(job, timeout=timeout)
        expected = {c["name"]: 0 for c in kube.containers(job, init=True)}
        expected.update({c["name"]: exit_code for c in kube.containers(job)})
        if codes != expected:
            self.dump_logs(job)
        assert codes == expected, f"Job {job['metadata']['name']}: exit codes {codes}, expected {expected}"
        return codes

    def _codes(self, job: kube.Obj, wait: bool, timeout: float = 600) -> dict[str, int]:
        name = job["metadata"]["name"]
        codes: dict[str, int] = {}
        gone = []
        for init in kube.containers(job, init=True):
            cname = podman.container_name(name, init["name"])
            st = podman.podman("container", "inspect", "--format", "{{.State.ExitCode}}", cname,
                               check=False, timeout=60)
            if st.returncode == 0:
                codes[init["name"]] = int(st.stdout.split()[0])
            else:
                gone.append(init["name"])
        main = {}
        for c in kube.containers(job):
            cname = podman.container_name(name, c["name"])
            if wait:
                main[c["name"]] = podman.wait_exit(cname, timeout)
        if gone and main:
            # podman removes an init container once it has succeeded; the main containers
            # start only after every init container exited 0.
            self.note("init containers: podman removes them after they succeed (their logs go with them); "
                      "the main container starting proves exit 0")
            codes.update({g: 0 for g in gone})
        codes.update(main)
        return codes

    def dump_logs(self, workload: kube.Obj, tail: int = 60) -> str:
        name = workload["metadata"]["name"]
        parts = []
        for c in kube.containers(workload, init=True) + kube.containers(workload):
            cname = podman.container_name(name, c["name"])
            parts.append(f"--- logs {cname} ({podman.state(cname)})\n{podman.logs(cname, tail).rstrip()}")
        text = "\n".join(parts)
        log(text)  # returned too, for callers that look into it
        return text

    def volume_path(self, claim: str) -> Path:
        """Where podman keeps the named volume of PVC `claim` (to read results directly)."""
        out = podman.podman("volume", "inspect", claim, timeout=60).stdout
        return Path(json.loads(out)[0]["Mountpoint"])

    def sweep(self) -> None:
        removed = podman.remove_everything(self.prefix)
        if removed:
            log(f"sweep removed: {removed}")

    def leftovers(self) -> dict[str, list[str]]:
        return {kind: podman.names(kind, self.prefix) for kind in ("ps", "pod", "volume")}
