"""The booking as plain Python: statuses (FHIR Appointment.status), parties, invitations, phone
tasks, rebook requests, and the changes a booking goes through.

A booking is one versioned document (store.py, on the runtime's VersionedStore): each change
below mutates it in place and raises a domain error when it is not allowed, checked against the
state it lands on. Invitations and phone tasks are documents of their own (one per party and
notice), written in the same transaction as the booking change that sends them. The stored field
names are the ones booking has always written: nothing is migrated. No gRPC types here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeVar, cast
from zoneinfo import ZoneInfo

from services.booking.options import EMAIL, PHONE, SECURE_MESSAGING
from services.runtime import names as person_names
from services.runtime.errors import FailedPrecondition, InvalidArgument


class Status(StrEnum):
    """FHIR Appointment.status values."""

    PROPOSED = "proposed"
    BOOKED = "booked"
    CANCELLED = "cancelled"
    FULFILLED = "fulfilled"
    NOSHOW = "noshow"
    ENTERED_IN_ERROR = "entered-in-error"


ACTIVE = frozenset({Status.PROPOSED, Status.BOOKED})
# What UpdateBookingStatus may set (cancelling has its own call).
OUTCOMES = frozenset({Status.FULFILLED, Status.NOSHOW, Status.ENTERED_IN_ERROR})


class PartyKind(StrEnum):
    MUNICIPALITY_UNIT = "municipality_unit"
    INPATIENT_WARD = "inpatient_ward"
    EXTERNAL_BODY = "external_body"
    PATIENT = "patient"
    PRIMARY_CARE = "primary_care"
    NEXT_OF_KIN = "next_of_kin"  # phone tasks from roster only: next of kin are never invited here


PARTY_KINDS = tuple(k.value for k in PartyKind if k != PartyKind.NEXT_OF_KIN)


class InvitationState(StrEnum):
    """An invitation as the coordinator sees it."""

    INVITED = "invited"
    DELIVERED = "delivered"
    CONFIRMED = "confirmed"
    PHONE_TASK = "phone_task"


class Notice(StrEnum):
    """What a party is told: the invitation, a new time, or that the meeting is off."""

    INVITATION = "invitation"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"


_ID_NAMESPACE = uuid.UUID("6f0c7f38-54a4-4d8e-9a53-5b0c2d1e7a11")
_LOCAL = ZoneInfo("Europe/Stockholm")
MAX_DURATION_MINUTES = 8 * 60
MAX_PARTIES = 30
MAX_NAMES = 50
MAX_KEY = 200
MAX_PATIENT_NAME = 200
MAX_REASON = 500
MAX_REBOOK_REASON = 1000
ENTERED_IN_ERROR_REASON = "registrerad av misstag"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def booking_id_for(coordinator: str, idempotency_key: str) -> str:
    """The booking id: the same coordinator and key always name the same booking (a retried create
    finds it, and roster, idempotent on booking_id, never makes a second room)."""
    return uuid.uuid5(_ID_NAMESPACE, f"{coordinator}\n{idempotency_key}").hex


class _Stored(Protocol):
    """A dataclass stored as one document: `id` is its `_id`, `extra` the stored fields this version does not know."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]
    id: str
    extra: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None: ...


S = TypeVar("S", bound=_Stored)


