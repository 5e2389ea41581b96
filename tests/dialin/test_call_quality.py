"""Call quality from the trunk-side RTP: a call whose RTP loses packets (SIPp's sender skips every
fourth sequence number) is reported as lossy, a clean one as clean; the figures carry no labels."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from devstack import sipp
from services.dialin import metrics
from services.dialin.quality import CallQuality
from tests.dialin.test_phone_caller import call, finished
from tests.polling import poll


def bucket(name: str, le: str) -> float:
    return REGISTRY.get_sample_value(f"{name}_bucket", {"le": le}) or 0.0


def test_loss_jitter_and_concealment_from_the_rtp_statistics():
    poor_before = metrics.POOR_CALLS._value.get()
    q = CallQuality()
    q.sample({"packets_received": 250, "packets_lost": 0, "jitter": 16, "concealed_frames": 0})
    assert (q.loss_ratio, q.max_jitter_seconds, q.poor) == (0.0, 0.002, False)
    # The next window loses a fifth of its packets: poor right now, counted in the gauge.
    q.sample({"packets_received": 330, "packets_lost": 20, "jitter": 40, "concealed_frames": 20})
    assert q.poor and metrics.POOR_CALLS._value.get() == poor_before + 1
    assert q.loss_ratio == pytest.approx(20 / 350) and q.max_jitter_seconds == 0.005
    assert q.concealed_ratio == pytest.approx(20 / 330)
    q.finish({"packets_received": 330, "packets_lost": 20, "jitter": 8, "concealed_frames": 20})
    assert metrics.POOR_CALLS._value.get() == poor_before and q.max_jitter_seconds == 0.005
    # A call that never sent RTP adds nothing.
    count = REGISTRY.get_sample_value("svpl_dialin_call_packet_loss_ratio_count")
    CallQuality().finish({})
    assert REGISTRY.get_sample_value("svpl_dialin_call_packet_loss_ratio_count") == count


def talking(tmp_path, name: str, drop_every: int = 0) -> list:
    """The caller talks (a tone, 4 s of 20 ms PCMA packets) during the welcome, then hangs up;
    `drop_every`: every n-th packet is never sent (its sequence number is skipped)."""
    packets = sipp.tone_packets(1000.0, 4.0)
    if drop_every:
        packets = [p for i, p in enumerate(packets) if i % drop_every != drop_every - 1]
    return [sipp.pause(300), sipp.play(sipp.pcap(tmp_path / f"{name}.pcap", packets)), sipp.pause(4800)]


@pytest.mark.slow
async def test_a_lossy_call_is_reported_lossy_and_a_clean_one_clean(dialin_world, tmp_path):
    world = dialin_world
    name = "svpl_dialin_call_packet_loss_ratio"
    before = {le: bucket(name, le) for le in ("0.01", "0.1", "0.5", "+Inf")}
    jitter_before = REGISTRY.get_sample_value("svpl_dialin_call_jitter_seconds_count") or 0.0
    clean = await call(world, tmp_path, "clean", "0709000012", talking(tmp_path, "clean"), expect="hangup")
    lossy = await call(world, tmp_path, "lossy", "0709000034", talking(tmp_path, "lossy", drop_every=4),
                       expect="hangup")
    assert await asyncio.gather(finished(clean, 30), finished(lossy, 30)) == [0, 0]
    # (a call's figures are recorded as the call ends, just after its BYE is answered)
    after = await poll(lambda: {le: bucket(name, le) for le in before}, timeout=5, what="both calls recorded",
                       until=lambda now: now["+Inf"] - before["+Inf"] >= 2)
    delta = {le: after[le] - before[le] for le in before}
    # Two calls: one with at most 1 % loss (clean), one with 10–50 % (a quarter skipped): lossy.
    assert delta == {"0.01": 1, "0.1": 1, "0.5": 2, "+Inf": 2}, delta
    assert REGISTRY.get_sample_value("svpl_dialin_call_jitter_seconds_count") - jitter_before == 2
    # No labels but the histogram's own.
    for family in REGISTRY.collect():
        if family.name.startswith(("svpl_dialin_call_", "svpl_dialin_poor")):
            assert {k for s in family.samples for k in s.labels} <= {"le"}, family.name
