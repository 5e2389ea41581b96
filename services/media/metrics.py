"""This instance's business metrics: the load that drives the HorizontalPodAutoscaler (through the
Prometheus adapter) and the dashboards, read from the rooms when Prometheus scrapes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ROOMS = Gauge("svpl_media_rooms", "Rooms open on this media instance.")
PARTICIPANTS = Gauge("svpl_media_participants", "Participants connected to this media instance (HPA metric).")
FORWARDED_STREAMS = Gauge("svpl_media_forwarded_streams",
                          "Forwarded streams: one participant's audio+video to one receiver.")
QUALITY_WARNINGS = Counter("svpl_media_quality_warnings_total",
                           "Times a participant's connection turned poor (a warning shown in the portal).")


def bind(rooms) -> None:
    """Read the gauges from this instance's rooms at scrape time (no bookkeeping on the media path)."""
    ROOMS.set_function(lambda: len(rooms.rooms))
    PARTICIPANTS.set_function(lambda: rooms.participant_count)
    FORWARDED_STREAMS.set_function(lambda: rooms.forwarded_streams)
