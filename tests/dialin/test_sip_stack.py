"""Tripwire for services/dialin/sip.py: the private names of aiosipua it uses, at the pinned versions."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from aiortp import RTPSession
from aiortp.transport import RtpTransport
from aiosipua import IncomingCall, SipUAS, TcpSipTransport, UdpSipTransport


def test_the_pinned_sip_stack_still_has_what_the_adapter_reaches_into():
    assert (version("aiosipua"), version("aiortp")) == ("0.7.1", "0.8.0")  # as pinned in pyproject.toml
    uas = SipUAS(UdpSipTransport(local_addr=("127.0.0.1", 0)))
    assert {"INVITE", "BYE", "CANCEL"} <= set(uas._handlers) and "INFO" not in uas._handlers
    assert isinstance(uas._calls, dict)
    assert callable(uas._send_error)
    transport = UdpSipTransport(local_addr=("127.0.0.1", 0))
    assert transport._udp_transport is None and callable(transport._dispatch)
    assert callable(IncomingCall._send_response)  # the 401 challenge's WWW-Authenticate header
    # The answers to our BYEs (Endpoint.retransmit_bye): SipUAS.start puts its handler on the transport's
    # on_message, and hangup returns the BYE it sent.
    assert "self.transport.on_message = self._on_message" in inspect.getsource(SipUAS.start)
    assert "return bye" in inspect.getsource(IncomingCall.hangup)
    # SIP over TLS: the TCP transport's connection handler and table (sip._TlsTransport).
    tcp = TcpSipTransport(local_addr=("127.0.0.1", 0))
    assert callable(tcp._handle_connection) and tcp._connections == {}
    # SRTP (sip._encrypt): the session's two UDP transports, and the callbacks each hands packets to.
    assert {"_rtp_transport", "_rtcp_transport"} <= set(vars(RTPSession(0)))
    rtp = RtpTransport(on_rtp=lambda *_: None, on_rtcp=lambda *_: None)
    assert callable(rtp._on_rtp) and callable(rtp._on_rtcp) and callable(rtp.send)