def _from(cls: type[S], doc: Mapping[str, Any], **parsed: Any) -> S:
    """A dataclass from a stored document: `_id` is `id`, parsed fields as given, unknown fields kept."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {("id" if k == "_id" else k): v for k, v in doc.items()}
    values.update(parsed)
    extra = {k: v for k, v in doc.items() if ("id" if k == "_id" else k) not in names}
    return cls(**{k: v for k, v in values.items() if k in names and k != "extra"}, extra=extra)


def _to(item: _Stored) -> dict[str, Any]:
    doc = {f.name: getattr(item, f.name) for f in dataclasses.fields(item) if f.name not in ("id", "extra")}
    return {**item.extra, "_id": item.id, **doc}


# ---------------------------------------------------------------- input


@dataclass(frozen=True)
class PartyInput:
    kind: str
    name: str
    channel: str
    address: str


@dataclass(frozen=True)
class NewBooking:
    idempotency_key: str
    patient_personnummer: str
    start: dt.datetime | None
    duration_minutes: int
    booking_unit_hsa_id: str
    coordinator_hsa_id: str
    care_service: str
    contact_type: str
    parties: tuple[PartyInput, ...] = ()
    patient_name: str = ""

    def fingerprint(self) -> str:
        body = json.dumps(
            [self.patient_personnummer, self.start.isoformat() if self.start else "", self.duration_minutes,
             self.booking_unit_hsa_id, self.coordinator_hsa_id, self.care_service, self.contact_type,
             [[p.kind, p.name, p.channel, p.address] for p in self.parties]],
            ensure_ascii=False,
        )
        return hashlib.sha256(body.encode()).hexdigest()


def check_time(start: dt.datetime | None, duration: int) -> None:
    if start is None:
        raise InvalidArgument("start", "is required")
    if start <= now():
        raise InvalidArgument("start", "must be in the future")
    if not 1 <= duration <= MAX_DURATION_MINUTES:
        raise InvalidArgument("duration_minutes", f"must be 1 to {MAX_DURATION_MINUTES} minutes")


def check_party(p: PartyInput, where: str, channel_allowed: Callable[[str], bool]) -> None:
    if p.channel == EMAIL:
        raise InvalidArgument(f"{where}.channel", "e-mail is not a secure channel for meeting details;"
                                                  " use secure messaging or phone")
    if p.channel not in (SECURE_MESSAGING, PHONE):
        raise InvalidArgument(f"{where}.channel", "must be secure messaging or phone")
    if not channel_allowed(p.channel):
        raise InvalidArgument(f"{where}.channel", f"{p.channel} is not enabled in this region")
    if p.kind not in PARTY_KINDS:
        raise InvalidArgument(f"{where}.kind", "is required")
    person_names.checked(f"{where}.name", p.name)
    if not p.address.strip() or len(p.address) > 320:
        raise InvalidArgument(f"{where}.address", "is required: the secure-messaging recipient"
                                                  " or the phone number (at most 320 characters)")


def check_parties(parties: Iterable[PartyInput], channel_allowed: Callable[[str], bool],
                  field_name: str = "parties") -> None:
    parties = list(parties)
    if len(parties) > MAX_PARTIES:
        raise InvalidArgument(field_name, f"at most {MAX_PARTIES} parties")
    for i, p in enumerate(parties):
        check_party(p, f"{field_name}[{i}]", channel_allowed)


# ---------------------------------------------------------------- the booking


@dataclass
class RebookRequest:
    """Support asked the coordinator to consider rebooking (one per ticket)."""

    request_id: str
    reason: str
    ticket_id: str
    requested_at: dt.datetime
    requested_by: str  # the person who asked (support's reporter), or the caller
    requested_via: str = ""  # the service that asked on their behalf (stored only when set)
    requested_by_name: str = ""
    resolved_at: dt.datetime | None = None
    resolved_by: str = ""  # the coordinator's HSA-id
    resolution: str = ""

    def to_doc(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        for optional in ("requested_via", "requested_by_name", "resolved_at", "resolved_by", "resolution"):
            if not doc[optional]:
                del doc[optional]
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RebookRequest:
        return cls(request_id=doc["request_id"], reason=doc.get("reason", ""), ticket_id=doc.get("ticket_id", ""),
                   requested_at=doc["requested_at"], requested_by=doc.get("requested_by", ""),
                   requested_via=doc.get("requested_via", ""), requested_by_name=doc.get("requested_by_name", ""),
                   resolved_at=doc.get("resolved_at"), resolved_by=doc.get("resolved_by", ""),
                   resolution=doc.get("resolution", ""))


@dataclass
class Booking:
    id: str
    idempotency_key: str
    fingerprint: str
    status: Status
    patient: str  # personnummer, normalised
    start: dt.datetime
    duration_minutes: int
    booking_unit: str
    coordinator: str  # HSA-id
    coordinator_name: str
    care_service: str
    contact_type: str
    video: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    meeting_id: str = ""
    dial_in_code: str = ""
    portal_url: str = ""
    # A video booking whose room is not made yet (roster down): the outbox message meeting_message_id makes it.
    meeting_pending: bool = False
    meeting_message_id: str = ""
    rebook_requests: list[RebookRequest] = field(default_factory=list)
    cancel_reason: str = ""
    patient_name: str = ""
    version: int = 0
    # Stored fields this version does not know: written back as they are.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_doc(self) -> dict[str, Any]:
        doc = _to(self)
        doc["status"] = self.status.value
        doc["rebook_requests"] = [r.to_doc() for r in self.rebook_requests]
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Booking:
        return _from(cls, doc, status=Status(doc["status"]), version=doc.get("version", 0),
                     rebook_requests=[RebookRequest.from_doc(r) for r in doc.get("rebook_requests", [])])

    # ------------------------------------------------------------ queries

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(minutes=self.duration_minutes)

    def require_active(self, already: bool = False) -> None:
        if not self.active:
            raise FailedPrecondition(f"the booking is {'already ' if already else ''}{self.status}",
                                     reason="BOOKING_NOT_ACTIVE")


def booked(booking_id: str, key: str, req: NewBooking, *, patient: str, unit: str, coordinator: str,
           coordinator_name: str, video: bool, at: dt.datetime) -> Booking:
    """A new booking (booked). A video booking waits for its room (meeting_pending)."""
    start = cast(dt.datetime, req.start)  # the request was checked (check_time): it has a start
    return Booking(
        id=booking_id, idempotency_key=key, fingerprint=req.fingerprint(), status=Status.BOOKED, patient=patient,
        start=start, duration_minutes=req.duration_minutes, booking_unit=unit, coordinator=coordinator,
        coordinator_name=coordinator_name, care_service=req.care_service, contact_type=req.contact_type,
        video=video, meeting_pending=video, created_at=at, updated_at=at, patient_name=req.patient_name,
    )


@dataclass(frozen=True)
class Room:
    """The meeting room roster made for a booking."""

    meeting_id: str
    dial_in_code: str
    portal_url: str


def _place(b: Booking, room: Room, at: dt.datetime) -> None:
    b.meeting_id, b.dial_in_code, b.portal_url = room.meeting_id, room.dial_in_code, room.portal_url
    b.meeting_pending, b.updated_at = False, at


def room_made(b: Booking, room: Room, at: dt.datetime) -> bool:
    """Store the room on a booking still waiting for it. False (nothing changes) when it no longer
    waits: the room was stored already, or the booking was cancelled meanwhile."""
    if not (b.meeting_pending and b.active):
        return False
    _place(b, room, at)
    return True


def orphan_room(b: Booking, room: Room, at: dt.datetime) -> None:
    """The booking was cancelled while its room was being made: the (cancelled) room is recorded."""
    _place(b, room, at)


def _unchanged_since_read(b: Booking, start: dt.datetime | None = None) -> None:
    if not b.active or (start is not None and b.start != start):
        raise FailedPrecondition("the booking changed meanwhile; read it and try again", reason="CONFLICT")


def reschedule(b: Booking, read_start: dt.datetime, start: dt.datetime, duration: int, at: dt.datetime) -> None:
    """To a new time; refused (CONFLICT) when the booking was closed or moved since it was read."""
    _unchanged_since_read(b, read_start)
    b.start, b.duration_minutes, b.updated_at = start, duration, at


def close(b: Booking, status: Status, reason: str, at: dt.datetime) -> None:
    """Cancelled or entered-in-error; refused (CONFLICT) when it is no longer active."""
    _unchanged_since_read(b)
    b.status, b.cancel_reason, b.updated_at = status, reason, at


def record_outcome(b: Booking, status: Status, at: dt.datetime) -> None:
    """How the visit went (fulfilled, noshow), or entered-in-error for a booking no longer active."""
    if status == Status.ENTERED_IN_ERROR:
        if b.status == Status.ENTERED_IN_ERROR:
            raise FailedPrecondition("the booking is already entered-in-error", reason="BOOKING_NOT_ACTIVE")
    else:
        if b.status != Status.BOOKED:
            raise FailedPrecondition(f"the booking is {b.status}", reason="BOOKING_NOT_ACTIVE")
        if b.start > now():
            raise FailedPrecondition("the visit has not started yet", reason="BOOKING_IN_FUTURE")
    b.status, b.updated_at = status, at


def touch(b: Booking, at: dt.datetime) -> None:
    b.updated_at = at


def request_rebook(b: Booking, request: RebookRequest, at: dt.datetime) -> RebookRequest:
    """One request per ticket: support's retries (and its sweep) resend, and must not pile up copies."""
    if request.ticket_id:
        existing = next((r for r in b.rebook_requests if r.ticket_id == request.ticket_id), None)
        if existing is not None:
            return existing
    b.rebook_requests.append(request)
    b.updated_at = at
    return request


