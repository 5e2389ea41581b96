"""The meeting as plain Python: states, roles, participants, connections, the agenda.

One document per meeting (participants and live connections inside it), so every
change is one atomic, versioned replace (see store.py) and the lifecycle rules below
are checked against the state the change is applied to. No gRPC types here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from services.roster.personal_codes import new_nonce
from services.runtime.errors import FailedPrecondition, InvalidArgument, PermissionDenied

# ---------------------------------------------------------------- states

SCHEDULED, OPEN, LIVE, ENDED, ABORTED, CANCELLED = "scheduled", "open", "live", "ended", "aborted", "cancelled"
FINAL = frozenset({ENDED, ABORTED, CANCELLED})

# ---------------------------------------------------------------- roles and login methods

COORDINATOR, REGION_STAFF, MUNICIPALITY_STAFF = "coordinator", "region_staff", "municipality_staff"
EXTERNAL, PATIENT, NEXT_OF_KIN = "external", "patient", "next_of_kin"
ROLES = (COORDINATOR, REGION_STAFF, MUNICIPALITY_STAFF, EXTERNAL, PATIENT, NEXT_OF_KIN)
STAFF_ROLES = frozenset({COORDINATOR, REGION_STAFF, MUNICIPALITY_STAFF})

HSA_ID, PERSONNUMMER = "hsa_id", "personnummer"
# The same names the session token's "amr" claim uses (services.runtime.auth.Caller.method).
SITHS, BANKID, E_SERVICES_1177 = "siths", "bankid", "e_services_1177"

# role -> (the ID kind it must have, the login methods it may be given, the default)
ROLE_RULES: dict[str, tuple[str, frozenset[str], tuple[str, ...]]] = {
    COORDINATOR: (HSA_ID, frozenset({SITHS}), (SITHS,)),
    REGION_STAFF: (HSA_ID, frozenset({SITHS}), (SITHS,)),
    MUNICIPALITY_STAFF: (HSA_ID, frozenset({SITHS}), (SITHS,)),
    EXTERNAL: (PERSONNUMMER, frozenset({BANKID, E_SERVICES_1177}), (BANKID, E_SERVICES_1177)),
    PATIENT: (PERSONNUMMER, frozenset({BANKID, E_SERVICES_1177}), (BANKID, E_SERVICES_1177)),
    # Next of kin: personnummer, and only the 1177 e-services login.
    NEXT_OF_KIN: (PERSONNUMMER, frozenset({E_SERVICES_1177}), (E_SERVICES_1177,)),
}

# ---------------------------------------------------------------- agenda (the routine's steps)
# The routine opens every meeting by checking that everyone sees and hears each other ("Inled alltid
# mötet med att kontrollera så att alla ser varandra och att ljudet är bra"); then the reminder that it
# is held where nobody else sees or hears it and is not recorded ("Att tänka på"); then its six-point
# meeting structure (Mötesstruktur), from the welcome to the summary.

NOT_STARTED, WELCOME = "not_started", "welcome"
SEE_AND_HEAR, PRIVATE_AND_NOT_RECORDED = "see_and_hear", "private_and_not_recorded"
PURPOSE, INDIVIDUAL_ON_REASON = "purpose_and_confidentiality", "individual_on_reason"
INTRODUCTIONS, QUESTIONS, SUMMARY, DONE = "introductions", "questions", "summary", "done"
AGENDA = (NOT_STARTED, SEE_AND_HEAR, PRIVATE_AND_NOT_RECORDED, WELCOME, PURPOSE, INDIVIDUAL_ON_REASON,
          INTRODUCTIONS, QUESTIONS, SUMMARY, DONE)

WEBRTC, PHONE = "webrtc", "phone"

# ---------------------------------------------------------------- admission refusals (AdmitRefusal names)

NOT_REGISTERED = "ADMIT_REFUSAL_NOT_REGISTERED"
WRONG_LOGIN_METHOD = "ADMIT_REFUSAL_WRONG_LOGIN_METHOD"
REMOVED = "ADMIT_REFUSAL_REMOVED"
NOT_STARTED_REFUSAL = "ADMIT_REFUSAL_NOT_STARTED"
FINISHED = "ADMIT_REFUSAL_FINISHED"
CANCELLED_REFUSAL = "ADMIT_REFUSAL_CANCELLED"
# One person, one way in at a time: media keeps one connection per participant (a second replaces
# the first), so a person on the phone is not let in by browser too, nor the other way round.
CONNECTED_BY_PHONE = "ALREADY_CONNECTED_BY_PHONE"
CONNECTED_BY_BROWSER = "ALREADY_CONNECTED_BY_BROWSER"

# Texts the portal shows as they are (Swedish).
REFUSAL_TEXT = {
    NOT_REGISTERED: "Du är inte registrerad som deltagare i det här mötet. Kontakta mötets samordnare.",
    WRONG_LOGIN_METHOD: "Du har loggat in på ett sätt som inte är tillåtet för dig i det här mötet. "
                        "Logga in med {methods}.",
    REMOVED: "Du har tagits bort från det här mötet och kan inte ansluta igen.",
    NOT_STARTED_REFUSAL: "Mötet har inte startat ännu. Försök igen när samordnaren har startat mötet.",
    FINISHED: "Mötet är avslutat. Det går inte att ansluta.",
    CANCELLED_REFUSAL: "Mötet är inställt. Det går inte att ansluta.",
    CONNECTED_BY_PHONE: "Du är redan ansluten till mötet per telefon. Lägg på telefonen först och anslut sedan här.",
    CONNECTED_BY_BROWSER: "{name} är redan ansluten till mötet via webbläsaren. Be hen lämna mötet i webbläsaren "
                          "först, eller ta bort telefonanslutningen.",
}
METHOD_TEXT = {SITHS: "SITHS-kort", BANKID: "BankID", E_SERVICES_1177: "1177 e-tjänster"}


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Participant:
    id: str
    full_name: str
    role: str
    id_kind: str
    person_id: str
    methods: list[str]
    physically_present: bool = False
    removed: bool = False
    removed_at: dt.datetime | None = None
    organization: str = ""
    registered_at: dt.datetime = field(default_factory=now)
    admitted_at: dt.datetime | None = None
    # What the personal dial-in code is derived from with roster's key (personal_codes.py): a random
    # value, new at each re-issue. The code itself is never stored.
    code_nonce: str = field(default_factory=new_nonce)


@dataclass
class Connection:
    id: str
    kind: str
    participant_id: str = ""
    label: str = ""
    media_instance: str = ""
    connected_at: dt.datetime = field(default_factory=now)


@dataclass
class Meeting:
    id: str
    booking_id: str
    start: dt.datetime
    end: dt.datetime
    coordinator_hsa_id: str
    dial_in_code: str
    portal_url: str
    care_unit_hsa_id: str = ""
    patient_personnummer: str = ""
    state: str = SCHEDULED
    delegates: list[str] = field(default_factory=list)
    # The media instance hosting the room: its id, its gRPC control address, its signalling address.
    media_instance: str = ""
    media_control: str = ""
    media_address: str = ""
    physically_present_note: str = ""
    confidentiality: list[dict[str, Any]] = field(default_factory=list)
    participants: list[Participant] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)
    # Connections that were removed (unidentified ones): media reports of them are refused.
    banned_connections: list[str] = field(default_factory=list)
    # Wrong personal codes keyed for this meeting (by any caller): past the cap none is accepted.
    wrong_personal_codes: int = 0
    agenda_step: str = NOT_STARTED
    current_speaker: str = ""
    summary: str = ""
    created_at: dt.datetime = field(default_factory=now)
    opened_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    finished_reason: str = ""
    # Set when the meeting turned final; cleared once media closed the room and identity
    # revoked the meeting's tokens (retried by the background task until done).
    cleanup_pending: bool = False
    # Instances the room moved away from (they did not answer in time), whose copy of the room is
    # still to be released there ({"control", "since"}): one that was only slow still carries
    # connections, and its participants must go to the moved room (retried by the background task).
    left_rooms: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0

    # ------------------------------------------------------------ storage form

    def to_doc(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["_id"] = doc.pop("id")
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Meeting:
        doc = dict(doc)
        doc["id"] = doc.pop("_id")
        # A registration stored before personal codes has none (until the coordinator issues one).
        doc["participants"] = [Participant(**{"code_nonce": "", **p}) for p in doc.get("participants", [])]
        doc["connections"] = [Connection(**c) for c in doc.get("connections", [])]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    # ------------------------------------------------------------ queries

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def is_coordinator(self, person_id: str, id_kind: str = HSA_ID) -> bool:
        return id_kind == HSA_ID and bool(person_id) and (
            person_id == self.coordinator_hsa_id or person_id in self.delegates
        )

    def participant(self, participant_id: str) -> Participant | None:
        return next((p for p in self.participants if p.id == participant_id), None)

    def participant_for(self, person_id: str, id_kind: str) -> Participant | None:
        """The registration of this person (a removed one too: a removal is never forgotten)."""
        return next((p for p in self.participants if p.person_id == person_id and p.id_kind == id_kind), None)

    def patient_name(self) -> str:
        """The registered patient's name (patient data)."""
        return next((p.full_name for p in self.participants if p.role == PATIENT and not p.removed), "")

    def active_participants(self) -> list[Participant]:
        return [p for p in self.participants if not p.removed]

    def connection(self, connection_id: str) -> Connection | None:
        return next((c for c in self.connections if c.id == connection_id), None)

    def connected_participant_ids(self) -> set[str]:
        return {c.participant_id for c in self.connections if c.participant_id}

    def phone_participant_ids(self) -> set[str]:
        """The registered people connected by phone (a dial-in caller identified as them)."""
        return {c.participant_id for c in self.connections if c.participant_id and c.kind == PHONE}

    def browser_participant_ids(self) -> set[str]:
        """The registered people connected from a browser: a WebRTC connection of someone who has no
        phone connection (a phone caller's bridge into the room is a WebRTC connection too)."""
        phone = self.phone_participant_ids()
        return {c.participant_id for c in self.connections
                if c.participant_id and c.kind == WEBRTC and c.participant_id not in phone}

    def require_not_in_by_browser(self, p: Participant) -> None:
        if p.id in self.browser_participant_ids():
            raise FailedPrecondition(REFUSAL_TEXT[CONNECTED_BY_BROWSER].format(name=p.full_name),
                                     reason=CONNECTED_BY_BROWSER)

    def unidentified(self) -> list[Connection]:
        return [c for c in self.connections if not c.participant_id]

    def speaking_order(self) -> list[Participant]:
        """Introductions: the individual first, then next of kin, then the others (registration order)."""
        rank = {PATIENT: 0, NEXT_OF_KIN: 1}
        active = self.active_participants()
        return sorted(active, key=lambda p: (rank.get(p.role, 2), active.index(p)))

    # ------------------------------------------------------------ guards

    def require_not_final(self, what: str) -> None:
        if self.final:
            raise FailedPrecondition(f"the meeting is {self.state}: it cannot {what}", reason=f"MEETING_{self.state.upper()}")

    def require_coordinator(self, person_id: str, id_kind: str) -> None:
        if not self.is_coordinator(person_id, id_kind):
            raise PermissionDenied("only this meeting's coordinator or a delegated coordinator may do this",
                                   reason="NOT_MEETING_COORDINATOR")

    def require_state(self, what: str, *states: str) -> None:
        self.require_not_final(what)
        if self.state not in states:
            raise FailedPrecondition(f"the meeting is {self.state}: it cannot {what}",
                                     reason=f"MEETING_{self.state.upper()}")


