from pydantic import Field

from services.runtime.config import ServiceSettings


class SupportSettings(ServiceSettings):
    service_name: str = "support"
    grpc_port: int = Field(50055, ge=0, le=65535)
    # The routing table: SVPL_SUPPORT_ROUTING_FILE if set, else services/support/routing/<SVPL_REGION>.yaml.
    support_routing_file: str = ""
    # Longest description a report may carry (characters).
    support_description_max_chars: int = Field(4000, ge=100, le=100_000)
    # How long a report waits for roster / media / booking while gathering evidence.
    support_evidence_timeout_seconds: float = Field(3.0, gt=0, le=60)
    # How often the open-tickets gauge is refreshed from the database and unfinished
    # follow-ups (evidence cut off by a restart, rebook requests booking did not take) are retried.
    support_sweep_seconds: float = Field(15.0, gt=0)
    # Database connections for the desk's live change feed (WatchTickets: one change stream per
    # replica, shared by its open desk pages), separate from the pool that reads and writes use.
    watch_pool_size: int = Field(4, ge=1)
