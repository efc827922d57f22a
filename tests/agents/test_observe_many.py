"""``observe_many``: one histogram update per batch gives the samples ``observe`` per value does."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram

from streams.agents.runtime import observe_many

BUCKETS = (0.005, 0.01, 0.1, 0.5, 1.0, 5.0)


def samples(h: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in h.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_equals_observe_per_value() -> None:
    values = [0.0, -0.3, 0.005, 0.0051, 0.01, 0.07, 0.5, 0.9, 1.0, 4.0, 7.5, 1e9, 0.002]
    one = Histogram("one", "per value", buckets=BUCKETS, registry=CollectorRegistry())
    many = Histogram("many", "batched", buckets=BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(max(0.0, v))  # negative lags count as 0, like the agents always did
    observe_many(many, values)
    observe_many(many, [])
    got = {(n.replace("many", "one"), le): v for (n, le), v in samples(many).items()}
    assert got == samples(one)
    assert samples(one)[("one_bucket", "+Inf")] == len(values)
    assert math.isclose(samples(one)[("one_sum", "")], sum(max(0.0, v) for v in values))


def test_observe_many_falls_back_to_observe() -> None:
    seen: list[float] = []

    class Plain:
        def observe(self, v: float) -> None:
            seen.append(v)

    observe_many(Plain(), [0.2, -1.0])
    assert seen == [0.2, 0.0]
