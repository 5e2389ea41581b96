"""The support ticket as plain Python: states, the reporter, the history, and the desk's changes.

One document per ticket (its history inside it), so every change is one versioned replace
(store.py, on the runtime's VersionedStore) checked against the state it lands on: two desk
members acting at once never lose one another's history entries. Each change below mutates the
ticket in place and raises a domain error when it is not allowed. No gRPC types here.

Ticket states: new, assigned, escalated, waiting, resolved, closed (final). Every change is a
history entry (who, when, from/to queue, from/to state, text).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.runtime.errors import FailedPrecondition, InvalidArgument


class TicketState(StrEnum):
    NEW = "new"
    ASSIGNED = "assigned"
    ESCALATED = "escalated"
    WAITING = "waiting"
    RESOLVED = "resolved"
    CLOSED = "closed"


STATES = tuple(s.value for s in TicketState)
OPEN_STATES = tuple(s.value for s in TicketState if s is not TicketState.CLOSED)
# Which state a ticket may move to from each state (closed is final).
TRANSITIONS: dict[TicketState, frozenset[TicketState]] = {
    TicketState.NEW: frozenset({TicketState.ASSIGNED, TicketState.ESCALATED, TicketState.WAITING,
                                TicketState.RESOLVED, TicketState.CLOSED}),
    TicketState.ASSIGNED: frozenset({TicketState.ASSIGNED, TicketState.ESCALATED, TicketState.WAITING,
                                     TicketState.RESOLVED, TicketState.CLOSED}),
    TicketState.ESCALATED: frozenset({TicketState.ASSIGNED, TicketState.WAITING, TicketState.RESOLVED,
                                      TicketState.CLOSED}),
    TicketState.WAITING: frozenset({TicketState.ASSIGNED, TicketState.ESCALATED, TicketState.RESOLVED,
                                    TicketState.CLOSED}),
    TicketState.RESOLVED: frozenset({TicketState.ASSIGNED, TicketState.CLOSED}),  # reopened by assigning it again
    TicketState.CLOSED: frozenset(),
}
# ChangeTicketState may set these; assigning and escalating have their own RPCs.
SETTABLE_STATES = frozenset({TicketState.WAITING, TicketState.RESOLVED, TicketState.CLOSED})


class Progress(StrEnum):
    """Gathering a report's meeting evidence."""

    NONE = "none"  # no meeting named: nothing to gather
    PENDING = "pending"
    DONE = "done"


class Rebook(StrEnum):
    """A report's rebook request to booking (the values services/support/peers.py answers with)."""

    NONE = "none"  # none asked for
    PENDING = "pending"  # not sent yet, or booking could not be reached: retried by the sweep
    DONE = "done"
    REFUSED = "refused"


