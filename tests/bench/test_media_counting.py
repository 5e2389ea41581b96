"""The bench-media load generator's frame counter: the fps it reports is only as true as this."""

from __future__ import annotations

from bench.media_peers import LightCounter, Slot


def rtp(seq: int, timestamp: int, marker: bool) -> bytes:
    header = bytes([0x80, (0x80 if marker else 0) | 96]) + seq.to_bytes(2, "big") + timestamp.to_bytes(4, "big")
    return header + (1234).to_bytes(4, "big") + b"encrypted payload"


def frames(packets: list[tuple[int, int, bool]]) -> int:
    slot = Slot("video")
    counter = LightCounter(slot)
    for seq, timestamp, marker in packets:
        counter.packet(rtp(seq, timestamp, marker))
    return len(slot.times)


def test_complete_frames_are_counted_across_the_sequence_wrap():
    assert frames([(65534, 0, False), (65535, 0, True), (0, 3000, False), (1, 3000, False), (2, 3000, True)]) == 2


def test_a_frame_missing_a_middle_packet_is_not_counted():
    assert frames([(10, 0, False), (11, 0, True), (12, 3000, False), (14, 3000, True), (15, 6000, True)]) == 2


def test_a_frame_missing_its_first_packet_is_not_counted():
    assert frames([(10, 0, True), (12, 3000, True), (13, 6000, True)]) == 2


def test_a_frame_missing_its_marker_is_not_counted_nor_the_next_whose_start_cannot_be_checked():
    assert frames([(10, 0, True), (11, 3000, False), (12, 6000, False), (13, 6000, True), (14, 9000, True)]) == 2


def test_every_audio_packet_is_a_frame():
    slot = Slot("audio")
    counter = LightCounter(slot)
    for seq in range(5):
        counter.packet(rtp(seq, seq * 960, False))
    assert len(slot.times) == 5
