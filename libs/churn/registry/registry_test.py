"""Registry: immutable versions, verified loads, atomic gated promotion, lock, rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from churn.registry import registry as reg_mod
from churn.registry.registry import GateDecision, ModelRegistry, RegistryError


def _accept(candidate, production):
    return GateDecision(True, "test gate accepts", {"candidate": 1.0})


def _refuse(candidate, production):
    return GateDecision(False, "test gate refuses", {"candidate": 0.1, "production": 0.9})


@pytest.fixture()
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path)


def _register(registry: ModelRegistry, name: str) -> str:
    """A version with a (stand-in) portable scorer file: promotable."""
    return registry.register({"weights": name}, {"model_kind": name, "scorer": {"file": "scorer.npz"}},
                             files={"scorer.npz": b"arrays of " + name.encode()})


def test_a_version_without_a_portable_scorer_is_refused_at_promotion(registry):
    served = _register(registry, "a")
    registry.promote(served, reason="first", gate=None)
    bare = registry.register({"weights": "forest"}, {"model_kind": "random_forest", "scorer": None})
    for attempt in (lambda: registry.promote(bare, reason="forced", gate=None),
                    lambda: registry.promote(bare, reason="gated", gate=_accept),
                    lambda: registry.rollback(bare)):
        with pytest.raises(RegistryError, match="no portable scorer") as refused:
            attempt()
        assert "random_forest" in str(refused.value) and bare in str(refused.value)
    assert registry.get_alias() == served
    assert [e["action"] for e in registry.history()][-3:] == ["refused"] * 3


def test_register_writes_complete_version_and_load_roundtrips(registry):
    version = registry.register({"w": [1, 2, 3]}, {"model_kind": "toy"}, files={"extra.txt": b"x"})
    vdir = registry.models_dir / version
    assert sorted(p.name for p in vdir.iterdir()) == ["card.json", "extra.txt", "model.joblib"]
    assert not [p for p in registry.models_dir.iterdir() if p.name.startswith(".")]
    loaded = registry.load(version)
    assert loaded.model == {"w": [1, 2, 3]}
    assert loaded.card["version"] == version
    assert loaded.card["model_kind"] == "toy"
    assert len(loaded.card["model_sha256"]) == 64
    assert registry.versions() == [version]


def test_versions_are_unique_for_the_same_model_in_the_same_second(registry):
    ids = [registry.register({"same": 1}, {"model_kind": "toy"}) for _ in range(3)]
    assert len(set(ids)) == 3
    assert registry.versions() == sorted(ids)


def test_corrupt_model_file_raises_registry_error_naming_path(registry):
    version = _register(registry, "a")
    model_path = registry.models_dir / version / "model.joblib"
    model_path.write_bytes(model_path.read_bytes()[:-5] + b"XXXXX")
    with pytest.raises(RegistryError, match=str(model_path)):
        registry.load(version)


def test_missing_version_and_bad_names_raise(registry):
    with pytest.raises(RegistryError, match="not found"):
        registry.load("20990101T000000Z-deadbeef")
    with pytest.raises(RegistryError, match="invalid version"):
        registry.load("../etc")


def test_first_promotion_then_gate_refusal_keeps_production(registry):
    a, b = _register(registry, "a"), _register(registry, "b")
    assert registry.get_alias() is None
    first = registry.promote(a, reason="first", gate=_accept)
    assert first.promoted and registry.get_alias() == a
    refused = registry.promote(b, reason="try b", gate=_refuse)
    assert not refused.promoted
    assert registry.get_alias() == a
    actions = [(h["action"], h["from"], h["to"]) for h in registry.history()]
    assert actions == [("promote", None, a), ("refused", a, b)]
    assert registry.history()[1]["metrics"] == {"candidate": 0.1, "production": 0.9}


def test_gate_sees_current_production(registry):
    a, b = _register(registry, "a"), _register(registry, "b")
    seen = []

    def gate(candidate, production):
        seen.append((candidate.version, production.version if production else None))
        return GateDecision(True, "ok")

    registry.promote(a, reason="r", gate=gate)
    registry.promote(b, reason="r", gate=gate)
    assert seen == [(a, None), (b, a)]


def test_promote_failing_midway_leaves_old_alias(registry, monkeypatch):
    a, b = _register(registry, "a"), _register(registry, "b")
    registry.promote(a, reason="first", gate=_accept)
    alias_before = registry._alias_path("production").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="injected"):
        registry.promote(b, reason="second", gate=_accept)
    monkeypatch.undo()
    assert registry._alias_path("production").read_bytes() == alias_before
    assert registry.get_alias() == a
    assert [h["to"] for h in registry.history()] == [a]
    leftovers = [p for p in registry.aliases_dir.iterdir() if p.name != "production.json"]
    assert leftovers == []


def test_gate_raising_leaves_old_alias(registry):
    a, b = _register(registry, "a"), _register(registry, "b")
    registry.promote(a, reason="first", gate=_accept)

    def exploding(candidate, production):
        raise ValueError("gate crashed")

    with pytest.raises(ValueError):
        registry.promote(b, reason="second", gate=exploding)
    assert registry.get_alias() == a


def test_rollback_default_and_explicit(registry):
    a, b, c = (_register(registry, n) for n in "abc")
    registry.promote(a, reason="r", gate=None)
    registry.promote(b, reason="r", gate=None)
    result = registry.rollback()
    assert result.to_version == a and registry.get_alias() == a
    registry.rollback(to_version=c, reason="operator")
    assert registry.get_alias() == c
    assert [h["action"] for h in registry.history()][-2:] == ["rollback", "rollback"]


def test_rollback_without_history_or_to_corrupt_version_fails(registry):
    a, b = _register(registry, "a"), _register(registry, "b")
    with pytest.raises(RegistryError, match="no previous"):
        registry.rollback()
    registry.promote(a, reason="r", gate=None)
    (registry.models_dir / b / "model.joblib").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="digest"):
        registry.rollback(to_version=b)
    assert registry.get_alias() == a


def test_promote_needs_reason_and_skips_current(registry):
    a = _register(registry, "a")
    with pytest.raises(RegistryError, match="reason"):
        registry.promote(a, reason=" ", gate=None)
    registry.promote(a, reason="r", gate=None)
    again = registry.promote(a, reason="r", gate=None)
    assert not again.promoted and "already" in again.decision.reason


_CHILD = textwrap.dedent("""
    import sys, time
    from churn.registry.registry import GateDecision, ModelRegistry

    def slow_gate(candidate, production):
        time.sleep(0.6)  # long enough for the other process to arrive meanwhile
        return GateDecision(True, "slow", {"seen_production": production.version if production else None})

    ModelRegistry(sys.argv[1]).promote(sys.argv[2], reason="concurrent", gate=slow_gate)
