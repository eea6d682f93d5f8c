"""The OpenAPI document: exact for every answer the server can give.

Why a custom step after FastAPI's generator:
- the predict routes validate their raw body themselves (apps/api/validation.py), so the
  request models are added to `components` here and referenced by each route's requestBody;
- some answers come from the server before any route runs (apps/api/server.py: malformed
  HTTP 400, header timeout 408, headers too large 431, too many connections 503); they are
  added to every operation, with the JSON body they really have (`ErrorResponse`).
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from apps.api.schemas import ErrorResponse, RequestSchemas

REF = "#/components/schemas/{model}"
SERVER_ANSWERS: dict[str, str] = {
    "400": "Malformed HTTP (answered by the server before any route).",
    "408": "Request headers not received within `api.header_timeout_seconds`.",
    "431": "Request headers over `api.max_header_bytes` or more than `api.max_headers` of them.",
    "503": "More than `api.max_connections` open connections.",
}


def install_openapi(app: FastAPI, schemas: RequestSchemas) -> None:
    """Replace `app.openapi` by the exact document (built once, on first use)."""
    app.openapi = _exact_openapi(app, schemas)  # type: ignore[method-assign]


def _exact_openapi(app: FastAPI, schemas: RequestSchemas) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            _, definitions = models_json_schema(
                [(schemas.predict, "validation"), (schemas.batch, "validation"), (ErrorResponse, "serialization")],
                ref_template=REF,
            )
            components.update(definitions.get("$defs", {}))
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    _add_server_answers(operation["responses"])
            app.openapi_schema = document
        return app.openapi_schema

    return openapi


def _add_server_answers(responses: dict[str, Any]) -> None:
    error = {"$ref": REF.format(model="ErrorResponse")}
    for status, description in SERVER_ANSWERS.items():
        known = responses.get(status)
        if known is None:
            responses[status] = {"description": description, "content": {"application/json": {"schema": error}}}
            continue
        content = known.setdefault("content", {}).setdefault("application/json", {})
        schema = content.get("schema")
        if schema is not None and schema != error:  # e.g. /ready's own 503 body
            content["schema"] = {"anyOf": [schema, error]}
        else:
            content["schema"] = error
        known["description"] = f"{known.get('description', '')} {description}".strip()
