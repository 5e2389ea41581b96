"""MongoDB operator injection through every operation of the gateway's OpenAPI document, against
the real services and database: for every JSON body field and every query/path parameter, operator
objects (`{"$gt": ""}`, `{"$where": ...}`, `{"$ne": null}`) are refused with a 4xx problem and change
nothing stored; operator-looking strings (`"$where"`, `'{"$gt":""}'`) are at most taken as the
literal text they are (never a 5xx, never an operator: a refused one changes nothing either)."""

from __future__ import annotations

import collections
import copy
import datetime as dt
import json
import urllib.parse

from tests.gateway.conftest import COORDINATOR
from tests.gateway.flow import book_video_meeting
from tests.hostile.conftest import changed, settled, snapshot

OPERATORS = [{"$gt": ""}, {"$where": "sleep(1000)"}, {"$ne": None}]
OPERATOR_STRINGS = ["$where", '{"$gt":""}', "'; return true; var x='"]
REFUSALS = {400, 401, 403, 404, 409, 413, 422}
# Ends the session every other request runs in, or needs an outside service (BankID) not running here.
SKIP = {("post", "/api/v1/auth/logout")}
# Their success is final (the meeting or booking is gone): run them last.
LAST = ("/end", "/abort", "/cancel")
# Changed by the gateway's own reads too (access records of reads, sessions): not what a refusal may not change.
BACKGROUND = frozenset({"audit.access_records"})


def resolve(doc: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def baseline(doc: dict, schema: dict):
    """A plausible value of a schema (valid where that is easy), so one field at a time carries the attack."""
    schema = resolve(doc, schema)
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        return baseline(doc, schema)
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type")
    if kind == "object":
        return {name: baseline(doc, prop) for name, prop in schema.get("properties", {}).items()
                if name in schema.get("required", ()) or "default" not in prop}
    if kind == "array":
        return []
    if kind == "integer":
        return int(schema.get("minimum", 1)) + 29
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).isoformat()
    return "abcdefgh1234"[: schema.get("maxLength", 12)]


def field_paths(doc: dict, schema: dict, prefix: tuple = ()) -> list[tuple]:
    """Every leaf field of a body (nested objects followed), as a path of keys."""
    schema = resolve(doc, schema)
    if schema.get("type") != "object":
        return [prefix] if prefix else []
    out = []
    for name, prop in schema.get("properties", {}).items():
        sub = resolve(doc, prop)
        out += field_paths(doc, sub, prefix + (name,)) if sub.get("type") == "object" else [prefix + (name,)]
    return out


def put(body: dict, path: tuple, value) -> dict:
    body = copy.deepcopy(body)
    node = body
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return body


async def unchanged(system, before: dict, what: str) -> None:
    """Nothing stored changed (one snapshot; settled again only when it differs, to tell a change from lag)."""
    if changed(before, await snapshot(system, BACKGROUND)):
        after = await settled(system, BACKGROUND)
        assert not changed(before, after), f"{what} changed {changed(before, after)}"


def assert_problem(response, what: str) -> None:
    assert response.status_code in REFUSALS, f"{what}: {response.status_code} {response.text[:300]}"
    assert response.headers["content-type"].startswith("application/problem+json"), what
    body = response.json()
    assert body["status"] == response.status_code and body["title"], what


async def test_operator_injection_in_every_field_is_refused_and_changes_nothing(gateway):
    app, system, new_browser = gateway
    coordinator = new_browser()
    await coordinator.login(COORDINATOR)
    booking = await book_video_meeting(coordinator)
    report = await coordinator.post("/api/v1/support/reports", json={"problem": "PROBLEM_KIND_OTHER",
                                                                       "description": "injection"})
    ids = {"meeting_id": booking["meeting_id"], "booking_id": booking["booking_id"],
           "ticket_id": report.json()["ticket"]["ticket_id"]}
    doc = app.openapi()
    operations = [(method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()
                  if (method, path) not in SKIP]
    operations.sort(key=lambda o: o[1].endswith(LAST))
    assert len(operations) > 30

    before = await settled(system, BACKGROUND)
    sent = {"object": 0, "string": 0}
    statuses: collections.Counter = collections.Counter()
    for method, path, op in operations:
        params = [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
        body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        body = baseline(doc, body_schema) if body_schema else None

        async def send(path_values: dict, query: dict | list, json_body, path=path, method=method) -> object:
            url = path.format(**{k: urllib.parse.quote(str(v), safe="") for k, v in path_values.items()})
            if method == "get":
                return await coordinator.get(url, params=query)
            return await coordinator.post(url, json=json_body, params=query)

        # Ids the sweep has no object for (an invitation, a phone task, ...) get one that exists nowhere.
        real_path = {p["name"]: ids.get(p["name"], "no-such-id") for p in params if p["in"] == "path"}
        for hostile in OPERATORS:
            what = f"{method.upper()} {path}"
            for p in params:  # an operator object in a path or query parameter arrives as its JSON text
                text = json.dumps(hostile)
                if p["in"] == "path":
                    assert_problem(await send({**real_path, p["name"]: text}, {}, body), f"{what} {p['name']}")
                else:  # as JSON text, and in the bracket form some frameworks turn into an object
                    for query in ({p["name"]: text}, [(f"{p['name']}[{next(iter(hostile))}]", "")]):
                        response = await send(real_path, query, body)
                        assert response.status_code < 500, f"{what} {query}: {response.text[:300]}"
                sent["object"] += 1
            for field in field_paths(doc, body_schema) if body_schema else []:
                assert_problem(await send(real_path, {}, put(body, field, hostile)), f"{what} {'.'.join(field)}")
                sent["object"] += 1
        await unchanged(system, before, f"{method.upper()} {path}: refused operators")

        # Operator-looking strings are text: refused (and then nothing changes) or taken literally.
        accepted = False
        for text in OPERATOR_STRINGS:
            targets = [("query", p["name"]) for p in params if p["in"] == "query"]
            targets += [("path", p["name"]) for p in params if p["in"] == "path"]
            targets += [("body", f) for f in (field_paths(doc, body_schema) if body_schema else [])]
            for where, name in targets:
                if where == "query":
                    response = await send(real_path, {name: text}, body)
                elif where == "path":
                    response = await send({**real_path, name: text}, {}, body)
                else:
                    response = await send(real_path, {}, put(body, name, text))
                sent["string"] += 1
                assert response.status_code < 500, f"{method.upper()} {path} {name}={text!r}: {response.text[:300]}"
                if response.status_code >= 400:
                    assert response.headers["content-type"].startswith("application/problem+json")
                statuses[response.status_code] += 1
                accepted |= response.status_code < 400
        if accepted:
            before = await settled(system, BACKGROUND)
        else:
            await unchanged(system, before, f"{method.upper()} {path}: refused strings")
    print(sent, dict(statuses))
    # The strings reached the services (answers only they give), not only the gateway's schema validation.
    assert sent["object"] > 150 and statuses[200] > 10 and statuses[409] > 10, (sent, statuses)
