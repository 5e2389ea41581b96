"""This instance's business metrics: the load that drives the HorizontalPodAutoscaler (through the
Prometheus adapter) and the dashboards, read from the rooms when Prometheus scrapes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ROOMS = Gauge("svpl_media_rooms", "Rooms open on this media instance.")
PARTICIPANTS = Gauge("svpl_media_participants",
                     "People's peer connections on this media instance: meeting participants and echo test rooms"
                     " (HPA metric).")
TEST_ROOM_PEERS = Gauge("svpl_media_test_room_peers",
                        "Echo test rooms on this media instance (also counted in svpl_media_participants).")
FORWARDED_STREAMS = Gauge("svpl_media_forwarded_streams",
                          "Forwarded streams: one participant's audio+video to one receiver.")
QUALITY_WARNINGS = Counter("svpl_media_quality_warnings_total",
                           "Times a participant's connection turned poor (a warning shown in the portal).")


def bind(rooms) -> None:
    """Read the gauges from this instance's rooms at scrape time (no bookkeeping on the media path)."""
    ROOMS.set_function(lambda: len(rooms.rooms))
    PARTICIPANTS.set_function(lambda: rooms.peer_count)
    TEST_ROOM_PEERS.set_function(lambda: rooms.test_room_peers)
    FORWARDED_STREAMS.set_function(lambda: rooms.forwarded_streams)
