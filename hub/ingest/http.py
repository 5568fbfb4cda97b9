"""HTTP ingest (aiohttp): HL7 v2 over HTTP and FHIR R4 over REST.

``POST /hl7v2``: body = one HL7 v2 message (``text/plain``, ``x-application/hl7-v2+er7``
or ``application/hl7-v2``). The answer body is always the ACK (content type
``x-application/hl7-v2+er7``) and the status mirrors it, so an HTTP client that only
looks at the status does the right thing:

==========================================  =======
ACK                                         status
==========================================  =======
AA / CA (also a replayed duplicate)          200
AE / AR / CR for the content (dead-lettered) 400
AR / CE "not stored, send again"             503 (``Retry-After``)
==========================================  =======

``POST /fhir`` (any supported resource or Bundle) and ``POST /fhir/Encounter``
(``application/fhir+json`` or ``application/json``): 202 ``{"event_ids": [...]}``; 400
(unreadable JSON) or 422 (unsupported/invalid resource) with an OperationOutcome; 503
when it could not be stored. Wrong content type: 415; body over
``settings.http_max_body_bytes``: 413 (refused before reading, so not dead-lettered).
``GET /health/live``: 200 while the process serves requests. With an ``ops`` object
(:mod:`hub.web`): ``/health/ready``, ``/metrics`` and ``/dashboard`` too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from hub.settings import Settings
from hub.web import Ops, WebServer, add_ops_routes
from schemas.errors import AckCode

from .core import FHIR_CONTENT_TYPE, HL7_CONTENT_TYPE, Ingestor, _operation_outcome

if TYPE_CHECKING:
    from hub.agency_api import AgencyApi
    from hub.care_api import CareApi

HL7_TYPES = frozenset(
    {"text/plain", "x-application/hl7-v2+er7", "application/hl7-v2", "application/edi-hl7"}
)
FHIR_TYPES = frozenset({"application/fhir+json", "application/json"})
INGESTOR_KEY = web.AppKey("ingestor", Ingestor)
SETTINGS_KEY = web.AppKey("settings", Settings)


def _peer(request: web.Request) -> str | None:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else None


def _too_large(request: web.Request, limit: int) -> bool:
    return request.content_length is not None and request.content_length > limit


def _fhir_error(status: int, code: str, detail: str, issue_type: str) -> web.Response:
    return web.json_response(_operation_outcome(code, detail, issue_type=issue_type),
                             status=status, content_type=FHIR_CONTENT_TYPE)


async def _read(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is over the limit (checked again while reading, for
    chunked uploads without Content-Length)."""
    if _too_large(request, limit):
        return None
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None


async def post_hl7v2(request: web.Request) -> web.Response:
    ingestor = request.app[INGESTOR_KEY]
    settings = request.app[SETTINGS_KEY]
    if request.content_type not in HL7_TYPES:
        return web.Response(status=415, text="Content-Type must be x-application/hl7-v2+er7 "
                                             "or text/plain.\n")
    body = await _read(request, settings.http_max_body_bytes)
    if body is None:
        return web.Response(status=413, text=f"The body exceeds "
                                             f"{settings.http_max_body_bytes} bytes.\n")
    outcome = await ingestor.handle_hl7_outcome(
        body, transport="http", listener="http", peer=_peer(request),
        content_type=request.content_type)
    if outcome.code in (AckCode.AA, AckCode.CA):
        status = 200
    elif outcome.retryable:
        status = 503
    else:
        status = 400
    headers = {"Retry-After": "5"} if status == 503 else None
    return web.Response(status=status, body=outcome.ack, headers=headers,
                        content_type=HL7_CONTENT_TYPE)


async def post_fhir(request: web.Request) -> web.Response:
    ingestor = request.app[INGESTOR_KEY]
    settings = request.app[SETTINGS_KEY]
    if request.content_type not in FHIR_TYPES:
        return _fhir_error(415, "unsupported_media_type",
                           "Content-Type must be application/fhir+json.", "not-supported")
    body = await _read(request, settings.http_max_body_bytes)
    if body is None:
        return _fhir_error(413, "request_too_large",
                           f"The body exceeds {settings.http_max_body_bytes} bytes.",
                           "too-costly")
    outcome = await ingestor.handle_fhir_outcome(
        body, transport="http", listener="http", peer=_peer(request), path=request.path,
        content_type=request.content_type)
    headers = {"Retry-After": "5"} if outcome.status == 503 else None
    return web.json_response(outcome.body, status=outcome.status, headers=headers,
                             content_type=FHIR_CONTENT_TYPE if outcome.status >= 400
                             else "application/json")


async def health_live(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_http_app(ingestor: Ingestor, settings: Settings, ops: Ops | None = None,
                  agency: AgencyApi | None = None, care: CareApi | None = None
                  ) -> web.Application:
    # client_max_size: aiohttp's own cap, a second line behind the Content-Length check.
    app = web.Application(client_max_size=settings.http_max_body_bytes)
    app[INGESTOR_KEY] = ingestor
    app[SETTINGS_KEY] = settings
    app.router.add_post("/hl7v2", post_hl7v2)
    app.router.add_post("/fhir", post_fhir)
    app.router.add_post("/fhir/Encounter", post_fhir)
    app.router.add_get("/health/live", health_live)
    if ops is not None:
        add_ops_routes(app, ops)
    # The agency API, staff referral view and consent endpoint (hub/agency_api.py).
    from hub.agency_api import add_agency_routes, default_agency_api

    agency = agency or default_agency_api(settings, ingestor.producer)
    add_agency_routes(app, agency)
    # The staff task API (hub/care_api.py): one token-guessing budget for both APIs.
    from hub.care_api import add_care_routes, default_care_api

    care = care or default_care_api(settings, ingestor.producer, throttle=agency.throttle)
    add_care_routes(app, care)
    if ops is not None:
        ops.metrics.add_provider(agency.throttle)
        ops.metrics.add_provider(agency.view)
        ops.metrics.add_provider(care.view)
    return app


class HttpServer(WebServer):
    """The ingest HTTP listener (``HUB_HTTP_HOST``:``HUB_HTTP_PORT``; ``port=0`` binds a
    free one, read back from :attr:`port` after start)."""

    listener = "http"

    def __init__(self, ingestor: Ingestor, settings: Settings, *, host: str | None = None,
                 port: int | None = None, ops: Ops | None = None) -> None:
        # An in-flight request waits at most the ACK timeout for Kafka, plus as long
        # again for a dead letter: stop lets it finish.
        super().__init__(host if host is not None else settings.http_host,
                         port if port is not None else settings.http_port,
                         shutdown_timeout_s=2 * settings.ack_timeout_s + 1)
        self.ingestor = ingestor
        self.settings = settings
        self.ops = ops

    def make_app(self) -> web.Application:
        return make_http_app(self.ingestor, self.settings, self.ops)
