"""Routing: every row of DOMAIN.md's support table, reporter kind x problem kind -> queue and the
contact text a person sees; a report no rule matches goes to the default queue; a bad table
stops start-up naming the bad rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from svpl.support.v1 import support_pb2 as pb

from services.support import routing_table
from services.support.config import SupportSettings
from services.support.routing_table import RoutingTableError
from services.support.server import build
from tests.support.conftest import EXTERNAL, STAFF_A, file

ROOT = Path(__file__).resolve().parents[2]

# Destinations as DOMAIN.md lists them for Region Jönköpings län (queue id, the text a person sees).
EMAIL_ITSTOD = ("sjukvardens_itstod", "Skicka e-post till sjukvardens.itstod@rjl.se")
REGION_IT_TEKNIK = ("region_it_teknik", "Ring 010 241 41 50, val 1 (Teknik)")
REGION_COSMIC = ("region_it_cosmic", "Ring 010 241 41 50, val 2 (Cosmic)")
SUPPORT_1177 = ("e_tjanster_1177", "Kontakta supporten för e-tjänsterna på 1177")
OWN_WORKPLACE_IT = ("kommunens_it", "Kontakta IT-supporten på din egen arbetsplats")

MUNI, REGION, CITIZEN, EXTERNAL_ACTOR = (pb.REPORTER_KIND_MUNICIPALITY_STAFF, pb.REPORTER_KIND_REGION_STAFF,
                                         pb.REPORTER_KIND_CITIZEN, pb.REPORTER_KIND_EXTERNAL_ACTOR)
USAGE, NET_PW, COSMIC_PW, COSMIC_FAULT, TECH, CONN, OTHER = (
    pb.PROBLEM_KIND_USAGE, pb.PROBLEM_KIND_NETWORK_PASSWORD, pb.PROBLEM_KIND_MESSAGING_PASSWORD,
    pb.PROBLEM_KIND_MESSAGING_SYSTEM_FAULT, pb.PROBLEM_KIND_TECHNICAL, pb.PROBLEM_KIND_CONNECTION,
    pb.PROBLEM_KIND_OTHER)

# (DOMAIN.md row, reporter kind, problem kind, expected destination). Every row of both DOMAIN.md
# tables appears: the problem rows for staff of both employers, the reporter rows for every kind.
TABLE = [
    ("use, process and routines -> e-mail", REGION, USAGE, EMAIL_ITSTOD),
    ("use, process and routines -> e-mail", MUNI, USAGE, EMAIL_ITSTOD),
    ("network / external access password -> option 1", REGION, NET_PW, REGION_IT_TEKNIK),
    ("network / external access password -> option 1", MUNI, NET_PW, REGION_IT_TEKNIK),
    ("Cosmic Link / Messenger password -> option 2", REGION, COSMIC_PW, REGION_COSMIC),
    ("Cosmic Link / Messenger password -> option 2", MUNI, COSMIC_PW, REGION_COSMIC),
    ("system fault inside Cosmic Link -> option 2", REGION, COSMIC_FAULT, REGION_COSMIC),
    ("system fault inside Cosmic Link -> option 2", MUNI, COSMIC_FAULT, REGION_COSMIC),
    ("technical fault, municipality staff -> own workplace IT", MUNI, TECH, OWN_WORKPLACE_IT),
    ("municipality staff -> own workplace IT (connection)", MUNI, CONN, OWN_WORKPLACE_IT),
    ("municipality staff -> own workplace IT (other)", MUNI, OTHER, OWN_WORKPLACE_IT),
    ("region staff -> region IT support (technical)", REGION, TECH, REGION_IT_TEKNIK),
    ("region staff -> region IT support (connection)", REGION, CONN, REGION_IT_TEKNIK),
    ("region staff -> region IT support (other)", REGION, OTHER, REGION_IT_TEKNIK),
] + [
    (f"citizens and external actors -> 1177 e-services support ({pb.ProblemKind.Name(p)})", who, p, SUPPORT_1177)
    for who in (CITIZEN, EXTERNAL_ACTOR)
    for p in (USAGE, NET_PW, COSMIC_PW, COSMIC_FAULT, TECH, CONN, OTHER)
]

LOGIN = {MUNI: STAFF_A, REGION: "region_staff", CITIZEN: "patient"}


async def test_every_domain_routing_row_reaches_its_queue_with_the_contact_text(shared_support, md):
    """Filed over gRPC as the reporter logged in, one report per row."""
    assert {(r, p) for _, r, p, _ in TABLE} == {(r, p) for r in (MUNI, REGION, CITIZEN, EXTERNAL_ACTOR)
                                                for p in (USAGE, NET_PW, COSMIC_PW, COSMIC_FAULT, TECH, CONN, OTHER)}
    wrong = []
    for row, reporter, problem, (queue, text) in TABLE:
        login = LOGIN.get(reporter, EXTERNAL)
        who = md(login) if isinstance(login, str) else md(**login)
        ticket = await file(shared_support, who, problem=problem, reporter=pb.Reporter(kind=reporter))
        got = (ticket.routing.queue.queue_id, ticket.routing.queue.contact_text)
        if got != (queue, text) or ticket.reporter.kind != reporter or ticket.state != pb.TICKET_STATE_NEW:
            wrong.append((row, pb.ReporterKind.Name(reporter), got))
    assert not wrong


async def test_reporter_kind_defaults_from_the_login_and_cannot_be_claimed_falsely(shared_support, md):
    ticket = await file(shared_support, md(**STAFF_A), problem=TECH)
    assert ticket.reporter.kind == MUNI and ticket.routing.queue.queue_id == "kommunens_it"
    with pytest.raises(Exception) as err:  # a citizen cannot jump the queue as region staff
        await file(shared_support, md("patient"), problem=TECH, reporter=pb.Reporter(kind=REGION))
    assert err.value.code().name == "INVALID_ARGUMENT" and "reporter.kind" in err.value.details()
    # Someone with neither a region nor a municipality role, nor a citizen's login, is an external actor.
    outside = await file(shared_support, md(person_id="SE5567890123-0001", id_kind="hsa_id", name="Pia Privat",
                                            method="siths", roles=["staff"]), problem=TECH)
    assert outside.reporter.kind == EXTERNAL_ACTOR and outside.routing.queue.queue_id == "e_tjanster_1177"


async def test_routing_table_is_served_as_configured(shared_support, md):
    table = await shared_support.stub("support").GetRoutingTable(pb.GetRoutingTableRequest(), metadata=md("patient"))
    assert table.region == "rjl" and table.default_queue_id == "region_it_teknik"
    queues = {q.queue_id: q for q in table.queues}
    assert queues["region_it_cosmic"].contact_text == "Ring 010 241 41 50, val 2 (Cosmic)"
    assert queues["kommunens_it"].own_workplace
    muni = next(r for r in table.rules if r.queue_id == "kommunens_it")
    assert muni.escalates_to == "region_it_teknik"


def test_a_report_no_rule_matches_goes_to_the_default_queue():
    table = routing_table.parse("""
