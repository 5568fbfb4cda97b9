"""hub.metrics: counters from ingest hooks, worker figures at scrape time, the text format."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hub.metrics import (
    METRICS,
    CountersFigures,
    HubMetrics,
    exported_names,
    merge_figures,
    parse_metrics_text,
)
from hub.settings import FeedSilenceRule, Settings


class Clock:
    def __init__(self, t: float = 1_772_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def sample(text: bytes, name: str, **labels: str) -> float | None:
    for got, value in parse_metrics_text(text.decode()).get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return None


def handled(m: HubMetrics, **kw: Any) -> None:
    base: dict[str, Any] = dict(transport="mllp", listener="mllp", ack_code="AA",
                                error_code=None, duplicate=False, latency_s=0.01,
                                feed="GENHOSP", trigger="A01")
    m.message_handled(**{**base, **kw})


def test_ingest_hooks_move_the_counters() -> None:
    m = HubMetrics(Settings())
    handled(m)
    handled(m, trigger="A03")
    handled(m, ack_code="AE", error_code="missing_patient_identifier", dead_lettered=True)
    handled(m, duplicate=True)
    handled(m, ack_code="AR", error_code="durable_write_failed")
    handled(m, transport="http", ack_code="202", protocol="fhir", trigger="admit")
    handled(m, feed=None, trigger=None, ack_code="AR", error_code="missing_msh",
            dead_lettered=True)
    m.frame_rejected(transport="mllp", listener="mllp", error_code="frame_too_large", size=9)
    text = m.render()
    assert sample(text, "hub_messages_received_total", feed="GENHOSP", trigger="A01",
                  transport="mllp") == 4
    assert sample(text, "hub_messages_received_total", feed="unknown", trigger="unknown") == 1
    assert sample(text, "hub_acks_total", code="AA") == 3  # the duplicate's replayed AA too
    assert sample(text, "hub_acks_total", code="AR") == 2
    assert sample(text, "hub_fhir_responses_total", status="202") == 1
    assert sample(text, "hub_mapping_failures_total", code="missing_patient_identifier",
                  stage="ingest") == 1
    assert sample(text, "hub_dead_letters_total", stage="ingest", code="frame_too_large") == 1
    assert sample(text, "hub_dead_letters_total", stage="ingest", code="missing_msh") == 1
    assert sample(text, "hub_duplicates_total", stage="ingest") == 1
    assert sample(text, "hub_durable_write_failures_total", transport="mllp") == 1
    assert sample(text, "hub_frames_rejected_total", code="frame_too_large") == 1
    assert sample(text, "hub_ack_latency_seconds_count", transport="mllp") == 6
    # A durable-write failure is not a mapping failure.
    assert sample(text, "hub_mapping_failures_total", code="durable_write_failed") is None


def test_sender_controlled_labels_are_bounded_and_checked() -> None:
    m = HubMetrics(Settings(max_feed_labels=2, feed_silence={"WATCHED": {"default_s": 60}}))
    for feed in ("A", "B", "C", "D", "Zq xcanary^fam"):
        handled(m, feed=feed)
    handled(m, trigger="A01<script>")
    feeds = {labels["feed"] for labels, _ in
             parse_metrics_text(m.render().decode())["hub_messages_received_total"]}
    # Configured feeds are always allowed, besides the 2 slots (A, B).
    handled(m, feed="WATCHED")
    feeds = {labels["feed"] for labels, _ in
             parse_metrics_text(m.render().decode())["hub_messages_received_total"]}
    assert feeds == {"A", "B", "WATCHED", "other"}
    triggers = {labels["trigger"] for labels, _ in
                parse_metrics_text(m.render().decode())["hub_messages_received_total"]}
    assert "other" in triggers and not any("<" in t for t in triggers)


def test_feed_age_and_silence_gauges() -> None:
    clock = Clock()
    settings = Settings(feed_silence={"GENHOSP": FeedSilenceRule(default_s=900),
                                      "QUIETHOSP": FeedSilenceRule(default_s=60)})
    m = HubMetrics(settings, clock=clock)
    handled(m, feed="GENHOSP")
    handled(m, feed="UNWATCHED")
    clock.t += 120
    text = m.render()
    assert sample(text, "hub_feed_last_message_age_seconds", feed="GENHOSP") == 120
    assert sample(text, "hub_feed_silent", feed="GENHOSP") == 0
    assert sample(text, "hub_feed_silence_threshold_seconds", feed="GENHOSP") == 900
    # Configured, never seen: measured from start, and past its 60 s.
    assert sample(text, "hub_feed_silent", feed="QUIETHOSP") == 1
    # Not configured: an age, no flag.
    assert sample(text, "hub_feed_last_message_age_seconds", feed="UNWATCHED") == 120
    assert sample(text, "hub_feed_silent", feed="UNWATCHED") is None
    clock.t += 800
    assert sample(m.render(), "hub_feed_silent", feed="GENHOSP") == 1
    assert m.feed_rate_per_min("GENHOSP", clock.t) == 0
    handled(m, feed="GENHOSP")
    handled(m, feed="GENHOSP")
    assert m.feed_rate_per_min("GENHOSP") == 2


class Counters:
    mapped, events, duplicates, dead_letters = 7, 9, 2, 3


class CareFigures:
    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def figures(self) -> dict[str, Any]:
        return {
            "stages": {"assignment": {"processed": 5}},
            "outputs": {"assignment": 4, "task": 6},
            "tasks_open": 6, "tasks_overdue": 1, "escalations_unassigned": 2,
            "caseloads": [{"team": "med", "manager": "cm-ana", "points": 12.5,
                           "cap_points": 30}],
            "webhook_deliveries": {"foodbank": {"delivered": 3, "retried": 1,
                                                "exhausted": 1}},
            "referrals": {"requested": 2, "accepted": 1},
            "end_to_end_latency_s": {"care": {"buckets": [[0.1, 2], [1.0, 5], [math.inf, 6]],
                                              "sum": 3.5, "count": 6}},
            **self.extra,
        }


def test_worker_figures_at_scrape_time() -> None:
    m = HubMetrics(Settings())
    counters = Counters()
    m.add_provider(CountersFigures(counters))
    m.add_provider(CareFigures())
    m.set_consumer_lag({("ehr.hl7v2", 0): 4, ("ehr.hl7v2", 1): 0})
    text = m.render()
    assert sample(text, "hub_stage_processed_total", stage="normalize") == 12
    assert sample(text, "hub_outputs_total", type="canonical_event") == 9
    assert sample(text, "hub_dead_letters_total", stage="normalize", code="unknown") == 3
    assert sample(text, "hub_duplicates_total", stage="normalize") == 2
    assert sample(text, "hub_consumer_lag", topic="ehr.hl7v2", partition="0") == 4
    assert sample(text, "hub_tasks_open") == 6 and sample(text, "hub_tasks_overdue") == 1
    assert sample(text, "hub_escalations_unassigned_total") == 2
    assert sample(text, "hub_caseload_points", team="med", manager="cm-ana") == 12.5
    assert sample(text, "hub_caseload_cap_points", team="med", manager="cm-ana") == 30
    assert sample(text, "hub_webhook_deliveries_total", agency="foodbank", outcome="retried") == 1
    assert sample(text, "hub_webhook_deliveries_total", agency="foodbank",
                  outcome="exhausted") == 1
    assert sample(text, "hub_referrals", status="requested") == 2
    assert sample(text, "hub_end_to_end_latency_seconds_bucket", le="1.0", stage="care") == 5
    assert sample(text, "hub_end_to_end_latency_seconds_count", stage="care") == 6
    # Read live: the next scrape sees the counters' new values.
    counters.events = 10
    assert sample(m.render(), "hub_outputs_total", type="canonical_event") == 10


def test_by_code_dead_letters_and_absent_figures() -> None:
    class ByCode(Counters):
        dead_letters_by_code = {"missing_msh": 2, "internal_error": 1}

    m = HubMetrics(Settings())
    assert sample(m.render(), "hub_tasks_open") is None  # absent, not a misleading 0
    m.add_provider(CountersFigures(ByCode()))
    text = m.render()
    assert sample(text, "hub_mapping_failures_total", stage="normalize", code="missing_msh") == 2
    assert sample(text, "hub_mapping_failures_total", code="internal_error") is None
    assert sample(text, "hub_dead_letters_total", stage="normalize", code="internal_error") == 1


def test_a_failing_provider_or_bad_label_never_breaks_a_scrape() -> None:
    class Broken:
        def figures(self) -> dict[str, Any]:
            raise RuntimeError("boom")

    m = HubMetrics(Settings())
    m.add_provider(Broken())
    m.add_provider(CareFigures(caseloads=[{"team": "Jane Doe, RN", "manager": "x",
                                           "points": 1}]))
    text = m.render()
    assert sample(text, "hub_tasks_open") == 6
    assert sample(text, "hub_caseload_points", team="other", manager="x") == 1
    assert b"Jane" not in text


def test_registries_are_per_instance() -> None:
    a, b = HubMetrics(Settings()), HubMetrics(Settings())
    handled(a)
    assert sample(a.render(), "hub_acks_total", code="AA") == 1
    assert sample(b.render(), "hub_acks_total", code="AA") is None


def test_merge_figures() -> None:
    def hist(a: int, b: int, total: float) -> dict[str, Any]:
        return {"buckets": [[0.1, a], [math.inf, b]], "sum": total, "count": b}

    merged = merge_figures([
        {"stages": {"a": {"processed": 1, "dead_letters": {"x": 1}}}, "tasks_open": 1,
         "caseloads": [1], "end_to_end_latency_s": {"care": hist(1, 2, 0.5)}},
        {"stages": {"a": {"processed": 2, "dead_letters": {"x": 1, "y": 1}}, "b": {}},
         "tasks_open": 2, "caseloads": [2],
         "end_to_end_latency_s": {"care": hist(3, 4, 1.0), "normalize": hist(1, 1, 0.0)}},
    ])
    assert merged == {"stages": {"a": {"processed": 3, "dead_letters": {"x": 2, "y": 1}},
                                 "b": {}},
                      "tasks_open": 3, "caseloads": [1, 2],
                      "end_to_end_latency_s": {"care": hist(4, 6, 1.5),
                                               "normalize": hist(1, 1, 0.0)}}
    # Different bounds cannot be added: the first provider's histogram stands.
    other = {"buckets": [[1.0, 1], [math.inf, 1]], "sum": 1.0, "count": 1}
    assert merge_figures([{"h": hist(1, 1, 0.0)}, {"h": other}]) == {"h": hist(1, 1, 0.0)}


def test_a_single_pipeline_histogram_is_still_read() -> None:
    m = HubMetrics(Settings())
    m.add_provider(CareFigures(end_to_end_latency_s={
        "buckets": [[0.5, 1], [math.inf, 2]], "sum": 2.0, "count": 2}))
    assert sample(m.render(), "hub_end_to_end_latency_seconds_count", stage="pipeline") == 2


def test_every_declared_family_is_rendered_or_absent_by_design() -> None:
    m = HubMetrics(Settings(feed_silence={"G": {"default_s": 5}}))
    m.add_provider(CountersFigures(Counters()))
    m.add_provider(CareFigures())
    from hub.api_common import AuthThrottle

    m.add_provider(AuthThrottle(3, 60.0))  # the agency/staff APIs' token throttle
    from hub.care_api import TaskView

    m.add_provider(TaskView())  # the staff API's view: items held, closed ones forgotten
    from streams.delivery_agents import DeliveryFigures

    deliveries = DeliveryFigures()
    deliveries.set_pending(0, 1)  # as after a timer pass
    m.add_provider(deliveries)
    m.set_consumer_lag({("t", 0): 1})
    m.ready = True
    handled(m, feed="G")
    handled(m, ack_code="AE", error_code="bad_field", dead_lettered=True)
    handled(m, ack_code="AR", error_code="durable_write_failed")
    handled(m, protocol="fhir", ack_code="202")
    m.frame_rejected(transport="mllp", listener="mllp", error_code="frame_too_large", size=1)
    names = set(parse_metrics_text(m.render().decode()))
    missing = {n for n in exported_names() if n not in names}
    assert not missing, missing
    assert all(n.startswith("hub_") for n in METRICS)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_names_follow_conventions(name: str) -> None:
    spec = METRICS[name]
    assert (spec.kind == "counter") == name.endswith("_total")
    if spec.kind == "histogram":
        assert name.endswith("_seconds")
    assert "patient" not in name and all(label not in {"mrn", "name"} for label in spec.labels)



def test_timer_row_failures_and_pending_deliveries_are_exported() -> None:
    from streams.care_agents import CareFigures as StreamsCareFigures
    from streams.delivery_agents import DeliveryFigures

    care, deliveries = StreamsCareFigures(), DeliveryFigures()
    m = HubMetrics(Settings())
    m.add_provider(care)
    m.add_provider(deliveries)
    text = m.render()
    # Before any timer pass: absent ("no data yet"), not a reassuring 0.
    assert sample(text, "hub_timer_row_failures_total", stage="episodes") is None
    assert sample(text, "hub_timer_row_failures_total", stage="deliveries") is None
    assert sample(text, "hub_webhook_deliveries_pending") is None
    deliveries.set_pending(0, 0)
    text = m.render()
    assert sample(text, "hub_timer_row_failures_total", stage="deliveries") == 0
    assert sample(text, "hub_webhook_deliveries_pending") == 0
    care.tick_row_failures, deliveries.tick_row_failures = 2, 1
    deliveries.set_pending(0, 4)
    deliveries.set_pending(3, 5)
    deliveries.set_pending(0, 1)  # a partition's later tick replaces its own count
    text = m.render()
    assert sample(text, "hub_timer_row_failures_total", stage="episodes") == 2
    assert sample(text, "hub_timer_row_failures_total", stage="deliveries") == 1
    assert sample(text, "hub_webhook_deliveries_pending") == 6
