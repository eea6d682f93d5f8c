"""The PrometheusRule of the kustomize component, generated from the plain rules file.

One source: `observability/rules/churn-mlops.rules.yml` (what promtool checks and tests, and
what a Prometheus without the operator loads). prometheus-operator wants the same groups
inside a PrometheusRule object, and kustomize cannot wrap a file into a custom resource, so
the object is generated and committed:

    ./bazelw run //observability:update      # rewrite k8s/components/prometheus-operator/prometheusrule.yaml
    python observability/prometheus_rule.py --check    # exit 1 when the committed file differs

A test (//observability:rules_test) fails when the committed object is not this output.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).absolute().parent  # not resolved: under Bazel the files sit in runfiles
RULES = HERE / "rules" / "churn-mlops.rules.yml"
COMPONENT_RULE = HERE.parent / "k8s" / "components" / "prometheus-operator" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from observability/rules/churn-mlops.rules.yml by `./bazelw run //observability:update`.
# Do not edit: change the rules file and regenerate (a test compares the two).
"""


class _Literal(str):
    """A string dumped in YAML block style (multi-line PromQL stays readable)."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


def _blocks(node: Any) -> Any:
    """Multi-line strings as block scalars, recursively."""
    if isinstance(node, dict):
        return {k: _blocks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_blocks(v) for v in node]
    return _Literal(node) if isinstance(node, str) and "\n" in node else node


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    """The PrometheusRule (monitoring.coreos.com/v1) holding exactly the file's groups."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "churn-mlops", "labels": {"app.kubernetes.io/component": "monitoring"}},
        "spec": {"groups": rules["groups"]},
    }


def render(rules_text: str) -> str:
    """The committed file's text for a rules file's text."""
    obj = prometheus_rule(yaml.safe_load(rules_text))
    return HEADER + yaml.safe_dump(_blocks(obj), sort_keys=False, width=10_000, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is not up to date")
    args = parser.parse_args(argv)
    # under `bazel run`, write into the workspace, not into the runfiles
    workspace = os.environ.get("BUILD_WORKSPACE_DIRECTORY")
    target = Path(workspace) / "k8s/components/prometheus-operator/prometheusrule.yaml" if workspace else COMPONENT_RULE
    rules = Path(workspace) / "observability/rules/churn-mlops.rules.yml" if workspace else RULES
    text = render(rules.read_text(encoding="utf-8"))
    if args.check:
        if target.read_text(encoding="utf-8") != text:
            print(f"{target} is not generated from {rules}: run ./bazelw run //observability:update", file=sys.stderr)
            return 1
        return 0
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
