"""Wiring of the ops endpoints for ``hub run`` / ``hub ingest`` / ``hub worker``.

One :class:`~hub.web.Ops` per process. Where it is served:

* a process with the ingest role: on the ingest HTTP server (``HUB_HTTP_PORT``),
  including the worker's figures when ``hub run`` runs both roles in one process;
* a worker-only process: on its own small server (``HUB_WORKER_WEB_PORT``).
"""

from __future__ import annotations

from typing import Any

import mode

from hub.health import BrokerProbe, LagProbe, faust_check, flag_check
from hub.metrics import CountersFigures, HubMetrics
from hub.settings import Settings
from hub.web import Ops, OpsServer
from schemas.topics import EHR_FHIR, EHR_HL7V2


def build_ops(settings: Settings) -> Ops:
    ops = Ops(HubMetrics(settings))
    ops.readiness.add("broker", BrokerProbe(settings))
    return ops


def watch_ingest(ops: Ops, ingest: Any) -> None:
    """``ingest``: a started-or-not :class:`hub.ingest.IngestService`."""
    ops.readiness.add("ingest", flag_check(lambda: bool(ingest.started), "ingest_not_listening"))


def watch_worker(ops: Ops, settings: Settings, app: Any, counters: Any) -> None:
    """The faust app's readiness, the group's lag and the streams' figures.

    ``counters`` is what ``streams.app.create_app`` returns next to the app
    (``NormalizeCounters``); a ``counters.care`` with a ``figures()`` method (the care
    stages, see :class:`hub.metrics.FiguresProvider`) is read too.
    """
    ops.readiness.add("worker", faust_check(app))
    ops.metrics.add_provider(CountersFigures(counters))
    care = getattr(counters, "care", None)
    if care is not None and callable(getattr(care, "figures", None)):
        ops.metrics.add_provider(CareFiguresAdapter(care))
    ops.lag = LagProbe(settings, [EHR_HL7V2.name, EHR_FHIR.name])


class CareFiguresAdapter:
    """Reads ``streams.care_agents.CareFigures`` into the documented provider shape.

    Its current ``figures()`` keys caseloads as ``{"team|manager": points}`` dicts and
    counts inputs as ``care_inputs``; documented keys pass through unchanged, so this
    becomes a no-op once the care stages return the documented shape directly.
    """

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def figures(self) -> dict[str, Any]:
        raw = dict(self.provider.figures())
        points = raw.pop("caseload_points", None)
        caps = raw.pop("caseload_cap_points", None) or {}
        if points is not None and "caseloads" not in raw:
            rows = []
            for key in sorted(set(points) | set(caps)):
                team, _, manager = str(key).partition("|")
                rows.append({"team": team, "manager": manager,
                             "points": points.get(key, 0), "cap_points": caps.get(key)})
            raw["caseloads"] = rows
        inputs = raw.pop("care_inputs", None)
        if inputs is not None and "stages" not in raw:
            raw["stages"] = {"care": {"processed": inputs}}
        raw.pop("care_failures", None)  # dead-lettered: counted with the dead letters
        raw.pop("unassigned_points", None)
        return raw


class OpsRole(mode.Service):
    """The worker's ops web server as a mode service (started with the app)."""

    def __init__(self, ops: Ops, settings: Settings, **kwargs: Any) -> None:
        self.server = OpsServer(ops, settings)
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        await self.server.start()

    async def on_stop(self) -> None:
        await self.server.stop()
