"""Support's business metrics, on the runtime's metrics port (the default registry).

Labels are queue ids and state names only: never a person, never a ticket.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OPEN_TICKETS = Gauge(
    "svpl_support_open_tickets",
    "Tickets not closed, by queue and state (refreshed from the database).",
    ["queue", "state"],
)
FIRST_RESPONSE = Histogram(
    "svpl_support_first_response_seconds",
    "Time from a report being filed to the support desk's first action on it, by queue.",
    ["queue"],
    buckets=(60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600, 72 * 3600),
)
ESCALATIONS = Counter(
    "svpl_support_escalations_total",
    "Tickets escalated (municipality IT -> region IT), by from and to queue.",
    ["from_queue", "to_queue"],
)
OLDEST_OPEN_AGE = Gauge(
    "svpl_support_oldest_open_ticket_age_seconds",
    "Age of the oldest ticket not resolved or closed, by queue (0: none open; refreshed from the database).",
    ["queue"],
)
