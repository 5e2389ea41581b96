"""The region's support routing table: data (a YAML file per region), validated at start.

reporter kind x problem kind -> a queue with its contact details. Rules are tried in
file order; the first whose reporter kinds and problem kinds both include the report's
wins (an empty list means any). A report no rule matches goes to the default queue.

Each queue also says who staffs it (`staffed_by`), which is the support desk's scope:
- "region": desk members employed by the region (roles region_staff + support_desk) work
  every ticket in the queue;
- "reporter_organization": "your own workplace IT" - a desk member (support_desk) works a
  ticket in the queue only when their organisation (the HSA directory's `o`, in the token)
  is the ticket reporter's organisation.
services/support/desk_scope.py applies it.

Validation (pydantic) rejects unknown kinds, a rule naming an undefined queue, a queue
without any contact detail or without (or with an unknown) staffed_by, an escalation target
that does not exist, duplicate ids, a default queue staffed by the reporter's organisation
(a report no rule matches must reach a desk whoever files it) and a rule that can never
match because earlier rules cover every pair it names. Every error names the rule (or
queue) it is about; start-up stops with that message.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

ReporterKind = Literal["municipality_staff", "region_staff", "citizen", "external_actor"]
ProblemKind = Literal[
    "usage", "network_password", "messaging_password", "messaging_system_fault", "technical", "connection", "other"
]
# Who staffs a queue (see the module docstring).
StaffedBy = Literal["region", "reporter_organization"]
STAFFED_BY_REGION, STAFFED_BY_REPORTER_ORGANIZATION = cast(tuple[StaffedBy, StaffedBy], get_args(StaffedBy))
REPORTER_KINDS: tuple[str, ...] = get_args(ReporterKind)
PROBLEM_KINDS: tuple[str, ...] = get_args(ProblemKind)
DEFAULT_RULE = "default"
OWN_WORKPLACE_TEXT = "Kontakta IT-supporten på din egen arbetsplats"

ROUTING_DIR = Path(__file__).resolve().parent / "routing"

_ID = r"^[a-z0-9][a-z0-9_-]{0,63}$"


class QueueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, pattern=r"^\+?[0-9][0-9 -]{4,20}$")
    phone_option: str | None = Field(None, pattern=r"^[0-9#*]{1,4}$")
    phone_option_label: str | None = Field(None, max_length=60)
    own_workplace: bool = False
    # The text a person sees; derived from the details above when not given.
    contact_text: str | None = Field(None, min_length=1, max_length=300)
    escalates_to: str | None = None
    staffed_by: StaffedBy

    @model_validator(mode="after")
    def _reachable(self) -> QueueSpec:
        if not (self.email or self.phone or self.own_workplace or self.contact_text):
            raise ValueError("needs an email, a phone, own_workplace or a contact_text")
        if (self.phone_option or self.phone_option_label) and not self.phone:
            raise ValueError("phone_option needs a phone")
        if self.phone_option_label and not self.phone_option:
            raise ValueError("phone_option_label needs a phone_option")
        return self

    def text(self) -> str:
        """What a person should see, in Swedish: "Ring 010 241 41 50, val 2 (Cosmic)"."""
        if self.contact_text:
            return self.contact_text
        parts = []
        if self.own_workplace:
            parts.append(OWN_WORKPLACE_TEXT)
        if self.phone:
            call = f"Ring {self.phone}"
            if self.phone_option:
                call += f", val {self.phone_option}"
                if self.phone_option_label:
                    call += f" ({self.phone_option_label})"
            parts.append(call)
        if self.email:
            parts.append(f"Skicka e-post till {self.email}")
        return " eller ".join(parts)


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_ID)
    reporters: list[ReporterKind] = Field(default_factory=list)
    problems: list[ProblemKind] = Field(default_factory=list)
    queue: str

    def pairs(self) -> set[tuple[str, str]]:
        return set(itertools.product(self.reporters or REPORTER_KINDS, self.problems or PROBLEM_KINDS))

    def matches(self, reporter: str, problem: str) -> bool:
        return (not self.reporters or reporter in self.reporters) and (not self.problems or problem in self.problems)


class RoutingTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    region: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    region_name: str = ""
    default_queue: str
    queues: list[QueueSpec] = Field(min_length=1)
    rules: list[RuleSpec] = Field(default_factory=list)
    # The municipalities in the region, as the HSA directory names them (`o`): the public report page
    # lets municipality staff pick theirs, so a report reaches that municipality's own IT desk.
    organizations: list[str] = Field(default_factory=list, max_length=500)

    @model_validator(mode="after")
    def _consistent(self) -> RoutingTable:
        queue_ids: set[str] = set()
        for q in self.queues:
            if q.id in queue_ids:
                raise ValueError(f"queue {q.id!r} is defined twice")
            queue_ids.add(q.id)
        for q in self.queues:
            if q.escalates_to is not None and (q.escalates_to not in queue_ids or q.escalates_to == q.id):
                raise ValueError(f"queue {q.id!r}: escalates_to {q.escalates_to!r} is not another defined queue")
        if self.default_queue not in queue_ids:
            raise ValueError(f"default_queue {self.default_queue!r} is not a defined queue")
        if self.defined_queue(self.default_queue).staffed_by == STAFFED_BY_REPORTER_ORGANIZATION:
            raise ValueError(f"default_queue {self.default_queue!r} is staffed_by reporter_organization: a report "
                             "no rule matches must reach a desk whoever files it")
        seen: set[str] = set()
        covered: set[tuple[str, str]] = set()
        for rule in self.rules:
            if rule.id in seen or rule.id == DEFAULT_RULE:
                raise ValueError(f"rule {rule.id!r}: the id is used twice (or is the reserved {DEFAULT_RULE!r})")
            seen.add(rule.id)
            if rule.queue not in queue_ids:
                raise ValueError(f"rule {rule.id!r}: queue {rule.queue!r} is not defined")
            pairs = rule.pairs()
            if pairs <= covered:
                raise ValueError(f"rule {rule.id!r} can never match: earlier rules cover every pair it names")
            covered |= pairs
        return self

    def queue(self, queue_id: str) -> QueueSpec | None:
        return next((q for q in self.queues if q.id == queue_id), None)

    def defined_queue(self, queue_id: str) -> QueueSpec:
        """A queue the table itself names (the default queue, a rule's queue): validation checked it exists."""
        return cast(QueueSpec, self.queue(queue_id))

    def route(self, reporter: str, problem: str) -> Route:
        for rule in self.rules:
            if rule.matches(reporter, problem):
                return Route(self.defined_queue(rule.queue), rule.id)
        return Route(self.defined_queue(self.default_queue), DEFAULT_RULE)


@dataclass(frozen=True)
class Route:
    queue: QueueSpec
    rule_id: str


class RoutingTableError(SystemExit):
    """Start-up stops here; the message names the file and the bad rule or queue."""


def _describe(raw: object, err: ErrorDetails) -> str:
    loc = list(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if len(loc) >= 2 and loc[0] in ("rules", "queues") and isinstance(loc[1], int):
        items = raw.get(loc[0]) if isinstance(raw, dict) else None
        item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        name = item.get("id") if isinstance(item, dict) and item.get("id") else f"#{loc[1] + 1}"
        what = "rule" if loc[0] == "rules" else "queue"
        rest = ".".join(str(p) for p in loc[2:])
        return f"{what} {name!r}" + (f" ({rest})" if rest else "") + f": {msg}"
    where = ".".join(str(p) for p in loc)
    return f"{where}: {msg}" if where else msg


def parse(text: str, source: str = "<routing table>") -> RoutingTable:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RoutingTableError(f"svpl: routing table {source} is not valid YAML: {exc}") from None
    try:
        return RoutingTable.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(raw, e) for e in exc.errors())
        raise RoutingTableError(f"svpl: routing table {source} is invalid: {problems}") from None


def load(path: str | Path) -> RoutingTable:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingTableError(f"svpl: routing table {path} cannot be read: {exc.strerror}") from None
    return parse(text, str(path))


def path_for(region: str, routing_file: str = "") -> Path:
    """The explicit file if set, else the region's table shipped with the service."""
    return Path(routing_file) if routing_file else ROUTING_DIR / f"{region}.yaml"