region: test
default_queue: desk
queues:
  - {id: desk, name: Servicedesk, phone: "010 000 00 00", staffed_by: region}
  - {id: mail, name: E-post, email: help@example.se, staffed_by: region}
rules:
  - {id: only-usage, problems: [usage], queue: mail}
""")
    assert table.route("region_staff", "usage").queue.id == "mail"
    route = table.route("citizen", "technical")
    assert (route.queue.id, route.rule_id, route.queue.text()) == ("desk", "default", "Ring 010 000 00 00")


# (extra queues, rules, what the start-up message must say)
BAD_TABLES = {
    "unknown reporter kind": ("", "  - {id: martians, reporters: [martian], queue: desk}\n",
                              "rule 'martians' (reporters.0)"),
    "undefined queue": ("", "  - {id: lost-rule, problems: [usage], queue: nowhere}\n",
                        "rule 'lost-rule': queue 'nowhere' is not defined"),
    "rule that can never match": ("", "  - {id: everything, queue: desk}\n  - {id: shadowed, problems: [usage], "
                                  "queue: desk}\n", "rule 'shadowed' can never match"),
    "queue nobody can contact": ("  - {id: silent, name: Tyst, staffed_by: region}\n",
                                 "  - {id: to-silent, queue: silent}\n", "queue 'silent': needs an email, a phone"),
    "queue staffed by nobody known": ("  - {id: odd, name: Udda, email: u@rjl.se, staffed_by: municipality}\n",
                                      "  - {id: to-odd, queue: odd}\n",
                                      "queue 'odd' (staffed_by): Input should be 'region' or 'reporter_organization'"),
    "queue without staffed_by": ("  - {id: unstaffed, name: Ingen, email: i@rjl.se}\n",
                                 "  - {id: to-unstaffed, queue: unstaffed}\n",
                                 "queue 'unstaffed' (staffed_by): Field required"),
}


def _bad_table(tmp_path, case: str) -> Path:
    queues, rules, _ = BAD_TABLES[case]
    path = tmp_path / "bad.yaml"
    path.write_text("region: rjl\ndefault_queue: desk\nqueues:\n  - {id: desk, name: Desk, email: d@rjl.se, "
                    "staffed_by: region}\n"
                    + queues + "rules:\n" + rules, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", list(BAD_TABLES))
async def test_invalid_routing_file_fails_start_up_naming_the_bad_rule(case, tmp_path, mongo):
    settings = SupportSettings(mongodb_uri=mongo.uri, support_routing_file=str(_bad_table(tmp_path, case)))
    with pytest.raises(RoutingTableError) as err:
        await build(settings)
    assert BAD_TABLES[case][2] in str(err.value)


def test_python_m_services_support_exits_with_the_bad_rule_named(tmp_path):
    """The real entry point: non-zero exit, the rule named on stderr, before it serves anything."""
    path = _bad_table(tmp_path, "undefined queue")
    env = {**os.environ, "SVPL_MONGODB_URI": "mongodb://127.0.0.1:9/", "SVPL_SUPPORT_ROUTING_FILE": str(path),
           "SVPL_GRPC_PORT": "0", "SVPL_METRICS_PORT": "0"}
    done = subprocess.run([sys.executable, "-m", "services.support"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0, done.stderr
    assert "rule 'lost-rule': queue 'nowhere' is not defined" in done.stderr, done.stderr


def test_shipped_tables_are_valid():
    for path in routing_table.ROUTING_DIR.glob("*.yaml"):
        assert routing_table.load(path).region == path.stem
