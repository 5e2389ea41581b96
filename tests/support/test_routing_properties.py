"""Properties of the routing table parser: any table either loads or stops start-up with a
RoutingTableError (never another exception), and a loaded table routes every reporter kind x
problem kind to one of its queues, by the first matching rule or else the default queue; a
reporter without an organisation always lands in a queue the region's desk staffs."""

from __future__ import annotations

import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from services.support import routing_table
from services.support.desk_scope import landing_queue
from services.support.routing_table import PROBLEM_KINDS, REPORTER_KINDS, RoutingTableError

# Mostly valid pieces, with a few bad ones mixed in (unknown queue or kind, bad e-mail, no contact).
queue_ids = st.sampled_from(["a", "a", "b", "b", "c", "nowhere"])
contact_options: list[dict[str, str | bool]] = [
    {"email": "it@rjl.se"}, {"phone": "010 241 41 50", "phone_option": "1"}, {"own_workplace": True},
    {"contact_text": "Ring 1177"}, {"email": "inte-en-adress"}, {}]
contacts = st.sampled_from(contact_options)
staffing = st.sampled_from([{"staffed_by": "region"}, {"staffed_by": "reporter_organization"}] * 3
                           + [{"staffed_by": "nobody"}, {}])
queues = st.lists(st.tuples(st.sampled_from(["b", "c", "d"]), contacts, st.sampled_from([None, None, "a", "b", "x"]),
                            staffing),
                  max_size=3, unique_by=lambda q: q[0]).map(
    lambda qs: [{"id": "a", "name": "Servicedesk", "email": "it@rjl.se", "staffed_by": "region"}]
    + [{"id": i, "name": "Kö", **c, **s, **({"escalates_to": e} if e else {})} for i, c, e, s in qs])
kinds = st.lists(st.sampled_from(list(REPORTER_KINDS) * 3 + ["martian"]), min_size=1, max_size=2, unique=True)
rules = st.lists(st.tuples(queue_ids, kinds, st.lists(st.sampled_from(PROBLEM_KINDS), min_size=1, max_size=3, unique=True)),
                 max_size=5).map(
    lambda rs: [{"id": f"r{n}", "queue": q, "reporters": r, "problems": p} for n, (q, r, p) in enumerate(rs)])


@settings(max_examples=100, deadline=None)
@given(queues=queues, rules=rules, default=st.sampled_from(["a", "a", "b", "nowhere"]))
def test_a_table_loads_or_fails_naming_why_and_every_report_lands_in_a_queue(queues, rules, default):
    text = yaml.safe_dump({"region": "rjl", "default_queue": default, "queues": queues, "rules": rules})
    try:
        table = routing_table.parse(text, "generated.yaml")
    except RoutingTableError as err:
        assert str(err).startswith("svpl: routing table generated.yaml is invalid: ")
        event("rejected")
        return
    event("loaded")
    ids = {q.id for q in table.queues}
    for reporter in REPORTER_KINDS:
        for problem in PROBLEM_KINDS:
            route = table.route(reporter, problem)
            assert route.queue.id in ids and route.queue.text()
            first = next((r for r in table.rules if r.matches(reporter, problem)), None)
            assert route.rule_id == (first.id if first else "default")
            assert route.queue.id == (first.queue if first else table.default_queue)
            assert landing_queue(table, route.queue, "").staffed_by == "region"
            assert landing_queue(table, route.queue, "Vetlanda kommun") == route.queue
