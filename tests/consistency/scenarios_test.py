"""Every `ml_jobs` command has a fault-injection scenario (faultkit.SCENARIOS) or a stated reason.

Why a target of its own: the fault-injection targets are `cpu-heavy` (skipped by the landing
filter), but a new command must fail fast, in the quick run, until it is covered.
"""

from __future__ import annotations

import faultkit as fk


def test_every_command_has_a_scenario():
    parser = fk.load_cli().build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = sorted(set(sub.choices) - set(fk.SCENARIOS) - set(fk.UNCOVERED))
    assert not missing, f"add a fault-injection scenario to tests/consistency/faultkit.py for: {missing}"