# ---------------------------------------------------------------- transitions (each mutates in place)


def reschedule(m: Meeting, start: dt.datetime, end: dt.datetime) -> None:
    m.require_state("be rescheduled", SCHEDULED)
    m.start, m.end = start, end


def cancel(m: Meeting, reason: str) -> bool:
    """scheduled/open -> cancelled. Returns False if it already was cancelled (idempotent)."""
    if m.state == CANCELLED:
        return False
    m.require_state("be cancelled", SCHEDULED, OPEN)
    _finish(m, CANCELLED, reason or "cancelled by booking")
    return True


def place(m: Meeting, instance: str, control: str, address: str) -> None:
    m.require_state("be opened", SCHEDULED)
    m.state, m.opened_at = OPEN, now()
    m.media_instance, m.media_control, m.media_address = instance, control, address


def move_room(m: Meeting, from_control: str, instance: str, control: str, address: str) -> bool:
    """The room's media instance is gone: the meeting goes on in a room on another instance.
    False (nothing changes) if the room already moved away from `from_control` (a concurrent
    admission moved it first). The connections are dropped: they were all on the lost instance,
    which will never report their end (no connection to the new room exists before this write,
    since join tokens for it are issued only after it)."""
    m.require_state("move its room", OPEN, LIVE)
    if m.media_control != from_control:
        return False
    m.media_instance, m.media_control, m.media_address = instance, control, address
    m.connections = []
    m.left_rooms = [x for x in m.left_rooms if x["control"] != control]  # moved back: the room is wanted there
    if all(x["control"] != from_control for x in m.left_rooms):
        m.left_rooms.append({"control": from_control, "since": now()})
    return True


