import ipaddress

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.runtime.config import ENV_PREFIX, TlsSettings, TracingSettings


class GatewaySettings(TlsSettings, TracingSettings):
    """The gateway is HTTP, not gRPC: its own settings, the same loading rules."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    service_name: str = "gateway"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    # On SIGTERM: how long open requests and WebSockets may take to end before they are cut.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # Prometheus /metrics on its own port (0 picks a free one), as every svpl service.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    region: str = "rjl"
    identity_address: str = "127.0.0.1:50051"
    booking_address: str = "127.0.0.1:50052"
    roster_address: str = "127.0.0.1:50053"
    media_address: str = "127.0.0.1:50054"
    support_address: str = "127.0.0.1:50055"
    # The gateway's own service token (minted by identity). Used only for the login RPCs
    # of identity and for relaying WebRTC signalling to media.
    service_token: str
    development_login: bool = False
    # Demo people offered on the login page when the development login is on ("id|label" each).
    # Every demo person `make run` offers: "<HSA-id or personnummer>|<label>|<login method name>"
    # (the method the routine gives them; empty: the person's kind's default).
    development_people: list[str] = Field(default_factory=lambda: [
        "SE2321000057-1001|Vera Samordnare (vårdsamordnare, SITHS)|LOGIN_METHOD_SITHS",
        "SE2321000057-1002|Olle Annan (vårdsamordnare, annan enhet, SITHS)|LOGIN_METHOD_SITHS",
        "SE2120000829-3002|Kent Kommunsamordnare (samordnare i kommunen, SITHS)|LOGIN_METHOD_SITHS",
        "SE2321000057-2001|Rita Region (regionpersonal, SITHS)|LOGIN_METHOD_SITHS",
        "SE2120000829-3001|Mona Kommun (kommunpersonal, SITHS)|LOGIN_METHOD_SITHS",
        "SE2321000057-4001|Sam Support (regionens IT-support, SITHS)|LOGIN_METHOD_SITHS",
        "SE2120000829-4002|Kim Kommunit (kommunens IT-support, SITHS)|LOGIN_METHOD_SITHS",
        "SE2120000597-4003|Berit Värnamoit (Värnamo kommuns IT-support, SITHS)|LOGIN_METHOD_SITHS",
        "SE2321000057-5001|Lotta Logg (granskar åtkomstloggen, SITHS)|LOGIN_METHOD_SITHS",
        "191212121212|Tolvan Tolvansson (patient, BankID)|LOGIN_METHOD_BANKID",
        "198112289874|Nils Närstående (närstående, 1177)|LOGIN_METHOD_E_SERVICES_1177",
    ])
    # SITHS: the TLS terminator forwards the client certificate it verified in this header (PEM,
    # URL-encoded: nginx's $ssl_client_escaped_cert) and the verification's outcome in the second
    # ("SUCCESS" or FAILED:<reason> / NONE: nginx's $ssl_client_verify). Both are believed only from
    # trusted_proxies. The defaults are the headers ingress-nginx sets with
    # auth-tls-pass-certificate-to-upstream (and clears on every other request).
    siths_certificate_header: str = "ssl-client-cert"
    siths_verify_header: str = "ssl-client-verify"
    # The TLS terminators / ingress controllers in front of the gateway, as IP networks (CIDR) or
    # addresses. Only a request whose TCP peer is in one of them may carry X-Forwarded-For/-Proto
    # (the client address for rate limits and BankID) and the SITHS certificate header. Empty: none.
    trusted_proxies: list[str] = Field(default_factory=list)
    # A request's headers must have arrived this long after the connection (or the request's first byte).
    header_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Requests larger than this are refused with 413 before they reach a handler.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Login attempts (start of any login) per client address per minute.
    login_rate_per_minute: int = Field(default=20, ge=1)
    # Fault reports without a login (the public report page) per client address per hour.
    public_report_rate_per_hour: int = Field(default=10, ge=1)
    # Echo test room negotiations per person per minute (media also holds one test room per person).
    test_room_rate_per_minute: int = Field(default=6, ge=1)
    # Meeting event WebSockets open at once: per session, and per meeting in this gateway process.
    event_streams_per_session: int = Field(default=4, ge=1)
    event_streams_per_meeting: int = Field(default=60, ge=1)
    # Deadline of each unary call to a service.
    rpc_timeout_seconds: float = Field(default=10.0, gt=0)
    # Revoked session tokens (logout) are followed from identity every this many seconds; when they
    # could not be fetched for revocation_max_staleness_seconds, sessions are refused (503) until they can.
    revocation_poll_seconds: float = Field(default=2.0, gt=0)
    revocation_max_staleness_seconds: float = Field(default=30.0, gt=0)
    # TURN relay for browsers behind strict firewalls (coturn use-auth-secret): the shared secret
    # and the public URLs, comma-separated (turn:host:3478,turns:host:5349). Empty: no TURN offered.
    turn_secret: str = ""
    turn_urls: str = ""
    turn_ttl_seconds: int = Field(default=3600, ge=60, le=86400)
    # Cookies are always Secure; this only exists so the public URL can be named in links.
    public_url: str = ""

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        """Each entry an IP network or address (never "*" or a host name): normalised CIDR strings."""
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP network (CIDR) or address") from None
        return networks
