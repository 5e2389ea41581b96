from pydantic import Field, model_validator

from services.runtime.config import ServiceSettings, env_name, require_integration


class RosterSettings(ServiceSettings):
    service_name: str = "roster"
    grpc_port: int = Field(50053, ge=0, le=65535)
    # Database connections for meeting watches (one change stream per meeting watched on this
    # replica, shared by its watchers), separate from the pool that reads and writes use.
    watch_pool_size: int = Field(200, ge=1)
    # Required: the portal's public base URL; a meeting's link is <base>/auth/<region>/login?meeting=<id>
    # (in every invitation and 1177 message).
    portal_base_url: str = ""
    # The media instances' gRPC control addresses; empty = [media_address]. Rooms go to the
    # least-loaded one that accepts (GetLoad), e.g. SVPL_MEDIA_ADDRESSES='["10.0.0.5:50054"]'.
    media_addresses: list[str] = Field(default_factory=list)
    # Or/and a DNS name whose every address is one media instance, resolved at each placement
    # (Kubernetes: the media pods' headless Service, e.g. "svpl-media-pods:50054"). When set,
    # media_address (a load-balanced Service) is not used for placement.
    media_pods_dns: str = ""
    # At each admission the room's instance is asked for the room (GetRoomState) within this long;
    # no answer (UNAVAILABLE / DEADLINE_EXCEEDED) or a lost room moves the room to another instance.
    media_check_seconds: float = Field(1.5, gt=0, le=10)
    # After such a move, the instance left behind is asked to release its copy of the room (one
    # that was only slow still carries participants); one that never answers is given up on after this.
    left_room_release_seconds: float = Field(600.0, gt=0)
    # Random digits in a dial-in meeting ID (a Luhn check digit is appended, to catch typos).
    dial_in_code_digits: int = Field(9, ge=6, le=15)
    # Personal dial-in codes (meeting ID + code enters as that person): the secret they are derived
    # with (from a Secret, >= 32 characters; empty: personal codes are off and phone callers wait
    # for the coordinator), their length, and the wrong codes a meeting takes before it accepts none.
    # docs/DIALIN.md shows why 8 digits and 20 make guessing hopeless.
    personal_code_key: str = ""
    personal_code_digits: int = Field(8, ge=6, le=12)
    personal_code_max_wrong_per_meeting: int = Field(20, ge=1, le=1000)
    # Lifetime of a join token: only long enough to reach media and negotiate.
    join_token_ttl_seconds: int = Field(120, ge=10, le=3600)
    # A meeting never ended is ended automatically this long after its booked end.
    auto_close_after_seconds: float = Field(2 * 3600, ge=0)
    # How often the background task looks for such meetings (and unfinished clean-ups).
    auto_close_check_seconds: float = Field(60.0, gt=0)
    # 1177 e-services inbox API (next of kin get a message when registered): required unless switched
    # off (SVPL_INBOX_1177_ENABLED=false: those messages wait in the outbox, counted in
    # svpl_outbox_undeliverable_messages, until it is switched on).
    inbox_1177_enabled: bool = True
    # 1177 inbox (next of kin get a message when registered): AddMessage 2.0 over the national service
    # platform (NTjP). The platform's address for the contract, e.g. https://<ntjp>/vp/AddMessage/2/rivtabp21.
    inbox_1177_url: str = ""
    # Mutual TLS: the platform knows svpl by this client certificate (a SITHS function certificate, PEM,
    # from a Secret) and its key; only inbox_1177_ca_file (empty: the system store) is trusted for the platform.
    inbox_1177_client_cert_file: str = ""
    inbox_1177_client_key_file: str = ""
    inbox_1177_ca_file: str = ""
    # The 1177 inbox producer's logical address (RIV-TA BP 2.1 LogicalAddress header).
    inbox_1177_logical_address: str = "5565594230"
    inbox_1177_timeout_seconds: float = Field(10.0, gt=0)
    outbox_poll_seconds: float = Field(1.0, gt=0)
    # Retries of a failed delivery wait about base * 2**(attempt-1) seconds (with jitter), at most the cap.
    outbox_retry_base_seconds: float = Field(1.0, gt=0)
    outbox_retry_cap_seconds: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _integrations(self):
        if self.personal_code_key and len(self.personal_code_key) < 32:
            raise ValueError(f"{env_name('personal_code_key')} must be at least 32 characters (or empty: no personal codes)")
        if not self.portal_base_url.startswith(("https://", "http://")):
            raise ValueError(f"{env_name('portal_base_url')} is required: the portal's public URL (https://...), "
                             "which every invitation and 1177 message links to")
        require_integration(self, "inbox_1177_enabled", "inbox_1177_url", "inbox_1177_client_cert_file",
                            "inbox_1177_client_key_file",
                            then="next of kin's 1177 messages wait in the outbox until it is switched on")
        return self

    @property
    def media_instances(self) -> list[str]:
        return list(self.media_addresses) or ([] if self.media_pods_dns else [self.media_address])