def resolve_rebook(b: Booking, request_id: str, resolution: str, by: str, at: dt.datetime) -> RebookRequest:
    """The request handled; one already handled stays as it was (a retried call changes nothing)."""
    request = next((r for r in b.rebook_requests if r.request_id == request_id), None)
    if request is None:
        raise InvalidArgument("request_id", "no such rebook request on this booking")
    if request.resolved_at is None:
        request.resolved_at, request.resolved_by, request.resolution = at, by, resolution
        b.updated_at = at
    return request


# ---------------------------------------------------------------- invitations and phone tasks


@dataclass
class Party:
    party_id: str
    kind: str
    name: str
    channel: str
    address: str

    @classmethod
    def from_input(cls, p: PartyInput) -> Party:
        return cls(uuid.uuid4().hex, p.kind, person_names.checked("name", p.name), p.channel, p.address.strip())


@dataclass
class Invitation:
    id: str  # also the confirmation code sent to the party
    booking_id: str
    coordinator: str
    party: Party
    created_at: dt.datetime
    # Nothing sent yet: the booking's room (dial-in code, link) is not made yet.
    awaiting_meeting: bool = True
    message_id: str = ""  # the outbox message (secure channel)
    phone_task_id: str = ""  # the coordinator's task (phone)
    attendee_names: list[str] = field(default_factory=list)
    confirmed_at: dt.datetime | None = None
    confirmed_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def new(cls, b: Booking, p: PartyInput, at: dt.datetime) -> Invitation:
        return cls(uuid.uuid4().hex, b.id, b.coordinator, Party.from_input(p), at)

    def to_doc(self) -> dict[str, Any]:
        doc = _to(self)
        doc["party"] = dataclasses.asdict(self.party)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Invitation:
        return _from(cls, doc, party=Party(**doc["party"]))


