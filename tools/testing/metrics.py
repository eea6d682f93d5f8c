"""Samples of a Prometheus text exposition, read by prometheus_client's own parser.

Why the library's parser: escaped label values, `+Inf`, NaN and exemplar-free OpenMetrics
lines are its job; the tests only ask "what is this sample's value".
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of the exposition, keyed by (name, labels)."""
    return {(s.name, frozenset(s.labels.items())): float(s.value)
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric_value(text: str, sample: str) -> float | None:
    """The value of `sample`, written as in the exposition (`name{label="value",...}`, exactly
    those labels, in any order), or None when it is not exported."""
    ((key, _),) = samples(f"{sample} 0\n").items()  # the selector read by the same parser
    return samples(text).get(key)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum over the samples of `name` whose labels include `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in samples(text).items() if sample == name and wanted <= have)
