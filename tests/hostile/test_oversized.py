"""Oversized input: every POST route of the gateway refuses a body over its limit with a 413
problem (declared length or streamed), and every method of every service refuses a message over
`max_message_bytes` with RESOURCE_EXHAUSTED before any handler runs; nothing stored changes."""

from __future__ import annotations

import asyncio
import collections
import importlib
import json

import grpc

from devstack.harness import as_token
from tests.gateway.conftest import COORDINATOR
from tests.gateway.flow import book_video_meeting
from tests.hostile.conftest import changed, settled

SERVICES = ["identity", "roster", "booking", "support", "media"]
LIMIT = 64 * 1024


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def padded(size: int) -> bytes:
    """A valid protobuf message of about `size` bytes: one unknown length-delimited field (number 9999)."""
    return varint((9999 << 3) | 2) + varint(size) + b"x" * size


async def test_every_post_route_refuses_a_body_over_the_limit_with_413(gateway):
    app, system, new_browser = gateway
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    booking = await book_video_meeting(coordinator)
    limit = app.state.settings.max_body_bytes
    posts = [path for path, ops in app.openapi()["paths"].items() if "post" in ops]
    assert len(posts) > 15
    before = await settled(system, frozenset({"audit.access_records"}))
    big = json.dumps({"summary": "x" * limit}).encode()

    async def streamed():
        for _ in range(limit // 4096 + 2):
            yield b"x" * 4096

    for path in posts:
        ids = {"meeting_id": booking["meeting_id"], "booking_id": booking["booking_id"]}
        url = path.format_map(collections.defaultdict(lambda: "no-such-id", ids))  # others: an id that exists nowhere
        for content in (big, streamed()):  # declared content-length, and chunked with none
            response = await coordinator.post(url, content=content, headers={"content-type": "application/json"})
            assert response.status_code == 413, (path, response.status_code, response.text[:200])
            assert response.headers["content-type"] == "application/problem+json"
    assert not changed(before, await settled(system, frozenset({"audit.access_records"})))


async def test_every_service_method_refuses_a_message_over_max_message_bytes(system_factory, service_token,
                                                                             person_token):
    system = await system_factory(SERVICES, overrides={s: {"max_message_bytes": LIMIT} for s in SERVICES})
    md = as_token(service_token("gateway"))
    before = await settled(system)
    checked = 0

    async def refused(channel, path: str, streaming: bool) -> None:
        factory = channel.unary_stream if streaming else channel.unary_unary
        call = factory(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            if streaming:
                async for _ in call(padded(LIMIT + 1024), metadata=md, timeout=10):
                    pass
            else:
                await call(padded(LIMIT + 1024), metadata=md, timeout=10)
            raise AssertionError(f"{path} accepted a message over the limit")
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (path, err.code(), err.details())

    for name in SERVICES:
        pb2 = importlib.import_module(f"svpl.{name}.v1.{name}_pb2")
        service = pb2.DESCRIPTOR.services_by_name[f"{name.capitalize()}Service"]
        channel = system.channel(name)
        await asyncio.gather(*(refused(channel, f"/{service.full_name}/{m.name}", m.server_streaming)
                               for m in service.methods))
        checked += len(service.methods)
    assert checked > 60
    # Just under the limit the message reaches the service (which answers on its own terms).
    probe = system.channel("roster").unary_unary("/svpl.roster.v1.RosterService/GetMeeting",
                                                 request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        await probe(padded(LIMIT - 1024), metadata=as_token(person_token("coordinator")), timeout=10)
    except grpc.aio.AioRpcError as err:
        assert err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
    assert not changed(before, await settled(system))