def forget_left_rooms(m: Meeting, controls: list[str]) -> None:
    """Those instances let go of their copy of the room (or are given up on)."""
    m.left_rooms = [x for x in m.left_rooms if x["control"] not in controls]


def start(m: Meeting) -> bool:
    if m.state == LIVE:
        return False
    m.require_state("be started (open it first)", OPEN)
    m.state, m.started_at = LIVE, now()
    return True


def finish(m: Meeting, state: str, reason: str) -> bool:
    """open/live -> ended or aborted. Returns False if it already is in that state."""
    if m.state == state:
        return False
    m.require_state("be ended" if state == ENDED else "be aborted", OPEN, LIVE)
    _finish(m, state, reason)
    return True


def auto_close(m: Meeting) -> None:
    """Never ended: closed after its booked end (a scheduled one that never opened too)."""
    m.require_not_final("be closed")
    _finish(m, ENDED, "closed automatically after the booked end")


def _finish(m: Meeting, state: str, reason: str) -> None:
    m.state, m.finished_at, m.finished_reason = state, now(), reason
    m.connections = []
    m.current_speaker = ""
    m.cleanup_pending = True


def delegate(m: Meeting, by_hsa_id: str, hsa_id: str) -> bool:
    m.require_not_final("get another coordinator")
    if by_hsa_id != m.coordinator_hsa_id:
        raise PermissionDenied("only the meeting's own coordinator may delegate", reason="NOT_MEETING_COORDINATOR")
    p = m.participant_for(hsa_id, HSA_ID)
    if p is None or p.removed or p.role not in (COORDINATOR, REGION_STAFF):
        raise FailedPrecondition("only a registered region staff member can co-lead the meeting",
                                 reason="NOT_REGISTERED_REGION_STAFF")
    if hsa_id == m.coordinator_hsa_id or hsa_id in m.delegates:
        return False
    m.delegates.append(hsa_id)
    return True