""")


def test_concurrent_promotions_in_two_processes_are_serialised(registry, tmp_path):
    a, b = _register(registry, "a"), _register(registry, "b")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path), v], env=env)
             for v in (a, b)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    history = registry.history()
    assert [h["action"] for h in history] == ["promote", "promote"]
    # serialised: the second decision saw the first one's result
    assert history[0]["from"] is None
    assert history[1]["from"] == history[0]["to"]
    assert history[1]["metrics"]["seen_production"] == history[0]["to"]
    assert registry.get_alias() == history[1]["to"]
    alias = json.loads(registry._alias_path("production").read_text())
    assert set(alias) == {"version", "updated_at", "reason", "txn"}


def test_registry_module_does_not_import_pandas():
    code = "import sys, churn.registry.registry; sys.exit(1 if 'pandas' in sys.modules else 0)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
    assert reg_mod.PRODUCTION == "production"


def test_forced_promotion_replaces_a_corrupt_production_model(registry):
    a, b = _register(registry, "a"), _register(registry, "b")
    registry.promote(a, reason="r", gate=None)
    (registry.models_dir / a / "model.joblib").write_bytes(b"garbage")
    with pytest.raises(RegistryError, match="digest"):
        registry.promote(b, reason="gated", gate=_accept)  # the gate cannot compare with a corrupt model
    assert registry.promote(b, reason="production model corrupt", gate=None).promoted
    assert registry.get_alias() == b


def _crash_at(op_name: str, target_name: str):
    """An injector that 'kills' the process at the first `op_name` on a file called `target_name`."""
    from churn.storage.faults import SimulatedCrash

    state = {"dead": False}

    def injector(op, path):
        if state["dead"] or (op == op_name and path.name == target_name):
            state["dead"] = True
            raise SimulatedCrash(f"{op} {path}")
    return injector


def test_journal_before_alias_a_crash_between_is_reconciled_as_aborted(registry):
    from churn.storage.faults import SimulatedCrash, injecting

    a, b = _register(registry, "a"), _register(registry, "b")
    registry.promote(a, reason="first", gate=None)
    with injecting(_crash_at("rename", "production.json")), pytest.raises(SimulatedCrash):
        registry.promote(b, reason="second", gate=None)
    assert registry.get_alias() == a  # the alias did not change ...
    assert registry.history()[-1]["state"] == "pending"  # ... but the journal knew of the attempt
    assert registry.explain_alias()["to"] == a
    with registry._lock():
        (resolved,) = registry.reconcile()
    assert resolved["state"] == "aborted" and resolved["to"] == b
    registry.promote(b, reason="again", gate=None)
    assert registry.explain_alias()["reason"] == "again"
    assert registry.rollback().to_version == a  # the aborted attempt does not confuse rollback


def test_a_crash_after_the_alias_switch_is_reconciled_as_committed(registry):
    from churn.storage.faults import SimulatedCrash, injecting

    a, b = _register(registry, "a"), _register(registry, "b")
    registry.promote(a, reason="first", gate=None)
    # the history is written twice for a change: the pending line, then the verdict; die at the 2nd
    seen = {"n": 0, "dead": False}

    def injector(op, path):
        if op == "rename" and path.name == "history.jsonl":
            seen["n"] += 1
        if seen["dead"] or seen["n"] == 2:
            seen["dead"] = True
            raise SimulatedCrash(str(path))

    with injecting(injector), pytest.raises(SimulatedCrash):
        registry.promote(b, reason="second", gate=None)
    assert registry.get_alias() == b
    assert registry.explain_alias()["to"] == b  # explained even before reconciliation
    assert registry.rollback().to_version == a  # reconciles first, then finds the previous version
    states = [(e["to"], e.get("state")) for e in registry.history()]
    assert states == [(a, "committed"), (b, "committed"), (a, "committed")]
