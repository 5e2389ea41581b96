"""Incoming SRTP/SRTCP handled in the socket's callback, without aiortc's per-datagram task hop.

aiortc 1.16 (pinned) receives every datagram of a peer connection the same way: aioice's
``StunProtocol.datagram_received`` first tries to parse it as STUN (an exception for every media
packet), then ``Connection.data_received`` puts it on an ``asyncio.Queue``; the DTLS transport's
task wakes up and resumes four nested coroutines (``__run`` → ``_recv_next`` →
``RTCIceTransport._recv`` → ``Connection.recv``) to take it off, and only then unprotects and
routes it. No library offers another receive path for aiortc, so this is hand-written against
those internals, in services/media/rtc_internals.py (tests/media/test_aiortc_internals.py pins them):

:func:`receive_directly` replaces ``datagram_received`` on the peer connection's aioice
protocols (``rtc_internals.receive_in_callback``). A datagram whose first byte says RTP/RTCP
(128-191, RFC 7983) arriving while the DTLS transport is connected and nothing is waiting in
aioice's queue is handled at once, as aiortc's ``_recv_next`` would: counted, unprotected and given
to the transport's RTP or RTCP handler. Everything else (STUN, DTLS records, media before the
handshake or behind queued datagrams, so the order is kept) takes aioice's own path.

aiortc's handlers are coroutines that do not suspend on this path (sending RTCP ends in a
synchronous ``sendto``); ``rtc_internals.run_now`` runs one to completion in place and, should it
ever suspend, lets a task finish it and raises ``HandlerSuspended``: loudly, not silently.
"""

from __future__ import annotations

from services.media.rtc_internals import receive_in_callback


def receive_directly(pc, lean: bool = False) -> int:
    """Handle `pc`'s incoming SRTP/SRTCP in its sockets' callbacks; returns how many sockets were set.
    `lean`: a forwarded publication's RTP takes the lean receive path (``rtc_internals.LeanReceive``)."""
    count = 0
    done: set[int] = set()
    for t in pc.getTransceivers():
        dtls = t.receiver.transport
        if dtls is None or id(dtls) in done:
            continue
        done.add(id(dtls))
        count += receive_in_callback(dtls, lean)
    return count
