"""Roster's business metrics, on the runtime's metrics port (the default registry).

Labels are outcomes and state names only: never a person, never a meeting.
"""

from __future__ import annotations

from prometheus_client import Counter

ADMISSIONS = Counter(
    "svpl_roster_admissions_total",
    "Requests to join a meeting, by outcome (admitted, or the AdmitRefusal name).",
    ["outcome"],
)
MEETINGS_FINISHED = Counter(
    "svpl_roster_meetings_finished_total",
    "Meetings that reached a final state, by state and by whom (coordinator, booking, auto_close).",
    ["state", "by"],
)
REMOVALS = Counter(
    "svpl_roster_removals_total",
    "Participants or unidentified connections removed from meetings, by kind.",
    ["kind"],
)
ROOMS_MOVED = Counter(
    "svpl_roster_rooms_moved_total",
    "Live rooms placed on another media instance because theirs stopped answering or lost the room.",
)
PERSONAL_CODES = Counter(
    "svpl_roster_personal_code_entries_total",
    "Personal codes keyed by phone callers, by result (identified, wrong, or the refusal's reason: "
    "PERSONAL_CODES_LOCKED, ALREADY_CONNECTED, ADMIT_REFUSAL_REMOVED, ...).",
    ["result"],
)
