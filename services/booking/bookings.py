"""Booking's use cases: who may do what to a booking, in which order the parts move, what is
access-logged. Plain Python (no gRPC types); raises services.runtime.errors.*.

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
- A change to a booking is one versioned write (store.mutate) of a change from model.py; a
  call to roster that the change depends on (reschedule, cancel) is made before it.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import logging
import uuid
from typing import Any, cast

from pymongo.errors import DuplicateKeyError

from services.booking import messaging, model
from services.booking.model import (
    ENTERED_IN_ERROR_REASON,
    MAX_KEY,
    MAX_PATIENT_NAME,
    MAX_REASON,
    MAX_REBOOK_REASON,
    OUTCOMES,
    Booking,
    Invitation,
    InvitationView,
    NewBooking,
    Notice,
    PartyInput,
    PhoneTask,
    RebookRequest,
    Room,
    Status,
)
from services.booking.options import PHONE, BookingOptions
from services.booking.peers import IdentityValidator, RosterMeetings
from services.booking.store import BookingStore
from services.runtime import names, paging
from services.runtime.access_log import AccessLog
from services.runtime.auth import Caller
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from services.runtime.outbox import (
    DELIVERED,
    Outbox,
    OutboxMessage,
    PermanentDeliveryError,
    RetryableDeliveryError,
    in_transaction,
)

log = logging.getLogger("svpl.booking")

MEETING_CHANNEL = "booking.create_meeting"


class BookingView:
    """A booking plus (for single-booking answers) its invitations as the coordinator sees them."""

    def __init__(self, booking: Booking, invitations: list[InvitationView]) -> None:
        self.booking = booking
        self.invitations = invitations


class Bookings:
    def __init__(self, db, client, access: AccessLog, outbox: Outbox, options: BookingOptions,
                 identity: IdentityValidator, roster: RosterMeetings, *, meeting_retry_delay: float = 5.0,
                 notify=lambda: None) -> None:
        self.client = client
        self.store = BookingStore(client, db)
        self.access = access
        self.outbox = outbox
        self.options = options
        self.identity = identity
        self.roster = roster
        self.meeting_retry_delay = dt.timedelta(seconds=meeting_retry_delay)
        self.notify = notify  # wakes the outbox dispatcher after a commit

    async def ensure_indexes(self) -> None:
        await self.store.ensure_indexes()

    # ------------------------------------------------------------------ access

    async def _record(self, who: Caller, action: str, b: Booking, on_behalf_of: str = "") -> None:
        """`on_behalf_of`: the person a service (who) acts for; the record names them, via the service."""
        await self.access.record(action, b.patient, care_unit=b.booking_unit, resource=f"booking:{b.id}",
                                 actor=on_behalf_of or who.actor(), via=who.actor() if on_behalf_of else "")

    @staticmethod
    def _require_coordinator(who: Caller, b: Booking) -> None:
        if not (who.is_person and who.id == b.coordinator):
            raise PermissionDenied("only the booking's coordinator may change it", reason="NOT_BOOKING_COORDINATOR")

    @staticmethod
    def _require_reader(who: Caller, b: Booking) -> None:
        if who.is_service:
            return
        if who.id == b.coordinator or (who.unit and who.unit == b.booking_unit):
            return
        raise PermissionDenied("only the booking's coordinator or staff of its booking unit may read it",
                               reason="NOT_BOOKING_READER")

    async def _load(self, booking_id: str, field: str = "booking_id") -> Booking:
        if not booking_id:
            raise InvalidArgument(field, "is required")
        return await self.store.get(booking_id)

    def _channel_allowed(self, channel: str) -> bool:
        return self.options.channel_allowed(channel)

    # ------------------------------------------------------------------ create

    async def create(self, who: Caller, req: NewBooking) -> BookingView:
        key = req.idempotency_key.strip() or uuid.uuid4().hex
        if len(key) > MAX_KEY:
            raise InvalidArgument("idempotency_key", f"at most {MAX_KEY} characters")
        if len(req.patient_name) > MAX_PATIENT_NAME:
            raise InvalidArgument("patient_name", f"at most {MAX_PATIENT_NAME} characters")
        booking_id = model.booking_id_for(who.id, key)
        existing = await self.store.find_one({"_id": booking_id})
        if existing is not None:
            return await self._replay(who, existing, req)

        patient, unit, coordinator = await self._checked(who, req)
        now = model.now()
        video = self.options.makes_video_meeting(req.care_service, req.contact_type)
        b = model.booked(booking_id, key, req, patient=patient, unit=unit, coordinator=coordinator,
                         coordinator_name=who.name, video=video, at=now)
        invitations = [Invitation.new(b, p, now) for p in req.parties]

        async def write(session):
            if video:
                b.meeting_message_id = await self.outbox.add(
                    session, MEETING_CHANNEL, {"booking_id": booking_id}, message_id=f"meeting:{booking_id}",
                    not_before=now + self.meeting_retry_delay)
            await self.store.insert(b, session=session)
            await self.store.add_invitations(invitations, session=session)
            if not video:
                await self._send(session, b, invitations, Notice.INVITATION)

        try:
            await in_transaction(self.client, write)
        except DuplicateKeyError:  # the same key, concurrently: the other request won
            return await self._replay(who, await self._load(booking_id), req)
        self.notify()
        await self._record(who, "booking.create", b)
        if video:
            try:
                b = await self.complete_meeting(booking_id)
            except (Unavailable, FailedPrecondition) as exc:
                log.warning("booking %s: room creation deferred to the outbox: %s", booking_id, exc.message)
        return await self._view(b)

    async def _checked(self, who: Caller, req: NewBooking) -> tuple[str, str, str]:
        """The request checked against the region's options and identity: (patient, unit, coordinator),
        normalised. The coordinator books their own visits."""
        model.check_time(req.start, req.duration_minutes)
        if req.care_service not in self.options.care_services:
            raise InvalidArgument("care_service", "is not one of this region's care services (ListBookingOptions)")
        if req.contact_type not in self.options.contact_types:
            raise InvalidArgument("contact_type", "is not one of this region's contact types (ListBookingOptions)")
        model.check_parties(req.parties, self._channel_allowed)
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
        patient, unit, coordinator = cast(tuple[str, str, str], results)  # no exception: raised above
        if coordinator != who.id:
            raise PermissionDenied("a coordinator books their own visits: coordinator_hsa_id must be the caller",
                                   reason="NOT_BOOKING_COORDINATOR")
        return patient, unit, coordinator

    async def _replay(self, who: Caller, b: Booking, req: NewBooking) -> BookingView:
        if b.fingerprint != req.fingerprint():
            raise InvalidArgument("idempotency_key", "was already used for a different booking")
        await self._record(who, "booking.create.replay", b)
        if b.meeting_pending and b.active:
            try:
                b = await self.complete_meeting(b.id)
            except (Unavailable, FailedPrecondition):
                pass  # still pending: the outbox keeps retrying
        return await self._view(b)

    # ------------------------------------------------------------------ the meeting room

    async def complete_meeting(self, booking_id: str) -> Booking:
        """Create the booking's room (idempotent in roster), store it and send the invitations
        that waited for it, in one transaction. Used inline and by the outbox dispatcher."""
        b = await self._load(booking_id)
        if not b.meeting_pending:
            return b
        ref = await self.roster.create(
            booking_id=booking_id, start=b.start, end=b.end, coordinator_hsa_id=b.coordinator,
            coordinator_name=b.coordinator_name, patient_personnummer=b.patient, care_unit_hsa_id=b.booking_unit,
            patient_name=b.patient_name)
        room = Room(ref.meeting_id, ref.dial_in_code, ref.portal_url)

        async def send_waiting(session, current: Booking, _made: bool) -> None:
            waiting = await self.store.invitations_awaiting(booking_id, True, session)
            await self._send(session, current, waiting, Notice.INVITATION)
            await self.outbox.mark_delivered(current.meeting_message_id, session=session)

        b, made = await self.store.mutate(booking_id, lambda x: model.room_made(x, room, model.now()), send_waiting)
        if made:
            self.notify()
            b = self.store.as_stored(b)
            await self.access.record("booking.meeting_created", b.patient, care_unit=b.booking_unit,
                                     resource=f"booking:{booking_id}", actor="service:booking")
            return b
        if b.meeting_pending and not b.active:
            await self._cancel_orphan(b, room)
        return await self._load(booking_id)

    async def _cancel_orphan(self, b: Booking, room: Room) -> None:
        """The booking was cancelled while its room was being made: the room must never open."""
        await self.roster.cancel(room.meeting_id, f"booking {b.status}")
        await self.store.mutate(b.id, lambda x: model.orphan_room(x, room, model.now()))
        await self.outbox.mark_delivered(b.meeting_message_id)

    # ------------------------------------------------------------------ invitations

    async def _send(self, session, b: Booking, invitations: list[Invitation], kind: Notice) -> None:
        """Per invitation, in the caller's transaction: an outbox message (secure channel) or a
        phone task for the coordinator (nothing sent)."""
        now = model.now()
        for inv in invitations:
            fields: dict[str, Any]
            if inv.party.channel == PHONE:
                task = model.phone_task(b, inv, kind, now)
                await self.store.add_phone_task(task, session)
                fields = {"phone_task_id": task.id}
            else:
                subject, body = model.notice_text(b, inv.id, kind)
                message_id = await self.outbox.add(session, messaging.CHANNEL, {
                    "recipient": inv.party.address, "subject": subject, "body": body,
                    "booking_id": b.id, "invitation_id": inv.id, "kind": kind.value,
                })
                fields = {"message_id": message_id}
            await self.store.invitation_sent(inv.id, fields, session)

    def _notices(self, kind: Notice):
        """`also` for a change that tells the parties already invited (rescheduled, cancelled)."""

        async def send(session, b: Booking, _result) -> None:
            await self._send(session, b, await self.store.invitations_awaiting(b.id, False, session), kind)

        return send

    async def _invitation_views(self, invitations: list[Invitation]) -> list[InvitationView]:
        messages = await self.outbox.get_many(i.message_id for i in invitations)
        views = []
        for inv in invitations:
            msg = messages.get(inv.message_id) or {}
            views.append(InvitationView(inv, model.invitation_state(inv, msg.get("state"), DELIVERED),
                                        delivered_at=msg.get("delivered_at"),
                                        delivery_attempts=msg.get("attempts", 0),
                                        last_error=msg.get("last_error", "")))
        return views

    async def _view(self, b: Booking) -> BookingView:
        return BookingView(b, await self._invitation_views(await self.store.invitations_of(b.id)))

    async def invite(self, who: Caller, booking_id: str, parties: list[PartyInput]) -> list[InvitationView]:
        b = await self._load(booking_id)
        self._require_coordinator(who, b)
        b.require_active()
        if not parties:
            raise InvalidArgument("parties", "name at least one party")
        model.check_parties(parties, self._channel_allowed)
        now = model.now()
        invitations = [Invitation.new(b, p, now) for p in parties]

        async def add(session, current: Booking, _result) -> None:
            await self.store.add_invitations(invitations, session=session)
            if not current.meeting_pending:
                await self._send(session, current, invitations, Notice.INVITATION)

        await self.store.mutate(booking_id, lambda x: model.touch(x, now), add, always=True)
        self.notify()
        await self._record(who, "booking.invite", b)
        return await self._invitation_views(await self.store.invitations_by_id(i.id for i in invitations))

    async def list_invitations(self, who: Caller, booking_id: str) -> list[InvitationView]:
        b = await self._load(booking_id)
        self._require_reader(who, b)
        await self._record(who, "booking.invitations.read", b)
        return (await self._view(b)).invitations

    async def confirm(self, who: Caller, invitation_id: str, names: list[str]) -> InvitationView:
        """The invitation id is the confirmation code sent to the party over the secure channel."""
        if not invitation_id:
            raise InvalidArgument("invitation_id", "is required")
        cleaned = model.checked_attendees(names)
        inv = await self.store.invitation(invitation_id)
        if inv is None:
            raise NotFound(f"invitation {invitation_id} does not exist")
        b = await self._load(inv.booking_id)
        b.require_active()
        model.confirm(inv, cleaned, who.actor(), model.now())
        await self.store.invitation_confirmed(inv)
        await self._record(who, "booking.invitation.confirm", b)
        return (await self._invitation_views(await self.store.invitations_by_id([invitation_id])))[0]

    # ------------------------------------------------------------------ reads

    async def get(self, who: Caller, booking_id: str) -> BookingView:
        b = await self._load(booking_id)
        self._require_reader(who, b)
        await self._record(who, "booking.read", b)
        return await self._view(b)

    async def find_by_dial_in_code(self, who: Caller, code: str) -> BookingView:
        if not code.strip():
            raise InvalidArgument("dial_in_code", "is required")
        b = await self.store.by_dial_in_code(code.strip())
        if b is None:
            raise NotFound("no booking holds this dial-in meeting ID")
        self._require_reader(who, b)
        await self._record(who, "booking.read.dial_in", b)
        return await self._view(b)

    async def list(self, who: Caller, *, unit: str, coordinator: str, start: dt.datetime | None,
                   end: dt.datetime | None, page_size: int, page_token: str) -> tuple[list[Booking], str]:
        if bool(unit) == bool(coordinator):
            raise InvalidArgument("booking_unit_hsa_id", "give exactly one of booking_unit_hsa_id or coordinator_hsa_id")
        if unit and not who.is_service and who.unit != unit and not who.has_role("coordinator"):
            raise PermissionDenied("staff list the bookings of their own unit only", reason="NOT_UNIT_STAFF")
        if coordinator and not who.is_service and who.id != coordinator:
            raise PermissionDenied("a coordinator lists their own bookings only", reason="NOT_BOOKING_COORDINATOR")
        if start and end and end <= start:
            raise InvalidArgument("period.end", "must be after period.start")
        size = paging.page_size(page_size)
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
        bookings, token = await self.store.page(query, query=(unit, coordinator, start, end), size=size,
                                                token=page_token)
        if bookings:
            await self.access.record("booking.list", [b.patient for b in bookings],
                                     care_unit=unit, resource="bookings", actor=who.actor())
        return bookings, token

    # ------------------------------------------------------------------ changes

    async def reschedule(self, who: Caller, booking_id: str, start: dt.datetime | None, duration: int) -> BookingView:
        b = await self._load(booking_id)
        self._require_coordinator(who, b)
        b.require_active()
        if b.start <= model.now():
            raise FailedPrecondition("a booking in the past can't be moved", reason="BOOKING_IN_PAST")
        duration = duration or b.duration_minutes
        model.check_time(start, duration)
        start = cast(dt.datetime, start)  # checked: not None
        if b.meeting_pending:
            raise FailedPrecondition("the meeting room is still being created; try again shortly",
                                     reason="MEETING_PENDING")
        if b.meeting_id:
            await self.roster.reschedule(b.meeting_id, start, start + dt.timedelta(minutes=duration))
        now, read_start = model.now(), b.start
        b, _ = await self.store.mutate(booking_id, lambda x: model.reschedule(x, read_start, start, duration, now),
                                       self._notices(Notice.RESCHEDULED), always=True)
        self.notify()
        b = self.store.as_stored(b)
        await self._record(who, "booking.reschedule", b)
        return await self._view(b)

    async def cancel(self, who: Caller, booking_id: str, reason: str) -> BookingView:
        b = await self._load(booking_id)
        self._require_coordinator(who, b)
        b.require_active(already=True)
        if len(reason) > MAX_REASON:
            raise InvalidArgument("reason", f"at most {MAX_REASON} characters")
        return await self._close(who, b, Status.CANCELLED, reason.strip(), "booking.cancel")

    async def _close(self, who: Caller, b: Booking, status: Status, reason: str, action: str) -> BookingView:
        """Cancel / enter-in-error: the room is cancelled first (never opens), then the booking
        and the parties' notices are written in one transaction."""
        if b.meeting_id:
            await self.roster.cancel(b.meeting_id, reason or f"booking {status}")
        now = model.now()
        b, _ = await self.store.mutate(b.id, lambda x: model.close(x, status, reason, now),
                                       self._notices(Notice.CANCELLED), always=True)
        self.notify()
        b = self.store.as_stored(b)
        await self._record(who, action, b)
        return await self._view(b)

    async def update_status(self, who: Caller, booking_id: str, status: str) -> BookingView:
        b = await self._load(booking_id)
        self._require_coordinator(who, b)
        if status not in OUTCOMES:
            raise InvalidArgument("status", "must be fulfilled, noshow or entered-in-error (cancel with CancelBooking)")
        status = Status(status)
        if status == Status.ENTERED_IN_ERROR and b.status != Status.ENTERED_IN_ERROR and b.active:
            return await self._close(who, b, Status.ENTERED_IN_ERROR, ENTERED_IN_ERROR_REASON, "booking.status")
        b, _ = await self.store.mutate(booking_id, lambda x: model.record_outcome(x, status, model.now()))
        b = self.store.as_stored(b)
        await self._record(who, "booking.status", b)
        return await self._view(b)

    async def request_rebook(self, who: Caller, booking_id: str, meeting_id: str, reason: str,
                             ticket_id: str, on_behalf_of: str = "", on_behalf_of_name: str = "") -> RebookRequest:
        """`on_behalf_of`: the person who asked (support's reporter), recorded as requested_by (and
        their name, shown to the coordinator)."""
        on_behalf_of = on_behalf_of.strip()
        on_behalf_of_name = names.checked("on_behalf_of.display_name", on_behalf_of_name, 200, required=False)
        if len(on_behalf_of) > 100:
            raise InvalidArgument("on_behalf_of.id", "is not an HSA-id or a personnummer")
        if booking_id:
            b = await self._load(booking_id)
        elif meeting_id:
            found = await self.store.by_meeting(meeting_id)
            if found is None:
                raise NotFound(f"no booking made meeting {meeting_id}")
            b = found
        else:
            raise InvalidArgument("booking_id", "give booking_id or meeting_id")
        if not reason.strip() or len(reason) > MAX_REBOOK_REASON:
            raise InvalidArgument("reason", f"is required (at most {MAX_REBOOK_REASON} characters)")
        now = model.now()
        request = RebookRequest(uuid.uuid4().hex, reason.strip(), ticket_id, now, on_behalf_of or who.actor(),
                                who.actor() if on_behalf_of else "", on_behalf_of_name)
        _, stored = await self.store.mutate(b.id, lambda x: model.request_rebook(x, request, now))
        await self._record(who, "booking.rebook_request", b, on_behalf_of)
        return stored

    async def resolve_rebook(self, who: Caller, booking_id: str, request_id: str, resolution: str) -> RebookRequest:
        resolution = resolution.strip()
        if not resolution or len(resolution) > MAX_REBOOK_REASON:
            raise InvalidArgument("resolution", f"is required (at most {MAX_REBOOK_REASON} characters)")
        if not request_id:
            raise InvalidArgument("request_id", "is required")
        b = await self._load(booking_id)
        self._require_coordinator(who, b)
        _, handled = await self.store.mutate(b.id, lambda x: model.resolve_rebook(x, request_id, resolution, who.id,
                                                                                  model.now()))
        await self._record(who, "booking.rebook_resolve", b)
        return handled

    # ------------------------------------------------------------------ phone tasks

    async def list_phone_tasks(self, who: Caller, coordinator: str, include_done: bool, page_size: int,
                               page_token: str) -> tuple[builtins.list[PhoneTask], str]:  # list: a method here
        coordinator = coordinator or who.id
        if coordinator != who.id:
            raise PermissionDenied("a coordinator sees their own phone tasks only", reason="NOT_TASK_OWNER")
        query: dict[str, Any] = {"coordinator": coordinator}
        if not include_done:
            query["done"] = False
        return await self.store.phone_task_page(query, query=(coordinator, include_done),
                                                size=paging.page_size(page_size), token=page_token)

    async def add_undelivered_task(self, booking_id: str, key: str, name: str, instructions: str) -> PhoneTask:
        """roster's call: a person (a next of kin) was not reached; the coordinator phones them."""
        if not (key or "").strip() or len(key) > 200:
            raise InvalidArgument("task_key", "is required (at most 200 characters)")
        name = names.checked("person_name", name)
        instructions = (instructions or "").strip()
        if not instructions or len(instructions) > 4000:
            raise InvalidArgument("instructions", "is required (at most 4000 characters)")
        b = await self._load(booking_id)
        task = model.undelivered_task(b, key.strip(), name, instructions, model.now())
        existing = await self.store.phone_task(task.id)
        if existing is not None:
            return existing
        try:
            await self.store.add_phone_task(task, None)
        except DuplicateKeyError:  # a concurrent retry added it
            pass
        return await self.store.phone_task(task.id) or task

    async def complete_phone_task(self, who: Caller, task_id: str) -> PhoneTask:
        if not task_id:
            raise InvalidArgument("task_id", "is required")
        task = await self.store.phone_task(task_id)
        if task is None:
            raise NotFound(f"phone task {task_id} does not exist")
        if task.coordinator != who.id:
            raise PermissionDenied("only the coordinator the task belongs to may complete it", reason="NOT_TASK_OWNER")
        await self.store.phone_task_done(task_id, model.now())
        return await self.store.phone_task(task_id) or task


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
