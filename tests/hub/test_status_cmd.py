"""hub status: parsing and merging several processes' /metrics (no broker)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from hub.commands.status_cmd import merge_samples, render
from hub.metrics import HubMetrics
from hub.settings import Settings


def test_merges_ingest_and_worker_metrics_into_one_table() -> None:
    ingest = HubMetrics(Settings(feed_silence={"GENHOSP": {"default_s": 900}}))
    for _ in range(3):
        ingest.message_handled(transport="mllp", listener="mllp", ack_code="AA",
                               error_code=None, duplicate=False, latency_s=0.01,
                               feed="GENHOSP", trigger="A01")
    worker = HubMetrics(Settings())
    worker.set_consumer_lag({("ehr.hl7v2", 0): 5, ("ehr.hl7v2", 1): 2})
    samples = merge_samples([ingest.render().decode(), worker.render().decode()])
    buf = io.StringIO()
    render(samples, Console(file=buf, width=200), sources={"a": True, "b": False},
           lag=None, topics={"ehr.hl7v2": 3})
    text = buf.getvalue()
    assert re.search(r"│ GENHOSP\s*│\s*3 │.*flowing", text), text
    assert re.search(r"│ HL7 AA\s*│\s*3 │", text), text
    assert re.search(r"│ ehr\.hl7v2\s*│\s*7 │", text), text  # lag summed over partitions
    assert "unreachable" in text and "(no caseload figures yet)" in text
