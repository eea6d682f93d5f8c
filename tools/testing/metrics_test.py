"""The sample reader on an exposition with the awkward parts of the format."""

from __future__ import annotations

import math

from tools.testing.metrics import metric_sum, metric_value

TEXT = """\
# HELP churn_api_requests_total Requests.
# TYPE churn_api_requests_total counter
churn_api_requests_total{method="POST",route="/predict",status="200"} 7.0
churn_api_requests_total{method="POST",route="/predict",status="422"} 2.0
churn_api_requests_total{method="GET",route="/a \\"quoted\\" path",status="200"} 1.0
# TYPE churn_api_request_duration_seconds histogram
churn_api_request_duration_seconds_bucket{le="+Inf",route="/predict"} 9.0
# TYPE process_open_fds gauge
process_open_fds 12.0
# TYPE odd gauge
odd NaN
"""


def test_exact_labels_pick_one_sample() -> None:
    assert metric_value(TEXT, 'churn_api_requests_total{method="POST",route="/predict",status="422"}') == 2.0
    assert metric_value(TEXT, 'churn_api_requests_total{status="422",route="/predict",method="POST"}') == 2.0
    assert metric_value(TEXT, 'churn_api_requests_total{route="/predict",status="422"}') is None  # not exact
    assert metric_value(TEXT, 'churn_api_requests_total{method="GET",route="/a \\"quoted\\" path",status="200"}') == 1.0
    assert metric_value(TEXT, 'churn_api_request_duration_seconds_bucket{le="+Inf",route="/predict"}') == 9.0
    assert metric_value(TEXT, "process_open_fds") == 12.0
    assert math.isnan(metric_value(TEXT, "odd") or 0.0)
    assert metric_value(TEXT, "absent") is None


def test_sum_over_a_label_subset() -> None:
    assert metric_sum(TEXT, "churn_api_requests_total", route="/predict") == 9.0
    assert metric_sum(TEXT, "churn_api_requests_total") == 10.0
    assert metric_sum(TEXT, "churn_api_requests_total", status="500") == 0.0
