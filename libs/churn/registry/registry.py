"""A model registry on plain files: immutable versions, a production alias, gated promotion.

Layout under `<root>/registry/`:

    models/<version>/model.joblib   the fitted model (sklearn Pipeline)
    models/<version>/card.json      what the model is: schema, data, metrics, digest, ...
    models/<version>/scorer.npz     the portable scorer the API serves (churn.portable; card "scorer")
    models/<version>/<extra files>  e.g. holdout.npz (the gate's evaluation set), plots
    aliases/<alias>.json            {"version", "updated_at", "reason", "txn"}
    history.jsonl                   one line per alias decision (promote, refused, rollback)
    registry.lock                   serialises alias changes between processes

The history is a journal: an alias change is first recorded as `"state": "pending"` with a
transaction id, then the alias is written carrying that id, then the line becomes
`committed`. A crash in between leaves a pending line that the next operation under the
lock reconciles (`committed` if the alias carries its id, else `aborted`), so production
never changes without a record and a rollback always finds the previous version.

Why this shape: the reference project copied "the newest file" onto the production alias,
in place and without comparing models, and its alias metadata could describe other weights
than the alias file held. Here a version is written into a temp directory and renamed into
place (it exists complete or not at all), its card records the sha256 of its model file
(verified on every load), and the alias is a small pointer file swapped with os.replace under
a lock, only after a gate compared the candidate with the current production model.

Imports only the stdlib and churn.storage (whose pandas import is lazy, for Parquet only);
joblib is imported where a model is (un)pickled, so the API (cards, aliases, scorer files)
runs without pandas, joblib or scikit-learn. A version is promoted only if it has a portable
scorer (`_require_portable_scorer`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from churn.errors import RegistryError, StaleInput
from churn.storage import faults
from churn.storage.files import (
    atomic_write_bytes,
    atomic_write_json,
    locked_temp,
    naming_disk_full,
    remove_path,
    sweep_dead_temps,
)
from churn.storage.filelock import FileLock

log = logging.getLogger(__name__)

PRODUCTION = "production"
PENDING, COMMITTED, ABORTED = "pending", "committed", "aborted"
ALIAS_ACTIONS = ("promote", "rollback")
MODEL_FILE = "model.joblib"
CARD_FILE = "card.json"
SCORER_KEY = "scorer"  # card entry of the portable scorer file: {file, kind, sha256, ...} (churn.portable)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class LoadedModel:
    """A verified model version: its id, the unpickled model, its card and its directory."""

    version: str
    model: Any
    card: dict[str, Any]
    path: Path | None = None


@dataclass(frozen=True)
class GateDecision:
    """The outcome of a promotion gate; `metrics` holds the figures it compared."""

    accepted: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)


# gate(candidate, current_production_or_None) -> decision
Gate = Callable[[LoadedModel, "LoadedModel | None"], GateDecision]


@dataclass(frozen=True)
class PromotionResult:
    """What `promote` did: `promoted` is False when the gate refused (nothing changed)."""

    promoted: bool
    alias: str
    from_version: str | None
    to_version: str
    decision: GateDecision


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _check_name(kind: str, name: str) -> str:
    """Version and alias names become path components: refuse anything like '../x'."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RegistryError(f"invalid {kind} name {name!r} (letters, digits, '_', '.', '-')")
    return name


def model_bytes(model: Any) -> bytes:
    """Serialise a model with joblib into bytes (so its digest is known before writing)."""
    import joblib  # here, not at the top: the API reads cards and aliases without joblib in its image

    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    return buf.getvalue()


