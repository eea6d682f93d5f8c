"""The raw-data contract: the columns of the users and events tables, as data.

Why as data: the README's tables, `ml_jobs schema [--json]` (a Frictionless Tabular Data
Package), the ingest normaliser and the validation rules all read these definitions, so the
documented contract and the enforced one cannot drift apart.

Time rule (applies to every date and time column): ISO-8601 text, with or without an
offset. A value with an offset (`2024-03-01T10:00:00+02:00`, `...Z`) is converted to UTC;
a value without one is taken to be UTC already. A date without a time is midnight UTC.
Typed columns (Parquet timestamps, dates) follow the same rule: zone-aware -> UTC, naive
-> UTC. Stored values are UTC without a zone; an event belongs to the UTC day of its time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EVENT_TYPES: tuple[str, ...] = (
    "login",
    "course_enroll",
    "video_watch",
    "quiz_attempt",
    "payment_success",
    "payment_failed",
    "support_ticket",
)
PLANS: tuple[str, ...] = ("free", "paid")
PAYMENT_TYPES: tuple[str, ...] = ("payment_success", "payment_failed")
ID_MAX = 2**63 - 1
TIME_RULE = ("ISO-8601; a value with an offset (+02:00, Z) is converted to UTC, one without is "
             "taken as UTC; a date alone is midnight UTC")


@dataclass(frozen=True)
class Column:
    """One column of a raw table: `kind` is integer | number | string | datetime | date."""

    name: str
    kind: str
    required: bool
    description: str
    allowed: tuple[str, ...] = ()  # closed vocabulary (empty = any value)
    open_vocabulary: bool = False  # any value; new ones are listed in the report
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False


USERS: tuple[Column, ...] = (
    Column("user_id", "integer", True, "the user's id, unique in the table (64-bit, 1 .. 2^63-1)",
           minimum=1, maximum=ID_MAX),
    Column("signup_date", "date", True, "when the user signed up (see Times); not in the future"),
    Column("plan", "string", True, "subscription plan (case and spaces are normalised)", allowed=PLANS),
    Column("is_paid", "integer", True, "1 for the paid plan, 0 for free (true/false accepted); must agree with plan",
           minimum=0, maximum=1),
    Column("country", "string", False, "country code, e.g. IN, US; missing = unknown", open_vocabulary=True,
           nullable=True),
    Column("marketing_source", "string", False, "acquisition channel, e.g. organic, ads; missing = unknown",
           open_vocabulary=True, nullable=True),
)

EVENTS: tuple[Column, ...] = (
    Column("event_id", "integer", True, "the event's id, unique (64-bit); the same id again with the same "
           "content is a duplicate and dropped, with other content an error", minimum=1, maximum=ID_MAX),
    Column("user_id", "integer", True, "the user the event belongs to: must be in users (this batch or stored)",
           minimum=1, maximum=ID_MAX),
    Column("event_time", "datetime", True, "when it happened (see Times); not in the future, "
           "not before the user's signup date; its UTC day is the event's partition"),
    Column("event_type", "string", True, "what happened; other types are counted and ignored "
           "(`validation.unknown_event_types: reject` makes them errors)", allowed=EVENT_TYPES),
    Column("course_id", "string", False, "the course of enroll, video and quiz events", open_vocabulary=True,
           nullable=True),
    Column("watch_minutes", "number", False, "minutes watched (video_watch); finite, >= 0", minimum=0,
           nullable=True),
    Column("quiz_score", "number", False, "score of a quiz_attempt (required there), 0..100", minimum=0,
           maximum=100, nullable=True),
    Column("amount", "number", False, "payment amount, > 0 on payment_success / payment_failed", nullable=True),
)

TABLES: dict[str, tuple[Column, ...]] = {"users": USERS, "events": EVENTS}
PRIMARY_KEYS: dict[str, str] = {"users": "user_id", "events": "event_id"}

_FRICTIONLESS_TYPES = {"integer": "integer", "number": "number", "string": "string", "datetime": "datetime",
                       "date": "date"}


def _field(c: Column) -> dict[str, Any]:
    constraints: dict[str, Any] = {"required": c.required and not c.nullable}
    if c.allowed and c.name != "event_type":
        constraints["enum"] = list(c.allowed)
    if c.minimum is not None:
        constraints["minimum"] = c.minimum if c.kind == "number" else int(c.minimum)
    if c.maximum is not None:
        constraints["maximum"] = c.maximum if c.kind == "number" else int(c.maximum)
    out: dict[str, Any] = {"name": c.name, "type": _FRICTIONLESS_TYPES[c.kind], "description": c.description,
                           "constraints": constraints}
    if c.kind in ("datetime", "date"):
        out["format"] = "any"  # ISO-8601 with or without an offset: see TIME_RULE
    if c.name == "event_type":
        out["x-known-values"] = list(c.allowed)
    return out


def data_package() -> dict[str, Any]:
    """The contract as a Frictionless Tabular Data Package (https://specs.frictionlessdata.io)."""
    resources = []
    for table, columns in TABLES.items():
        schema: dict[str, Any] = {"fields": [_field(c) for c in columns], "primaryKey": [PRIMARY_KEYS[table]],
                                  "missingValues": [""]}
        if table == "events":
            schema["foreignKeys"] = [{"fields": ["user_id"], "reference": {"resource": "users", "fields": ["user_id"]}}]
        resources.append({"name": table, "profile": "tabular-data-resource",
                          "description": f"raw {table}; extra columns are ignored and reported; {TIME_RULE}",
                          "schema": schema})
    return {"name": "churn-mlops-raw", "profile": "tabular-data-package", "resources": resources}


def markdown() -> str:
    """The contract as Markdown tables (the README section is this text)."""
    lines: list[str] = []
    for table, columns in TABLES.items():
        lines += [f"**{table}** (primary key `{PRIMARY_KEYS[table]}`)", "",
                  "| column | type | required | meaning | allowed values |", "| --- | --- | --- | --- | --- |"]
        for c in columns:
            allowed = (", ".join(f"`{v}`" for v in c.allowed) if c.allowed
                       else "any (open vocabulary)" if c.open_vocabulary else _range(c))
            lines.append(f"| `{c.name}` | {c.kind} | {'required' if c.required else 'optional'} | "
                         f"{c.description} | {allowed} |")
        lines.append("")
    lines.append(f"Times: {TIME_RULE}. Stored times are UTC without a zone. "
                 "Extra columns are ignored and listed in the report.")
    return "\n".join(lines) + "\n"


def _range(c: Column) -> str:
    if c.minimum is None and c.maximum is None:
        return "-"
    if c.maximum is None:
        return f">= {c.minimum:g}"
    hi = "2^63-1" if c.maximum == ID_MAX else f"{c.maximum:g}"
    return f"{c.minimum:g} .. {hi}" if c.minimum is not None else f"<= {hi}"
