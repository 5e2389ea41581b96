"""Bookings: plain Python, no gRPC. Raises services.runtime.errors.*.

Design decisions:
- The booking id is derived from (coordinator, idempotency key), so a retried create
  finds the same booking, and roster (idempotent on booking_id) never makes a second room.
- A video booking is written first, with ``meeting_pending`` and an outbox message
  "create the room", in one transaction. The request then tries roster once inline; when
  roster is down the booking is returned with ``meeting_pending`` and the outbox
  dispatcher retries room creation (backoff) until it succeeds. Invitations need the
  dial-in code and portal link, so for a video booking they are written to the outbox in
  the same transaction that stores the room on the booking.
- Invitations: one outbox message per party with a secure channel; a phone task for the
  coordinator (and nothing sent) for a party reached by phone. E-mail is always refused.
- Every read or write of a booking appends an access record (patient data law).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from services.booking import messaging
from services.booking.options import EMAIL, PHONE, SECURE_MESSAGING, BookingOptions
from services.booking.peers import IdentityValidator, MeetingRef, RosterMeetings
from services.runtime import names as person_names
from services.runtime.access_log import AccessLog
from services.runtime.auth import Caller
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from services.runtime.mongo import DURABLE
from services.runtime.outbox import (
    DELIVERED, Outbox, OutboxMessage, PermanentDeliveryError, RetryableDeliveryError, in_transaction,
)

log = logging.getLogger("svpl.booking")

# FHIR Appointment.status values.
PROPOSED, BOOKED, CANCELLED = "proposed", "booked", "cancelled"
FULFILLED, NOSHOW, ENTERED_IN_ERROR = "fulfilled", "noshow", "entered-in-error"
STATUSES = (PROPOSED, BOOKED, CANCELLED, FULFILLED, NOSHOW, ENTERED_IN_ERROR)
ACTIVE = (PROPOSED, BOOKED)

PARTY_KINDS = ("municipality_unit", "inpatient_ward", "external_body", "patient", "primary_care")

# Invitation states as the coordinator sees them.
INVITED, INV_DELIVERED, CONFIRMED, PHONE_TASK = "invited", "delivered", "confirmed", "phone_task"

MEETING_CHANNEL = "booking.create_meeting"
_ID_NAMESPACE = uuid.UUID("6f0c7f38-54a4-4d8e-9a53-5b0c2d1e7a11")
_LOCAL = ZoneInfo("Europe/Stockholm")
MAX_DURATION_MINUTES = 8 * 60
MAX_PARTIES = 30
MAX_NAMES = 50
DEFAULT_PAGE, MAX_PAGE = 50, 500


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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

    def fingerprint(self) -> str:
        body = json.dumps(
            [self.patient_personnummer, self.start.isoformat() if self.start else "", self.duration_minutes,
             self.booking_unit_hsa_id, self.coordinator_hsa_id, self.care_service, self.contact_type,
             [[p.kind, p.name, p.channel, p.address] for p in self.parties]],
            ensure_ascii=False,
        )
        return hashlib.sha256(body.encode()).hexdigest()


@dataclass
class BookingView:
    """A booking document plus (for single-booking answers) its invitations' states."""

    doc: dict
    invitations: list[dict]