def register(m: Meeting, p: Participant) -> Participant:
    """Returns the registered participant. The same registration again (same person, role, name,
    login methods and organization: a client retrying a call whose answer it lost) returns the
    existing participant and changes nothing; a different one for the same person is refused."""
    m.require_not_final("take new participants")
    existing = m.participant_for(p.person_id, p.id_kind)
    if existing is not None and existing.removed:
        raise FailedPrecondition("this person was removed from the meeting and cannot be registered again",
                                 reason="PARTICIPANT_REMOVED")
    if existing is not None:
        same = (existing.role, existing.full_name, sorted(existing.methods), existing.organization) == (
            p.role, p.full_name, sorted(p.methods), p.organization)
        if same:
            return existing
        raise FailedPrecondition("this person is already registered", reason="ALREADY_REGISTERED")
    if p.role == PATIENT and any(q.role == PATIENT for q in m.participants):
        raise FailedPrecondition("the meeting already has its patient", reason="PATIENT_ALREADY_REGISTERED")
    m.participants.append(p)
    return p


def update_participant(m: Meeting, participant_id: str, full_name: str, role: str, organization: str) -> Participant:
    """A registration corrected (name, role, organisation); the person's ID stays."""
    m.require_not_final("change its participants")
    p = m.participant(participant_id)
    if p is None or p.removed:
        raise InvalidArgument("participant_id", "no such registered participant in this meeting")
    if role != p.role and COORDINATOR in (role, p.role):
        raise FailedPrecondition("the coordinator role is not changed here (delegate instead)",
                                 reason="COORDINATOR_ROLE")
    if role == PATIENT and p.role != PATIENT and any(q.role == PATIENT and not q.removed for q in m.participants):
        raise FailedPrecondition("the meeting already has its patient", reason="PATIENT_ALREADY_REGISTERED")
    if role != p.role:
        p.methods = check_methods(role, p.id_kind, [])
        if role != REGION_STAFF and p.person_id in m.delegates:
            m.delegates.remove(p.person_id)
    p.full_name, p.role, p.organization = full_name, role, organization
    return p


