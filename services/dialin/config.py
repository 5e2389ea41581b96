from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from services.dialin import voice
from services.runtime.config import ServiceSettings


class DialinSettings(ServiceSettings):
    service_name: str = "dialin"
    grpc_port: int = Field(50056, ge=0, le=65535)
    # The dial-in service keeps no data of its own (no database).
    mongodb_uri: str = ""
    # SIP (UDP) listens here; RTP ports for calls come from the range (the chart's Service exposes both).
    sip_host: str = "0.0.0.0"  # noqa: S104 - the pod's SIP port; the Service and NetworkPolicy bound who reaches it
    sip_port: int = Field(5060, ge=1, le=65535)
    rtp_port_min: int = Field(20000, ge=1024, le=65535)
    rtp_port_max: int = Field(20999, ge=1024, le=65535)
    # The address put in SDP when the pod's own is not the one the trunk reaches (NAT, a node port).
    advertised_ip: str = ""
    # The region's SIP trunk / SBC networks (CIDR). INVITEs from anywhere else get 403.
    trunk_networks: list[str] = Field(default_factory=list)
    # The trunk's SIP digest credentials (from a Secret): INVITEs without them get a 401 challenge,
    # with wrong ones 403. At least one of trunk_networks and these must be set; with both, both apply.
    trunk_username: str = ""
    trunk_password: str = ""
    trunk_realm: str = "svpl-dialin"
    # SIP over TLS (RFC 3261 §26): on when sip_tls_port is set, with this certificate and key (PEM files,
    # the chart mounts them from a Secret). With sip_tls_client_ca_file the trunk must present a client
    # certificate from that CA (mutual TLS); the trunk networks and digest credentials apply as over UDP.
    sip_tls_port: int = Field(0, ge=0, le=65535)
    sip_tls_cert_file: str = ""
    sip_tls_key_file: str = ""
    sip_tls_client_ca_file: str = ""
    # Refuse plain RTP (488): the trunk must offer SRTP (RTP/SAVP with SDES a=crypto).
    require_srtp: bool = False
    # SDES keys travel in the SDP: accepted only over SIP over TLS, unless this documented exception is
    # set (a trunk whose signalling is protected another way, e.g. an IPsec tunnel; docs/DIALIN.md).
    sdes_over_insecure: bool = False
    # Codecs towards the trunk in our order of preference (opus, G722, PCMA, PCMU; a subset is allowed).
    codecs: list[str] = Field(default_factory=lambda: list(voice.PREFERENCE))
    # Required: the key that makes a phone connection's id from meeting + calling number (HMAC),
    # so a removed number is recognised when it calls back without roster ever seeing the number.
    connection_key: str = Field(min_length=32)
    # Wrong meeting IDs per call before the call ends (the routine's three tries).
    max_entries_per_call: int = Field(3, ge=1, le=10)
    # Seconds to wait for a key before the prompt is repeated (counts as one wrong entry).
    entry_timeout_seconds: float = Field(20.0, gt=0)
    # Meeting-ID entries per calling number per hour, and by all callers per minute (this instance).
    entries_per_number_per_hour: int = Field(10, ge=1)
    entries_per_minute_total: int = Field(300, ge=1)
    # A caller nobody lets in is told so and hung up on after this long in the lobby.
    lobby_timeout_seconds: float = Field(1800.0, gt=0)
    # The lobby's waiting message is repeated this often.
    lobby_repeat_seconds: float = Field(30.0, gt=0)
    # How often the caller's standing is re-read from roster even without a change event.
    recheck_seconds: float = Field(5.0, gt=0)
    # Calls this instance takes at once (more get 503, the trunk tries another instance).
    max_calls: int = Field(100, ge=1)
    # Room audio tracks the caller hears mixed (one per other participant, the loudest N not chosen).
    audio_slots: int = Field(12, ge=1, le=32)
    # Seconds to join the room (negotiate + ICE/DTLS) before the caller is told to try again.
    join_timeout_seconds: float = Field(15.0, gt=0)

    @field_validator("codecs")
    @classmethod
    def _codecs(cls, value: list[str]) -> list[str]:
        names = [voice.canonical(name) for name in value]
        unknown = [given for given, name in zip(value, names, strict=True) if name is None]
        if unknown or not value or len(set(names)) != len(names):
            raise ValueError(f"codecs: one or more of {', '.join(voice.PREFERENCE)}, each once (not {value})")
        return [name for name in names if name is not None]

    @field_validator("trunk_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # a ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _trunk_trust(self) -> DialinSettings:
        if bool(self.trunk_username) != bool(self.trunk_password):
            raise ValueError("trunk_username and trunk_password are set together (SIP digest authentication)")
        if not self.trunk_networks and not self.trunk_username:
            raise ValueError("trust in the trunk needs trunk_networks (CIDR) or trunk_username/trunk_password "
                             "(SIP digest), or both")
        if self.sip_tls_port and not (self.sip_tls_cert_file and self.sip_tls_key_file):
            raise ValueError("sip_tls_port needs sip_tls_cert_file and sip_tls_key_file (SIP over TLS)")
        if self.sip_tls_port and self.sip_tls_port == self.sip_port:
            raise ValueError("sip_tls_port and sip_port must differ")
        if self.require_srtp and not self.sip_tls_port and not self.sdes_over_insecure:
            raise ValueError("require_srtp needs SIP over TLS (sip_tls_port): SDES keys are not sent in clear "
                             "(or the documented sdes_over_insecure exception)")
        if self.trunk_password and len(self.trunk_password) < 16:
            raise ValueError("trunk_password must be at least 16 characters")
        return self

    @property
    def trunks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.trunk_networks]
