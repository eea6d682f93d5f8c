"""The score distribution's figures on a known example."""

from __future__ import annotations

import numpy as np
import pytest

from churn.monitoring.scores import risk_distribution


def test_risk_distribution_figures():
    report = risk_distribution(np.array([0.1, 0.2, 0.6, 0.9]), threshold=0.5, bins=2)
    assert report["share_above_threshold"] == 0.5
    assert report["histogram"]["counts"] == [2, 2]
    assert report["mean"] == pytest.approx(0.45)
    assert report["quantiles"]["0.5"] == pytest.approx(0.4)
