"""Every unary method of every service, called by a caller its ACCESS rule admits, with messages
hypothesis builds from the contract's descriptors (hostile strings, extreme numbers, unknown enum
values, nested messages): whatever is refused is refused with a status the caller can act on,
never INTERNAL or UNKNOWN (an unhandled exception inside a service)."""

from __future__ import annotations

import importlib

import grpc
import pytest
from google.protobuf import descriptor as _d
from google.protobuf import message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.harness import as_token
from tests.conftest import PEOPLE
from tests.hostile.test_grpc_inputs import OPERATOR_TEXT

SERVICES = ["identity", "roster", "booking", "support", "media"]
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
F = _d.FieldDescriptor
INTS = {F.TYPE_INT32: 31, F.TYPE_SINT32: 31, F.TYPE_SFIXED32: 31, F.TYPE_INT64: 63, F.TYPE_SINT64: 63,
        F.TYPE_SFIXED64: 63}
UINTS = {F.TYPE_UINT32: 32, F.TYPE_FIXED32: 32, F.TYPE_UINT64: 64, F.TYPE_FIXED64: 64}
text = st.one_of(st.sampled_from(OPERATOR_TEXT + ["", "SE2321000057-1001", "191212121212"]), st.text(max_size=40))


def message_type(field: F) -> _d.Descriptor:
    """The type of a TYPE_MESSAGE field (the other fields have none)."""
    if field.message_type is None:
        raise ValueError(f"{field.full_name} is not a message field")
    return field.message_type


def field_values(field: F, depth: int):
    if field.type == F.TYPE_MESSAGE:
        if message_type(field).full_name == "google.protobuf.Timestamp":
            return st.builds(lambda s, n: {"seconds": s, "nanos": n}, st.integers(-(2**40), 2**40),
                             st.integers(-(2**31), 2**31 - 1))
        return messages(message_type(field), depth + 1)
    if field.type == F.TYPE_STRING:
        return text
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=40)
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type == F.TYPE_ENUM:
        return st.integers(-3, 40)
    if field.type in INTS:
        bits = INTS[field.type]
        return st.integers(-(2**bits), 2**bits - 1)
    if field.type in UINTS:
        return st.integers(0, 2 ** UINTS[field.type] - 1)
    return st.floats(allow_nan=True)


def messages(desc: _d.Descriptor, depth: int = 0):
    """A dict of some of the message's fields (recursion bounded)."""
    if depth > 2:
        return st.just({})
    fields = {}
    for field in desc.fields:
        if field.type == F.TYPE_MESSAGE and message_type(field).GetOptions().map_entry:
            continue
        values = field_values(field, depth)
        fields[field.name] = st.lists(values, max_size=3) if field.is_repeated else values
    return st.fixed_dictionaries({}, optional=fields)


def build(cls, values: dict):
    msg = cls()
    for name, value in values.items():
        field = cls.DESCRIPTOR.fields_by_name[name]
        if field.type == F.TYPE_MESSAGE:
            sub_cls = message_factory.GetMessageClass(field.message_type)
            if field.is_repeated:
                getattr(msg, name).extend(build(sub_cls, v) for v in value)
            else:
                getattr(msg, name).CopyFrom(build(sub_cls, value))
        elif field.is_repeated:
            getattr(msg, name).extend(value)
        else:
            setattr(msg, name, value)
    return msg


def caller_for(rule, person_token, service_token):
    """Someone the method's rule admits, so the message reaches the handler."""
    if rule.persons is not None:
        who = next((n for n, p in PEOPLE.items() if not rule.persons or rule.persons & set(p["roles"])), "coordinator")
        return as_token(person_token(who))
    if rule.services:
        return as_token(service_token(sorted(rule.services)[0]))
    return ()


@pytest.fixture
async def every_method(system_factory, person_token, service_token):
    """(name, stub method, request class, caller metadata) of every unary method of every service."""
    system = await system_factory(SERVICES)
    calls = []
    for name in SERVICES:
        pb2 = importlib.import_module(f"svpl.{name}.v1.{name}_pb2")
        access = importlib.import_module(f"services.{name}.servicer").ACCESS
        service = pb2.DESCRIPTOR.services_by_name[f"{name.capitalize()}Service"]
        stub = system.stub(name)
        for method in service.methods:
            if not method.server_streaming:
                calls.append((f"{name}.{method.name}", getattr(stub, method.name),
                              message_factory.GetMessageClass(method.input_type),
                              caller_for(access[method.name], person_token, service_token)))
    assert len(calls) > 60
    return calls


@settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_no_message_makes_any_method_fail_internally(every_method, data):
    failures: list[str] = []
    reached = 0
    for what, rpc, cls, md in every_method:
        values = data.draw(messages(cls.DESCRIPTOR), label=what)
        try:
            request = build(cls, values)
        except (ValueError, TypeError):  # a value protobuf itself refuses (e.g. surrogates in a string)
            continue
        try:
            await rpc(request, metadata=md, timeout=15)
            reached += 1
        except grpc.aio.AioRpcError as err:
            reached += err.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            if err.code() in NEVER:
                failures.append(f"{what}: {err.code().name} {err.details()} for {request}"[:600])
    assert not failures, "\n".join(failures)
    # The messages got past the access rules to the handlers (the callers were chosen by the rules).
    assert reached > len(every_method) * 3 // 4, reached
