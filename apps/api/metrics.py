"""Prometheus metrics of the API, in a registry of their own.

Why bounded labels: the reference labelled requests by raw path, so every scanned URL made a
new time series. Here `route` is the matched route TEMPLATE or the fixed `UNMATCHED_ROUTE`,
`method` is one of the HTTP methods or "OTHER", `status` is the response code, and
`result` is one of `RELOAD_RESULTS`. A registry per app (not the global default) lets
tests build many apps in one process.

`churn_api_predicted_risk` buckets every 0.1: the distribution of served risks, an online
view of drift beside the batch monitoring.

Truthful by construction: a request whose client went away before an answer is counted in
`churn_api_requests_aborted_total`, never as a status nobody sent; malformed HTTP (answered
by the server before any route) in `churn_api_protocol_errors_total`; every configured limit
that fired in `churn_api_limit_hits_total{limit}` (limit = the `api.*` key). Process facts
(RSS, open fds, CPU) come from prometheus_client's process collector. Other modules add
their collectors with `ApiMetrics.register` (e.g. facts of the batch jobs).
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.registry import Collector
from prometheus_client.exposition import CONTENT_TYPE_LATEST

UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RELOAD_RESULTS = ("loaded", "rejected", "failed")
LIMITS = ("max_connections", "max_header_bytes", "max_headers", "header_timeout", "body_timeout",
          "keepalive_timeout", "max_body_bytes", "max_predict_body_bytes", "max_errors")
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RISK_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class ApiMetrics:
    """All collectors of one app; methods keep label handling in one place."""

    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series double the exposition for no use here
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "churn_api_requests_total", "HTTP requests by method, route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.duration = Histogram(
            "churn_api_request_duration_seconds", "Request handling time in the app (seconds).",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.predictions = Counter(
            "churn_api_predictions_total", "Rows scored (single and batch).", registry=self.registry,
        )
        self.risk = Histogram(
            "churn_api_predicted_risk", "Distribution of predicted churn risk.",
            buckets=RISK_BUCKETS, registry=self.registry,
        )
        self.model_info = Gauge(
            "churn_model_info", "1 for the model version being served.", ["version"], registry=self.registry,
        )
        self.reloads = Counter(
            "churn_model_reloads_total", "Model reload attempts by result.", ["result"], registry=self.registry,
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result=result)
        self.aborted = Counter(
            "churn_api_requests_aborted_total", "Requests whose client disconnected before the answer.",
            ["method", "route"], registry=self.registry,
        )
        self.protocol_errors = Counter(
            "churn_api_protocol_errors_total", "Malformed HTTP requests (answered 400 by the server).",
            registry=self.registry,
        )
        self.limit_hits = Counter(
            "churn_api_limit_hits_total", "Times a configured limit (api.<limit>) refused or closed something.",
            ["limit"], registry=self.registry,
        )
        for limit in LIMITS:
            self.limit_hits.labels(limit=limit)
        self.connections = Gauge(
            "churn_api_open_connections", "HTTP connections open now.", registry=self.registry,
        )
        self.alias_info = Gauge(
            "churn_model_alias_info", "1 for the version the alias names (empty version: no alias file).",
            ["alias", "version"], registry=self.registry,
        )
        self.alias_served = Gauge(
            "churn_model_alias_served", "1 when the served version is the one the alias names, else 0.",
            ["alias"], registry=self.registry,
        )
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, _open_fds, _cpu_seconds_total

    def register(self, collector: Collector) -> None:
        """Expose another module's collector on /metrics (the one place to add collectors)."""
        self.registry.register(collector)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def observe_aborted(self, method: str, route: str) -> None:
        self.aborted.labels(method if method in KNOWN_METHODS else "OTHER", route).inc()

    def count_limit(self, limit: str) -> None:
        self.limit_hits.labels(limit=limit).inc()

    def set_alias(self, alias: str, named: str | None, served: str | None) -> None:
        """The alias's version (None: no alias) and whether it is the one being served."""
        self.alias_info.clear()
        self.alias_info.labels(alias=alias, version=named or "").set(1)
        self.alias_served.labels(alias=alias).set(1 if named is not None and named == served else 0)

    def observe_risk(self, risk: float) -> None:
        """One scored row (the /predict path)."""
        self.predictions.inc()
        self.risk.observe(risk)

    def observe_risks(self, risks: "list[float]") -> None:
        self.predictions.inc(len(risks))
        for risk in risks:
            self.risk.observe(risk)

    def set_model(self, version: str, previous: str | None) -> None:
        """Exactly one `churn_model_info` series: the version now served."""
        if previous is not None and previous != version:
            self.model_info.remove(previous)
        self.model_info.labels(version=version).set(1)

    def count_reload(self, result: str) -> None:
        self.reloads.labels(result=result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
