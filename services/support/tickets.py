"""Fault reports and the support desk's tickets: plain Python (no gRPC types) over MongoDB.

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

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import uuid
from dataclasses import asdict, dataclass

from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.runtime import auth, names
from services.runtime.access_log import AccessLog
from services.runtime.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.runtime.mongo import DURABLE
from services.support import metrics
from services.support.desk_scope import NOT_YOUR_QUEUE, DeskScope, landing_queue, org_key, scope_of
from services.support.peers import REBOOK_PENDING, Peers
from services.support.routing_table import PROBLEM_KINDS, REPORTER_KINDS, RoutingTable

log = logging.getLogger("svpl.support.tickets")

STATES = ("new", "assigned", "escalated", "waiting", "resolved", "closed")
OPEN_STATES = STATES[:-1]
# Which state a ticket may move to from each state (closed is final).
TRANSITIONS: dict[str, frozenset[str]] = {
    "new": frozenset({"assigned", "escalated", "waiting", "resolved", "closed"}),
    "assigned": frozenset({"assigned", "escalated", "waiting", "resolved", "closed"}),
    "escalated": frozenset({"assigned", "waiting", "resolved", "closed"}),
    "waiting": frozenset({"assigned", "escalated", "resolved", "closed"}),
    "resolved": frozenset({"assigned", "closed"}),  # reopened by assigning it again
    "closed": frozenset(),
}
# ChangeTicketState may set these; assigning and escalating have their own RPCs.
SETTABLE_STATES = frozenset({"waiting", "resolved", "closed"})

PENDING, DONE, NONE = "pending", "done", "none"
MAX_TEXT = 4000
MAX_PAGE, DEFAULT_PAGE = 500, 50
_HSA_ID = re.compile(r"^SE[0-9]{10}-[A-Za-z0-9]+$")
_PNR12 = re.compile(r"^[0-9]{12}$")
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def now() -> dt.datetime:
    t = dt.datetime.now(dt.timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)  # the database keeps milliseconds


@dataclass(frozen=True)
class Report:
    """A fault report as the caller sent it (strings for kinds; "" = not given)."""

    problem: str
    description: str
    reporter_name: str = ""
    reporter_id: str = ""
    reporter_id_kind: str = ""  # hsa_id | personnummer
    reporter_kind: str = ""  # "" = from the caller's login
    organization: str = ""
    contact: str = ""
    meeting_id: str = ""
    participant_id: str = ""
    request_rebook: bool = False
    idempotency_key: str = ""


def _kind_from_login(who: auth.Caller) -> str:
    if who.has_role(auth.ROLE_MUNICIPALITY_STAFF):
        return "municipality_staff"
    if who.has_role(auth.ROLE_REGION_STAFF):
        return "region_staff"
    return "citizen" if who.id_kind == "personnummer" or who.has_role(auth.ROLE_CITIZEN) else "external_actor"


def _kind_fits_login(kind: str, who: auth.Caller) -> bool:
    if kind == "municipality_staff":
        return who.has_role(auth.ROLE_MUNICIPALITY_STAFF)
    if kind == "region_staff":
        return who.has_role(auth.ROLE_REGION_STAFF)
    if kind == "citizen":
        return who.id_kind == "personnummer" or who.has_role(auth.ROLE_CITIZEN)
    # External actors (e.g. Försäkringskassan) log in with BankID, 1177 or their own SITHS card.
    return True


def is_desk(who: auth.Caller) -> bool:
    return who.is_person and who.has_role(auth.ROLE_SUPPORT_DESK)


def _is_reporter(doc: dict, who: auth.Caller) -> bool:
    """The reporter, or whoever filed the ticket for them."""
    return who.is_person and who.actor() in (doc["reporter"].get("id"), doc["filed_by"])


class Tickets:
    def __init__(self, db, routing: RoutingTable, peers: Peers, access_log: AccessLog,
                 description_max_chars: int = MAX_TEXT) -> None:
        self._tickets = db.get_collection("tickets", write_concern=DURABLE)
        self.routing = routing
        self._peers = peers
        self._access = access_log
        self._max_description = description_max_chars

    async def ensure_indexes(self) -> None:
        await self._tickets.create_index([("idem", ASCENDING)], unique=True)
        await self._tickets.create_index([("queue_id", ASCENDING), ("state", ASCENDING), ("created_at", DESCENDING)])
        await self._tickets.create_index([("created_at", DESCENDING), ("_id", DESCENDING)])
        # A municipality desk's listing: its organisation's tickets, newest first.
        await self._tickets.create_index([("org_key", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)])
        await self._tickets.create_index([("followup", ASCENDING)])
        await self._access.ensure_indexes()

    # ------------------------------------------------------------------ filing

    def _check(self, report: Report, who: auth.Caller) -> dict:
        """The reporter as stored, after checking the report against the caller."""
        if report.problem not in PROBLEM_KINDS:
            raise InvalidArgument("problem", f"must be one of {', '.join(PROBLEM_KINDS)}")
        description = report.description.strip()
        if not description:
            raise InvalidArgument("description", "describe the problem")
        if len(description) > self._max_description:
            raise InvalidArgument("description", f"at most {self._max_description} characters")
        if report.participant_id and not report.meeting_id:
            raise InvalidArgument("participant_id", "a participant needs the meeting_id it belongs to")
        if report.request_rebook and report.problem != "connection":
            raise InvalidArgument("request_rebook", "only a connection problem can ask for a rebooking")
        if report.request_rebook and not report.meeting_id:
            raise InvalidArgument("meeting_id", "a rebook request needs the meeting")
        if report.idempotency_key and not _KEY.match(report.idempotency_key):
            raise InvalidArgument("idempotency_key", "1-128 characters of A-Z a-z 0-9 . _ : -")
        for name, value in (("reporter.name", report.reporter_name), ("reporter.organization", report.organization),
                            ("reporter.contact", report.contact), ("meeting_id", report.meeting_id),
                            ("participant_id", report.participant_id)):
            if len(value) > 200:
                raise InvalidArgument(name, "at most 200 characters")
        if report.reporter_kind and report.reporter_kind not in REPORTER_KINDS:
            raise InvalidArgument("reporter.kind", f"must be one of {', '.join(REPORTER_KINDS)}")

        on_behalf = bool(report.reporter_id) and report.reporter_id != who.id
        if on_behalf and not is_desk(who):
            raise PermissionDenied("you can only report as yourself: the reporter's ID must be your own",
                                   reason="NOT_OWN_REPORT")
        if on_behalf:  # the support desk files for someone who called in
            if report.reporter_id_kind == "hsa_id" and not (_HSA_ID.match(report.reporter_id)
                                                            and len(report.reporter_id) <= 31):
                raise InvalidArgument("reporter.person.id", "not an HSA-id (SE + 10 digits + - + letters/digits)")
            if report.reporter_id_kind == "personnummer" and not _PNR12.match(report.reporter_id):
                raise InvalidArgument("reporter.person.id", "a personnummer normalised to 12 digits")
            if report.reporter_id_kind not in ("hsa_id", "personnummer"):
                raise InvalidArgument("reporter.person.id_kind", "say whether the ID is an HSA-id or a personnummer")
            if not report.reporter_kind:
                raise InvalidArgument("reporter.kind", "say who the reporter is when filing on their behalf")
            return {"name": names.checked("reporter.name", report.reporter_name),
                    "id": report.reporter_id, "id_kind": report.reporter_id_kind, "kind": report.reporter_kind,
                    "organization": names.checked("reporter.organization", report.organization, required=False),
                    "contact": names.checked("reporter.contact", report.contact, required=False)}
        if not who.is_person:
            raise PermissionDenied("a service cannot file a report as itself")
        kind = report.reporter_kind or _kind_from_login(who)
        if not _kind_fits_login(kind, who) and not is_desk(who):
            raise InvalidArgument("reporter.kind", f"{kind} does not match how you logged in")
        # Reporting as yourself, you are who your login says: name and organisation come from the
        # session token (the directory), never from the request. The organisation decides which desk
        # sees the ticket. A value that says otherwise is refused, naming the field (leave it empty).
        name = report.reporter_name.strip()
        if name and org_key(name) != org_key(who.name):
            raise InvalidArgument("reporter.name", "you report as yourself: your name is taken from your login "
                                                   "(only the support desk names someone else)")
        organization = report.organization.strip()
        if organization and org_key(organization) != org_key(who.organization):
            if who.organization:
                raise InvalidArgument("reporter.organization", f"you are logged in as staff of {who.organization}; "
                                                               "report as yourself from there")
            raise InvalidArgument("reporter.organization",
                                  "your login names no organisation: leave it empty (only the support desk names one)")
        return {"name": who.name, "id": who.id, "id_kind": who.id_kind, "kind": kind,
                "organization": who.organization,
                "contact": names.checked("reporter.contact", report.contact, required=False)}

    async def file_report(self, report: Report, who: auth.Caller) -> dict:
        reporter = self._check(report, who)
        route = self.routing.route(reporter["kind"], report.problem)
        queue = landing_queue(self.routing, route.queue, reporter["organization"])
        filed_text = f"Regel {route.rule_id}: {route.queue.name}"
        if queue is not route.queue:
            filed_text += f"; ingen organisation angiven, därför till {queue.name}"
        fingerprint = hashlib.sha256(
            json.dumps([reporter, asdict(report) | {"idempotency_key": ""}], sort_keys=True).encode()
        ).hexdigest()
        ticket_id = uuid.uuid4().hex
        idem = f"{who.actor()}|{report.idempotency_key}" if report.idempotency_key else f"id|{ticket_id}"
        if report.idempotency_key:
            existing = await self._tickets.find_one({"idem": idem})
            if existing:
                return await self._replay(existing, fingerprint)
        at = now()
        wants_evidence = bool(report.meeting_id)
        doc = {
            "_id": ticket_id,
            "idem": idem,
            "fingerprint": fingerprint,
            "version": 0,
            "reporter": reporter,
            "filed_by": who.actor(),
            "problem": report.problem,
            "description": report.description.strip(),
            "meeting_id": report.meeting_id,
            "participant_id": report.participant_id,
            "state": "new",
            "queue_id": queue.id,
            "org_key": org_key(reporter["organization"]),
            "rule_id": route.rule_id,
            "assignee": "",
            "evidence": None,
            "evidence_status": PENDING if wants_evidence else NONE,
            "rebook_status": PENDING if report.request_rebook else NONE,
            "rebook_note": "",
            "followup": wants_evidence or report.request_rebook,
            "created_at": at,
            "updated_at": at,
            "first_response_at": None,
            "history": [_entry(at, who, "filed", to_queue=queue.id, to_state="new", text=filed_text)],
        }
        try:
            # j:true (the collection's write concern): on disk before anything else happens.
            await self._tickets.insert_one(doc)
        except DuplicateKeyError:  # a concurrent retry with the same key won the insert
            existing = await self._tickets.find_one({"idem": idem})
            if existing is None:
                raise Aborted("the report was filed concurrently; retry") from None
            return await self._replay(existing, fingerprint)
        log.info("ticket %s filed: %s -> %s (rule %s)", ticket_id, report.problem, queue.id, route.rule_id)
        return await self._follow_up(doc) if doc["followup"] else doc

    async def _replay(self, existing: dict, fingerprint: str) -> dict:
        if existing.get("fingerprint") != fingerprint:
            raise InvalidArgument("idempotency_key", "already used for a different report")
        return await self._follow_up(existing) if existing.get("followup") else existing

    async def _follow_up(self, doc: dict, late: bool = False) -> dict:
        """Gather evidence and send the rebook request, each written back durably.

        Both only for the reporter's own meeting: roster is asked first, on behalf of the reporter
        stored in the ticket (the caller, or whom the desk filed for; the sweep runs later, without
        a caller, so it is the stored reporter that counts), every time, so a reporter removed
        meanwhile gets no rebook. A meeting that does not exist and someone else's meeting give the
        same answer: no meeting data, the same note."""
        update: dict = {}
        rebook_status = doc["rebook_status"]
        reporter = doc["reporter"]
        if PENDING in (doc["evidence_status"], rebook_status):
            facts = await self._peers.meeting_facts(doc["meeting_id"], reporter.get("id", ""),
                                                    reporter.get("id_kind", ""))
        if doc["evidence_status"] == PENDING:
            evidence = await self._peers.meeting_evidence(doc["meeting_id"], doc["participant_id"], facts)
            if late:
                evidence["note"] = "; ".join(filter(None, [
                    "Underlaget hämtades i efterhand (tjänsten startades om medan anmälan togs emot)",
                    evidence["note"]]))
            update.update(evidence=evidence, evidence_status=DONE)
        if rebook_status == PENDING:
            rebook_status, note = await self._peers.request_rebook(
                doc["meeting_id"], f"Anslutningsproblem anmält: {doc['description'][:500]}", doc["_id"], facts,
                reporter.get("id", ""), reporter.get("id_kind", ""))
            update.update(rebook_status=rebook_status, rebook_note=note)
        update["followup"] = rebook_status == REBOOK_PENDING
        fresh = await self._tickets.find_one_and_update(
            {"_id": doc["_id"]}, {"$set": update}, return_document=ReturnDocument.AFTER)
        return fresh or doc

    async def sweep(self, older_than: dt.timedelta) -> int:
        """Finish follow-ups nobody retried: cut short by a restart, or booking was away.
        Each ticket is claimed first (updated_at moves on), so replicas sweeping at once
        do not both take it."""
        done = 0
        cutoff = now() - older_than
        async for candidate in self._tickets.find({"followup": True, "updated_at": {"$lt": cutoff}}, {"_id": 1}):
            doc = await self._tickets.find_one_and_update(
                {"_id": candidate["_id"], "followup": True, "updated_at": {"$lt": cutoff}},
                {"$set": {"updated_at": now()}})
            if doc is None:  # another replica took it
                continue
            try:
                await self._follow_up(doc, late=doc["evidence_status"] == PENDING)
                done += 1
            except Exception:  # noqa: BLE001 - one bad ticket must not stop the sweep
                log.exception("follow-up of ticket %s failed", doc["_id"])
        return done

    # ------------------------------------------------------------------ reading

    async def _load(self, ticket_id: str) -> dict:
        if not ticket_id:
            raise InvalidArgument("ticket_id", "required")
        doc = await self._tickets.find_one({"_id": ticket_id})
        if doc is None:
            raise NotFound(f"ticket {ticket_id} not found")
        return doc

    async def _log_reads(self, docs: list[dict], action: str) -> None:
        """A reporter identified by personnummer is patient data: each read is access-logged."""
        by_pnr: dict[str, list[str]] = {}
        for d in docs:
            if d["reporter"].get("id_kind") == "personnummer" and d["reporter"].get("id"):
                by_pnr.setdefault(d["reporter"]["id"], []).append(d["_id"])
        for pnr, ids in by_pnr.items():
            await self._access.record(action, pnr, resource="tickets/" + ",".join(ids[:20]),
                                      purpose="support")

    def scope(self, who: auth.Caller) -> DeskScope:
        return scope_of(who, self.routing)

    def _works(self, doc: dict, who: auth.Caller) -> None:
        """Refused unless the caller staffs the ticket's current queue."""
        if not self.scope(who).works(doc):
            raise PermissionDenied(f"ticket {doc['_id']} is not in a queue you staff", reason=NOT_YOUR_QUEUE)

    async def get(self, ticket_id: str, who: auth.Caller) -> dict:
        doc = await self._load(ticket_id)
        if not (_is_reporter(doc, who) or self.scope(who).has_worked(doc)):
            if is_desk(who):
                raise PermissionDenied(f"ticket {ticket_id} is not in a queue you staff", reason=NOT_YOUR_QUEUE)
            raise PermissionDenied("only the support desk of the ticket's queue and the reporter can read a ticket")
        await self._log_reads([doc], "support.ticket.read")
        return doc

    async def list(self, who: auth.Caller, queue_id: str = "", states: list[str] | None = None,
                   min_age_seconds: int = 0, page_size: int = 0, page_token: str = "") -> tuple[list[dict], str]:
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
        if not 0 <= min_age_seconds <= MAX_AGE_SECONDS:
            raise InvalidArgument("min_age_seconds", f"between 0 and {MAX_AGE_SECONDS} (100 years)")
        if page_size < 0 or page_size > MAX_PAGE:
            raise InvalidArgument("page.page_size", f"between 0 and {MAX_PAGE}")
        query: dict = {"$and": [scope.query(queue_id)]}
        if states:
            query["$and"].append({"state": {"$in": list(dict.fromkeys(states))}})
        if min_age_seconds:
            query["$and"].append({"created_at": {"$lte": now() - dt.timedelta(seconds=min_age_seconds)}})
        if page_token:
            at, last = _decode_token(page_token)
            query["$and"].append({"$or": [{"created_at": {"$lt": at}}, {"created_at": at, "_id": {"$lt": last}}]})
        size = page_size or DEFAULT_PAGE
        docs = await self._tickets.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(
            size + 1).to_list()
        more = len(docs) > size
        docs = docs[:size]
        await self._log_reads(docs, "support.ticket.list")
        token = _encode_token(docs[-1]["created_at"], docs[-1]["_id"]) if more else ""
        return docs, token

    # ------------------------------------------------------------------ the desk's changes

    async def _change(self, ticket_id: str, who: auth.Caller, decide) -> dict:
        """Read, decide (may raise), write if nobody changed the ticket meanwhile; retried a few times."""
        for _ in range(5):
            doc = await self._load(ticket_id)
            changes, entry = decide(doc)
            at = entry["at"]
            update = {"$set": {**changes, "updated_at": at}, "$push": {"history": entry}, "$inc": {"version": 1}}
            first = is_desk(who) and doc.get("first_response_at") is None
            if first:
                update["$set"]["first_response_at"] = at
            fresh = await self._tickets.find_one_and_update(
                {"_id": ticket_id, "version": doc["version"]}, update, return_document=ReturnDocument.AFTER)
            if fresh is not None:
                if first:
                    metrics.FIRST_RESPONSE.labels(doc["queue_id"]).observe(
                        max(0.0, (at - doc["created_at"]).total_seconds()))
                return fresh
        raise Aborted("the ticket is being changed by someone else; try again")

    def _moving(self, doc: dict, to_state: str) -> None:
        if to_state not in TRANSITIONS[doc["state"]]:
            raise FailedPrecondition(f"a ticket that is {doc['state']} cannot become {to_state}",
                                     reason="INVALID_TRANSITION")

    async def assign(self, ticket_id: str, assignee: str, who: auth.Caller) -> dict:
        assignee = assignee.strip() or who.id
        if len(assignee) > 64:
            raise InvalidArgument("assignee", "at most 64 characters")

        def decide(doc):
            self._works(doc, who)
            self._moving(doc, "assigned")
            return ({"state": "assigned", "assignee": assignee},
                    _entry(now(), who, "assigned", from_state=doc["state"], to_state="assigned",
                           from_queue=doc["queue_id"], to_queue=doc["queue_id"], text=assignee))

        return await self._change(ticket_id, who, decide)

    async def comment(self, ticket_id: str, text: str, who: auth.Caller) -> dict:
        text = _text("text", text, "write something")

        def decide(doc):
            if not _is_reporter(doc, who):
                if not is_desk(who):
                    raise PermissionDenied("only the support desk and the reporter can comment on a ticket")
                self._works(doc, who)
            if doc["state"] == "closed":
                raise FailedPrecondition("the ticket is closed", reason="TICKET_CLOSED")
            return {}, _entry(now(), who, "commented", text=text)

        return await self._change(ticket_id, who, decide)

    async def escalate(self, ticket_id: str, reason: str, who: auth.Caller) -> dict:
        """Municipality IT: not the municipality's fault -> the queue it escalates to (region IT)."""
        reason = _text("reason", reason, "say what was checked: why it is not the municipality's fault")

        def decide(doc):
            self._works(doc, who)
            queue = self.routing.queue(doc["queue_id"])
            target = queue.escalates_to if queue else None
            if not target:
                raise FailedPrecondition(f"queue {doc['queue_id']} does not escalate anywhere", reason="NO_ESCALATION")
            self._moving(doc, "escalated")
            return ({"state": "escalated", "queue_id": target, "assignee": "", "not_municipality_fault": True},
                    _entry(now(), who, "escalated", from_queue=doc["queue_id"], to_queue=target,
                           from_state=doc["state"], to_state="escalated",
                           text=f"Inte kommunens fel: {reason}"))

        fresh = await self._change(ticket_id, who, decide)
        entry = fresh["history"][-1]
        metrics.ESCALATIONS.labels(entry["from_queue"], entry["to_queue"]).inc()
        return fresh

    async def change_state(self, ticket_id: str, state: str, note: str, who: auth.Caller) -> dict:
        if state not in SETTABLE_STATES:
            raise InvalidArgument("state", "waiting, resolved or closed (assign and escalate have their own calls)")
        note = _text("note", note)

        def decide(doc):
            self._works(doc, who)
            self._moving(doc, state)
            return ({"state": state},
                    _entry(now(), who, "state", from_state=doc["state"], to_state=state,
                           from_queue=doc["queue_id"], to_queue=doc["queue_id"], text=note))

        return await self._change(ticket_id, who, decide)

    # ------------------------------------------------------------------ metrics

    async def refresh_gauge(self) -> None:
        """Open tickets per queue and state, from the database; every known queue x open state is set."""
        counts: dict[tuple[str, str], int] = {}
        pipeline = [{"$match": {"state": {"$in": list(OPEN_STATES)}}},
                    {"$group": {"_id": {"q": "$queue_id", "s": "$state"}, "n": {"$sum": 1}}}]
        async for row in await self._tickets.aggregate(pipeline):
            counts[(row["_id"]["q"], row["_id"]["s"])] = row["n"]
        queues = {q.id for q in self.routing.queues} | {q for q, _ in counts}
        for q in queues:
            for s in OPEN_STATES:
                metrics.OPEN_TICKETS.labels(q, s).set(counts.get((q, s), 0))


def _text(field: str, value: str, required: str = "") -> str:
    """A free-text field, stripped; `required` is the message when it may not be empty."""
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field, required)
    if len(value) > MAX_TEXT:
        raise InvalidArgument(field, f"at most {MAX_TEXT} characters")
    return value


# Older than this no ticket can be (and now() minus more overflows a datetime).
MAX_AGE_SECONDS = 100 * 365 * 24 * 3600


def _entry(at: dt.datetime, who: auth.Caller, action: str, *, from_queue: str = "", to_queue: str = "",
           from_state: str = "", to_state: str = "", text: str = "") -> dict:
    return {"at": at, "actor": who.actor(), "actor_name": who.name, "action": action, "from_queue": from_queue,
            "to_queue": to_queue, "from_state": from_state, "to_state": to_state, "text": text}


def _encode_token(at: dt.datetime, ticket_id: str) -> str:
    raw = json.dumps({"t": at.isoformat(), "i": ticket_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[dt.datetime, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return dt.datetime.fromisoformat(raw["t"]), str(raw["i"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("page.page_token", "not a token from a previous page") from None
