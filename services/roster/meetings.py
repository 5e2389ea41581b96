"""The roster's use cases: who may do what to a meeting, in which order the parts move.

Plain Python (no gRPC types): callers are `services.runtime.auth.Caller`, peers are
`peers.Identity` / `peers.Media`, errors are `services.runtime.errors`. Each change is
one versioned write of the meeting (store.mutate) made *before* any call to a peer, so
that a refusal (removed, finished) holds from that moment on, whatever a peer does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from services.roster import codes, metrics, model
from services.roster.model import Meeting, Participant
from services.roster.peers import Identity, Media, Refused
from services.roster.personal_codes import MARKER, PersonalCodes
from services.roster.store import MeetingStore
from services.runtime import names, paging
from services.runtime.access_log import AccessLog
from services.runtime.auth import Caller
from services.runtime.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.runtime.outbox import ChannelAdapter, Outbox, OutboxMessage

log = logging.getLogger("svpl.roster")

INBOX_1177 = "inbox_1177"
PHONE_TASK = "booking_phone_task"  # the coordinator's phone task when a 1177 inbox message is refused for good
STOCKHOLM = ZoneInfo("Europe/Stockholm")
MAX_NAME = 200
MAX_TEXT = 4000
# Pauses (seconds) before each try to release a room left behind, right after its move; then
# the background pass (every auto_close_check_seconds) asks until left_room_release_seconds.
RELEASE_RETRIES = (0.0, 1.0, 2.0, 4.0, 8.0)
# GetReportEvidence's one answer for "no such meeting" and "the person is not in it".
NO_REPORT_MEETING = "no such meeting among the person's meetings"


@dataclass(frozen=True)
class PersonInput:
    id_kind: str  # model.HSA_ID | model.PERSONNUMMER | ""
    id: str
    display_name: str = ""


@dataclass(frozen=True)
class Admission:
    participant: Participant
    token: str
    expires_at: dt.datetime
    media_instance: str
    media_address: str


@dataclass(frozen=True)
class ConnectionReport:
    allowed: bool
    participant_id: str  # whom the connection is identified as ("" if nobody yet)
    state: str  # the meeting's state ("" when there is no such meeting)


def _text(field: str, value: str, limit: int = MAX_TEXT, required: bool = False) -> str:
    value = (value or "").strip()
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"at most {limit} characters")
    return value


def _id(field: str, value: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > 100:
        raise InvalidArgument(field, "is not an id")
    return value


class Roster:
    def __init__(self, store: MeetingStore, identity: Identity, media: Media, access: AccessLog, outbox: Outbox,
                 *, portal_base_url: str, region: str, code_digits: int = 9, join_ttl_seconds: int = 120,
                 media_check_seconds: float = 1.5, left_room_release_seconds: float = 600.0,
                 personal_codes: PersonalCodes | None = None, max_wrong_personal_codes: int = 20) -> None:
        self.store = store
        self.identity = identity
        self.media = media
        self.access = access
        self.outbox = outbox
        self.portal_base_url = portal_base_url.rstrip("/")
        self.region = region
        self.code_digits = code_digits
        self.join_ttl_seconds = join_ttl_seconds
        self.media_check_seconds = media_check_seconds
        self._moving: dict[str, asyncio.Lock] = {}  # meeting id -> its room move in this replica
        self.left_room_release_seconds = left_room_release_seconds
        self._releasing: set[asyncio.Task] = set()  # releases of rooms left behind, just after a move
        self.on_outbox_message = lambda: None  # wakes the dispatcher
        self.personal_codes = personal_codes or PersonalCodes("")
        self.max_wrong_personal_codes = max_wrong_personal_codes

    # ------------------------------------------------------------------ access

    def _viewer(self, m: Meeting, who: Caller) -> Participant | None:
        """A service, a coordinator of the meeting, or a registered (not removed) participant."""
        if who.is_service:
            return None
        if m.is_coordinator(who.id, who.id_kind):
            return m.participant_for(who.id, who.id_kind)
        p = m.participant_for(who.id, who.id_kind)
        if p is None or p.removed:
            raise PermissionDenied("you are not a participant of this meeting", reason="NOT_A_PARTICIPANT")
        return p

    @staticmethod
    def _coordinator(m: Meeting, who: Caller) -> None:
        m.require_coordinator(who.id, who.id_kind)

    async def _coordinated(self, meeting_id: str, who: Caller) -> Meeting:
        m = await self.store.get(_id("meeting_id", meeting_id))
        self._coordinator(m, who)
        return m

    async def _record(self, m: Meeting, action: str, who: Caller) -> None:
        await self.access.record(action, m.patient_personnummer, care_unit=m.care_unit_hsa_id,
                                 resource=f"meeting/{m.id}", purpose="SIP meeting", actor=who.actor())

    async def _read(self, meeting_id: str, who: Caller) -> Meeting:
        """The meeting, for a caller allowed to see it (not yet access-logged: the caller's read records)."""
        m = await self.store.get(_id("meeting_id", meeting_id))
        self._viewer(m, who)
        return m

    async def _change(self, meeting_id: str, who: Caller, change, *, coordinator: bool = True, also=None):
        """Apply a change as `who`; the coordinator check runs on the state being changed."""

        def guarded(m: Meeting):
            if coordinator:
                self._coordinator(m, who)
            return change(m)

        return await self.store.mutate(_id("meeting_id", meeting_id), guarded, also)

    # ------------------------------------------------------------------ booking's calls

    def portal_url(self, meeting_id: str) -> str:
        return f"{self.portal_base_url}/auth/{self.region}/login?meeting={meeting_id}"

    async def create_meeting(self, booking_id: str, start: dt.datetime | None, end: dt.datetime | None,
                             coordinator_hsa_id: str, coordinator_name: str, patient: PersonInput,
                             care_unit_hsa_id: str) -> tuple[Meeting, bool]:
        booking_id = _id("booking_id", booking_id)
        existing = await self.store.by_booking(booking_id)
        if existing is not None:
            return existing, False
        if start is None or end is None:
            raise InvalidArgument("scheduled", "start and end are required")
        if end <= start:
            raise InvalidArgument("scheduled.end", "must be after the start")
        coordinator = await self.identity.normalize(model.HSA_ID, coordinator_hsa_id, "coordinator_hsa_id")
        name = _text("coordinator_name", coordinator_name, MAX_NAME)
        care_unit = ""
        if care_unit_hsa_id:
            care_unit = await self.identity.normalize(model.HSA_ID, care_unit_hsa_id, "care_unit_hsa_id")
        participants = [Participant(model.new_id(), name or coordinator, model.COORDINATOR, model.HSA_ID, coordinator,
                                    [model.SITHS])]
        patient_pnr = ""
        if patient.id:
            if patient.id_kind not in ("", model.PERSONNUMMER):
                raise InvalidArgument("patient.id_kind", "the patient is identified by personnummer")
            patient_pnr = await self.identity.normalize(model.PERSONNUMMER, patient.id, "patient.id")
            participants.append(Participant(model.new_id(), _text("patient.display_name", patient.display_name, MAX_NAME)
                                            or "Patient", model.PATIENT, model.PERSONNUMMER, patient_pnr,
                                            [model.BANKID, model.E_SERVICES_1177]))
        meeting_id = model.new_id()
        m = Meeting(id=meeting_id, booking_id=booking_id, start=start, end=end, coordinator_hsa_id=coordinator,
                    dial_in_code="", portal_url=self.portal_url(meeting_id), care_unit_hsa_id=care_unit,
                    patient_personnummer=patient_pnr, participants=participants)
        return await self.store.create(m, lambda: codes.new_code(self.code_digits))

    async def reschedule(self, meeting_id: str, start: dt.datetime | None, end: dt.datetime | None) -> Meeting:
        if start is None or end is None:
            raise InvalidArgument("scheduled", "start and end are required")
        if end <= start:
            raise InvalidArgument("scheduled.end", "must be after the start")
        m, _ = await self.store.mutate(_id("meeting_id", meeting_id), lambda m: model.reschedule(m, start, end),
                                       self._notify_all_next_of_kin)
        self.on_outbox_message()
        return m

    async def cancel(self, meeting_id: str, reason: str) -> Meeting:
        reason = _text("reason", reason)
        m, cancelled = await self.store.mutate(_id("meeting_id", meeting_id), lambda m: model.cancel(m, reason),
                                               self._notify_all_next_of_kin)
        if cancelled:
            self.on_outbox_message()
            metrics.MEETINGS_FINISHED.labels(model.CANCELLED, "booking").inc()
        await self.cleanup(m)
        return m

    # ------------------------------------------------------------------ reads

    async def get(self, meeting_id: str, who: Caller) -> Meeting:
        """One meeting's facts. Every read is access-logged, a service's too: the facts (when a
        meeting about this patient takes place, where, at which care unit, how it went) are the
        patient's data whoever reads them. (No service reads it on a hot path: media and booking
        do not call it, support asks GetReportEvidence; the gateway relays a person's read.)"""
        m = await self._read(meeting_id, who)
        await self._record(m, "read_meeting", who)
        return m

    async def report_evidence(self, meeting_id: str, who: Caller, person: PersonInput) -> Meeting:
        """The meeting, for a fault report `who` (a service: support) files for `person`: only when
        the person is a registered, not removed participant or one of the meeting's coordinators.
        "No such meeting" and "not in it" are one answer (NOT_FOUND, same message), so a report never
        tells whether an id exists. The access record names the person, via the service."""
        meeting_id = _id("meeting_id", meeting_id)
        if person.id_kind not in (model.HSA_ID, model.PERSONNUMMER):
            raise InvalidArgument("on_behalf_of.id_kind", "is required: HSA-id or personnummer")
        person_id = _id("on_behalf_of.id", person.id)
        try:
            m = await self.store.get(meeting_id)
        except NotFound:
            m = None
        p = m.participant_for(person_id, person.id_kind) if m else None
        if m is None or not (m.is_coordinator(person_id, person.id_kind) or (p is not None and not p.removed)):
            raise NotFound(NO_REPORT_MEETING)
        await self.access.record("read_report_evidence", m.patient_personnummer, care_unit=m.care_unit_hsa_id,
                                 resource=f"meeting/{m.id}", purpose="fault report", actor=person_id,
                                 via=who.actor())
        return m

    async def list_mine(self, who: Caller, start: dt.datetime | None, end: dt.datetime | None,
                        page_size: int, page_token: str) -> tuple[list[Meeting], str]:
        found, token = await self.store.for_person(who.id, start, end, paging.page_size(page_size), page_token)
        for m in found:  # each carries its patient's name
            await self._record(m, "list_my_meetings", who)
        return found, token

    async def resolve_code(self, code: str) -> Meeting:
        code = (code or "").strip().replace(" ", "").replace("-", "")
        if not codes.well_formed(code):
            raise InvalidArgument("dial_in_code", "not a meeting ID (check the digits)")
        m = await self.store.by_code(code)
        if m is None:
            raise NotFound("no meeting has this meeting ID")
        return m

    # ------------------------------------------------------------------ lifecycle

    async def open(self, meeting_id: str, who: Caller) -> Meeting:
        m = await self._coordinated(meeting_id, who)
        if m.state != model.SCHEDULED:
            m.require_state("be opened", model.OPEN, model.LIVE)
            return m  # already open: opening again changes nothing
        load = await self.media.least_loaded()
        instance, address = await self.media.open_room(load.control, m.id)
        try:
            m, _ = await self._change(m.id, who, lambda m: model.place(m, instance or load.instance, load.control,
                                                                       address))
        except DomainError:
            current = await self.store.get(m.id)
            if current.state in (model.OPEN, model.LIVE) and current.media_control == load.control:
                return current  # a concurrent open placed it on the same instance
            if current.media_control != load.control:
                with contextlib.suppress(DomainError):  # the room we opened is not used
                    await self.media.close_room(load.control, m.id)
            raise
        return m

    async def start(self, meeting_id: str, who: Caller) -> Meeting:
        m, _ = await self._change(meeting_id, who, model.start)
        return m

    async def delegate(self, meeting_id: str, who: Caller, hsa_id: str) -> Meeting:
        hsa_id = await self.identity.normalize(model.HSA_ID, hsa_id, "hsa_id")
        m, _ = await self._change(meeting_id, who, lambda m: model.delegate(m, who.id, hsa_id))
        return m

    async def finish(self, meeting_id: str, who: Caller, state: str, reason: str) -> Meeting:
        reason = _text("reason", reason) or ("ended by the coordinator" if state == model.ENDED else "aborted")
        m, finished = await self._change(meeting_id, who, lambda m: model.finish(m, state, reason))
        if finished:
            metrics.MEETINGS_FINISHED.labels(state, "coordinator").inc()
        await self.cleanup(m)
        return m

    async def cleanup(self, m: Meeting) -> bool:
        """After a final state: close the room, revoke every join token of the meeting. Retried by
        the background task until both succeed (the final state itself is already stored)."""
        if not m.cleanup_pending:
            return True
        # Both are tried, each whatever the other's outcome: the room closes while identity is
        # away, and the revocation holds even if the room's media instance is gone for good.
        failed = await attempt_all(
            self.identity.revoke(m.id, reason=f"meeting {m.state}"),
            self.media.close_room(m.media_control, m.id) if m.media_control else None)
        if failed:
            log.warning("meeting %s: clean-up after %s not done yet (%s); will retry", m.id, m.state,
                        "; ".join(r.message for r in failed))
            return False

        def done(x: Meeting) -> None:
            x.cleanup_pending = False

        await self.store.mutate(m.id, done)
        m.cleanup_pending = False
        return True

    async def auto_close(self, after: dt.timedelta) -> int:
        """End every meeting whose booked end is more than `after` ago; finish pending clean-ups."""
        closed = 0
        for meeting_id in await self.store.due_for_auto_close(model.now() - after):
            try:
                m, _ = await self.store.mutate(meeting_id, model.auto_close)
            except FailedPrecondition:
                continue  # finished meanwhile
            closed += 1
            metrics.MEETINGS_FINISHED.labels(model.ENDED, "auto_close").inc()
            log.info("meeting %s closed automatically after its booked end", meeting_id)
            await self.cleanup(m)
        for meeting_id in await self.store.cleanup_pending():
            await self.cleanup(await self.store.get(meeting_id))
        for meeting_id in await self.store.with_left_rooms():
            await self.release_left_rooms(await self.store.get(meeting_id))
        return closed

    async def run_auto_close(self, after: dt.timedelta, every: float) -> None:
        while True:
            try:
                await self.auto_close(after)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("auto-close pass failed; retrying", exc_info=True)
            await asyncio.sleep(every)

    # ------------------------------------------------------------------ participants

    async def register(self, meeting_id: str, who: Caller, full_name: str, role: str, person: PersonInput,
                       methods: list[str], physically_present: bool, organization: str) -> Participant:
        full_name = names.checked("full_name", full_name, MAX_NAME)
        organization = names.checked("organization", organization, MAX_NAME, required=False)
        if role not in model.ROLES:
            raise InvalidArgument("role", "is required: coordinator, region staff, municipality staff, external, "
                                          "patient or next of kin")
        if person.id_kind not in (model.HSA_ID, model.PERSONNUMMER):
            raise InvalidArgument("person.id_kind", "is required: HSA-id or personnummer")
        methods = model.check_methods(role, person.id_kind, methods)
        m = await self._coordinated(meeting_id, who)
        m.require_not_final("take new participants")
        person_id = await self.identity.normalize(person.id_kind, person.id, "person.id")
        p = Participant(model.new_id(), full_name, role, person.id_kind, person_id, methods,
                        physically_present=physically_present, organization=organization)
        also = self._notify_next_of_kin if role == model.NEXT_OF_KIN else None
        m, registered = await self._change(m.id, who, lambda m: model.register(m, p), also=also)
        await self._record(m, "register_participant", who)
        if also and registered is p:
            self.on_outbox_message()
        return registered

    async def update_participant(self, meeting_id: str, who: Caller, participant_id: str, full_name: str,
                                 role: str, organization: str) -> Participant:
        full_name = names.checked("full_name", full_name, MAX_NAME)
        organization = names.checked("organization", organization, MAX_NAME, required=False)
        if role not in model.ROLES:
            raise InvalidArgument("role", "is required: coordinator, region staff, municipality staff, external, "
                                          "patient or next of kin")
        participant_id = _id("participant_id", participant_id)
        m, p = await self._change(meeting_id, who, lambda m: model.update_participant(
            m, participant_id, full_name, role, organization))
        await self._record(m, "update_participant", who)
        return p

    async def _notify_next_of_kin(self, session, m: Meeting, _result) -> None:
        """In the registration's transaction: an invitation in the new next of kin's 1177 inbox."""
        await self._inbox(session, m, [m.participants[-1]], "invited")

    async def _notify_all_next_of_kin(self, session, m: Meeting, changed) -> None:
        """In the reschedule's / cancellation's transaction: tell every registered next of kin."""
        if changed is not False:
            kin = [p for p in m.active_participants() if p.role == model.NEXT_OF_KIN]
            await self._inbox(session, m, kin, "rescheduled" if m.state == model.SCHEDULED else "cancelled")

    async def _inbox(self, session, m: Meeting, people: list[Participant], kind: str) -> None:
        when = m.start.astimezone(STOCKHOLM).strftime("%Y-%m-%d kl. %H:%M")
        subject, text = {
            "invited": ("Inbjudan till SIP-möte",
                        f"Du är inbjuden som närstående till ett digitalt möte om samordnad individuell plan (SIP) "
                        f"{when} (svensk tid)."),
            "rescheduled": ("Ny tid för SIP-möte",
                            f"Det digitala SIP-mötet som du är inbjuden till har fått en ny tid: {when} (svensk tid)."),
            "cancelled": ("SIP-mötet är inställt",
                          f"Det digitala SIP-mötet {when} (svensk tid) som du var inbjuden till är inställt."),
            "new_code": ("Ny personlig kod till SIP-mötet",
                         f"Du har fått en ny personlig kod till det digitala SIP-mötet {when} (svensk tid). "
                         f"Den gamla koden fungerar inte längre."),
        }[kind]
        how = ("" if kind == "cancelled" else
               f"\n\nLogga in med 1177 e-tjänster på {m.portal_url} när mötet börjar. "
               f"Du kan också ringa in med mötes-ID {m.dial_in_code}.")
        for p in people:
            # The personal code is filled in when the message is sent (personal_codes.MARKER): the
            # outbox collection never holds it. Only this person's own message carries it.
            code = (f" Ange sedan din personliga kod {MARKER} så kommer du in direkt. Koden är bara din: "
                    f"lämna inte ut den." if how and p.code_nonce and self.personal_codes.enabled else "")
            payload = {"personnummer": p.person_id, "subject": subject,
                       "body": f"Hej {p.full_name}!\n\n{text}{how}{code}\n",
                       "meeting_id": m.id, "participant_id": p.id, "care_unit": m.care_unit_hsa_id,
                       "name": p.full_name, "booking_id": m.booking_id, "code_nonce": p.code_nonce if code else ""}
            # One message per participant and meeting version: a retried transaction adds it once.
            suffix = "" if kind == "invited" else f"-{kind}-{m.version}"
            if kind == "new_code":
                suffix += f"-{p.id}"
            await self.outbox.add(session, INBOX_1177, payload, message_id=f"nok-{m.id}-{p.id}{suffix}")

    async def inbox_notices(self, m: Meeting) -> dict[str, str]:
        """participant id → the outbox state (pending | delivered | failed) of each next of kin's
        1177 invitation: the coordinator sees who was not notified."""
        kin = {f"nok-{m.id}-{p.id}": p.id for p in m.participants if p.role == model.NEXT_OF_KIN}
        docs = await self.outbox.get_many(kin)
        return {kin[message_id]: doc["state"] for message_id, doc in docs.items()}

    def with_personal_code(self, adapter: ChannelAdapter) -> ChannelAdapter:
        """The 1177 inbox adapter, with each message's personal code filled in as it is sent."""
        codes_ = self.personal_codes

        class Rendering:
            async def deliver(self, message: OutboxMessage) -> None:
                p = message.payload
                if MARKER not in str(p.get("body", "")):
                    return await adapter.deliver(message)
                body = codes_.render(p["body"], p.get("meeting_id", ""), p.get("participant_id", ""),
                                     p.get("code_nonce", ""))
                return await adapter.deliver(dataclasses.replace(message, payload={**p, "body": body}))

        return Rendering()

    @staticmethod
    def inbox_fallback(message: OutboxMessage, error: str) -> tuple[str, dict] | None:
        """For a 1177 inbox message refused for good: the coordinator's phone task (booking's)."""
        p = message.payload
        if not p.get("booking_id"):
            return None
        name = p.get("name") or "närstående"
        # The coordinator never learns a personal code: the person finds it on their meeting page.
        body = str(p.get("body", "")).replace(MARKER, "(finns på din mötessida i portalen)")
        instructions = (f"Meddelandet till {name}s 1177-inkorg kunde inte lämnas ({error[:300]}). "
                        f"Ring {name} (närstående) och berätta:\n{p.get('subject', '')}\n{body}")
        return PHONE_TASK, {"booking_id": p["booking_id"], "task_key": message.message_id, "person_name": name,
                            "instructions": instructions}

    async def list_participants(self, meeting_id: str, who: Caller) -> Meeting:
        m = await self._coordinated(meeting_id, who)
        await self._record(m, "list_participants", who)
        return m

    async def set_presence(self, meeting_id: str, who: Caller, participant_id: str, present: bool,
                           note: str) -> Participant:
        note = _text("note", note)

        def change(m: Meeting) -> Participant:
            m.require_not_final("be changed")
            p = m.participant(participant_id)
            if p is None or p.removed:
                raise InvalidArgument("participant_id", "no such registered participant in this meeting")
            p.physically_present = present
            if note:
                m.physically_present_note = note
            return p

        _, p = await self._change(meeting_id, who, change)
        return p

    async def record_confidentiality(self, meeting_id: str, who: Caller, care_provider: str, note: str) -> Meeting:
        care_provider = _text("care_provider", care_provider, MAX_NAME, required=True)
        note = _text("note", note)

        def change(m: Meeting) -> None:
            m.require_not_final("be changed")
            m.confidentiality.append({"care_provider": care_provider, "note": note, "by": who.id, "at": model.now()})

        m, _ = await self._change(meeting_id, who, change)
        return m

    async def remove(self, meeting_id: str, who: Caller, participant_id: str, connection_id: str,
                     reason: str) -> None:
        if bool(participant_id) == bool(connection_id):
            raise InvalidArgument("participant_id", "give exactly one of participant_id and connection_id")
        reason = _text("reason", reason) or "removed by the coordinator"
        if connection_id:
            m = await self._coordinated(meeting_id, who)
            c = m.connection(connection_id)
            if c is not None and c.participant_id:
                participant_id = c.participant_id
            else:
                # An unidentified connection (a phone dial-in): dropped and banned; media's next
                # report of it is answered allowed=false. (media.Disconnect names participants only.)
                await self._change(meeting_id, who, lambda m: model.remove_connection(m, connection_id))
                metrics.REMOVALS.labels("connection").inc()
                return
        # First the removal is stored: from now on Admit and ReportConnection refuse them.
        m, p = await self._change(meeting_id, who, lambda m: model.remove(m, participant_id))
        metrics.REMOVALS.labels("participant").inc()
        # Then both steps are tried, whatever the other's outcome; removing again retries them.
        failed = await attempt_all(self.identity.revoke(m.id, p.id, reason),
                                   self.media.disconnect(m.media_control, m.id, p.id) if m.media_control else None)
        if failed:
            raise failed[0]

    # ------------------------------------------------------------------ admission and connections

    async def admit(self, meeting_id: str, who: Caller) -> Admission:
        if not who.is_person:
            raise PermissionDenied("only a person can join a meeting", reason=model.NOT_REGISTERED)
        meeting_id = _id("meeting_id", meeting_id)
        try:
            m, p = await self.store.mutate(meeting_id, lambda m: model.admit(m, who.id, who.id_kind, who.method))
            m = await self._room_for(m)
            try:
                token, expires = await self.identity.issue_join_token(m, p, self.join_ttl_seconds)
            except Refused:
                # Identity refuses a revoked scope: removed or finished meanwhile. Name which.
                model.admit(await self.store.get(meeting_id), who.id, who.id_kind, who.method)
                raise PermissionDenied(model.REFUSAL_TEXT[model.REMOVED], reason=model.REMOVED) from None
        except (FailedPrecondition, PermissionDenied) as exc:
            metrics.ADMISSIONS.labels(exc.reason or "other").inc()
            raise
        metrics.ADMISSIONS.labels("admitted").inc()
        return Admission(p, token, expires, m.media_instance, m.media_address)

    async def my_admission(self, meeting_id: str, who: Caller) -> tuple[Participant, Meeting]:
        """The caller's own admission (participant, and the meeting with its room's instance). One answer,
        NOT_JOINED, for an unknown meeting, a person not registered and one not yet admitted."""
        not_joined = FailedPrecondition("anslut till mötet först", reason="NOT_JOINED")
        try:
            m = await self.store.get(_id("meeting_id", meeting_id))
        except NotFound:
            raise not_joined from None
        p = m.participant_for(who.id, who.id_kind) if who.is_person else None
        if p is not None and p.removed:  # removed: they know they were in it
            raise PermissionDenied(model.REFUSAL_TEXT[model.REMOVED], reason=model.REMOVED)
        if p is None:
            raise not_joined
        if m.final:
            raise model.finished(m)
        if p.admitted_at is None or not m.media_control:
            raise not_joined
        return p, m

    async def _room_for(self, m: Meeting) -> Meeting:
        """The meeting with a room on a media instance that answers: moved if its instance is gone.

        Every admission first asks the room's instance for the room (one GetRoomState, bounded by
        media_check_seconds). When that instance is unreachable (killed, its node gone) or answers
        that it lost the room (restarted), the room is opened on the least-loaded instance that
        accepts, and the meeting's one versioned write moves it (model.move_room: only if it still
        names the lost instance, so concurrent re-admissions across roster replicas move it once;
        within this replica they also wait for each other, so only one of them opens a room). The
        join token is then issued for the new instance, so the participants' clients, which
        re-admit and renegotiate when their connection drops, meet again there.

        - Removed participants never get here: model.admit refused them first, and their tokens
          are revoked, so a move never brings them back.
        - The lost instance's connections are cleared with the move (its disconnect reports will
          never come: no ghosts in the connected list).
        - Media's closed-room ids are in media's shared database and the room was never closed,
          so the new instance opens it.
        - An instance that was only slow (not dead) may still carry connections after the move:
          its reports are then refused (ReportConnection names the other instance), it drops
          those participants, and their clients re-admit into the new room.
        - If a concurrent move in another replica wins, the room this one opened stays empty on
          its instance (not CloseRoom: a closed room id never opens again, anywhere)."""
        if m.final or not m.media_control:
            return m
        if await self.media.hosts_room(m.media_control, m.id, self.media_check_seconds):
            return m
        lock = self._moving.setdefault(m.id, asyncio.Lock())
        try:
            async with lock:
                current = await self.store.get(m.id)
                if current.media_control != m.media_control:
                    return current  # moved meanwhile (by this replica or another)
                lost = m.media_control
                load = await self.media.least_loaded(exclude=lost)
                instance, address = await self.media.open_room(load.control, m.id)
                m, moved = await self.store.mutate(
                    m.id, lambda x: model.move_room(x, lost, instance or load.instance, load.control, address))
        finally:
            if not lock.locked() and self._moving.get(m.id) is lock:
                self._moving.pop(m.id, None)
        if moved:
            metrics.ROOMS_MOVED.inc()
            log.warning("meeting %s: media instance %s did not answer or lost the room; room moved to %s",
                        m.id, lost, m.media_instance)
            task = asyncio.create_task(self._release_soon(m.id), name=f"svpl-roster-release-{m.id}")
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)
        return m

    async def release_left_rooms(self, m: Meeting) -> bool:
        """Ask each instance the room moved away from to let go of its copy (ReleaseRoom): one that
        was only slow still carries the participants who were connected there, who never noticed
        the move; released, their clients re-admit into the moved room. An instance that does not
        answer is asked again by the background task, and given up on (presumed gone, its room
        with it) after left_room_release_seconds. True when none is left to release."""
        done = []
        for left in m.left_rooms:
            try:
                n = await self.media.release_room(left["control"], m.id)
                log.info("meeting %s: instance %s let go of the room left behind (%d connection(s))",
                         m.id, left["control"], n)
            except Unavailable as exc:
                if (model.now() - left["since"]).total_seconds() < self.left_room_release_seconds:
                    continue
                log.warning("meeting %s: instance %s never let go of the room left behind (%s); given up: "
                            "presumed gone with it", m.id, left["control"], exc.message)
            done.append(left["control"])
        if done:
            await self.store.mutate(m.id, lambda x: model.forget_left_rooms(x, done))
        return len(done) == len(m.left_rooms)

    async def _release_soon(self, meeting_id: str) -> None:
        """Right after a move: release the room left behind within seconds (an instance that was
        only slow answers again soon); the background pass takes over after these tries."""
        for pause in RELEASE_RETRIES:
            await asyncio.sleep(pause)
            try:
                if await self.release_left_rooms(await self.store.get(meeting_id)):
                    return
            except DomainError as exc:  # e.g. the database away: the background pass retries
                log.warning("meeting %s: releasing the room left behind failed (%s)", meeting_id, exc.message)

    async def close(self) -> None:
        for task in tuple(self._releasing):
            task.cancel()
        await asyncio.gather(*self._releasing, return_exceptions=True)

    async def report_connection(self, meeting_id: str, connection_id: str, kind: str, participant_id: str,
                                connected: bool, label: str, media_instance: str) -> ConnectionReport:
        connection_id = _id("connection_id", connection_id)
        label = _text("label", label, MAX_NAME)
        try:
            m, allowed = await self.store.mutate(
                _id("meeting_id", meeting_id),
                lambda m: model.report_connection(m, connection_id, kind, participant_id, connected, label,
                                                  media_instance))
        except NotFound:
            return ConnectionReport(False, "", "")
        c = m.connection(connection_id)
        return ConnectionReport(allowed, c.participant_id if c else "", m.state)

    async def admit_connection(self, meeting_id: str, connection_id: str) -> Admission:
        """A join token for the person a phone connection was identified as (the dial-in service's call)."""
        meeting_id = _id("meeting_id", meeting_id)
        connection_id = _id("connection_id", connection_id)
        try:
            m, p = await self.store.mutate(meeting_id, lambda m: model.admit_connection(m, connection_id))
            m = await self._room_for(m)
            try:
                token, expires = await self.identity.issue_join_token(m, p, self.join_ttl_seconds)
            except Refused:
                raise PermissionDenied(model.REFUSAL_TEXT[model.REMOVED], reason=model.REMOVED) from None
        except (FailedPrecondition, PermissionDenied) as exc:
            metrics.ADMISSIONS.labels(exc.reason or "other").inc()
            raise
        metrics.ADMISSIONS.labels("admitted").inc()
        return Admission(p, token, expires, m.media_instance, m.media_address)

    # ------------------------------------------------------------------ personal codes

    async def enter_personal_code(self, meeting_id: str, connection_id: str, code: str, label: str) -> Participant:
        """A phone caller's personal code (the dial-in service's call): the connection identified as
        its owner, or NOT_FOUND for a code that is nobody's (counted toward the meeting's cap)."""
        meeting_id = _id("meeting_id", meeting_id)
        connection_id = _id("connection_id", connection_id)
        label = _text("label", label, MAX_NAME)
        codes_ = self.personal_codes
        if not (code.isascii() and code.isdigit() and len(code) == codes_.digits):
            raise InvalidArgument("personal_code", f"a personal code has {codes_.digits} digits")
        if not codes_.enabled:
            raise FailedPrecondition("personal codes are off (no code key)", reason="PERSONAL_CODES_OFF")
        try:
            _, p = await self.store.mutate(meeting_id, lambda m: model.enter_personal_code(
                m, connection_id, label, codes_.match(m.id, m.participants, code), self.max_wrong_personal_codes))
        except (FailedPrecondition, PermissionDenied) as exc:
            metrics.PERSONAL_CODES.labels(exc.reason or "other").inc()
            raise
        if p is None:
            metrics.PERSONAL_CODES.labels("wrong").inc()
            raise NotFound("not a personal code of this meeting")
        metrics.PERSONAL_CODES.labels("identified").inc()
        log.info("meeting %s: phone connection identified by a personal code", meeting_id)
        return p

    async def my_personal_code(self, meeting_id: str, who: Caller) -> str:
        """The caller's own code ("" when codes are off). No access record: it is the caller's own
        credential, not patient data (like GetMyAdmission)."""
        m = await self.store.get(_id("meeting_id", meeting_id))
        p = m.participant_for(who.id, who.id_kind) if who.is_person else None
        if p is None:
            raise PermissionDenied(model.REFUSAL_TEXT[model.NOT_REGISTERED], reason=model.NOT_REGISTERED)
        if p.removed:
            raise PermissionDenied(model.REFUSAL_TEXT[model.REMOVED], reason=model.REMOVED)
        if m.final:
            raise model.finished(m)
        return self.personal_codes.code(m.id, p.id, p.code_nonce)

    async def reissue_personal_code(self, meeting_id: str, who: Caller, participant_id: str) -> Participant:
        """A new code (the old one stops working); a next of kin gets it in a new 1177 message."""
        participant_id = _id("participant_id", participant_id)

        async def notify(session, m: Meeting, p: Participant) -> None:
            if p.role == model.NEXT_OF_KIN:
                await self._inbox(session, m, [p], "new_code")

        m, p = await self._change(meeting_id, who, lambda m: model.reissue_code(m, participant_id), also=notify)
        await self._record(m, "reissue_personal_code", who)
        if p.role == model.NEXT_OF_KIN:
            self.on_outbox_message()
        return p

    async def identify(self, meeting_id: str, who: Caller, connection_id: str, participant_id: str):
        _, c = await self._change(meeting_id, who, lambda m: model.identify(m, connection_id, participant_id))
        return c

    async def connected(self, meeting_id: str, who: Caller) -> Meeting:
        """Count and names: for coordinators, admitted participants, and services."""
        m = await self.store.get(_id("meeting_id", meeting_id))
        p = self._viewer(m, who)
        if who.is_person and not m.is_coordinator(who.id, who.id_kind) and (p is None or p.admitted_at is None):
            raise PermissionDenied("the connected list is shown to the meeting's admitted participants",
                                   reason="NOT_ADMITTED")
        await self._record(m, "read_connected_list", who)
        return m

    async def reconciliation(self, meeting_id: str, who: Caller) -> Meeting:
        m = await self._coordinated(meeting_id, who)
        await self._record(m, "read_reconciliation", who)
        return m

    # ------------------------------------------------------------------ agenda

    async def agenda(self, meeting_id: str, who: Caller) -> Meeting:
        """Speaking order with names and the recorded summary: access-logged like every read."""
        m = await self._read(meeting_id, who)
        await self._record(m, "read_agenda", who)
        return m

    async def advance(self, meeting_id: str, who: Caller, from_step: str) -> Meeting:
        m, _ = await self._change(meeting_id, who, lambda m: model.advance_agenda(m, from_step))
        return m

    async def set_speaker(self, meeting_id: str, who: Caller, participant_id: str) -> Meeting:
        m, _ = await self._change(meeting_id, who, lambda m: model.set_speaker(m, participant_id))
        return m

    async def record_summary(self, meeting_id: str, who: Caller, summary: str) -> Meeting:
        summary = _text("summary", summary, 20000, required=True)
        m, _ = await self._change(meeting_id, who, lambda m: model.record_summary(m, summary))
        return m

    # ------------------------------------------------------------------ watch

    async def watch(self, meeting_id: str, who: Caller) -> AsyncIterator[tuple[Meeting, list[tuple[str, str]]]]:
        """(meeting, events) now and after each change, until the meeting is final or the
        watcher is removed. Events: ("snapshot"|"state"|"connections"|"agenda"|"participants"|"removed", pid)."""
        m = await self._read(meeting_id, who)
        await self._record(m, "watch_meeting", who)
        previous: Meeting | None = None
        async for current in self.store.watch(m.id):
            events = changes(previous, current)
            previous = current
            if events:
                yield current, events
            me = None if who.is_service else current.participant_for(who.id, who.id_kind)
            if current.final or (me is not None and me.removed and not current.is_coordinator(who.id, who.id_kind)):
                return


