"""Media test set-up: loopback-only ICE (aioice skips 127.0.0.1 when gathering host candidates,
so its host address list is patched here, in tests only), identity + media in-process."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from svpl.media.v1 import media_pb2

from devstack.harness import as_token
from devstack.peers import Peer
from tests.polling import poll

INSTANCE = "media-test-1"


class MediaWorld:
    """identity + media in-process, and helpers to call media the way roster and gateway do."""

    def __init__(self, system, keyring, service_token) -> None:
        self.system = system
        self.keyring = keyring
        self.media = system.stub("media")
        self.rooms = system.running["media"].component.rooms
        self.roster_md = as_token(service_token("roster"))
        self.gateway_md = as_token(service_token("gateway"))
        self.compiled = system.running["media"].component.rooms._fastpath  # the send path under test

    def join_token(self, meeting_id: str, participant_id: str, instance: str = INSTANCE,
                   ttl: dt.timedelta = dt.timedelta(minutes=10)) -> tuple[str, str]:
        token, token_id, _ = self.keyring.issue_join_token(
            meeting_id=meeting_id, participant_id=participant_id, media_instance=instance, ttl=ttl)
        return token, token_id

    async def open_room(self, meeting_id: str | None = None) -> str:
        meeting_id = meeting_id or "m-" + uuid.uuid4().hex[:8]
        await self.media.OpenRoom(media_pb2.OpenRoomRequest(meeting_id=meeting_id), metadata=self.roster_md)
        return meeting_id

    async def join(self, peer, meeting_id: str, participant_id: str, token: str | None = None):
        token = token or self.join_token(meeting_id, participant_id)[0]
        sdp = await peer.offer()
        response = await self.media.Negotiate(
            media_pb2.NegotiateRequest(join_token=token, sdp_offer=sdp), metadata=self.gateway_md)
        await peer.answer(response.sdp_answer)
        return response

    async def two_in_a_room(self, first: str, second: str, kind: str = "video") -> tuple[str, Peer, Peer]:
        """A new room, and two peers with one slot each joined as `first` and `second`, once each receives the
        other's `kind`; the caller closes the peers."""
        meeting = await self.open_room()
        a, b = Peer(slots=1), Peer(slots=1)
        await self.join(a, meeting, first)
        await self.join(b, meeting, second)
        received = {"video": Peer.video_received, "audio": Peer.audio_received}[kind]
        await poll(lambda: received(a) and received(b), 10, what=f"{kind} both ways")
        return meeting, a, b


# The send paths a test runs on (`@pytest.mark.parametrize("world", SEND_PATHS, indirect=True)`): the
# compiled one (services/media/fastpath.c, the default) and its Python reference (SVPL_COMPILED_FORWARDING=0).
SEND_PATHS = ["compiled", "python"]


@pytest.fixture
async def world(request, system_factory, keyring, service_token):
    fastpath = getattr(request, "param", "compiled") == "compiled"
    system = await system_factory(["identity", "media"],
                                  overrides={"media": {"instance_id": INSTANCE, "compiled_forwarding": fastpath}})
    yield MediaWorld(system, keyring, service_token)