def read_version_file(loaded: LoadedModel, name: str) -> bytes:
    """The bytes of one extra file of a version (e.g. the gate's holdout), checked against
    the sha256 its card recorded at registration: a file replaced since is a StaleInput
    naming it, never evaluated. A card from before the digests: the bytes as they are."""
    if loaded.path is None:
        raise RegistryError(f"version {loaded.version} has no directory")
    path = loaded.path / _check_name("file", name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read ({exc.strerror})") from exc
    expected = (loaded.card.get("files_sha256") or {}).get(name)
    digest = hashlib.sha256(data).hexdigest()
    if expected and digest != expected:
        raise StaleInput(f"{path}: not the file version {loaded.version} was registered with (sha256 "
                         f"{digest[:12]}, its card records {str(expected)[:12]}): not evaluated; "
                         "retrain (`ml_jobs train`) or promote another version")
    return data


class ModelRegistry:
    """File-based registry rooted at `<root>/registry` (`root` is the data root)."""

    def __init__(self, root: str | Path, lock_timeout: float | None = 600.0) -> None:
        self.root = Path(root)
        self.dir = self.root / "registry"
        self.models_dir = self.dir / "models"
        self.aliases_dir = self.dir / "aliases"
        self.history_path = self.dir / "history.jsonl"
        self.lock_path = self.dir / "registry.lock"
        self.lock_timeout = lock_timeout

    # ------------------------------------------------------------------ versions

    def version_dir(self, version: str) -> Path:
        return self.models_dir / _check_name("version", version)

    def register(self, model: Any, card: Mapping[str, Any],
                 files: Mapping[str, bytes] | None = None) -> str:
        """Store `model` + `card` (+ extra `files`) as a new immutable version; returns its id.

        The id is `<UTC time>Z-<8 hex of the model digest>` (sortable, unique); the version
        directory is assembled under a temp name and renamed into place, so readers never see
        a half-written version.
        """
        data = model_bytes(model)
        digest = hashlib.sha256(data).hexdigest()
        now = _utcnow()
        self.models_dir.mkdir(parents=True, exist_ok=True)
        sweep_dead_temps(self.models_dir)
        tmp, fd = locked_temp(self.models_dir, "version", directory=True)
        try:
            base = f"{now:%Y%m%dT%H%M%SZ}-{digest[:8]}"
            full_card = dict(card)
            full_card.update(created_at=full_card.get("created_at") or now.isoformat(),
                             model_file=MODEL_FILE, model_sha256=digest,
                             # what a reader of an extra file checks it against (`read_file`)
                             files_sha256={name: hashlib.sha256(content).hexdigest()
                                           for name, content in (files or {}).items()})
            atomic_write_bytes(tmp / MODEL_FILE, data)
            for name, content in (files or {}).items():
                atomic_write_bytes(tmp / _check_name("file", name), content)
            with naming_disk_full(self.models_dir):
                version = self._rename_into_place(tmp, base, full_card)
        except BaseException:
            remove_path(tmp)
            raise
        finally:
            os.close(fd)
        log.info("registered model version %s (%s, sha256 %s)", version,
                 full_card.get("model_kind", "?"), digest[:12])
        return version

    def _rename_into_place(self, tmp: Path, base: str, card: dict[str, Any]) -> str:
        """rename(2) of a directory fails if the target exists: retry with a suffix."""
        for attempt in range(100):
            version = base if attempt == 0 else f"{base}-{attempt}"
            target = self.models_dir / version
            if target.exists():
                continue
            atomic_write_json(tmp / CARD_FILE, {**card, "version": version})
            try:
                faults.point("rename", target)
                os.rename(tmp, target)
            except OSError:
                if target.exists():
                    continue
                raise
            return version
        raise RegistryError(f"{self.models_dir}: cannot allocate a version id for {base}")

    def versions(self) -> list[str]:
        """All complete versions, sorted by id (= registration time)."""
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir()
                      if not p.name.startswith(".") and (p / CARD_FILE).is_file())

    def card(self, version: str) -> dict[str, Any]:
        """The card of `version`; RegistryError naming the path if missing or corrupt."""
        path = self.version_dir(version) / CARD_FILE
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(f"{path}: model version {version!r} not found "
                                f"(known: {', '.join(self.versions()) or 'none'})") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}: corrupt model card ({exc})") from exc
        if not isinstance(card, dict) or card.get("version") != version:
            raise RegistryError(f"{path}: card does not describe version {version!r}")
        return card

    def load(self, version: str) -> LoadedModel:
        """Load and verify a version: the model file's sha256 must match its card."""
        card = self.card(version)
        path = self.version_dir(version) / str(card.get("model_file", MODEL_FILE))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RegistryError(f"{path}: cannot read model file ({exc.strerror})") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != card.get("model_sha256"):
            raise RegistryError(f"{path}: model file digest {digest[:12]} does not match the card "
                                f"({str(card.get('model_sha256'))[:12]}): corrupt or replaced")
        import joblib  # see model_bytes

        try:
            model = joblib.load(io.BytesIO(data))
        except Exception as exc:  # unpickling can raise nearly anything
            raise RegistryError(f"{path}: cannot unpickle model ({type(exc).__name__}: {exc})") from exc
        return LoadedModel(version=version, model=model, card=card, path=path.parent)

    # ------------------------------------------------------------------ aliases

    def _alias_path(self, name: str) -> Path:
        return self.aliases_dir / f"{_check_name('alias', name)}.json"

    def alias_record(self, name: str = PRODUCTION) -> dict[str, Any] | None:
        """The alias pointer {"version", "updated_at", "reason"}, or None if never set."""
        path = self._alias_path(name)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path}: corrupt alias file ({exc})") from exc
        if not isinstance(record, dict) or not isinstance(record.get("version"), str):
            raise RegistryError(f"{path}: alias file has no 'version'")
        return record

    def get_alias(self, name: str = PRODUCTION) -> str | None:
        """The version the alias points at, or None if it was never set."""
        record = self.alias_record(name)
        return None if record is None else record["version"]

    def _lock(self) -> FileLock:
        return FileLock(self.lock_path, timeout=self.lock_timeout)

    def _set_alias(self, name: str, version: str, reason: str, txn: str) -> None:
        record = {"version": version, "updated_at": _utcnow().isoformat(), "reason": reason, "txn": txn}
        atomic_write_json(self._alias_path(name), record)

    # ------------------------------------------------------------------ history (the journal)

    def history(self) -> list[dict[str, Any]]:
        """Every alias decision, oldest first."""
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise RegistryError(f"{self.history_path}:{n}: corrupt history line ({exc})") from exc
        return out

    def _write_history(self, entries: list[dict[str, Any]]) -> None:
        """Replace the journal atomically (caller holds the lock): it is small, and a whole-file
        rename can never leave a torn last line."""
        text = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in entries)
        atomic_write_bytes(self.history_path, text.encode("utf-8"))

    def _append_history(self, entry: dict[str, Any]) -> None:
        self._write_history(self.history() + [{"time": _utcnow().isoformat(), **entry}])

    def _set_state(self, txn: str, state: str) -> None:
        entries = self.history()
        for e in entries:
            if e.get("txn") == txn:
                e["state"] = state
        self._write_history(entries)

    def reconcile(self) -> list[dict[str, Any]]:
        """Resolve pending journal lines left by a crash (caller holds the lock); returns them.

        A pending change took effect exactly when its alias carries its transaction id.
        """
        entries = self.history()
        resolved = []
        for e in entries:
            if e.get("state") != PENDING:
                continue
            record = self.alias_record(str(e.get("alias", PRODUCTION)))
            took_effect = record is not None and record.get("txn") == e.get("txn")
            e["state"] = COMMITTED if took_effect else ABORTED
            e["reconciled_at"] = _utcnow().isoformat()
            resolved.append(e)
            log.warning("registry journal: %s %s -> %s (txn %s) was interrupted; it %s", e.get("action"),
                        e.get("from"), e.get("to"), e.get("txn"),
                        "had taken effect: committed" if took_effect else "had not taken effect: aborted")
        if resolved:
            self._write_history(entries)
        return resolved

    def _change_alias(self, alias: str, version: str, reason: str, entry: dict[str, Any]) -> None:
        """Journal first, then the alias, then the journal's verdict (caller holds the lock)."""
        txn = uuid.uuid4().hex
        self._append_history({**entry, "alias": alias, "to": version, "reason": reason,
                              "txn": txn, "state": PENDING})
        try:
            self._set_alias(alias, version, reason, txn)
        except Exception:
            with contextlib.suppress(Exception):  # else the next start reconciles it
                self._set_state(txn, ABORTED)
            raise
        self._set_state(txn, COMMITTED)

    def effective_changes(self, alias: str = PRODUCTION) -> list[dict[str, Any]]:
        """The changes of `alias` that took effect, oldest first (a pending one as the alias says)."""
        record = self.alias_record(alias)
        txn = None if record is None else record.get("txn")
        return [e for e in self.history()
                if e.get("alias") == alias and e.get("action") in ALIAS_ACTIONS
                and (e.get("state") in (None, COMMITTED) or (e.get("state") == PENDING and e.get("txn") == txn))]

    def explain_alias(self, alias: str = PRODUCTION) -> dict[str, Any] | None:
        """The journal line that set the alias to what it is now; RegistryError if none does."""
        record = self.alias_record(alias)
        if record is None:
            return None
        changes = self.effective_changes(alias)
        last = changes[-1] if changes else None
        if last is None or last.get("to") != record["version"] \
                or ("txn" in record and last.get("txn") != record["txn"]):
            raise RegistryError(f"{self._alias_path(alias)}: points at {record['version']}, but "
                                f"{self.history_path} does not record that change")
        return last

    # ------------------------------------------------------------------ promotion

    def promote(self, version: str, *, reason: str, gate: Gate | None,
                alias: str = PRODUCTION) -> PromotionResult:
        """Point `alias` at `version` if `gate(candidate, production)` accepts it.

        `gate=None` means forced (the caller must give a reason). Gate evaluation and the
        pointer swap happen under the registry lock, so production cannot change between
        the comparison and the swap, and concurrent promotions are serialised. Refusals are
        recorded in the history as well.
        """
        if not reason or not reason.strip():
            raise RegistryError("promotion needs a reason")
        with self._lock():
            self.reconcile()
            current = self.get_alias(alias)
            candidate = self.load(version)
            self._require_portable_scorer(candidate, alias, current, reason)
            if current == version:
                decision = GateDecision(False, f"{version} is already {alias}")
                log.info("promotion skipped: %s", decision.reason)
                return PromotionResult(False, alias, current, version, decision)
            # a forced promotion (no gate) must work even if the current model is corrupt
            production = self.load(current) if current is not None and gate is not None else None
            decision = self._decide(candidate, production, gate)
            action = "promote" if decision.accepted else "refused"
            entry = {"action": action, "from": current, "decision": decision.reason,
                     "metrics": decision.metrics}
            if decision.accepted:
                self._change_alias(alias, version, reason, entry)
            else:
                self._append_history({**entry, "alias": alias, "to": version, "reason": reason})
        log.info("%s %s -> %s: %s %s", action, current, version, decision.reason,
                 json.dumps(decision.metrics, sort_keys=True, default=str))
        return PromotionResult(decision.accepted, alias, current, version, decision)

    def _require_portable_scorer(self, candidate: LoadedModel, alias: str, current: str | None,
                                 reason: str) -> None:
        """RegistryError (recorded in the history) unless the version has a portable scorer file.

        Why at promotion: the API serves only the portable scorer (no scikit-learn in its
        image), so a version without one could never be served; training registers such a
        model all the same (card `scorer` null) for batch use and comparison.
        """
        entry = candidate.card.get(SCORER_KEY)
        if isinstance(entry, dict) and (candidate.path / str(entry.get("file", ""))).is_file():
            return
        why = (f"{candidate.path / CARD_FILE}: version {candidate.version} (model_kind "
               f"{candidate.card.get('model_kind', '?')!r}) has no portable scorer (card key {SCORER_KEY!r}); "
               f"the API serves only portable scorers (a logistic pipeline or binary gradient boosting), "
               f"so it cannot become {alias}")
        self._append_history({"action": "refused", "alias": alias, "from": current, "to": candidate.version,
                              "reason": reason, "decision": why, "metrics": {}})
        raise RegistryError(why)

    @staticmethod
    def _decide(candidate: LoadedModel, production: LoadedModel | None,
                gate: Gate | None) -> GateDecision:
        if gate is None:
            return GateDecision(True, "forced (no gate)")
        decision = gate(candidate, production)
        if not isinstance(decision, GateDecision):
            raise RegistryError(f"gate returned {type(decision).__name__}, expected GateDecision")
        return decision

    def previous_version(self, alias: str = PRODUCTION) -> str | None:
        """The version `alias` pointed at before its last change (the default rollback target)."""
        current = self.get_alias(alias)
        for entry in reversed(self.effective_changes(alias)):
            if entry.get("to") == current:
                return entry.get("from")
        return None

    def rollback(self, to_version: str | None = None, *, reason: str = "rollback",
                 alias: str = PRODUCTION) -> PromotionResult:
        """Point `alias` back at `to_version` (default: the previous production version).

        No gate (an operator decision), but the target must load and verify.
        """
        with self._lock():
            self.reconcile()
            current = self.get_alias(alias)
            target = to_version if to_version is not None else self.previous_version(alias)
            if target is None:
                raise RegistryError(f"{self.history_path}: no previous {alias} version to roll back to")
            self._require_portable_scorer(self.load(target), alias, current, reason)
            decision = GateDecision(True, f"rollback to {target}")
            self._change_alias(alias, target, reason, {"action": "rollback", "from": current,
                                                       "decision": decision.reason, "metrics": {}})
        log.info("rollback %s: %s -> %s", alias, current, target)
        return PromotionResult(True, alias, current, target, decision)
