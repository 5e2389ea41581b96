"""What the routers under /api/v1 share: the request body base (`Body`), enum names as literals,
timestamps, the `responses` of a route answering with a contract message (whose schemas go into the
OpenAPI document: RESPONSE_MESSAGES), and `call()`/`relayed()`, which call the method a route
declares as the person, their own token relayed."""

from __future__ import annotations

import datetime as dt
import typing
from typing import Annotated

from fastapi import Path, Request
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from pydantic import BaseModel, ConfigDict
from svpl.booking.v1 import booking_pb2
from svpl.common.v1 import common_pb2
from svpl.roster.v1 import roster_pb2
from svpl.support.v1 import support_pb2

from services.gateway import access, protojson
from services.gateway.backends import Backends
from services.gateway.config import GatewaySettings
from services.gateway.dependencies import get_backends, get_settings
from services.gateway.problems import problem_responses
from services.gateway.security import Session
from services.runtime import clients

Id = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$", description="An id as a service issued it")]

# Every message an endpoint answers with; their schemas are added to the OpenAPI document.
RESPONSE_MESSAGES: list = []


def answers(message_cls: type[Message], *problems: int) -> dict:
    """The `responses` of a route that answers with a contract message."""
    RESPONSE_MESSAGES.append(message_cls.DESCRIPTOR)
    ok = {200: {"description": message_cls.DESCRIPTOR.name,
                "content": {"application/json": {"schema": protojson.ref(message_cls.DESCRIPTOR)}}}}
    return {**ok, **problem_responses(400, 401, 403, 413, 429, 503, *problems)}


def enum_names(enum_type) -> tuple[str, ...]:
    return tuple(v.name for v in enum_type.DESCRIPTOR.values if v.number)


def literal(enum_type):
    return typing.Literal[enum_names(enum_type)]


# The enums a request body names by their names. Computed from the descriptors, a Literal is no type
# to a type checker: to it these are strings, to pydantic (and the OpenAPI document) those names.
if typing.TYPE_CHECKING:
    AgendaStepName = str
    ChannelName = str
    IdKindName = str
    LoginMethodName = str
    ParticipantRoleName = str
    PartyKindName = str
    ProblemKindName = str
    ReporterKindName = str
    TicketStateName = str
else:
    AgendaStepName = literal(roster_pb2.AgendaStep)
    ChannelName = literal(booking_pb2.Channel)
    IdKindName = literal(common_pb2.IdKind)
    LoginMethodName = literal(common_pb2.LoginMethod)
    ParticipantRoleName = literal(roster_pb2.ParticipantRole)
    PartyKindName = literal(booking_pb2.PartyKind)
    ProblemKindName = literal(support_pb2.ProblemKind)
    ReporterKindName = literal(support_pb2.ReporterKind)
    TicketStateName = literal(support_pb2.TicketState)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.timezone.utc))
    return out


def time_range(start: dt.datetime | None, end: dt.datetime | None) -> common_pb2.TimeRange:
    period = common_pb2.TimeRange()
    if start:
        period.start.CopyFrom(ts(start))
    if end:
        period.end.CopyFrom(ts(end))
    return period


def relay(session: Session) -> dict:
    """Call options that relay the person's own token (and the request id)."""
    return {"metadata": clients.metadata(session.token)}


def as_service(backends: Backends, settings: GatewaySettings) -> dict:
    """Call options with the gateway's own token (and the deadline of a unary call)."""
    return {"metadata": backends.as_service(), "timeout": settings.rpc_timeout_seconds}


def reply(message: Message) -> dict:
    return protojson.to_json(message)


async def call(request: Request, me: Session, message: Message) -> Message:
    """Call the method this route declares (`@relays`, or one of `relaying=` of `@as_gateway`) that
    takes `message`, as the person, their own token relayed."""
    declared = access.declared(request)
    methods = ((declared.service, declared.rpc),) if declared.kind == "relay" else declared.relaying
    found = [(service, rpc) for service, rpc in methods if message.DESCRIPTOR.name == f"{rpc}Request"]
    if not found:
        raise RuntimeError(f"{request.url.path}: a {message.DESCRIPTOR.name} is not what "
                           f"{methods} ({declared.kind}) take")
    service, rpc = found[0]
    method = getattr(getattr(get_backends(request), service), rpc)
    return await method(message, timeout=get_settings(request).rpc_timeout_seconds, **relay(me))


async def relayed(request: Request, me: Session, message: Message) -> dict:
    """`call()`, answered with the JSON of the reply."""
    return reply(await call(request, me, message))