async def attempt_all(*calls) -> list[DomainError]:
    """Run the calls (None: skipped) side by side, each whatever the others do; their domain
    errors (a peer unavailable) are returned, anything else is raised."""
    results = await asyncio.gather(*(c for c in calls if c is not None), return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, DomainError):
            raise r
    return [r for r in results if isinstance(r, DomainError)]


def changes(before: Meeting | None, after: Meeting) -> list[tuple[str, str]]:
    if before is None:
        return [("snapshot", "")]
    events: list[tuple[str, str]] = []
    if before.state != after.state:
        events.append(("state", ""))
    removed_before = {p.id for p in before.participants if p.removed}
    for p in after.participants:
        if p.removed and p.id not in removed_before:
            events.append(("removed", p.id))
    if [(p.id, p.full_name, p.role, p.physically_present) for p in before.active_participants()] != \
            [(p.id, p.full_name, p.role, p.physically_present) for p in after.active_participants()] and not any(
            e == "removed" for e, _ in events):
        events.append(("participants", ""))
    if [(c.id, c.participant_id) for c in before.connections] != [(c.id, c.participant_id) for c in after.connections]:
        events.append(("connections", ""))
    if (before.agenda_step, before.current_speaker, before.summary) != \
            (after.agenda_step, after.current_speaker, after.summary):
        events.append(("agenda", ""))
    if not events and (before.start, before.end, before.delegates, before.confidentiality,
                       before.physically_present_note) != (after.start, after.end, after.delegates,
                                                           after.confidentiality, after.physically_present_note):
        events.append(("state", ""))
    return events
