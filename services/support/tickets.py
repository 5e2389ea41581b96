"""Fault reports and the support desk's tickets: the use cases (plain Python, no gRPC types).

The ticket and its changes are model.py, the report's checks reports.py, storage store.py; this
module says who may do what, in which order the parts move, and what is access-logged.

Filing a report: the input is checked against the caller, routed by the region's
table, and the ticket is written with j:true *before* anything else happens (so a
restart mid-request loses nothing); then evidence is gathered from roster and media
and a rebook request sent to booking, each written back durably. A retry with the same
idempotency key returns the same ticket (and finishes what a restart cut short);
a periodic sweep finishes what nobody retried.

Ticket states: new, assigned, escalated, waiting, resolved, closed. Every change is a
history entry (who, when, from/to queue, from/to state, text); an invalid transition
is FAILED_PRECONDITION. Changes are optimistic (a version field), so two desk members
acting at once never lose one another's history entries.

Desk scope (services/support/desk_scope.py, from the routing table's staffed_by): a desk
member lists, reads and works only tickets in the queues they staff - the region's desk the
region's queues, a municipality's IT its own staff's tickets in "your own workplace IT".
Listing filters in the database (paging stays right); a ticket outside the caller's queues
is PERMISSION_DENIED (reason NOT_YOUR_QUEUE). The reporter (and whoever filed it) keeps
reading and commenting on their own ticket; the desk a ticket was escalated from keeps
reading it. A self-reporter's name and organisation are their login's (the organisation decides
which desk sees it); only the desk filing for someone else names them.

Evidence and rebook requests are for the reporter's own meeting only: roster decides (on the
reporter's behalf) and answers a nonexistent meeting and someone else's alike (services/support/peers.py).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable

from pymongo.errors import DuplicateKeyError

from services.runtime import auth, paging
from services.runtime.access_log import AccessLog
from services.runtime.errors import Aborted, InvalidArgument, PermissionDenied, Unavailable
from services.runtime.fanout import FanOuts, Lagging, SourceEnded
from services.support import metrics, model
from services.support.desk_scope import NOT_YOUR_QUEUE, DeskScope, is_desk, landing_queue, org_key, scope_of
from services.support.model import MAX_TEXT, SETTABLE_STATES, STATES, Actor, Progress, Rebook, Ticket, TicketState
from services.support.peers import Peers
from services.support.reports import PublicReport, Report, public_reporter, reporter_for
from services.support.routing_table import PROBLEM_KINDS, RoutingTable
from services.support.store import TicketStore

log = logging.getLogger("svpl.support.tickets")

# Older than this no ticket can be (and now() minus more overflows a datetime).
MAX_AGE_SECONDS = 100 * 365 * 24 * 3600

__all__ = ["MAX_TEXT", "PublicReport", "Report", "Tickets"]


def actor(who: auth.Caller) -> Actor:
    return Actor(who.actor(), who.name, is_desk(who))


def _is_reporter(t: Ticket, who: auth.Caller) -> bool:
    """The reporter, or whoever filed the ticket for them."""
    return who.is_person and t.filed_by_or_for(who.actor())


class Tickets:
    def __init__(self, db, routing: RoutingTable, peers: Peers, access_log: AccessLog,
                 description_max_chars: int = MAX_TEXT, watch_db=None) -> None:
        self.store = TicketStore(db, watch_db)
        # One change stream of the tickets per process, shared by every open desk page (runtime.fanout).
        self._changes: FanOuts[Ticket | None] = FanOuts(name="svpl-support-feed", errors=(Unavailable,))
        self.routing = routing
        self._peers = peers
        self._access = access_log
        self._max_description = description_max_chars

    async def ensure_indexes(self) -> None:
        await self.store.ensure_indexes()

    # ------------------------------------------------------------------ filing

    async def file_report(self, report: Report, who: auth.Caller) -> Ticket:
        reporter = reporter_for(report, who, self._max_description)
        route = self.routing.route(reporter.kind, report.problem)
        queue = landing_queue(self.routing, route.queue, reporter.organization)
        filed_text = f"Till {route.queue.name}"  # the rule id is kept on the ticket (rule_id), not shown
        if queue is not route.queue:
            filed_text += f"; ingen organisation angiven, därför till {queue.name}"
        fingerprint = hashlib.sha256(
            json.dumps([reporter.to_doc(), dataclasses.asdict(report) | {"idempotency_key": ""}],
                       sort_keys=True).encode()
        ).hexdigest()
        ticket_id = uuid.uuid4().hex
        idem = f"{who.actor()}|{report.idempotency_key}" if report.idempotency_key else f"id|{ticket_id}"
        if report.idempotency_key:
            existing = await self.store.by_idem(idem)
            if existing:
                return await self._replay(existing, fingerprint)
        ticket = model.filed(
            ticket_id, idem, fingerprint, reporter, actor(who), problem=report.problem,
            description=report.description.strip(), meeting_id=report.meeting_id,
            participant_id=report.participant_id, queue_id=queue.id, org_key=org_key(reporter.organization),
            rule_id=route.rule_id, filed_text=filed_text, rebook=report.request_rebook, at=model.now())
        try:
            # j:true (the collection's write concern): on disk before anything else happens.
            await self._insert(ticket)
        except DuplicateKeyError:  # a concurrent retry with the same key won the insert
            existing = await self.store.by_idem(idem)
            if existing is None:
                raise Aborted("the report was filed concurrently; retry") from None
            return await self._replay(existing, fingerprint)
        log.info("ticket %s filed: %s -> %s (rule %s)", ticket_id, report.problem, queue.id, route.rule_id)
        return await self._follow_up(ticket) if ticket.followup else ticket

    async def _insert(self, ticket: Ticket) -> None:
        """Insert; a short number another ticket already has (40 random bits: rare) is drawn again.
        Any other duplicate (the idempotency key) is the caller's to handle."""
        for _ in range(5):
            try:
                await self.store.insert(ticket)
                return
            except DuplicateKeyError as exc:
                if "number" not in ((exc.details or {}).get("keyPattern") or {}):
                    raise
                ticket.number = model.new_number()
        raise Aborted("could not allocate a unique ticket number; try again")

    async def file_public_report(self, report: PublicReport, who: auth.Caller) -> Ticket:
        """A report from the public page (no login; the gateway calls): routed by the table like any
        report, with no meeting, evidence or rebook request, whatever it says."""
        reporter = public_reporter(report, self.routing, self._max_description)
        route = self.routing.route(reporter.kind, report.problem)
        queue = landing_queue(self.routing, route.queue, reporter.organization)
        at, ticket_id = model.now(), uuid.uuid4().hex
        by = Actor(who.actor(), "Felanmälan utan inloggning")
        ticket = model.filed(
            ticket_id, f"id|{ticket_id}", "", reporter, by, problem=report.problem,
            description=report.description.strip(), meeting_id="", participant_id="", queue_id=queue.id,
            org_key=org_key(reporter.organization), rule_id=route.rule_id,
            filed_text=f"Till {queue.name} (anmäld utan inloggning)", rebook=False, at=at)
        ticket.public, ticket.dial_in_code = True, report.dial_in_code
        await self._insert(ticket)
        log.info("public ticket %s filed: %s -> %s (rule %s)", ticket_id, report.problem, queue.id, route.rule_id)
        return ticket

    async def _replay(self, existing: Ticket, fingerprint: str) -> Ticket:
        if existing.fingerprint != fingerprint:
            raise InvalidArgument("idempotency_key", "already used for a different report")
        return await self._follow_up(existing) if existing.followup else existing

    async def _follow_up(self, t: Ticket, late: bool = False) -> Ticket:
        """Gather evidence and send the rebook request, each written back durably.

        Both only for the reporter's own meeting: roster is asked first, on behalf of the reporter
        stored in the ticket (the caller, or whom the desk filed for; the sweep runs later, without
        a caller, so it is the stored reporter that counts), every time, so a reporter removed
        meanwhile gets no rebook. A meeting that does not exist and someone else's meeting give the
        same answer: no meeting data, the same note."""
        evidence: dict | None = None
        rebook: tuple[str, str] | None = None
        reporter = t.reporter
        if Progress.PENDING == t.evidence_status or Rebook.PENDING == t.rebook_status:
            facts = await self._peers.meeting_facts(t.meeting_id, reporter.id, reporter.id_kind)
        if t.evidence_status == Progress.PENDING:
            evidence = await self._peers.meeting_evidence(t.meeting_id, t.participant_id, facts)
            if late:
                evidence["note"] = "; ".join(filter(None, [
                    "Underlaget hämtades i efterhand (tjänsten startades om medan anmälan togs emot)",
                    evidence["note"]]))
        if t.rebook_status == Rebook.PENDING:
            rebook = await self._peers.request_rebook(
                t.meeting_id, f"Anslutningsproblem anmält: {t.description[:500]}", t.id, facts,
                reporter.id, reporter.id_kind, reporter.name)
        fresh, _ = await self.store.mutate(t.id, lambda x: model.record_follow_up(x, evidence, rebook))
        return self.store.as_stored(fresh)

    async def sweep(self, older_than: dt.timedelta) -> int:
        """Finish follow-ups nobody retried: cut short by a restart, or booking was away.
        Each ticket is claimed first (updated_at moves on), so replicas sweeping at once
        do not both take it."""
        done = 0
        cutoff = model.now() - older_than
        for ticket_id in await self.store.follow_ups_older_than(cutoff):
            t, claimed = await self.store.mutate(ticket_id, lambda x: model.claim_follow_up(x, cutoff, model.now()))
            if not claimed:  # another replica took it
                continue
            try:
                await self._follow_up(t, late=t.evidence_status == Progress.PENDING)
                done += 1
            except Exception:
                log.exception("follow-up of ticket %s failed", t.id)
        return done

    # ------------------------------------------------------------------ reading

    async def _load(self, ticket_id: str) -> Ticket:
        if not ticket_id:
            raise InvalidArgument("ticket_id", "required")
        return await self.store.get(ticket_id)

    async def _log_reads(self, tickets: list[Ticket], action: str) -> None:
        """A ticket holding patient data (a reporter identified by personnummer, a meeting's evidence)
        is access-logged on every read and every desk action, naming each patient concerned."""
        by_patient: dict[tuple[str, str], list[str]] = {}
        for t in tickets:
            for patient in t.patients():
                by_patient.setdefault((patient, t.care_unit), []).append(t.id)
        for (patient, care_unit), ids in by_patient.items():
            await self._access.record(action, patient, care_unit=care_unit,
                                      resource="tickets/" + ",".join(ids[:20]), purpose="support")

    def scope(self, who: auth.Caller) -> DeskScope:
        return scope_of(who, self.routing)

    async def get(self, ticket_id: str, who: auth.Caller) -> Ticket:
        t = await self._load(ticket_id)
        if not (_is_reporter(t, who) or self.scope(who).has_worked(t)):
            if is_desk(who):
                raise PermissionDenied(f"ticket {ticket_id} is not in a queue you staff", reason=NOT_YOUR_QUEUE)
            raise PermissionDenied("only the support desk of the ticket's queue and the reporter can read a ticket")
        await self._log_reads([t], "support.ticket.read")
        return t

    async def list(self, who: auth.Caller, queue_id: str = "", states: list[str] | None = None,
                   min_age_seconds: int = 0, page_size: int = 0, page_token: str = "",
                   problems: list[str] | None = None, oldest_first: bool = False,
                   number: str = "") -> tuple[list[Ticket], str]:
        """The caller's queues only (filtered in the database, so pages and tokens stay right)."""
        if queue_id and self.routing.queue(queue_id) is None:
            raise InvalidArgument("queue_id", f"no queue {queue_id!r} in the {self.routing.region} routing table")
        scope = self.scope(who)
        if scope.empty:
            raise PermissionDenied("you staff no support queue (a municipality's desk needs the organisation "
                                   "from the directory)", reason=NOT_YOUR_QUEUE)
        if queue_id and not scope.staffs_part_of(queue_id):
            raise PermissionDenied(f"you do not staff queue {queue_id}", reason=NOT_YOUR_QUEUE)
        if any(state not in STATES for state in states or ()):
            raise InvalidArgument("states", f"each one of {', '.join(STATES)}")
        if any(problem not in PROBLEM_KINDS for problem in problems or ()):
            raise InvalidArgument("problems", f"each one of {', '.join(PROBLEM_KINDS)}")
        if not 0 <= min_age_seconds <= MAX_AGE_SECONDS:
            raise InvalidArgument("min_age_seconds", f"between 0 and {MAX_AGE_SECONDS} (100 years)")
        wanted_number = model.normalised_number(number) if number else ""
        if number and not wanted_number:
            raise InvalidArgument("number", "a ticket number: eight letters and digits, like K7QM-2X9D")
        size = paging.page_size(page_size)
        states = list(dict.fromkeys(states or ()))
        problems = list(dict.fromkeys(problems or ()))
        query: dict = {"$and": [scope.query(queue_id)]}
        if states:
            query["$and"].append({"state": {"$in": states}})
        if problems:
            query["$and"].append({"problem": {"$in": problems}})
        if wanted_number:
            query["$and"].append({"number": wanted_number})
        if min_age_seconds:
            query["$and"].append({"created_at": {"$lte": model.now() - dt.timedelta(seconds=min_age_seconds)}})
        tickets, token = await self.store.page(
            query, query=(queue_id, tuple(states), min_age_seconds, tuple(problems), wanted_number), size=size,
            token=page_token, oldest_first=oldest_first)
        await self._log_reads(tickets, "support.ticket.list")
        return tickets, token

    async def list_mine(self, who: auth.Caller, page_size: int = 0,
                        page_token: str = "") -> tuple[builtins.list[Ticket], str]:
        """The caller's own reports (as the reporter, or filed by them), newest first."""
        if not who.is_person:
            raise PermissionDenied("only a person has reports of their own")
        query = {"$or": [{"reporter.id": who.id, "reporter.id_kind": who.id_kind}, {"filed_by": who.actor()}]}
        tickets, token = await self.store.page(query, query=("mine", who.actor()), size=paging.page_size(page_size),
                                               token=page_token)
        await self._log_reads(tickets, "support.ticket.list_own")
        return tickets, token

    def reporter_only(self, t: Ticket, who: auth.Caller) -> bool:
        """Does the caller see this ticket as its reporter only (not as a desk that works or worked it)?
        Then the desk's internal comments are left out."""
        return not self.scope(who).has_worked(t)

    async def watch(self, who: auth.Caller) -> AsyncIterator[Ticket | None]:
        """None once watching, then each changed ticket the caller works or worked (desk scope) or
        reported; nobody else's."""
        scope = self.scope(who)
        feed = self._changes.get("tickets", lambda: (self.store.changes(), None))
        try:
            # A page that joins the open stream starts at "watching" (None), not at someone's ticket.
            async with contextlib.aclosing(feed.items(snapshot=lambda _latest: None)) as changes:
                async for t in changes:
                    if t is None or scope.has_worked(t) or _is_reporter(t, who):
                        yield t
        except (SourceEnded, Lagging):
            raise Unavailable("the tickets' change stream ended or fell behind; watch again") from None

    # ------------------------------------------------------------------ the desk's changes

    async def _change(self, ticket_id: str, who: auth.Caller, change: Callable[[Ticket], bool],
                      action: str) -> Ticket:
        """Apply a change (it returns whether it was the desk's first response) as one versioned write;
        access-logged like a read when the ticket holds patient data."""
        t, first = await self.store.mutate(_required(ticket_id), change)
        if first:
            entry = t.history[-1]
            metrics.FIRST_RESPONSE.labels(entry.from_queue or t.queue_id).observe(
                max(0.0, (entry.at - t.created_at).total_seconds()))
        await self._log_reads([t], action)
        return t

    async def assign(self, ticket_id: str, assignee: str, who: auth.Caller) -> Ticket:
        assignee = assignee.strip() or who.id
        if len(assignee) > 64:
            raise InvalidArgument("assignee", "at most 64 characters")
        scope, by = self.scope(who), actor(who)

        def change(t: Ticket) -> bool:
            scope.require_works(t)
            return model.assign(t, assignee, by, model.now())

        return await self._change(ticket_id, who, change, "support.ticket.assign")

    async def take(self, ticket_id: str, who: auth.Caller) -> Ticket:
        """Assign to the caller only if no one else has it (one versioned change: see model.take)."""
        scope, by = self.scope(who), actor(who)

        def change(t: Ticket) -> bool:
            scope.require_works(t)
            return model.take(t, by, model.now())

        return await self._change(ticket_id, who, change, "support.ticket.take")

    async def comment(self, ticket_id: str, text: str, who: auth.Caller, internal: bool = False) -> Ticket:
        text = model.text("text", text, "write something")
        scope, by = self.scope(who), actor(who)

        def change(t: Ticket) -> bool:
            works = scope.works(t)
            if not works and not _is_reporter(t, who):
                if not is_desk(who):
                    raise PermissionDenied("only the support desk and the reporter can comment on a ticket")
                scope.require_works(t)
            if internal and not works:
                raise InvalidArgument("internal", "only the desk of the ticket's queue writes internal notes")
            return model.comment(t, text, by, model.now(), internal=internal)

        return await self._change(ticket_id, who, change, "support.ticket.comment")

    async def escalate(self, ticket_id: str, reason: str, who: auth.Caller) -> Ticket:
        """Municipality IT: not the municipality's fault -> the queue it escalates to (region IT)."""
        reason = model.text("reason", reason, "say what was checked: why it is not the municipality's fault")
        scope, by = self.scope(who), actor(who)

        def change(t: Ticket) -> bool:
            scope.require_works(t)
            queue = self.routing.queue(t.queue_id)
            return model.escalate(t, queue.escalates_to if queue else None, reason, by, model.now())

        fresh = await self._change(ticket_id, who, change, "support.ticket.escalate")
        entry = fresh.history[-1]
        metrics.ESCALATIONS.labels(entry.from_queue, entry.to_queue).inc()
        return fresh

    async def change_state(self, ticket_id: str, state: str, note: str, who: auth.Caller) -> Ticket:
        if state not in SETTABLE_STATES:
            raise InvalidArgument("state", "waiting, resolved or closed (assign and escalate have their own calls)")
        note = model.text("note", note)
        scope, by = self.scope(who), actor(who)

        def change(t: Ticket) -> bool:
            scope.require_works(t)
            return model.change_state(t, TicketState(state), note, by, model.now())

        return await self._change(ticket_id, who, change, "support.ticket.state")

    # ------------------------------------------------------------------ metrics

    async def refresh_gauge(self) -> None:
        """Open tickets per queue and state, and the age of each queue's oldest ticket still waiting for
        the desk, from the database; every known queue x open state is set."""
        counts = await self.store.open_counts()
        queues = {q.id for q in self.routing.queues} | {q for q, _ in counts}
        for q in queues:
            for s in model.OPEN_STATES:
                metrics.OPEN_TICKETS.labels(q, s).set(counts.get((q, s), 0))
        oldest, now = await self.store.oldest_waiting(), model.now()
        for q in queues | set(oldest):
            since = oldest.get(q)
            age = (now - since.replace(tzinfo=dt.timezone.utc)).total_seconds() if since else 0.0
            metrics.OLDEST_OPEN_AGE.labels(q).set(max(0.0, age))


def _required(ticket_id: str) -> str:
    if not ticket_id:
        raise InvalidArgument("ticket_id", "required")
    return ticket_id
