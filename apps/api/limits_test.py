"""Hostile clients on 127.0.0.1, in bounded loops: every limit of `api.*` holds and is counted.

The server is the production one (apps/api/server.py via testkit.start_server) with short
timeouts, so each case takes well under a second.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from apps.api.app import create_app
from apps.api.samples import typical_row
from apps.api.testkit import (
    LiveServer,
    card_for,
    logistic_pipeline,
    metric_value,
    register,
    serving_config_for,
    start_server,
    wait_for,
)
from churn.features.schema import feature_specs

SPECS = feature_specs()
ROW = typical_row(SPECS)
LIMITS = dict(max_header_bytes=8192, max_headers=32, header_timeout_seconds=0.5, body_timeout_seconds=0.5,
              keepalive_timeout_seconds=0.5, max_connections=8, max_errors=5, max_batch_size=200,
              protocol_error_log_interval_seconds=60.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("root")
    register(root, logistic_pipeline(SPECS), card_for(SPECS))
    live = start_server(create_app(serving_config_for(root, **LIMITS)))
    with httpx.Client(base_url=live.url) as client:
        assert wait_for(lambda: client.get("/ready").status_code == 200)
    yield live
    live.stop()


def connect(server: LiveServer, timeout: float = 5.0) -> socket.socket:
    url = urlsplit(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (or the socket times out)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def limit_hits(server: LiveServer, limit: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return metric_value(text, f'churn_api_limit_hits_total{{limit="{limit}"}}') or 0.0


def metric(server: LiveServer, sample: str) -> float:
    return metric_value(httpx.get(f"{server.url}/metrics").text, sample) or 0.0


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_complete_header_over_the_byte_limit_is_431(server: LiveServer) -> None:
    before = limit_hits(server, "max_header_bytes")
    with connect(server) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        answer = read_all(sock)
    assert status_of(answer) == 431 and b'"detail"' in answer
    assert limit_hits(server, "max_header_bytes") == before + 1


def test_an_endless_header_is_cut_off_at_the_limit_not_buffered(server: LiveServer) -> None:
    """The 32 MB unfinished header of the issue: the server answers 431 and closes long before."""
    sent = 0
    with connect(server) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < 32 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_all(sock)
    assert sent < 4 * 1024 * 1024, f"the server took {sent} bytes of one header"
    assert answer == b"" or status_of(answer) == 431


def test_too_many_headers_is_431(server: LiveServer) -> None:
    before = limit_hits(server, "max_headers")
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(40))
    with connect(server) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
        assert status_of(read_all(sock)) == 431
    assert limit_hits(server, "max_headers") == before + 1
    with connect(server) as sock:  # under the limit: served
        few = b"".join(b"X-%d: 1\r\n" % i for i in range(20))
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + few + b"\r\n")
        assert status_of(read_all(sock)) == 200


def test_a_trickling_header_is_408_after_the_header_timeout(server: LiveServer) -> None:
    before = limit_hits(server, "header_timeout")
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /live HTTP/1.1\r\nHo")
        answer = read_all(sock)
        elapsed = time.monotonic() - start
    assert status_of(answer) == 408
    assert elapsed < 3.0
    assert limit_hits(server, "header_timeout") == before + 1


def test_a_silent_connection_is_closed_after_the_header_timeout(server: LiveServer) -> None:
    with connect(server) as sock:
        assert read_all(sock) == b""  # closed by the server, no answer to nothing


def test_an_idle_keep_alive_connection_is_closed(server: LiveServer) -> None:
    before = limit_hits(server, "keepalive_timeout")
    with connect(server) as sock:
        sock.sendall(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(sock)  # the answer, then the close after the idle timeout
    assert status_of(answer) == 200
    assert limit_hits(server, "keepalive_timeout") == before + 1


def test_a_trickling_body_is_408_after_the_body_timeout(server: LiveServer) -> None:
    before = limit_hits(server, "body_timeout")
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        answer = read_all(sock)
    assert status_of(answer) == 408
    assert limit_hits(server, "body_timeout") == before + 1
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, 'churn_api_requests_total{method="POST",route="/predict",status="408"}') >= 1


def test_one_connection_over_the_limit_is_503_and_the_rest_are_served(server: LiveServer) -> None:
    before = limit_hits(server, "max_connections")
    idle = [connect(server) for _ in range(LIMITS["max_connections"])]
    try:
        with connect(server) as extra:
            assert status_of(read_all(extra)) == 503
    finally:
        for sock in idle:
            sock.close()
    assert limit_hits(server, "max_connections") >= before + 1
    assert wait_for(lambda: httpx.get(f"{server.url}/live").status_code == 200, timeout=5)


def test_malformed_http_is_400_json_counted_and_its_log_rate_limited(server: LiveServer,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    before = metric(server, "churn_api_protocol_errors_total")
    caplog.set_level(logging.WARNING, logger="churn.api")
    for _ in range(20):
        with connect(server) as sock:
            sock.sendall(b"\x00\x01 garbage \r\n\r\n")
            answer = read_all(sock)
        assert status_of(answer) == 400 and b"application/json" in answer
    assert metric(server, "churn_api_protocol_errors_total") == before + 20
    lines = [r for r in caplog.records if r.getMessage() == "http_protocol_error"]
    assert len(lines) <= 1, "one line per interval, not one per bad request"


def test_a_client_that_leaves_mid_body_is_counted_as_aborted_not_500(server: LiveServer) -> None:
    aborted = 'churn_api_requests_aborted_total{method="POST",route="/predict"}'
    errors = 'churn_api_requests_total{method="POST",route="/predict",status="500"}'
    before = metric(server, aborted)
    for _ in range(3):
        with connect(server) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"features\"")
            time.sleep(0.05)
    assert wait_for(lambda: metric(server, aborted) == before + 3, timeout=5)
    assert metric(server, errors) == 0


def test_an_error_list_is_cut_to_the_first_n_with_the_count_of_all(server: LiveServer) -> None:
    before = limit_hits(server, "max_errors")
    response = httpx.post(f"{server.url}/predict/batch", json={"instances": [{"features": {}}] * 200})
    assert response.status_code == 422
    body = response.json()
    assert len(body["detail"]) == LIMITS["max_errors"]
    assert body["error_count"] == 200 * len(SPECS)
    assert limit_hits(server, "max_errors") == before + 1
    assert len(response.content) < 2000


def test_unknown_keys_by_the_thousand_are_reported_without_listing_them_all(server: LiveServer) -> None:
    features = {f"k{i}": 1 for i in range(20_000)}
    response = httpx.post(f"{server.url}/predict/batch", json={"instances": [{"features": features}]})
    assert response.status_code == 422
    body = response.json()
    assert body["error_count"] == 20_000 + len(SPECS)
    assert body["detail"][0] == {"loc": ["body", "instances", 0, "features", "k0"],
                                 "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}


def test_ready_answers_while_hostile_batches_are_validated(server: LiveServer) -> None:
    """The probe of the issue: 6 clients posting invalid 200-row batches, /ready keeps answering."""
    stop = threading.Event()

    def hostile() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for _ in range(50):
                if stop.is_set():
                    return
                client.post("/predict/batch", json={"instances": [{"features": {}}] * 200})

    threads = [threading.Thread(target=hostile) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=server.url, timeout=2.0) as probe:  # the readiness probe's timeout
            for _ in range(10):
                assert probe.get("/ready").status_code == 200
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


def test_every_get_route_answers_head_without_a_body(server: LiveServer) -> None:
    for path in ("/live", "/ready", "/metrics", "/model", "/docs", "/redoc", "/openapi.json"):
        response = httpx.head(f"{server.url}{path}")
        assert response.status_code == 200, path
        assert response.content == b"", path


def test_the_host_header_is_never_reflected(server: LiveServer) -> None:
    for path in ("/live/", "/predict/", "/docs/"):
        with connect(server) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n" % path.encode())
            answer = read_all(sock)
        assert b"evil.example" not in answer, answer[:300]
        assert status_of(answer) in (404, 405)


def test_docs_are_served_offline_from_pinned_assets(server: LiveServer) -> None:
    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",))):
        html = httpx.get(f"{server.url}{page}").text
        assert "http://" not in html and "https://" not in html, f"{page} loads something from the internet"
        for asset in assets:
            assert f"/docs/assets/{asset}" in html
            response = httpx.get(f"{server.url}/docs/assets/{asset}")
            assert response.status_code == 200 and len(response.content) > 100_000, asset


def test_process_metrics_are_exported(server: LiveServer) -> None:
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, "process_resident_memory_bytes") > 10_000_000
    assert metric_value(text, "process_open_fds") > 0
    assert metric_value(text, "process_cpu_seconds_total") > 0
    assert metric_value(text, "churn_api_open_connections") >= 1
