"""Ops endpoints shared by the ingest HTTP server and the worker's small web server.

``GET /health/ready`` 200 or 503 with the checks' codes; ``GET /metrics`` (Prometheus
text); ``GET /dashboard`` (static page) and ``GET /dashboard/data.json`` (its figures).
``/health/live`` stays where it is (each server answers it on its own).

Nothing here reads a request body or echoes input, and every figure is a code or a
count, so these endpoints can face an ops network without leaking PHI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from hub.dashboard import RateTracker, dashboard_data
from hub.health import LagProbe, Readiness
from hub.logging import get_logger
from hub.metrics import CONTENT_TYPE, HubMetrics
from hub.settings import Settings

log = get_logger("hub.web")

DASHBOARD_HTML = Path(__file__).with_name("static") / "dashboard.html"


@dataclass
class Ops:
    """What the ops endpoints read: one per process."""

    metrics: HubMetrics
    readiness: Readiness = field(default_factory=Readiness)
    lag: LagProbe | None = None
    rates: RateTracker = field(default_factory=RateTracker)

    async def refresh(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Re-evaluate readiness and lag (both cached/bounded), before rendering."""
        ready, checks = await self.readiness.evaluate()
        self.metrics.ready = ready
        if self.lag is not None:
            self.metrics.set_consumer_lag(await self.lag.refresh())
        return ready, checks


OPS_KEY = web.AppKey("ops", Ops)


async def health_ready(request: web.Request) -> web.Response:
    ops = request.app[OPS_KEY]
    ready, checks = await ops.readiness.evaluate()
    ops.metrics.ready = ready
    return web.json_response({"status": "ready" if ready else "not_ready", "checks": checks},
                             status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    ops = request.app[OPS_KEY]
    await ops.refresh()
    body = ops.metrics.render()
    resp = web.Response(body=body)
    # aiohttp's content_type= refuses parameters; Prometheus wants the version one.
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp


async def dashboard(_: web.Request) -> web.Response:
    return web.Response(body=DASHBOARD_HTML.read_bytes(), content_type="text/html",
                        charset="utf-8", headers={"Cache-Control": "no-store"})


async def dashboard_json(request: web.Request) -> web.Response:
    ops = request.app[OPS_KEY]
    await ops.refresh()
    data = dashboard_data(ops.metrics, ops.rates)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


def add_ops_routes(app: web.Application, ops: Ops) -> None:
    app[OPS_KEY] = ops
    app.router.add_get("/health/ready", health_ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_get("/dashboard/", dashboard)
    app.router.add_get("/dashboard/data.json", dashboard_json)


async def health_live(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class WebServer:
    """An aiohttp application on a host and port, started and stopped as a listener
    (the bound port is known after start, so ``port=0`` works in tests). Subclasses:
    :class:`OpsServer` and the ingest server, :class:`hub.ingest.http.HttpServer`.
    """

    listener = "http"

    def __init__(self, host: str, port: int, *, shutdown_timeout_s: float = 5.0) -> None:
        self.host = host
        self._port = port
        self.shutdown_timeout_s = shutdown_timeout_s
        self._runner: web.AppRunner | None = None
        self._bound: int | None = None
        # Logged under the subclass's module (hub.ingest.http for the ingest server).
        self.log = get_logger(type(self).__module__)

    @property
    def port(self) -> int:
        return self._bound if self._bound is not None else self._port

    def make_app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        runner = web.AppRunner(self.make_app(), access_log=None,
                               shutdown_timeout=self.shutdown_timeout_s)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses: list[Any] = list(runner.addresses)
        self._bound = int(addresses[0][1]) if addresses else self._port
        self.log.info("listener_started", transport="http", listener=self.listener,
                      host=self.host, port=self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            # Graceful: stops accepting, waits for in-flight requests (bounded).
            await runner.cleanup()
            self.log.info("listener_stopped", transport="http", listener=self.listener)


class OpsServer(WebServer):
    """The worker's web server (``HUB_WORKER_WEB_HOST``:``HUB_WORKER_WEB_PORT``)."""

    listener = "ops"

    def __init__(self, ops: Ops, settings: Settings, *, host: str | None = None,
                 port: int | None = None) -> None:
        super().__init__(host if host is not None else settings.worker_web_host,
                         port if port is not None else settings.worker_web_port)
        self.ops = ops

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health/live", health_live)
        add_ops_routes(app, self.ops)
        return app