MAX_TEXT = 4000
# A ticket's short number: 8 characters a person reads out on the phone without mixing them up
# (Crockford's base32: no I, L, O or U), random (40 bits), so one number tells nothing of another.
NUMBER_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_number() -> str:
    """"K7QM-2X9D": two groups of four."""
    raw = "".join(secrets.choice(NUMBER_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def normalised_number(value: str) -> str:
    """What a person typed or read out ("k7qm 2x9d", "K7QM2X9D") as stored; "" when it is not a number."""
    raw = "".join(value.split()).replace("-", "").upper().translate(str.maketrans("OIL", "011"))
    if len(raw) != 8 or any(c not in NUMBER_ALPHABET for c in raw):
        return ""
    return f"{raw[:4]}-{raw[4:]}"


def now() -> dt.datetime:
    t = dt.datetime.now(dt.timezone.utc)
    return t.replace(microsecond=t.microsecond // 1000 * 1000)  # the database keeps milliseconds


def text(field_name: str, value: str, required: str = "") -> str:
    """A free-text field, stripped; `required` is the message when it may not be empty."""
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field_name, required)
    if len(value) > MAX_TEXT:
        raise InvalidArgument(field_name, f"at most {MAX_TEXT} characters")
    return value


# ---------------------------------------------------------------- parts


@dataclass(frozen=True)
class Actor:
    """Who makes a change: the caller's actor id and name; `desk` for a support desk member."""

    id: str
    name: str
    desk: bool = False


@dataclass
class Reporter:
    """The reporter as stored (field names and order are the stored document's and its fingerprint's)."""

    name: str
    id: str
    id_kind: str  # hsa_id | personnummer | ""
    kind: str  # a routing table reporter kind
    organization: str
    contact: str

    def to_doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Reporter:
        return cls(name=doc.get("name", ""), id=doc.get("id", ""), id_kind=doc.get("id_kind", ""),
                   kind=doc.get("kind", ""), organization=doc.get("organization", ""),
                   contact=doc.get("contact", ""))


@dataclass
class HistoryEntry:
    at: dt.datetime
    actor: str
    actor_name: str
    action: str  # filed | assigned | commented | escalated | state
    from_queue: str = ""
    to_queue: str = ""
    from_state: str = ""
    to_state: str = ""
    text: str = ""
    internal: bool = False  # a desk comment the reporter does not see

    @classmethod
    def by(cls, actor: Actor, at: dt.datetime, action: str, **fields: Any) -> HistoryEntry:
        return cls(at, actor.id, actor.name, action, **fields)


# ---------------------------------------------------------------- the ticket


@dataclass
class Ticket:
    id: str
    idem: str  # "<actor>|<idempotency key>", or "id|<ticket id>" (unique)
    fingerprint: str  # of the report as filed: a retry with the same key must be the same report
    reporter: Reporter
    filed_by: str
    problem: str
    description: str
    meeting_id: str
    participant_id: str
    queue_id: str
    org_key: str  # the reporter's organisation, as desk scope compares it
    rule_id: str
    created_at: dt.datetime
    updated_at: dt.datetime
    state: TicketState = TicketState.NEW
    assignee: str = ""
    evidence: dict[str, Any] | None = None  # as services/support/peers.py gathered it
    evidence_status: Progress = Progress.NONE
    rebook_status: Rebook = Rebook.NONE
    rebook_note: str = ""
    # Evidence or a rebook request still to do (finished by a retry of the report or by the sweep).
    followup: bool = False
    first_response_at: dt.datetime | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    not_municipality_fault: bool = False  # stored once escalated
    number: str = ""  # the short number read out on the phone (new_number); "" on tickets filed before it
    assignee_name: str = ""
    public: bool = False  # filed without a login: the reporter's details are as typed
    dial_in_code: str = ""  # a public reporter's meeting ID, as text (never resolved)
    version: int = 0
    # Stored fields this version does not know: written back as they are.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ storage form

    def to_doc(self) -> dict[str, Any]:
        doc = {
            "_id": self.id, "idem": self.idem, "fingerprint": self.fingerprint, "version": self.version,
            "reporter": self.reporter.to_doc(), "filed_by": self.filed_by, "problem": self.problem,
            "description": self.description, "meeting_id": self.meeting_id, "participant_id": self.participant_id,
            "state": self.state.value, "queue_id": self.queue_id, "org_key": self.org_key, "rule_id": self.rule_id,
            "assignee": self.assignee, "evidence": self.evidence, "evidence_status": self.evidence_status.value,
            "rebook_status": self.rebook_status.value, "rebook_note": self.rebook_note, "followup": self.followup,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "first_response_at": self.first_response_at,
            "history": [dataclasses.asdict(h) for h in self.history],
        }
        if self.not_municipality_fault:
            doc["not_municipality_fault"] = True
        if self.number:
            doc["number"] = self.number
        if self.assignee_name:
            doc["assignee_name"] = self.assignee_name
        if self.public:
            doc["public"] = True
            doc["dial_in_code"] = self.dial_in_code
        return {**self.extra, **doc}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Ticket:
        known = {f.name for f in dataclasses.fields(cls)} | {"_id"}
        return cls(
            id=doc["_id"], idem=doc.get("idem", ""), fingerprint=doc.get("fingerprint", ""),
            reporter=Reporter.from_doc(doc.get("reporter") or {}), filed_by=doc.get("filed_by", ""),
            problem=doc.get("problem", ""), description=doc.get("description", ""),
            meeting_id=doc.get("meeting_id", ""), participant_id=doc.get("participant_id", ""),
            queue_id=doc["queue_id"], org_key=doc.get("org_key", ""), rule_id=doc.get("rule_id", ""),
            created_at=doc["created_at"], updated_at=doc.get("updated_at", doc["created_at"]),
            state=TicketState(doc.get("state", TicketState.NEW)), assignee=doc.get("assignee", ""),
            evidence=doc.get("evidence"), evidence_status=Progress(doc.get("evidence_status", Progress.NONE)),
            rebook_status=Rebook(doc.get("rebook_status", Rebook.NONE)), rebook_note=doc.get("rebook_note", ""),
            followup=bool(doc.get("followup", False)), first_response_at=doc.get("first_response_at"),
            history=[HistoryEntry(**h) for h in doc.get("history", [])],
            not_municipality_fault=bool(doc.get("not_municipality_fault", False)),
            number=doc.get("number", ""), assignee_name=doc.get("assignee_name", ""),
            public=bool(doc.get("public", False)), dial_in_code=doc.get("dial_in_code", ""),
            version=doc.get("version", 0),
            extra={k: v for k, v in doc.items() if k not in known},
        )

    # ------------------------------------------------------------ queries

    @property
    def reporter_is_patient_data(self) -> bool:
        """A reporter identified by personnummer: each read is access-logged."""
        return self.reporter.id_kind == "personnummer" and bool(self.reporter.id)

    def patients(self) -> list[str]:
        """Whose patient data the ticket holds: a reporter identified by personnummer, and the patient
        of the meeting its evidence is about. Every desk action on it is access-logged naming them."""
        found = [self.reporter.id] if self.reporter_is_patient_data else []
        meeting_patient = str((self.evidence or {}).get("patient", ""))
        if meeting_patient and meeting_patient not in found:
            found.append(meeting_patient)
        return found

    @property
    def care_unit(self) -> str:
        return str((self.evidence or {}).get("care_unit", ""))

    def escalated_from(self) -> set[str]:
        return {h.from_queue for h in self.history if h.action == "escalated"}

    def filed_by_or_for(self, actor_id: str) -> bool:
        """The reporter, or whoever filed the ticket for them."""
        return actor_id in (self.reporter.id, self.filed_by)


# ---------------------------------------------------------------- filing


def filed(ticket_id: str, idem: str, fingerprint: str, reporter: Reporter, by: Actor, *, problem: str,
          description: str, meeting_id: str, participant_id: str, queue_id: str, org_key: str, rule_id: str,
          filed_text: str, rebook: bool, at: dt.datetime, number: str = "") -> Ticket:
    """A new ticket (state new) in its landing queue, with its first history entry."""
    wants_evidence = bool(meeting_id)
    return Ticket(
        id=ticket_id, idem=idem, fingerprint=fingerprint, reporter=reporter, filed_by=by.id, problem=problem,
        description=description, meeting_id=meeting_id, participant_id=participant_id, queue_id=queue_id,
        org_key=org_key, rule_id=rule_id, created_at=at, updated_at=at,
        evidence_status=Progress.PENDING if wants_evidence else Progress.NONE,
        rebook_status=Rebook.PENDING if rebook else Rebook.NONE,
        followup=wants_evidence or rebook, number=number or new_number(),
        history=[HistoryEntry.by(by, at, "filed", to_queue=queue_id, to_state=TicketState.NEW.value,
                                 text=filed_text)],
    )


def record_follow_up(t: Ticket, evidence: dict[str, Any] | None, rebook: tuple[str, str] | None) -> None:
    """The evidence gathered and the rebook request's (outcome, note), written back; a rebook still
    pending keeps the ticket for the sweep."""
    if evidence is not None:
        t.evidence, t.evidence_status = evidence, Progress.DONE
    if rebook is not None:
        t.rebook_status, t.rebook_note = Rebook(rebook[0]), rebook[1]
    t.followup = t.rebook_status == Rebook.PENDING


def claim_follow_up(t: Ticket, cutoff: dt.datetime, at: dt.datetime) -> bool:
    """The sweep takes a follow-up nobody touched since `cutoff` (updated_at moves on, so replicas
    sweeping at once do not both take it). False: nothing to take."""
    if not t.followup or t.updated_at >= cutoff:
        return False
    t.updated_at = at
    return True


# ---------------------------------------------------------------- the desk's changes


def _record(t: Ticket, by: Actor, entry: HistoryEntry) -> bool:
    """Append the entry; the desk's first action on the ticket is its first response. Returns that."""
    t.history.append(entry)
    t.updated_at = entry.at
    first = by.desk and t.first_response_at is None
    if first:
        t.first_response_at = entry.at
    return first


def _moving(t: Ticket, to_state: TicketState) -> None:
    if to_state not in TRANSITIONS[t.state]:
        raise FailedPrecondition(f"a ticket that is {t.state} cannot become {to_state}", reason="INVALID_TRANSITION")


def assign(t: Ticket, assignee: str, by: Actor, at: dt.datetime) -> bool:
    _moving(t, TicketState.ASSIGNED)
    entry = HistoryEntry.by(by, at, "assigned", from_state=t.state.value, to_state=TicketState.ASSIGNED.value,
                            from_queue=t.queue_id, to_queue=t.queue_id, text=assignee)
    t.state, t.assignee, t.assignee_name = TicketState.ASSIGNED, assignee, by.name if assignee == by.id else ""
    return _record(t, by, entry)


def take(t: Ticket, by: Actor, at: dt.datetime) -> bool:
    """Assign to `by` only if nobody else has the ticket: the check and the write are one versioned
    change (a lost race re-runs this on the winner's ticket), so a second taker is refused."""
    if t.assignee and t.assignee != by.id and t.state != TicketState.RESOLVED:
        raise FailedPrecondition(f"Ärendet har redan tagits av {t.assignee_name or t.assignee}: "
                                 "ladda om kön och välj ett annat", reason="ALREADY_TAKEN")
    if t.assignee == by.id and t.state == TicketState.ASSIGNED:
        return False  # already yours: nothing changes
    first = assign(t, by.id, by, at)
    t.assignee_name = by.name
    return first


def comment(t: Ticket, text_: str, by: Actor, at: dt.datetime, internal: bool = False) -> bool:
    if t.state == TicketState.CLOSED:
        raise FailedPrecondition("the ticket is closed", reason="TICKET_CLOSED")
    return _record(t, by, HistoryEntry.by(by, at, "commented", text=text_, internal=internal))


def escalate(t: Ticket, target: str | None, reason: str, by: Actor, at: dt.datetime) -> bool:
    """To `target`, the queue the ticket's queue escalates to (municipality IT -> region IT)."""
    if not target:
        raise FailedPrecondition(f"queue {t.queue_id} does not escalate anywhere", reason="NO_ESCALATION")
    _moving(t, TicketState.ESCALATED)
    entry = HistoryEntry.by(by, at, "escalated", from_queue=t.queue_id, to_queue=target, from_state=t.state.value,
                            to_state=TicketState.ESCALATED.value, text=f"Inte kommunens fel: {reason}")
    t.state, t.queue_id, t.assignee, t.assignee_name = TicketState.ESCALATED, target, "", ""
    t.not_municipality_fault = True
    return _record(t, by, entry)


def change_state(t: Ticket, state: TicketState, note: str, by: Actor, at: dt.datetime) -> bool:
    _moving(t, state)
    entry = HistoryEntry.by(by, at, "state", from_state=t.state.value, to_state=state.value, from_queue=t.queue_id,
                            to_queue=t.queue_id, text=note)
    t.state = state
    return _record(t, by, entry)
