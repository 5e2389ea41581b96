"""The shared bootstrap in-process: health, access rules, error mapping, metrics."""

import grpc
import pymongo.errors
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY
from svpl.support.v1 import support_pb2, support_pb2_grpc

from services.runtime import auth
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.server import Binding, Component

DESCRIPTOR = support_pb2.DESCRIPTOR.services_by_name["SupportService"]


class ProbeServicer(support_pb2_grpc.SupportServiceServicer):
    async def GetTicket(self, request, context):
        if request.ticket_id == "bad":
            raise InvalidArgument("ticket_id", "must be 24 hexadecimal characters")
        if request.ticket_id == "closed":
            raise FailedPrecondition("the ticket is closed", reason="CLOSED")
        if request.ticket_id == "nodb":
            raise pymongo.errors.ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")
        if request.ticket_id == "boom":
            raise RuntimeError("secret internal detail /etc/passwd")
        return support_pb2.GetTicketResponse(ticket=support_pb2.Ticket(ticket_id=request.ticket_id,
                                                                       description=auth.caller().name))


ACCESS = {m.name: auth.persons_with(auth.ROLE_SUPPORT_DESK) for m in DESCRIPTOR.methods}
ACCESS["GetRoutingTable"] = auth.ANYONE


@pytest.fixture
async def stub(serve, keyring):
    component = Component([Binding(DESCRIPTOR, ProbeServicer(), support_pb2_grpc.add_SupportServiceServicer_to_server,
                                   ACCESS)])
    server = await serve(component, keyring.keyset())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield support_pb2_grpc.SupportServiceStub(channel), channel, server
    await channel.close()


async def test_health_reports_serving_for_process_and_service(stub):
    _, channel, _ = stub
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "svpl.support.v1.SupportService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_readiness_turns_not_serving_on_stop_while_watchers_listen(stub):
    _, channel, server = stub
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="svpl.support.v1.SupportService"))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    await server.set_ready(False)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.SERVING  # liveness differs from readiness
    watch.cancel()


async def test_anonymous_caller_is_unauthenticated(stub):
    client, _, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="t1"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_person_without_the_role_is_denied(stub, person_token):
    client, _, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="t1"), metadata=auth.bearer(person_token("patient")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_token_signed_by_another_key_is_refused(stub):
    from services.identity.tokens import KeyRing

    forged = KeyRing.generate().issue_session_token(person_id="SE2321000057-4001", id_kind="hsa_id", name="x",
                                                    method="siths", assurance="high", roles=["support_desk"])[0]
    client, _, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="t1"), metadata=auth.bearer(forged))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_allowed_caller_reaches_the_servicer_as_itself(stub, person_token):
    client, _, _ = stub
    reply = await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="t1"),
                                   metadata=auth.bearer(person_token("support_desk")))
    assert reply.ticket.description == "Sam Support"


async def test_invalid_argument_carries_a_field_violation(stub, person_token):
    client, _, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="bad"),
                               metadata=auth.bearer(person_token("support_desk")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ticket_id" in err.value.details()
    status = rpc_status.from_call(err.value)
    violation = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(violation)
    assert violation.field_violations[0].field == "ticket_id"


async def test_failed_precondition_carries_a_reason(stub, person_token):
    client, _, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="closed"),
                               metadata=auth.bearer(person_token("support_desk")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    assert rpc_status.from_call(err.value).details[0].Unpack(info) and info.reason == "CLOSED"


async def test_unexpected_error_is_internal_without_details(stub, person_token):
    client, _, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="boom"),
                               metadata=auth.bearer(person_token("support_desk")))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "passwd" not in err.value.details() and "request id" in err.value.details()


async def test_unimplemented_method_is_counted_per_method_and_code(stub):
    client, _, _ = stub
    labels = {"grpc_service": "svpl.support.v1.SupportService", "grpc_method": "GetRoutingTable",
              "grpc_code": "UNIMPLEMENTED"}
    before = REGISTRY.get_sample_value("svpl_grpc_server_handled_total", labels) or 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetRoutingTable(support_pb2.GetRoutingTableRequest())
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert REGISTRY.get_sample_value("svpl_grpc_server_handled_total", labels) == before + 1


def test_access_declaration_must_cover_every_method():
    partial = dict(ACCESS)
    partial.pop("FileReport")
    with pytest.raises(RuntimeError, match="FileReport"):
        Binding(DESCRIPTOR, ProbeServicer(), support_pb2_grpc.add_SupportServiceServicer_to_server,
                partial).check_access_complete()


async def test_unreachable_database_is_unavailable_so_clients_retry(stub, person_token):
    client, _, _ = stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.GetTicket(support_pb2.GetTicketRequest(ticket_id="nodb"),
                               metadata=auth.bearer(person_token("support_desk")))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "27017" not in err.value.details()
