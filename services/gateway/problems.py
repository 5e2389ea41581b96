"""RFC 9457 problem details: the one shape of every error the gateway returns.

gRPC status codes from the services map to HTTP statuses here, once; field violations
(google.rpc.BadRequest) become `errors: [{field, detail}]`, an ErrorInfo reason becomes
`reason`. Nothing internal (stack traces, addresses) reaches the client.
"""

from __future__ import annotations

import logging

import grpc
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2, status_pb2
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.runtime import logs

log = logging.getLogger("svpl.gateway")

PROBLEM_JSON = "application/problem+json"

TITLES = {
    400: "Ogiltig begäran",
    401: "Inte inloggad",
    403: "Åtkomst nekad",
    404: "Hittades inte",
    405: "Metoden stöds inte",
    409: "Konflikt med nuvarande läge",
    413: "Begäran är för stor",
    415: "Fel innehållstyp",
    429: "För många försök",
    501: "Inte tillgängligt ännu",
    502: "Fel i bakomliggande tjänst",
    503: "Tjänsten är inte tillgänglig",
    504: "Tjänsten svarade inte i tid",
}

GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class Problem(Exception):
    """Raise anywhere in a handler: becomes a problem+json response."""

    def __init__(self, status: int, detail: str, *, reason: str = "", errors: list[dict] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason
        self.errors = errors or []
        self.headers = headers or {}

    def body(self, instance: str = "") -> dict:
        body = {
            "type": "about:blank",
            "title": TITLES.get(self.status, "Fel"),
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.reason:
            body["reason"] = self.reason
        if self.errors:
            body["errors"] = self.errors
        rid = logs.request_id_var.get()
        if rid:
            body["request_id"] = rid
        return body

    def response(self, instance: str = "") -> JSONResponse:
        return JSONResponse(self.body(instance), status_code=self.status, media_type=PROBLEM_JSON,
                            headers=self.headers)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> Problem:
    code = exc.code()
    status = GRPC_TO_HTTP.get(code, 502)
    detail = exc.details() or code.name
    errors: list[dict] = []
    reason = ""
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        st = status_pb2.Status.FromString(value)
        for any_detail in st.details:
            if any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_detail.Unpack(bad)
                errors += [{"field": v.field, "detail": v.description} for v in bad.field_violations]
            elif any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_detail.Unpack(info)
                reason = info.reason
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in detail.lower():
        status, detail = 413, "the request is too large"
    if status >= 500:
        # The service's own message may name internals (addresses, request ids): keep it in our log.
        log.warning("service call failed: %s %s", code.name, detail)
        detail = {
            501: "funktionen finns inte ännu",
            503: "en tjänst är tillfälligt otillgänglig: försök igen om en stund",
            504: "en tjänst svarade inte i tid: försök igen",
        }.get(status, "en tjänst kunde inte svara: försök igen")
    return Problem(status, detail, reason=reason, errors=errors)


def _instance(request: Request) -> str:
    return request.url.path


async def problem_handler(request: Request, exc: Problem) -> JSONResponse:
    return exc.response(_instance(request))


async def rpc_error_handler(request: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
    return from_rpc_error(exc).response(_instance(request))


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        errors.append({"field": ".".join(loc) or "body", "detail": err.get("msg", "invalid")})
    first = errors[0] if errors else {"field": "body", "detail": "invalid"}
    return Problem(400, f"{first['field']}: {first['detail']}", errors=errors).response(_instance(request))


async def http_error_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return Problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})).response(_instance(request))


async def unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path)
    return Problem(500, "internt fel i gatewayen").response(_instance(request))


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "reason": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {"type": "object", "required": ["field", "detail"],
                      "properties": {"field": {"type": "string"}, "detail": {"type": "string"}}},
        },
    },
}


def problem_responses(*statuses: int) -> dict:
    ref = {"$ref": "#/components/schemas/Problem"}
    return {s: {"description": TITLES.get(s, "Fel"), "content": {PROBLEM_JSON: {"schema": ref}}} for s in statuses}
