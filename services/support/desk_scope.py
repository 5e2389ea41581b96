"""The support desk's scope: which tickets a desk member sees and works, from the routing
table's `staffed_by` (plain Python, no gRPC types).

- A queue staffed_by "region" is worked by every desk member employed by the region
  (roles support_desk + region_staff).
- A queue staffed_by "reporter_organization" ("your own workplace IT") is worked, ticket by
  ticket, by desk members (support_desk) whose organisation is the reporter's. Organisations
  are compared by `org_key` (case and spacing ignored; stored on the ticket when filed, so
  the listing filters in the database and paging stays right). No organisation matches nothing.

A desk member *works* a ticket (GetTicket, AssignTicket, CommentTicket, EscalateTicket,
ChangeTicketState; it is in their ListTickets) when they staff its current queue. After an
escalation the desk it came from keeps *reading* it (GetTicket: the whole history, to follow
up with their own staff) but no longer works it or lists it. Anything else is PERMISSION_DENIED
(reason NOT_YOUR_QUEUE); ticket ids are random (uuid4), so refusing rather than NOT_FOUND
reveals nothing guessable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.runtime import auth
from services.runtime.errors import PermissionDenied
from services.support.model import Ticket
from services.support.routing_table import STAFFED_BY_REGION, STAFFED_BY_REPORTER_ORGANIZATION, QueueSpec, RoutingTable

NOT_YOUR_QUEUE = "NOT_YOUR_QUEUE"


def org_key(organization: str) -> str:
    """"Jönköpings  Kommun " and "jönköpings kommun" are one organisation."""
    return " ".join(organization.split()).casefold()


@dataclass(frozen=True)
class DeskScope:
    """What one caller staffs: whole queues, and queues staffed for their own organisation's reporters."""

    whole: frozenset[str] = frozenset()
    own_organization: frozenset[str] = frozenset()
    org: str = ""  # the caller's org_key ("" = none)

    @property
    def empty(self) -> bool:
        return not self.whole and not self.own_organization

    def staffs_part_of(self, queue_id: str) -> bool:
        return queue_id in self.whole or queue_id in self.own_organization

    def query(self, queue_id: str = "") -> dict[str, Any]:
        """The database filter for the tickets this caller works (optionally in one queue)."""
        clauses: list[dict[str, Any]] = []
        whole = [q for q in sorted(self.whole) if not queue_id or q == queue_id]
        own = [q for q in sorted(self.own_organization) if not queue_id or q == queue_id]
        if whole:
            clauses.append({"queue_id": {"$in": whole}})
        if own:
            clauses.append({"queue_id": {"$in": own}, "org_key": self.org})
        if not clauses:
            return {"queue_id": {"$in": []}}
        return clauses[0] if len(clauses) == 1 else {"$or": clauses}

    def staffs(self, queue_id: str, ticket: Ticket) -> bool:
        """Does this caller staff `queue_id` for this ticket?"""
        if queue_id in self.whole:
            return True
        return queue_id in self.own_organization and ticket.org_key == self.org

    def works(self, ticket: Ticket) -> bool:
        return self.staffs(ticket.queue_id, ticket)

    def has_worked(self, ticket: Ticket) -> bool:
        """Staffs the ticket's current queue or a queue it was escalated from."""
        return any(self.staffs(q, ticket) for q in {ticket.queue_id} | ticket.escalated_from())

    def require_works(self, ticket: Ticket) -> None:
        """Refused unless the caller staffs the ticket's current queue."""
        if not self.works(ticket):
            raise PermissionDenied(f"ticket {ticket.id} is not in a queue you staff", reason=NOT_YOUR_QUEUE)


def is_desk(who: auth.Caller) -> bool:
    return who.is_person and who.has_role(auth.ROLE_SUPPORT_DESK)


def scope_of(who: auth.Caller, routing: RoutingTable) -> DeskScope:
    if not is_desk(who):
        return DeskScope()
    org = org_key(who.organization)
    region = who.has_role(auth.ROLE_REGION_STAFF)
    return DeskScope(
        whole=frozenset(q.id for q in routing.queues if q.staffed_by == STAFFED_BY_REGION and region),
        own_organization=frozenset(
            q.id for q in routing.queues if q.staffed_by == STAFFED_BY_REPORTER_ORGANIZATION and org),
        org=org,
    )


def landing_queue(routing: RoutingTable, queue: QueueSpec, organization: str) -> QueueSpec:
    """Where a report routed to `queue` lands: a reporter without an organisation cannot reach
    "your own workplace IT" (no desk would ever see it), so it goes where that queue escalates
    to, else to the default queue (which validation keeps staffed by the region)."""
    if queue.staffed_by != STAFFED_BY_REPORTER_ORGANIZATION or org_key(organization):
        return queue
    target = routing.queue(queue.escalates_to) if queue.escalates_to else None
    if target is None or target.staffed_by == STAFFED_BY_REPORTER_ORGANIZATION:
        target = routing.defined_queue(routing.default_queue)
    return target
