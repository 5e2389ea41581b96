"""A service that has not yet fetched identity's signing keys when identity is away (restarting,
see tests/faults/test_services_killed.py) answers UNAVAILABLE, which callers retry, not an
unhandled INTERNAL; once identity is back, the same call goes through."""

import grpc
from svpl.support.v1 import support_pb2, support_pb2_grpc

from devstack.embedded_db import free_port
from devstack.harness import as_token
from services.runtime import clients
from services.runtime.server import Binding, Component
from tests.runtime.test_server import ACCESS, DESCRIPTOR, ProbeServicer


async def test_identity_away_is_unavailable_then_the_call_goes_through(serve, keyring, person_token):
    identity_port = free_port()  # nothing listens here yet: identity is down
    identity_channel = clients.channel(f"127.0.0.1:{identity_port}")
    component = Component([Binding(DESCRIPTOR, ProbeServicer(), support_pb2_grpc.add_SupportServiceServicer_to_server,
                                   ACCESS)])
    server = await serve(component, clients.identity_keyset(identity_channel))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub = support_pb2_grpc.SupportServiceStub(channel)
    desk = as_token(person_token("support_desk"))
    try:
        try:
            await stub.GetTicket(support_pb2.GetTicketRequest(ticket_id="t1"), metadata=desk, timeout=10)
            raise AssertionError("answered without identity's keys")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, (exc.code(), exc.details())
            assert "signing keys" in exc.details()

        # Identity comes back (its key service, serving the same keys) on the same address.
        from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

        class Keys(identity_pb2_grpc.IdentityServiceServicer):
            async def GetSigningKeys(self, request, context):
                return identity_pb2.GetSigningKeysResponse(jwks_json=keyring.jwks_json())

        identity = grpc.aio.server()
        identity_pb2_grpc.add_IdentityServiceServicer_to_server(Keys(), identity)
        identity.add_insecure_port(f"127.0.0.1:{identity_port}")
        await identity.start()
        try:
            for _ in range(100):  # the channel reconnects with back-off; the caller retries
                try:
                    reply = await stub.GetTicket(support_pb2.GetTicketRequest(ticket_id="t1"), metadata=desk,
                                                 timeout=10)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                    await identity_channel.channel_ready()
            assert reply.ticket.ticket_id == "t1"
        finally:
            await identity.stop(0)
    finally:
        await channel.close()
        await identity_channel.close()