def check_methods(role: str, id_kind: str, methods: list[str]) -> list[str]:
    """The allowed login methods for a role (its default when none are given)."""
    kind, allowed, default = ROLE_RULES[role]
    if id_kind != kind:
        what = "an HSA-id (SITHS login)" if kind == HSA_ID else "a personnummer (BankID or 1177 login)"
        raise InvalidArgument("person.id_kind", f"a {role.replace('_', ' ')} is registered with {what}")
    if not methods:
        return list(default)
    bad = [x for x in methods if x not in allowed]
    if bad:
        raise InvalidArgument(
            "allowed_methods",
            f"a {role.replace('_', ' ')} may log in only with {', '.join(sorted(allowed))}, not {', '.join(bad)}",
        )
    return sorted(set(methods))


def remove(m: Meeting, participant_id: str) -> Participant:
    m.require_not_final("change its participants")
    p = m.participant(participant_id)
    if p is None:
        raise InvalidArgument("participant_id", "no such participant in this meeting")
    if p.role == COORDINATOR and p.person_id == m.coordinator_hsa_id:
        raise FailedPrecondition("the meeting's own coordinator cannot be removed; end the meeting instead",
                                 reason="CANNOT_REMOVE_COORDINATOR")
    if not p.removed:
        p.removed, p.removed_at = True, now()
        if p.person_id in m.delegates:
            m.delegates.remove(p.person_id)
        if m.current_speaker == p.id:
            m.current_speaker = ""
    # Their phone connections are banned too: the same number calling back is refused (the dial-in
    # service derives a phone connection's id from the meeting and the calling number).
    m.banned_connections += [c.id for c in m.connections
                             if c.participant_id == p.id and c.kind == PHONE and c.id not in m.banned_connections]
    m.connections = [c for c in m.connections if c.participant_id != p.id]
    return p


def remove_connection(m: Meeting, connection_id: str) -> Connection:
    """Remove an unidentified connection: it is dropped and never allowed back."""
    m.require_not_final("change its connections")
    c = m.connection(connection_id)
    if c is None:
        raise InvalidArgument("connection_id", "no such connection in this meeting")
    m.connections.remove(c)
    if connection_id not in m.banned_connections:
        m.banned_connections.append(connection_id)
    return c


