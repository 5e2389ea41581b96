"""This instance's business metrics: the load that drives the HorizontalPodAutoscaler (through the
Prometheus adapter) and the dashboards, read from the rooms when Prometheus scrapes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
VIDEO_CAPS = Histogram("svpl_media_video_cap_bps",
                       "Bitrates (bit/s) media asked a video publisher for below its own link's estimate, to hold it"
                       " to its weakest subscriber's link (each REMB sent while capped).",
                       buckets=(100e3, 150e3, 200e3, 250e3, 300e3, 400e3, 500e3, 750e3, 1e6, 1.5e6, 2.5e6))
CAPPED_PUBLICATIONS = Gauge("svpl_media_capped_video_publications",
                            "Video publications on this instance held below their own link by a subscriber's.")
SUBSCRIBER_ESTIMATES = Counter("svpl_media_subscriber_estimates_total",
                               "Subscribers' receive estimates media took in, by source: a REMB from the browser, or"
                               " (the fallback without REMB) heavy loss in its Receiver Reports.", ["source"])
