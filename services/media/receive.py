"""Incoming SRTP/SRTCP handled in the socket's callback, without aiortc's per-datagram task hop.

aiortc 1.16 (pinned) receives every datagram of a peer connection the same way: aioice's
``StunProtocol.datagram_received`` first tries to parse it as STUN (an exception for every media
packet), then ``Connection.data_received`` puts it on an ``asyncio.Queue``; the DTLS transport's
task wakes up and resumes four nested coroutines (``__run`` → ``_recv_next`` →
``RTCIceTransport._recv`` → ``Connection.recv``) to take it off, and only then unprotects and
routes it. No library offers another receive path for aiortc, so this is hand-written against
those internals (tests/media/test_aiortc_internals.py pins them):

:func:`receive_directly` replaces ``datagram_received`` on the peer connection's aioice
protocols. A datagram whose first byte says RTP/RTCP (128-191, RFC 7983) arriving while the DTLS
transport is connected and nothing is waiting in aioice's queue is handled at once, as
``_recv_next`` would: counted, unprotected with the transport's ``_rx_srtp``, and given to its
``_handle_rtp_data`` / ``_handle_rtcp_data``. Everything else (STUN, DTLS records, media before
the handshake or behind queued datagrams, so the order is kept) takes aioice's own path.

aiortc's handlers are coroutines that do not suspend on this path (sending RTCP ends in a
synchronous ``sendto``); :func:`run_now` runs one to completion in place and, should it ever
suspend, lets a task finish it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

import pylibsrtp
from aiortc import clock
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtp import is_rtcp

log = logging.getLogger("svpl.media.receive")


def run_now(coro: Coroutine) -> None:
    """Run `coro` until it suspends or ends; a suspended rest runs on in a task."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return
    except Exception:  # noqa: BLE001 - as aiortc's receive task would: drop the datagram, keep receiving
        log.exception("handling a media datagram failed")
        return
    asyncio.ensure_future(_finish(coro, awaited))


async def _finish(coro: Coroutine, awaited) -> None:
    """What a Task does for a coroutine, for the rest of one already started: wait for the future it
    awaits (or yield once for a bare ``yield``), then resume it, until it ends."""
    while True:
        if awaited is None:
            await asyncio.sleep(0)
        else:
            try:
                await awaited
            except BaseException:  # noqa: BLE001 - the coroutine sees the outcome itself when resumed
                pass
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
        except Exception:  # noqa: BLE001
            log.exception("handling a media datagram failed")
            return


def receive_directly(pc) -> int:
    """Handle `pc`'s incoming SRTP/SRTCP in its sockets' callbacks; returns how many sockets were set."""
    count = 0
    done: set[int] = set()
    for t in pc.getTransceivers():
        dtls = t.receiver.transport
        if dtls is None or id(dtls) in done:
            continue
        done.add(id(dtls))
        connection = dtls.transport._connection
        for protocol in connection._protocols:
            protocol.datagram_received = _direct(protocol.datagram_received, connection._queue, dtls)
            count += 1
    return count


def _direct(through_aioice, waiting: asyncio.Queue, dtls):
    """`through_aioice`: the protocol's own method, for everything else; `waiting`: aioice's queue of
    received datagrams, which the DTLS transport's task takes from."""

    def datagram_received(data: bytes, addr) -> None:
        if (data and 127 < data[0] < 192 and dtls._state is DtlsState.CONNECTED and dtls._rx_srtp is not None
                and waiting.empty()):
            dtls._RTCDtlsTransport__rx_bytes += len(data)
            dtls._RTCDtlsTransport__rx_packets += 1
            arrival_time_ms = clock.current_ms()
            try:
                if is_rtcp(data):
                    handling = dtls._handle_rtcp_data(dtls._rx_srtp.unprotect_rtcp(data))
                else:
                    handling = dtls._handle_rtp_data(dtls._rx_srtp.unprotect(data), arrival_time_ms=arrival_time_ms)
            except pylibsrtp.Error:  # aiortc drops what does not authenticate (replayed, forged, corrupt)
                return
            run_now(handling)
            return
        through_aioice(data, addr)

    return datagram_received