def finished(m: Meeting) -> FailedPrecondition:
    """Why nobody joins a finished meeting: cancelled (it never opened) or over (ended, aborted)."""
    why = CANCELLED_REFUSAL if m.state == CANCELLED else FINISHED
    return FailedPrecondition(REFUSAL_TEXT[why], reason=why)


def admit(m: Meeting, person_id: str, id_kind: str, method: str) -> Participant:
    """Who may join: checked in this order, so the refusal names the first thing that is wrong."""
    if m.final:
        raise finished(m)
    # Coordinators are registered too (the coordinator at creation, delegates before delegation).
    p = m.participant_for(person_id, id_kind)
    if p is None:
        raise PermissionDenied(REFUSAL_TEXT[NOT_REGISTERED], reason=NOT_REGISTERED)
    if p.removed:
        raise PermissionDenied(REFUSAL_TEXT[REMOVED], reason=REMOVED)
    if method not in p.methods:
        text = " eller ".join(METHOD_TEXT.get(x, x) for x in p.methods)
        raise PermissionDenied(REFUSAL_TEXT[WRONG_LOGIN_METHOD].format(methods=text), reason=WRONG_LOGIN_METHOD)
    if not (m.state == LIVE or (m.state == OPEN and m.is_coordinator(person_id, id_kind))):
        raise FailedPrecondition(REFUSAL_TEXT[NOT_STARTED_REFUSAL], reason=NOT_STARTED_REFUSAL)
    if p.id in m.phone_participant_ids():
        raise FailedPrecondition(REFUSAL_TEXT[CONNECTED_BY_PHONE], reason=CONNECTED_BY_PHONE)
    p.admitted_at = p.admitted_at or now()
    return p


def admit_connection(m: Meeting, connection_id: str) -> Participant:
    """The person a phone connection was identified as, admitted (the dial-in service joins the
    room for them). The coordinator's identification stands for the login a browser needs."""
    if m.final:
        raise finished(m)
    c = m.connection(connection_id)
    if connection_id in m.banned_connections or c is None:
        raise PermissionDenied(REFUSAL_TEXT[REMOVED], reason=REMOVED)
    if c.kind != PHONE:
        raise InvalidArgument("connection_id", "not a phone connection")
    if not c.participant_id:
        raise FailedPrecondition("the coordinator has not identified this connection yet", reason="NOT_IDENTIFIED")
    p = m.participant(c.participant_id)
    if p is None or p.removed:
        raise PermissionDenied(REFUSAL_TEXT[REMOVED], reason=REMOVED)
    if m.state != LIVE:
        raise FailedPrecondition(REFUSAL_TEXT[NOT_STARTED_REFUSAL], reason=NOT_STARTED_REFUSAL)
    m.require_not_in_by_browser(p)  # (the caller waits in the lobby until the browser has left)
    p.admitted_at = p.admitted_at or now()
    return p


def report_connection(m: Meeting, connection_id: str, kind: str, participant_id: str, connected: bool,
                      label: str, media_instance: str) -> bool:
    """A connection came or went (from media). Returns whether it may stay."""
    if not connected:
        m.connections = [c for c in m.connections if c.id != connection_id]
        return False
    if m.state not in (OPEN, LIVE) or connection_id in m.banned_connections:
        return False
    if m.media_instance and media_instance and media_instance != m.media_instance:
        return False
    if participant_id:
        p = m.participant(participant_id)
        if p is None or p.removed:
            return False
    existing = m.connection(connection_id)
    if existing is not None:
        if existing.participant_id and participant_id and existing.participant_id != participant_id:
            return False
        existing.participant_id = existing.participant_id or participant_id
        return True
    m.connections.append(Connection(connection_id, kind, participant_id, label, media_instance))
    return True