@dataclass
class InvitationView:
    """An invitation with its delivery as the coordinator sees it."""

    invitation: Invitation
    state: InvitationState
    delivered_at: dt.datetime | None = None
    delivery_attempts: int = 0
    last_error: str = ""


def invitation_state(inv: Invitation, message_state: str | None, delivered: str) -> InvitationState:
    if inv.confirmed_at:
        return InvitationState.CONFIRMED
    if inv.awaiting_meeting:  # details (room) not known yet: nothing sent, no task yet
        return InvitationState.INVITED
    if inv.party.channel == PHONE:
        return InvitationState.PHONE_TASK
    if message_state == delivered:
        return InvitationState.DELIVERED
    return InvitationState.INVITED


@dataclass
class PhoneTask:
    """A party reached by phone: the coordinator calls them (nothing is sent)."""

    id: str
    booking_id: str
    coordinator: str
    invitation_id: str
    party: Party
    kind: str  # a Notice
    instructions: str
    created_at: dt.datetime
    done: bool = False
    done_at: dt.datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_doc(self) -> dict[str, Any]:
        doc = _to(self)
        doc["party"] = dataclasses.asdict(self.party)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> PhoneTask:
        return _from(cls, doc, party=Party(**doc["party"]))


def notice_text(b: Booking, invitation_id: str, kind: Notice) -> tuple[str, str]:
    """(subject, body) of a notice to a party, in Swedish."""
    local = b.start.astimezone(_LOCAL)
    when = f"{local:%Y-%m-%d %H:%M} ({b.duration_minutes} min)"
    title = {Notice.INVITATION: "Kallelse", Notice.RESCHEDULED: "Ändrad tid", Notice.CANCELLED: "Inställt"}[kind]
    subject = f"{title}: {b.care_service} {local:%Y-%m-%d %H:%M}"
    lines = [f"{title} till {b.care_service} ({b.contact_type}).", f"Tid: {when}."]
    if kind == Notice.CANCELLED:
        lines.append("Mötet är inställt." + (f" Orsak: {b.cancel_reason}" if b.cancel_reason else ""))
    elif b.portal_url:
        lines += [f"Logga in i mötesportalen: {b.portal_url}",
                  f"Mötes-ID för uppringning: {b.dial_in_code}"]
    if kind != Notice.CANCELLED:
        lines.append(f"Bekräfta och ange vilka som deltar med bekräftelsekod {invitation_id}.")
    return subject, "\n".join(lines)


def phone_task(b: Booking, inv: Invitation, kind: Notice, at: dt.datetime) -> PhoneTask:
    subject, body = notice_text(b, inv.id, kind)
    party = inv.party
    return PhoneTask(uuid.uuid4().hex, b.id, b.coordinator, inv.id, party, kind.value,
                     f"Ring {party.name} på {party.address}: {subject}\n{body}", at)


def undelivered_task(b: Booking, key: str, name: str, instructions: str, at: dt.datetime) -> PhoneTask:
    """The coordinator's task to phone a person a message could not reach (one per `key`)."""
    party = Party(f"undelivered-{key}", PartyKind.NEXT_OF_KIN.value, name, PHONE, "")
    return PhoneTask(f"undelivered-{key}", b.id, b.coordinator, "", party, Notice.INVITATION.value,
                     instructions, at)


def confirm(inv: Invitation, names: list[str], by: str, at: dt.datetime) -> None:
    inv.attendee_names, inv.confirmed_at, inv.confirmed_by = names, at, by


def checked_attendees(names: list[str]) -> list[str]:
    if not names or len(names) > MAX_NAMES:
        raise InvalidArgument("attendee_names", f"name 1 to {MAX_NAMES} people who will attend")
    return [person_names.checked(f"attendee_names[{i}]", n) for i, n in enumerate(names)]
