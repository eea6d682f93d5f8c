"""Strict JSON schemas of the prometheus-operator objects the manifests use (monitoring.coreos.com/v1).

kubernetes-validate knows only the built-in kinds. These schemas follow the operator's v1 API
reference for PrometheusRule and ServiceMonitor, restricted to the fields a cluster would
accept AND this project writes, with unknown fields rejected (the same strictness as the
built-in kinds get): a typo such as `expresion:` or `endpoint:` fails here instead of being
dropped silently by the API server's pruning.
"""

from __future__ import annotations

from typing import Any

import jsonschema

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"},
                   "labels": _STRING_MAP, "annotations": _STRING_MAP},
}
_RULE = {
    "type": "object",
    "required": ["expr"],
    "additionalProperties": False,
    "properties": {
        "alert": {"type": "string"}, "record": {"type": "string"},
        "expr": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "for": _DURATION, "keep_firing_for": _DURATION,
        "labels": _STRING_MAP, "annotations": _STRING_MAP,
    },
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array", "items": {
        "type": "object", "required": ["key", "operator"], "additionalProperties": False,
        "properties": {"key": {"type": "string"}, "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                       "values": {"type": "array", "items": {"type": "string"}}}}}},
}

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {"type": "object", "additionalProperties": False, "properties": {"groups": {
                "type": "array", "items": {
                    "type": "object", "required": ["name", "rules"], "additionalProperties": False,
                    "properties": {"name": {"type": "string", "minLength": 1}, "interval": _DURATION,
                                   "limit": {"type": "integer"}, "partial_response_strategy": {"type": "string"},
                                   "rules": {"type": "array", "items": _RULE}}}}}},
        },
    },
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
                "properties": {
                    "selector": _LABEL_SELECTOR, "jobLabel": {"type": "string"},
                    "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                        "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                    "endpoints": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"port": {"type": "string"}, "targetPort": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                                       "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
                                       "interval": _DURATION, "scrapeTimeout": _DURATION,
                                       "honorLabels": {"type": "boolean"}}}},
                },
            },
        },
    },
}


def is_custom(doc: dict) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in SCHEMAS


def validate(doc: dict) -> None:
    """jsonschema.ValidationError if `doc` breaks its kind's schema."""
    jsonschema.validate(doc, SCHEMAS[(doc["apiVersion"], doc["kind"])])