def enter_personal_code(m: Meeting, connection_id: str, label: str, p: Participant | None,
                        max_wrong: int) -> Participant | None:
    """A phone caller keyed a personal code: `p` is whose current code it is (None: nobody's). The
    connection is identified as them at once; None (a wrong code, counted, and stored) otherwise.
    Refused without counting: a finished or not opened meeting, a banned connection, a meeting
    past its cap on wrong codes, a person already connected."""
    if m.final:
        raise finished(m)
    if m.state not in (OPEN, LIVE):
        raise FailedPrecondition(REFUSAL_TEXT[NOT_STARTED_REFUSAL], reason=NOT_STARTED_REFUSAL)
    if connection_id in m.banned_connections:
        raise PermissionDenied(REFUSAL_TEXT[REMOVED], reason=REMOVED)
    if m.wrong_personal_codes >= max_wrong:
        raise FailedPrecondition("too many wrong personal codes in this meeting: the caller waits for the coordinator",
                                 reason="PERSONAL_CODES_LOCKED")
    if p is None or p.removed:
        m.wrong_personal_codes += 1
        return None
    c = m.connection(connection_id)
    if p.id in m.connected_participant_ids() and (c is None or c.participant_id != p.id):
        raise FailedPrecondition("this person is connected to the meeting already", reason="ALREADY_CONNECTED")
    if c is None:
        m.connections.append(Connection(connection_id, PHONE, p.id, label))
    elif c.participant_id and c.participant_id != p.id:
        raise FailedPrecondition("the connection is already tied to another participant", reason="ALREADY_IDENTIFIED")
    else:
        c.participant_id = p.id
    return p


def reissue_code(m: Meeting, participant_id: str) -> Participant:
    """A new personal code for a participant: the old one stops working."""
    m.require_not_final("change its participants")
    p = m.participant(participant_id)
    if p is None or p.removed:
        raise InvalidArgument("participant_id", "no such registered participant in this meeting")
    p.code_nonce = new_nonce()
    return p


def identify(m: Meeting, connection_id: str, participant_id: str) -> Connection:
    m.require_state("change its connections", OPEN, LIVE)
    c = m.connection(connection_id)
    if c is None:
        raise InvalidArgument("connection_id", "no such connection in this meeting")
    p = m.participant(participant_id)
    if p is None or p.removed:
        raise InvalidArgument("participant_id", "no such registered participant in this meeting")
    if c.participant_id and c.participant_id != participant_id:
        raise FailedPrecondition("the connection is already tied to another participant", reason="ALREADY_IDENTIFIED")
    if c.kind == PHONE:
        m.require_not_in_by_browser(p)
    c.participant_id = participant_id
    return c


def advance_agenda(m: Meeting, from_step: str) -> None:
    m.require_state("move its agenda (start the meeting first)", LIVE)
    if from_step and from_step != m.agenda_step:
        raise FailedPrecondition(f"the agenda is already at {m.agenda_step}", reason="AGENDA_STEP_CHANGED")
    if m.agenda_step == DONE:
        raise FailedPrecondition("the agenda is done", reason="AGENDA_DONE")
    m.agenda_step = AGENDA[AGENDA.index(m.agenda_step) + 1]
    order = m.speaking_order()
    m.current_speaker = order[0].id if m.agenda_step == INTRODUCTIONS and order else ""


def set_speaker(m: Meeting, participant_id: str) -> None:
    m.require_state("give the word (start the meeting first)", LIVE)
    if participant_id:
        p = m.participant(participant_id)
        if p is None or p.removed:
            raise InvalidArgument("participant_id", "no such registered participant in this meeting")
    m.current_speaker = participant_id


def record_summary(m: Meeting, summary: str) -> None:
    m.require_state("take a summary", LIVE)
    if m.agenda_step not in (SUMMARY, DONE):
        raise FailedPrecondition("the summary is recorded at the agenda's summary step", reason="AGENDA_NOT_AT_SUMMARY")
    m.summary = summary
