"""No input of any kind produces a 5xx: a corpus of malformed requests over real HTTP.

Each case states the status it must get; 422s must name the offending field. The server is
a real uvicorn on 127.0.0.1 (fixture `served`), so parsing, limits and routing are the
production ones.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from apps.api.app import create_app
from apps.api.samples import typical_row
from apps.api.testkit import card_for, overflowing_model, register, serving_config_for, start_server, wait_for
from churn.features.schema import feature_specs

SPECS = feature_specs()
GOOD = typical_row(SPECS)
JSON = {"content-type": "application/json"}


def features(**changes: Any) -> dict[str, Any]:
    row = dict(GOOD)
    for name, value in changes.items():
        if value is DROP:
            row.pop(name)
        else:
            row[name] = value
    return row


DROP = object()


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def raw_features(fragment: str) -> bytes:
    """A /predict body whose `is_paid` is the raw JSON token `fragment` (NaN, 1e999, ...)."""
    text = json.dumps({"features": features(is_paid=0)})
    return text.replace('"is_paid": 0', f'"is_paid": {fragment}').encode()


# (id, method, path, body bytes or None, headers, expected status(es), field named in a 422 loc)
CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int | tuple[int, ...], str | None]] = [
    ("empty body", "POST", "/predict", b"", {}, 422, None),
    ("empty json body", "POST", "/predict", b"", JSON, 422, None),
    ("invalid json", "POST", "/predict", b"{", JSON, 422, None),
    ("json null", "POST", "/predict", b"null", JSON, 422, None),
    ("json list", "POST", "/predict", b"[]", JSON, 422, None),
    ("json string", "POST", "/predict", b'"hello"', JSON, 422, None),
    ("json number", "POST", "/predict", b"123", JSON, 422, None),
    ("empty object", "POST", "/predict", b"{}", JSON, 422, "features"),
    ("features null", "POST", "/predict", body({"features": None}), JSON, 422, "features"),
    ("features list", "POST", "/predict", body({"features": [1, 2]}), JSON, 422, "features"),
    ("missing feature", "POST", "/predict", body({"features": features(logins_7d=DROP)}), JSON, 422, "logins_7d"),
    ("unknown feature", "POST", "/predict", body({"features": features(engagement_score=0.5)}), JSON, 422,
     "engagement_score"),
    ("unknown top-level field", "POST", "/predict", body({"features": GOOD, "extra": 1}), JSON, 422, "extra"),
    ("NaN token", "POST", "/predict", raw_features("NaN"), JSON, 422, "is_paid"),
    ("Infinity token", "POST", "/predict", raw_features("Infinity"), JSON, 422, "is_paid"),
    ("-Infinity token in nullable", "POST", "/predict",
     json.dumps({"features": features(quiz_mean_7d=None)}).replace('"quiz_mean_7d": null',
                                                                    '"quiz_mean_7d": -Infinity').encode(),
     JSON, 422, "quiz_mean_7d"),
    ("overflowing float", "POST", "/predict", raw_features("1e999"), JSON, 422, "is_paid"),
    ("huge integer", "POST", "/predict", raw_features("1" + "0" * 4000), JSON, 422, "is_paid"),
    ("integer beyond the parser's digit limit", "POST", "/predict", raw_features("9" * 5000), JSON, 422, None),
    ("numeric as string", "POST", "/predict", body({"features": features(events_7d="5")}), JSON, 422, "events_7d"),
    ("numeric as bool", "POST", "/predict", body({"features": features(is_paid=True)}), JSON, 422, "is_paid"),
    ("negative count", "POST", "/predict", body({"features": features(logins_14d=-1)}), JSON, 422, "logins_14d"),
    ("active days over window", "POST", "/predict", body({"features": features(active_days_7d=8)}), JSON, 422,
     "active_days_7d"),
    ("is_paid out of range", "POST", "/predict", body({"features": features(is_paid=1.5)}), JSON, 422, "is_paid"),
    ("quiz mean over 100", "POST", "/predict", body({"features": features(quiz_mean_30d=101)}), JSON, 422,
     "quiz_mean_30d"),
    ("unknown category", "POST", "/predict", body({"features": features(country="FR")}), JSON, 422, "country"),
    ("category wrong case", "POST", "/predict", body({"features": features(marketing_source="Ads")}), JSON, 422,
     "marketing_source"),
    ("category as number", "POST", "/predict", body({"features": features(country=1)}), JSON, 422, "country"),
    ("null for a required numeric", "POST", "/predict", body({"features": features(events_30d=None)}), JSON, 422,
     "events_30d"),
    ("null for a categorical", "POST", "/predict", body({"features": features(country=None)}), JSON, 422, "country"),
    ("nested garbage in a feature", "POST", "/predict",
     body({"features": features(tickets_7d={"a": [{"b": [1, {"c": None}]}]})}), JSON, 422, "tickets_7d"),
    ("deeply nested arrays", "POST", "/predict", b"[" * 8000 + b"]" * 8000, JSON, 422, None),
    ("deeply nested arrays in a batch", "POST", "/predict/batch", b"[" * 20000 + b"]" * 20000, JSON, 422, None),
    ("invalid utf-8", "POST", "/predict", b'{"features": "\xff\xfe"}', JSON, 422, None),
    ("invalid utf-8 in a batch", "POST", "/predict/batch", b'{"instances": "\xff\xfe"}', JSON, 422, None),
    ("gzip body", "POST", "/predict", b"\x1f\x8b\x08\x00" + b"\x00" * 20, {**JSON, "content-encoding": "gzip"}, 422,
     None),
    ("text/plain content-type", "POST", "/predict", body({"features": GOOD}), {"content-type": "text/plain"}, 415,
     None),
    ("form content-type", "POST", "/predict", b"features=1",
     {"content-type": "application/x-www-form-urlencoded"}, 415, None),
    ("negative user_id", "POST", "/predict", body({"user_id": -1, "features": GOOD}), JSON, 422, "user_id"),
    ("user_id as string", "POST", "/predict", body({"user_id": "u1", "features": GOOD}), JSON, 422, "user_id"),
    ("user_id over int64", "POST", "/predict", body({"user_id": 2**64, "features": GOOD}), JSON, 422, "user_id"),
    ("body over the size limit", "POST", "/predict", b" " * (65 * 1024) + b"{}", JSON, 413, None),
    ("batch empty", "POST", "/predict/batch", body({"instances": []}), JSON, 422, "instances"),
    ("batch over max size", "POST", "/predict/batch", body({"instances": [{"features": GOOD}] * 51}), JSON, 422,
     "instances"),
    ("batch not a list", "POST", "/predict/batch", body({"instances": {"features": GOOD}}), JSON, 422, "instances"),
    ("batch with one bad item", "POST", "/predict/batch",
     body({"instances": [{"features": GOOD}, {"features": features(country="XX")}]}), JSON, 422, "country"),
    ("GET on predict", "GET", "/predict", None, {}, 405, None),
    ("PUT on predict", "PUT", "/predict", body({"features": GOOD}), JSON, 405, None),
    ("unknown path", "GET", "/admin/../../etc/passwd", None, {}, 404, None),
    ("POST to unknown path", "POST", "/v2/predict", body({}), JSON, 404, None),
]


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("name", "method", "path", "content", "headers", "status", "field"), CASES,
                         ids=[c[0] for c in CASES])
def test_malformed_request_gets_its_4xx(client: httpx.Client, name: str, method: str, path: str,
                                        content: bytes | None, headers: dict[str, str],
                                        status: int | tuple[int, ...], field: str | None) -> None:
    response = client.request(method, path, content=content, headers=headers)
    assert response.status_code in (status if isinstance(status, tuple) else (status,)), response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    if response.status_code == 422:
        errors = response.json()["detail"]
        assert errors and all({"loc", "msg", "type"} <= set(e) for e in errors)
        assert all("input" not in e for e in errors), "errors must not echo the input"
        if field is not None:
            assert any(field in map(str, e["loc"]) for e in errors), errors


def test_chunked_body_over_the_limit_is_413(client: httpx.Client) -> None:
    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(100):
            yield b" " * 1024

    response = client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413


def test_unknown_http_method_is_not_a_server_error(served: Any) -> None:
    url = urlsplit(served[0].url)
    with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
        sock.sendall(b"BREW /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        status_line = sock.recv(200).split(b"\r\n", 1)[0]
    assert status_line.split()[1] in (b"400", b"405"), status_line


def test_extreme_valid_values_that_overflow_the_model_are_422_not_500(tmp_path: Any) -> None:
    register(tmp_path, overflowing_model(SPECS), card_for(SPECS))
    server = start_server(create_app(serving_config_for(tmp_path)))
    try:
        with httpx.Client(base_url=server.url) as c:
            assert wait_for(lambda: c.get("/ready").status_code == 200)
            extreme = features(**{s.name: 1e9 for s in SPECS if s.kind == "numeric" and s.maximum is None})
            one = c.post("/predict", json={"features": extreme})
            assert one.status_code == 422, one.text
            assert one.json()["detail"][0]["type"] == "non_finite_risk"
            batch = c.post("/predict/batch", json={"instances": [{"features": GOOD}, {"features": extreme}]})
            assert batch.status_code == 422
            assert batch.json()["detail"][0]["loc"] == ["body", "instances", 1]
            assert c.post("/predict", json={"features": GOOD}).status_code == 200
    finally:
        server.stop()


def test_nullable_features_accept_null_and_ints_are_numbers(client: httpx.Client) -> None:
    row = features(quiz_mean_7d=None, quiz_mean_14d=None, payment_failure_rate_30d=None,
                   days_since_last_active=None, logins_7d=3, is_paid=1)
    response = client.post("/predict", json={"user_id": 7, "features": row})
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == 7
    assert 0.0 <= response.json()["churn_risk"] <= 1.0
