"""The background import of the later steps' libraries (churn.pipeline.prefetch), in a fresh
interpreter each time so that nothing is imported already."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
from churn.pipeline.prefetch import LATER_STEP_MODULES, prefetch_imports
before = sorted(m for m in ("sklearn", "scipy.stats", "matplotlib.pyplot") if m in sys.modules)
prefetch_imports(sys.argv[1:] or LATER_STEP_MODULES).join(120)
import matplotlib
print(json.dumps({"before": before, "after": sorted(m for m in ("sklearn", "scipy.stats", "matplotlib.pyplot")
                                                  if m in sys.modules), "backend": matplotlib.get_backend()}))
"""


def _probe(*modules: str) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True, text=True, env=env,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_the_later_steps_libraries_are_imported_in_the_background_with_the_agg_backend() -> None:
    facts = _probe()
    assert facts["before"] == []  # importing churn.pipeline itself stays light
    assert facts["after"] == ["matplotlib.pyplot", "scipy.stats", "sklearn"]
    assert str(facts["backend"]).lower() == "agg"  # as churn.plotting.figures needs it


def test_a_module_that_fails_to_import_is_left_to_the_step_that_needs_it() -> None:
    facts = _probe("churn.no_such_module", "churn.plotting.backend")
    assert facts["after"] == ["matplotlib.pyplot"]  # the failure did not stop the thread
