"""A fault report as the caller sent it, and the checks it passes before it becomes a ticket.

`reporter_for(report, who)` checks the report against the caller and answers the reporter as
stored. Each rule is one small named check, run in a fixed order, so the refusal names the first
thing that is wrong. Plain Python (callers are `services.runtime.auth.Caller`).

A self-reporter's name and organisation are their login's (the organisation decides which desk
sees the ticket); only the support desk, filing for someone who called in, names someone else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.runtime import auth, names
from services.runtime.errors import InvalidArgument, PermissionDenied
from services.support.desk_scope import is_desk, org_key
from services.support.model import Reporter
from services.support.routing_table import PROBLEM_KINDS, REPORTER_KINDS, RoutingTable

_HSA_ID = re.compile(r"^SE[0-9]{10}-[A-Za-z0-9]+$")
_PNR12 = re.compile(r"^[0-9]{12}$")
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_FIELD = 200


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

    def on_behalf(self, who: auth.Caller) -> bool:
        """Filed for someone else (the reporter's ID is not the caller's)."""
        return bool(self.reporter_id) and self.reporter_id != who.id


# ---------------------------------------------------------------- the report itself


def check_problem(report: Report) -> None:
    if report.problem not in PROBLEM_KINDS:
        raise InvalidArgument("problem", f"must be one of {', '.join(PROBLEM_KINDS)}")


def check_description(report: Report, max_chars: int) -> None:
    description = report.description.strip()
    if not description:
        raise InvalidArgument("description", "describe the problem")
    if len(description) > max_chars:
        raise InvalidArgument("description", f"at most {max_chars} characters")


def check_meeting_refs(report: Report) -> None:
    if report.participant_id and not report.meeting_id:
        raise InvalidArgument("participant_id", "a participant needs the meeting_id it belongs to")


def check_rebook(report: Report) -> None:
    if report.request_rebook and report.problem != "connection":
        raise InvalidArgument("request_rebook", "only a connection problem can ask for a rebooking")
    if report.request_rebook and not report.meeting_id:
        raise InvalidArgument("meeting_id", "a rebook request needs the meeting")


def check_idempotency_key(report: Report) -> None:
    if report.idempotency_key and not _KEY.match(report.idempotency_key):
        raise InvalidArgument("idempotency_key", "1-128 characters of A-Z a-z 0-9 . _ : -")


def check_lengths(report: Report) -> None:
    for name, value in (("reporter.name", report.reporter_name), ("reporter.organization", report.organization),
                        ("reporter.contact", report.contact), ("meeting_id", report.meeting_id),
                        ("participant_id", report.participant_id)):
        if len(value) > MAX_FIELD:
            raise InvalidArgument(name, f"at most {MAX_FIELD} characters")


def check_reporter_kind(report: Report) -> None:
    if report.reporter_kind and report.reporter_kind not in REPORTER_KINDS:
        raise InvalidArgument("reporter.kind", f"must be one of {', '.join(REPORTER_KINDS)}")


def check_report(report: Report, max_description: int) -> None:
    """What the report must say, whoever files it."""
    check_problem(report)
    check_description(report, max_description)
    check_meeting_refs(report)
    check_rebook(report)
    check_idempotency_key(report)
    check_lengths(report)
    check_reporter_kind(report)


# ---------------------------------------------------------------- filed by the desk for someone else


def check_filer_is_desk(who: auth.Caller) -> None:
    if not is_desk(who):
        raise PermissionDenied("you can only report as yourself: the reporter's ID must be your own",
                               reason="NOT_OWN_REPORT")


def check_reporter_id(report: Report) -> None:
    if report.reporter_id_kind == "hsa_id" and not (_HSA_ID.match(report.reporter_id)
                                                    and len(report.reporter_id) <= 31):
        raise InvalidArgument("reporter.person.id", "not an HSA-id (SE + 10 digits + - + letters/digits)")
    if report.reporter_id_kind == "personnummer" and not _PNR12.match(report.reporter_id):
        raise InvalidArgument("reporter.person.id", "a personnummer normalised to 12 digits")
    if report.reporter_id_kind not in ("hsa_id", "personnummer"):
        raise InvalidArgument("reporter.person.id_kind", "say whether the ID is an HSA-id or a personnummer")


def check_kind_named(report: Report) -> None:
    if not report.reporter_kind:
        raise InvalidArgument("reporter.kind", "say who the reporter is when filing on their behalf")


def reporter_named_by_desk(report: Report, who: auth.Caller) -> Reporter:
    check_filer_is_desk(who)
    check_reporter_id(report)
    check_kind_named(report)
    return Reporter(name=names.checked("reporter.name", report.reporter_name), id=report.reporter_id,
                    id_kind=report.reporter_id_kind, kind=report.reporter_kind,
                    organization=names.checked("reporter.organization", report.organization, required=False),
                    contact=names.checked("reporter.contact", report.contact, required=False))


# ---------------------------------------------------------------- reporting as yourself


def kind_from_login(who: auth.Caller) -> str:
    if who.has_role(auth.ROLE_MUNICIPALITY_STAFF):
        return "municipality_staff"
    if who.has_role(auth.ROLE_REGION_STAFF):
        return "region_staff"
    return "citizen" if who.id_kind == "personnummer" or who.has_role(auth.ROLE_CITIZEN) else "external_actor"


def kind_fits_login(kind: str, who: auth.Caller) -> bool:
    if kind == "municipality_staff":
        return who.has_role(auth.ROLE_MUNICIPALITY_STAFF)
    if kind == "region_staff":
        return who.has_role(auth.ROLE_REGION_STAFF)
    if kind == "citizen":
        return who.id_kind == "personnummer" or who.has_role(auth.ROLE_CITIZEN)
    # External actors (e.g. Försäkringskassan) log in with BankID, 1177 or their own SITHS card.
    return True


def check_filer_is_person(who: auth.Caller) -> None:
    if not who.is_person:
        raise PermissionDenied("a service cannot file a report as itself")


def check_kind_fits(kind: str, who: auth.Caller) -> None:
    if not kind_fits_login(kind, who) and not is_desk(who):
        raise InvalidArgument("reporter.kind", f"{kind} does not match how you logged in")


def check_name_is_own(report: Report, who: auth.Caller) -> None:
    name = report.reporter_name.strip()
    if name and org_key(name) != org_key(who.name):
        raise InvalidArgument("reporter.name", "you report as yourself: your name is taken from your login "
                                               "(only the support desk names someone else)")


def check_organization_is_own(report: Report, who: auth.Caller) -> None:
    organization = report.organization.strip()
    if organization and org_key(organization) != org_key(who.organization):
        if who.organization:
            raise InvalidArgument("reporter.organization", f"you are logged in as staff of {who.organization}; "
                                                           "report as yourself from there")
        raise InvalidArgument("reporter.organization",
                              "your login names no organisation: leave it empty (only the support desk names one)")


def reporter_from_login(report: Report, who: auth.Caller) -> Reporter:
    """Reporting as yourself, you are who your login says: name and organisation come from the
    session token (the directory), never from the request. A value that says otherwise is refused,
    naming the field (leave it empty)."""
    check_filer_is_person(who)
    kind = report.reporter_kind or kind_from_login(who)
    check_kind_fits(kind, who)
    check_name_is_own(report, who)
    check_organization_is_own(report, who)
    return Reporter(name=who.name, id=who.id, id_kind=who.id_kind, kind=kind, organization=who.organization,
                    contact=names.checked("reporter.contact", report.contact, required=False))


def reporter_for(report: Report, who: auth.Caller, max_description: int) -> Reporter:
    """The reporter as stored, after checking the report against the caller."""
    check_report(report, max_description)
    if report.on_behalf(who):
        return reporter_named_by_desk(report, who)
    return reporter_from_login(report, who)


# ---------------------------------------------------------------- reported without a login (the public page)

_DIAL_IN_CODE = re.compile(r"^[0-9]{4,16}$")


@dataclass(frozen=True)
class PublicReport:
    """A report from the public page: who the reporter says they are (unverified), and the problem.
    No meeting, participant or rebook fields: such a report can carry none."""

    reporter_kind: str
    name: str
    organization: str
    contact: str
    problem: str
    description: str
    dial_in_code: str = ""


def check_public_kind(report: PublicReport) -> None:
    if report.reporter_kind not in REPORTER_KINDS:
        raise InvalidArgument("reporter_kind", f"say who you are: one of {', '.join(REPORTER_KINDS)}")


def public_organization(report: PublicReport, organizations: list[str]) -> str:
    """Municipality staff pick their municipality from the routing table's list (its spelling is the
    one the municipality's IT desk has in the directory, so the report reaches that desk); anyone
    else may name an organisation as free text."""
    if report.reporter_kind != "municipality_staff":
        return names.checked("organization", report.organization, required=False)
    wanted = org_key(report.organization)
    match = next((o for o in organizations if org_key(o) == wanted), None) if wanted else None
    if match is None:
        raise InvalidArgument("organization", "choose your municipality from the list")
    return match


def public_dial_in_code(value: str) -> str:
    code = "".join(value.split()).replace("-", "")
    if code and not _DIAL_IN_CODE.match(code):
        raise InvalidArgument("dial_in_code", "the meeting ID from the invitation: 4-16 digits")
    return code


def public_reporter(report: PublicReport, routing: RoutingTable, max_description: int) -> Reporter:
    """The reporter as stored, from a public report (its fields checked, each refusal naming the field)."""
    check_public_kind(report)
    check_problem(Report(problem=report.problem, description=report.description))
    check_description(Report(problem=report.problem, description=report.description), max_description)
    organization = public_organization(report, list(routing.organizations))
    public_dial_in_code(report.dial_in_code)
    return Reporter(name=names.checked("name", report.name), id="", id_kind="", kind=report.reporter_kind,
                    organization=organization, contact=names.checked("contact", report.contact))