def _page_token(start: dt.datetime, ident: str) -> str:
    raw = json.dumps({"s": start.isoformat(), "i": ident}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_page_token(token: str, field: str) -> tuple[dt.datetime, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return dt.datetime.fromisoformat(raw["s"]), str(raw["i"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument(field, "not a page token from a previous answer") from None


def _page_size(size: int) -> int:
    if size < 0:
        raise InvalidArgument("page.page_size", "must not be negative")
    return min(size or DEFAULT_PAGE, MAX_PAGE)


class Bookings:
    def __init__(self, db, client, access: AccessLog, outbox: Outbox, options: BookingOptions,
                 identity: IdentityValidator, roster: RosterMeetings, *, meeting_retry_delay: float = 5.0,
                 notify=lambda: None) -> None:
        self.client = client
        self.bookings = db.get_collection("bookings", write_concern=DURABLE)
        self.invitations = db.get_collection("invitations", write_concern=DURABLE)
        self.phone_tasks = db.get_collection("phone_tasks", write_concern=DURABLE)
        self.access = access
        self.outbox = outbox
        self.options = options
        self.identity = identity
        self.roster = roster
        self.meeting_retry_delay = dt.timedelta(seconds=meeting_retry_delay)
        self.notify = notify  # wakes the outbox dispatcher after a commit

    async def ensure_indexes(self) -> None:
        await self.bookings.create_index([("booking_unit", ASCENDING), ("start", ASCENDING), ("_id", ASCENDING)])
        await self.bookings.create_index([("coordinator", ASCENDING), ("start", ASCENDING), ("_id", ASCENDING)])
        await self.bookings.create_index("meeting_id")
        await self.bookings.create_index("dial_in_code")
        await self.invitations.create_index([("booking_id", ASCENDING), ("created_at", ASCENDING)])
        await self.phone_tasks.create_index([("coordinator", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)])
        await self.outbox.ensure_indexes()
        await self.access.ensure_indexes()

    # ------------------------------------------------------------------ access

    async def _record(self, who: Caller, action: str, doc: dict, on_behalf_of: str = "") -> None:
        """`on_behalf_of`: the person a service (who) acts for; the record names them, via the service."""
        await self.access.record(action, doc["patient"], care_unit=doc["booking_unit"],
                                 resource=f"booking:{doc['_id']}", actor=on_behalf_of or who.actor(),
                                 via=who.actor() if on_behalf_of else "")

    @staticmethod
    def _require_coordinator(who: Caller, doc: dict) -> None:
        if not (who.is_person and who.id == doc["coordinator"]):
            raise PermissionDenied("only the booking's coordinator may change it", reason="NOT_BOOKING_COORDINATOR")

    @staticmethod
    def _require_reader(who: Caller, doc: dict) -> None:
        if who.is_service:
            return
        if who.id == doc["coordinator"] or (who.unit and who.unit == doc["booking_unit"]):
            return
        raise PermissionDenied("only the booking's coordinator or staff of its booking unit may read it",
                               reason="NOT_BOOKING_READER")

    async def _load(self, booking_id: str, field: str = "booking_id") -> dict:
        if not booking_id:
            raise InvalidArgument(field, "is required")
        doc = await self.bookings.find_one({"_id": booking_id})
        if doc is None:
            raise NotFound(f"booking {booking_id} does not exist")
        return doc

    # ------------------------------------------------------------------ validation

    def _check_time(self, start: dt.datetime | None, duration: int) -> None:
        if start is None:
            raise InvalidArgument("start", "is required")
        if start <= _now():
            raise InvalidArgument("start", "must be in the future")
        if not 1 <= duration <= MAX_DURATION_MINUTES:
            raise InvalidArgument("duration_minutes", f"must be 1 to {MAX_DURATION_MINUTES} minutes")

    def _check_parties(self, parties: Iterable[PartyInput], field: str = "parties") -> None:
        parties = list(parties)
        if len(parties) > MAX_PARTIES:
            raise InvalidArgument(field, f"at most {MAX_PARTIES} parties")
        for i, p in enumerate(parties):
            where = f"{field}[{i}]"
            if p.channel == EMAIL:
                raise InvalidArgument(f"{where}.channel", "e-mail is not a secure channel for meeting details;"
                                                          " use secure messaging or phone")
            if p.channel not in (SECURE_MESSAGING, PHONE):
                raise InvalidArgument(f"{where}.channel", "must be secure messaging or phone")
            if not self.options.channel_allowed(p.channel):
                raise InvalidArgument(f"{where}.channel", f"{p.channel} is not enabled in this region")
            if p.kind not in PARTY_KINDS:
                raise InvalidArgument(f"{where}.kind", "is required")
            person_names.checked(f"{where}.name", p.name)
            if not p.address.strip() or len(p.address) > 320:
                raise InvalidArgument(f"{where}.address", "is required: the secure-messaging recipient"
                                                          " or the phone number (at most 320 characters)")

    # ------------------------------------------------------------------ create

    async def create(self, who: Caller, req: NewBooking) -> BookingView:
        key = req.idempotency_key.strip() or uuid.uuid4().hex
        if len(key) > 200:
            raise InvalidArgument("idempotency_key", "at most 200 characters")
        booking_id = uuid.uuid5(_ID_NAMESPACE, f"{who.id}\n{key}").hex
        existing = await self.bookings.find_one({"_id": booking_id})
        if existing is not None:
            return await self._replay(who, existing, req)

        self._check_time(req.start, req.duration_minutes)
        if req.care_service not in self.options.care_services:
            raise InvalidArgument("care_service", "is not one of this region's care services (ListBookingOptions)")
        if req.contact_type not in self.options.contact_types:
            raise InvalidArgument("contact_type", "is not one of this region's contact types (ListBookingOptions)")
        self._check_parties(req.parties)
        if not req.patient_personnummer:
            raise InvalidArgument("patient_personnummer", "is required")
        if not req.booking_unit_hsa_id:
            raise InvalidArgument("booking_unit_hsa_id", "is required")
        if not req.coordinator_hsa_id:
            raise InvalidArgument("coordinator_hsa_id", "is required")
        # The three checks run concurrently; the first bad field in request order is reported.
        results = await asyncio.gather(
            self.identity.personnummer("patient_personnummer", req.patient_personnummer),
            self.identity.hsa_id("booking_unit_hsa_id", req.booking_unit_hsa_id),
            self.identity.hsa_id("coordinator_hsa_id", req.coordinator_hsa_id),
            return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        patient, unit, coordinator = results
        if coordinator != who.id:
            raise PermissionDenied("a coordinator books their own visits: coordinator_hsa_id must be the caller",
                                   reason="NOT_BOOKING_COORDINATOR")

        now = _now()
        video = self.options.makes_video_meeting(req.care_service, req.contact_type)
        doc = {
            "_id": booking_id,
            "idempotency_key": key,
            "fingerprint": req.fingerprint(),
            "status": BOOKED,
            "patient": patient,
            "start": req.start,
            "duration_minutes": req.duration_minutes,
            "booking_unit": unit,
            "coordinator": coordinator,
            "coordinator_name": who.name,
            "care_service": req.care_service,
            "contact_type": req.contact_type,
            "video": video,
            "meeting_id": "",
            "dial_in_code": "",
            "portal_url": "",
            "meeting_pending": video,
            "meeting_message_id": "",
            "rebook_requests": [],
            "cancel_reason": "",
            "created_at": now,
            "updated_at": now,
        }
        invitations = [self._invitation_doc(doc, p, now) for p in req.parties]

        async def write(session):
            if video:
                doc["meeting_message_id"] = await self.outbox.add(
                    session, MEETING_CHANNEL, {"booking_id": booking_id}, message_id=f"meeting:{booking_id}",
                    not_before=now + self.meeting_retry_delay)
            await self.bookings.insert_one(doc, session=session)
            if invitations:
                await self.invitations.insert_many(invitations, session=session)
            if not video:
                await self._dispatch_invitations(session, doc, invitations, "invitation")

        try:
            await in_transaction(self.client, write)
        except DuplicateKeyError:  # the same key, concurrently: the other request won
            return await self._replay(who, await self._load(booking_id), req)
        self.notify()
        await self._record(who, "booking.create", doc)
        if video:
            try:
                doc = await self.complete_meeting(booking_id)
            except (Unavailable, FailedPrecondition) as exc:
                log.warning("booking %s: room creation deferred to the outbox: %s", booking_id, exc.message)
        return await self._view(doc)

    async def _replay(self, who: Caller, doc: dict, req: NewBooking) -> BookingView:
        if doc.get("fingerprint") != req.fingerprint():
            raise InvalidArgument("idempotency_key", "was already used for a different booking")
        await self._record(who, "booking.create.replay", doc)
        if doc["meeting_pending"] and doc["status"] in ACTIVE:
            try:
                doc = await self.complete_meeting(doc["_id"])
            except (Unavailable, FailedPrecondition):
                pass  # still pending: the outbox keeps retrying
        return await self._view(doc)

    # ------------------------------------------------------------------ the meeting room

    async def complete_meeting(self, booking_id: str) -> dict:
        """Create the booking's room (idempotent in roster), store it and send the invitations
        that waited for it, in one transaction. Used inline and by the outbox dispatcher."""
        doc = await self._load(booking_id)
        if not doc["meeting_pending"]:
            return doc
        end = doc["start"] + dt.timedelta(minutes=doc["duration_minutes"])
        ref = await self.roster.create(
            booking_id=booking_id, start=doc["start"], end=end, coordinator_hsa_id=doc["coordinator"],
            coordinator_name=doc.get("coordinator_name", ""), patient_personnummer=doc["patient"],
            care_unit_hsa_id=doc["booking_unit"])

        async def store(session):
            now = _now()
            fields = {"meeting_id": ref.meeting_id, "dial_in_code": ref.dial_in_code, "portal_url": ref.portal_url,
                      "meeting_pending": False, "updated_at": now}
            result = await self.bookings.update_one(
                {"_id": booking_id, "meeting_pending": True, "status": {"$in": list(ACTIVE)}},
                {"$set": fields}, session=session)
            if result.modified_count == 0:
                return False
            current = {**doc, **fields}
            waiting = await self.invitations.find({"booking_id": booking_id, "awaiting_meeting": True},
                                                  session=session).to_list()
            await self._dispatch_invitations(session, current, waiting, "invitation")
            await self.outbox.mark_delivered(doc["meeting_message_id"], session=session)
            return True

        if await in_transaction(self.client, store):
            self.notify()
            doc = await self._load(booking_id)
            await self.access.record("booking.meeting_created", doc["patient"], care_unit=doc["booking_unit"],
                                     resource=f"booking:{booking_id}", actor="service:booking")
            return doc
        doc = await self._load(booking_id)
        if doc["meeting_pending"] and doc["status"] not in ACTIVE:
            await self._cancel_orphan(doc, ref)
        return await self._load(booking_id)

    async def _cancel_orphan(self, doc: dict, ref: MeetingRef) -> None:
        """The booking was cancelled while its room was being made: the room must never open."""
        await self.roster.cancel(ref.meeting_id, f"booking {doc['status']}")
        await self.bookings.update_one(
            {"_id": doc["_id"]},
            {"$set": {"meeting_id": ref.meeting_id, "dial_in_code": ref.dial_in_code, "portal_url": ref.portal_url,
                      "meeting_pending": False, "updated_at": _now()}})
        await self.outbox.mark_delivered(doc["meeting_message_id"])

    # ------------------------------------------------------------------ invitations

    def _invitation_doc(self, booking: dict, party: PartyInput, now: dt.datetime) -> dict:
        return {
            "_id": uuid.uuid4().hex,
            "booking_id": booking["_id"],
            "coordinator": booking["coordinator"],
            "party": {"party_id": uuid.uuid4().hex, "kind": party.kind, "name": person_names.checked("name", party.name),
                      "channel": party.channel, "address": party.address.strip()},
            "awaiting_meeting": True,
            "message_id": "",
            "phone_task_id": "",
            "attendee_names": [],
            "confirmed_at": None,
            "confirmed_by": "",
            "created_at": now,
        }

    def _text(self, booking: dict, invitation: dict, kind: str) -> tuple[str, str]:
        local = booking["start"].astimezone(_LOCAL)
        when = f"{local:%Y-%m-%d %H:%M} ({booking['duration_minutes']} min)"
        title = {"invitation": "Kallelse", "rescheduled": "Ändrad tid", "cancelled": "Inställt"}[kind]
        subject = f"{title}: {booking['care_service']} {local:%Y-%m-%d %H:%M}"
        lines = [f"{title} till {booking['care_service']} ({booking['contact_type']}).", f"Tid: {when}."]
        if kind == "cancelled":
            lines.append("Mötet är inställt." + (f" Orsak: {booking['cancel_reason']}" if booking.get("cancel_reason") else ""))
        elif booking.get("portal_url"):
            lines += [f"Logga in i mötesportalen: {booking['portal_url']}",
                      f"Mötes-ID för uppringning: {booking['dial_in_code']}"]
        if kind != "cancelled":
            lines.append(f"Bekräfta och ange vilka som deltar med bekräftelsekod {invitation['_id']}.")
        return subject, "\n".join(lines)

    async def _dispatch_invitations(self, session, booking: dict, invitations: list[dict], kind: str) -> None:
        """Per invitation: an outbox message (secure channel) or a phone task (nothing sent)."""
        now = _now()
        for inv in invitations:
            subject, body = self._text(booking, inv, kind)
            party = inv["party"]
            if party["channel"] == PHONE:
                task_id = uuid.uuid4().hex
                await self.phone_tasks.insert_one({
                    "_id": task_id, "booking_id": booking["_id"], "coordinator": booking["coordinator"],
                    "invitation_id": inv["_id"], "party": party, "kind": kind,
                    "instructions": f"Ring {party['name']} på {party['address']}: {subject}\n{body}",
                    "done": False, "created_at": now, "done_at": None,
                }, session=session)
                fields = {"phone_task_id": task_id}
            else:
                message_id = await self.outbox.add(session, messaging.CHANNEL, {
                    "recipient": party["address"], "subject": subject, "body": body,
                    "booking_id": booking["_id"], "invitation_id": inv["_id"], "kind": kind,
                })
                fields = {"message_id": message_id}
            await self.invitations.update_one({"_id": inv["_id"]},
                                              {"$set": {**fields, "awaiting_meeting": False}}, session=session)

    async def _invitation_views(self, invitations: list[dict]) -> list[dict]:
        messages = await self.outbox.get_many(i["message_id"] for i in invitations)
        views = []
        for inv in invitations:
            msg = messages.get(inv["message_id"]) or {}
            if inv.get("confirmed_at"):
                state = CONFIRMED
            elif inv.get("awaiting_meeting"):  # details (room) not known yet: nothing sent, no task yet
                state = INVITED
            elif inv["party"]["channel"] == PHONE:
                state = PHONE_TASK
            elif msg.get("state") == DELIVERED:
                state = INV_DELIVERED
            else:
                state = INVITED
            views.append({**inv, "state": state, "delivered_at": msg.get("delivered_at"),
                          "delivery_attempts": msg.get("attempts", 0), "last_error": msg.get("last_error", "")})
        return views

    async def _view(self, doc: dict) -> BookingView:
        invitations = await self.invitations.find({"booking_id": doc["_id"]}).sort("created_at", ASCENDING).to_list()
        return BookingView(doc, await self._invitation_views(invitations))

    async def invite(self, who: Caller, booking_id: str, parties: list[PartyInput]) -> list[dict]:
        doc = await self._load(booking_id)
        self._require_coordinator(who, doc)
        if doc["status"] not in ACTIVE:
            raise FailedPrecondition(f"the booking is {doc['status']}", reason="BOOKING_NOT_ACTIVE")
        if not parties:
            raise InvalidArgument("parties", "name at least one party")
        self._check_parties(parties)
        now = _now()
        invitations = [self._invitation_doc(doc, p, now) for p in parties]

        async def write(session):
            await self.invitations.insert_many(invitations, session=session)
            current = await self.bookings.find_one({"_id": booking_id}, session=session)
            if not current["meeting_pending"]:
                await self._dispatch_invitations(session, current, invitations, "invitation")
            await self.bookings.update_one({"_id": booking_id}, {"$set": {"updated_at": now}}, session=session)

        await in_transaction(self.client, write)
        self.notify()
        await self._record(who, "booking.invite", doc)
        fresh = await self.invitations.find({"_id": {"$in": [i["_id"] for i in invitations]}}).to_list()
        return await self._invitation_views(sorted(fresh, key=lambda i: [x["_id"] for x in invitations].index(i["_id"])))

    async def list_invitations(self, who: Caller, booking_id: str) -> list[dict]:
        doc = await self._load(booking_id)
        self._require_reader(who, doc)
        await self._record(who, "booking.invitations.read", doc)
        return (await self._view(doc)).invitations

    async def confirm(self, who: Caller, invitation_id: str, names: list[str]) -> dict:
        """The invitation id is the confirmation code sent to the party over the secure channel."""
        if not invitation_id:
            raise InvalidArgument("invitation_id", "is required")
        if not names or len(names) > MAX_NAMES:
            raise InvalidArgument("attendee_names", f"name 1 to {MAX_NAMES} people who will attend")
        cleaned = [person_names.checked(f"attendee_names[{i}]", n) for i, n in enumerate(names)]
        inv = await self.invitations.find_one({"_id": invitation_id})
        if inv is None:
            raise NotFound(f"invitation {invitation_id} does not exist")
        doc = await self._load(inv["booking_id"])
        if doc["status"] not in ACTIVE:
            raise FailedPrecondition(f"the booking is {doc['status']}", reason="BOOKING_NOT_ACTIVE")
        await self.invitations.update_one({"_id": invitation_id}, {"$set": {
            "attendee_names": cleaned, "confirmed_at": _now(), "confirmed_by": who.actor()}})
        await self._record(who, "booking.invitation.confirm", doc)
        return (await self._invitation_views([await self.invitations.find_one({"_id": invitation_id})]))[0]

    # ------------------------------------------------------------------ reads

    async def get(self, who: Caller, booking_id: str) -> BookingView:
        doc = await self._load(booking_id)
        self._require_reader(who, doc)
        await self._record(who, "booking.read", doc)
        return await self._view(doc)

    async def find_by_dial_in_code(self, who: Caller, code: str) -> BookingView:
        if not code.strip():
            raise InvalidArgument("dial_in_code", "is required")
        doc = await self.bookings.find_one({"dial_in_code": code.strip()})
        if doc is None:
            raise NotFound("no booking holds this dial-in meeting ID")
        self._require_reader(who, doc)
        await self._record(who, "booking.read.dial_in", doc)
        return await self._view(doc)

    async def list(self, who: Caller, *, unit: str, coordinator: str, start: dt.datetime | None,
                   end: dt.datetime | None, page_size: int, page_token: str) -> tuple[list[dict], str]:
        if bool(unit) == bool(coordinator):
            raise InvalidArgument("booking_unit_hsa_id", "give exactly one of booking_unit_hsa_id or coordinator_hsa_id")
        if unit and not who.is_service and who.unit != unit and not who.has_role("coordinator"):
            raise PermissionDenied("staff list the bookings of their own unit only", reason="NOT_UNIT_STAFF")
        if coordinator and not who.is_service and who.id != coordinator:
            raise PermissionDenied("a coordinator lists their own bookings only", reason="NOT_BOOKING_COORDINATOR")
        if start and end and end <= start:
            raise InvalidArgument("period.end", "must be after period.start")
        size = _page_size(page_size)
        query: dict[str, Any] = {"booking_unit": unit} if unit else {"coordinator": coordinator}
        if unit and who.unit != unit and not who.is_service:
            # A coordinator outside the unit sees only their own bookings there.
            query["coordinator"] = who.id
        when: dict[str, Any] = {}
        if start:
            when["$gte"] = start
        if end:
            when["$lt"] = end
        if when:
            query["start"] = when
        if page_token:
            after_start, after_id = _read_page_token(page_token, "page.page_token")
            query = {"$and": [query, {"$or": [{"start": {"$gt": after_start}},
                                              {"start": after_start, "_id": {"$gt": after_id}}]}]}
        docs = await self.bookings.find(query).sort([("start", ASCENDING), ("_id", ASCENDING)]).limit(size + 1).to_list()
        more = len(docs) > size
        docs = docs[:size]
        if docs:
            await self.access.record("booking.list", [d["patient"] for d in docs],
                                     care_unit=unit, resource="bookings", actor=who.actor())
        token = _page_token(docs[-1]["start"], docs[-1]["_id"]) if more else ""
        return docs, token

    # ------------------------------------------------------------------ changes

    async def reschedule(self, who: Caller, booking_id: str, start: dt.datetime | None, duration: int) -> BookingView:
        doc = await self._load(booking_id)
        self._require_coordinator(who, doc)
        if doc["status"] not in ACTIVE:
            raise FailedPrecondition(f"the booking is {doc['status']}", reason="BOOKING_NOT_ACTIVE")
        if doc["start"] <= _now():
            raise FailedPrecondition("a booking in the past can't be moved", reason="BOOKING_IN_PAST")
        duration = duration or doc["duration_minutes"]
        self._check_time(start, duration)
        if doc["meeting_pending"]:
            raise FailedPrecondition("the meeting room is still being created; try again shortly",
                                     reason="MEETING_PENDING")
        if doc["meeting_id"]:
            await self.roster.reschedule(doc["meeting_id"], start, start + dt.timedelta(minutes=duration))
        now = _now()

        async def write(session):
            result = await self.bookings.update_one(
                {"_id": booking_id, "status": {"$in": list(ACTIVE)}, "start": doc["start"]},
                {"$set": {"start": start, "duration_minutes": duration, "updated_at": now}}, session=session)
            if result.modified_count == 0:
                raise FailedPrecondition("the booking changed meanwhile; read it and try again", reason="CONFLICT")
            current = {**doc, "start": start, "duration_minutes": duration}
            invitations = await self.invitations.find({"booking_id": booking_id, "awaiting_meeting": False},
                                                      session=session).to_list()
            await self._dispatch_invitations(session, current, invitations, "rescheduled")

        await in_transaction(self.client, write)
        self.notify()
        doc = await self._load(booking_id)
        await self._record(who, "booking.reschedule", doc)
        return await self._view(doc)

    async def cancel(self, who: Caller, booking_id: str, reason: str) -> BookingView:
        doc = await self._load(booking_id)
        self._require_coordinator(who, doc)
        if doc["status"] not in ACTIVE:
            raise FailedPrecondition(f"the booking is already {doc['status']}", reason="BOOKING_NOT_ACTIVE")
        if len(reason) > 500:
            raise InvalidArgument("reason", "at most 500 characters")
        return await self._close(who, doc, CANCELLED, reason.strip(), "booking.cancel")

    async def _close(self, who: Caller, doc: dict, status: str, reason: str, action: str) -> BookingView:
        """Cancel / enter-in-error: the room is cancelled first (never opens), then the booking
        and the parties' notices are written in one transaction."""
        if doc["meeting_id"]:
            await self.roster.cancel(doc["meeting_id"], reason or f"booking {status}")
        now = _now()

        async def write(session):
            result = await self.bookings.update_one(
                {"_id": doc["_id"], "status": {"$in": list(ACTIVE)}},
                {"$set": {"status": status, "cancel_reason": reason, "updated_at": now}}, session=session)
            if result.modified_count == 0:
                raise FailedPrecondition("the booking changed meanwhile; read it and try again", reason="CONFLICT")
            invitations = await self.invitations.find({"booking_id": doc["_id"], "awaiting_meeting": False},
                                                      session=session).to_list()
            await self._dispatch_invitations(session, {**doc, "cancel_reason": reason}, invitations, "cancelled")

        await in_transaction(self.client, write)
        self.notify()
        fresh = await self._load(doc["_id"])
        await self._record(who, action, fresh)
        return await self._view(fresh)

    async def update_status(self, who: Caller, booking_id: str, status: str) -> BookingView:
        doc = await self._load(booking_id)
        self._require_coordinator(who, doc)
        if status not in (FULFILLED, NOSHOW, ENTERED_IN_ERROR):
            raise InvalidArgument("status", "must be fulfilled, noshow or entered-in-error (cancel with CancelBooking)")
        if status == ENTERED_IN_ERROR:
            if doc["status"] == ENTERED_IN_ERROR:
                raise FailedPrecondition("the booking is already entered-in-error", reason="BOOKING_NOT_ACTIVE")
            if doc["status"] in ACTIVE:
                return await self._close(who, doc, ENTERED_IN_ERROR, "registrerad av misstag", "booking.status")
        else:
            if doc["status"] != BOOKED:
                raise FailedPrecondition(f"the booking is {doc['status']}", reason="BOOKING_NOT_ACTIVE")
            if doc["start"] > _now():
                raise FailedPrecondition("the visit has not started yet", reason="BOOKING_IN_FUTURE")
        await self.bookings.update_one({"_id": booking_id}, {"$set": {"status": status, "updated_at": _now()}})
        fresh = await self._load(booking_id)
        await self._record(who, "booking.status", fresh)
        return await self._view(fresh)

    async def request_rebook(self, who: Caller, booking_id: str, meeting_id: str, reason: str,
                             ticket_id: str, on_behalf_of: str = "") -> dict:
        """`on_behalf_of`: the person who asked (support's reporter), recorded as requested_by."""
        on_behalf_of = on_behalf_of.strip()
        if len(on_behalf_of) > 100:
            raise InvalidArgument("on_behalf_of.id", "is not an HSA-id or a personnummer")
        if booking_id:
            doc = await self._load(booking_id)
        elif meeting_id:
            doc = await self.bookings.find_one({"meeting_id": meeting_id})
            if doc is None:
                raise NotFound(f"no booking made meeting {meeting_id}")
        else:
            raise InvalidArgument("booking_id", "give booking_id or meeting_id")
        if not reason.strip() or len(reason) > 1000:
            raise InvalidArgument("reason", "is required (at most 1000 characters)")
        request = {"request_id": uuid.uuid4().hex, "reason": reason.strip(), "ticket_id": ticket_id,
                   "requested_at": _now(), "requested_by": on_behalf_of or who.actor(),
                   **({"requested_via": who.actor()} if on_behalf_of else {})}
        # One request per ticket: support retries (and its sweep) resend, and must not pile up copies.
        guard = {"_id": doc["_id"]}
        if ticket_id:
            guard["rebook_requests.ticket_id"] = {"$ne": ticket_id}
        result = await self.bookings.update_one(guard, {"$push": {"rebook_requests": request},
                                                        "$set": {"updated_at": _now()}})
        if result.modified_count == 0 and ticket_id:
            fresh = await self._load(doc["_id"])
            request = next(r for r in fresh["rebook_requests"] if r.get("ticket_id") == ticket_id)
        await self._record(who, "booking.rebook_request", doc, on_behalf_of)
        return request

    # ------------------------------------------------------------------ phone tasks

    async def list_phone_tasks(self, who: Caller, coordinator: str, include_done: bool, page_size: int,
                               page_token: str) -> tuple[list[dict], str]:
        coordinator = coordinator or who.id
        if coordinator != who.id:
            raise PermissionDenied("a coordinator sees their own phone tasks only", reason="NOT_TASK_OWNER")
        size = _page_size(page_size)
        query: dict[str, Any] = {"coordinator": coordinator}
        if not include_done:
            query["done"] = False
        if page_token:
            after, after_id = _read_page_token(page_token, "page.page_token")
            query = {"$and": [query, {"$or": [{"created_at": {"$gt": after}},
                                              {"created_at": after, "_id": {"$gt": after_id}}]}]}
        tasks = await self.phone_tasks.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)]) \
            .limit(size + 1).to_list()
        more = len(tasks) > size
        tasks = tasks[:size]
        return tasks, (_page_token(tasks[-1]["created_at"], tasks[-1]["_id"]) if more else "")

    async def complete_phone_task(self, who: Caller, task_id: str) -> dict:
        if not task_id:
            raise InvalidArgument("task_id", "is required")
        task = await self.phone_tasks.find_one({"_id": task_id})
        if task is None:
            raise NotFound(f"phone task {task_id} does not exist")
        if task["coordinator"] != who.id:
            raise PermissionDenied("only the coordinator the task belongs to may complete it", reason="NOT_TASK_OWNER")
        await self.phone_tasks.update_one({"_id": task_id}, {"$set": {"done": True, "done_at": _now()}})
        return await self.phone_tasks.find_one({"_id": task_id})


class MeetingChannel:
    """Outbox adapter: create a pending booking's room (retried by the dispatcher until it works)."""

    def __init__(self, bookings: Bookings) -> None:
        self._bookings = bookings

    async def deliver(self, message: OutboxMessage) -> None:
        try:
            await self._bookings.complete_meeting(message.payload["booking_id"])
        except (Unavailable, FailedPrecondition) as exc:
            # Roster down, or refusing for now: the booking exists, so keep trying (with backoff).
            raise RetryableDeliveryError(exc.message) from None
        except NotFound as exc:  # the booking itself is gone
            raise PermanentDeliveryError(exc.message) from None
