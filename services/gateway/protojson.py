"""Responses are the services' own contract messages as JSON (protobuf's JSON mapping with
proto field names), and their OpenAPI schemas are derived from the same descriptors, so the
documented shape cannot drift from what is sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from google.protobuf import descriptor as _d
from google.protobuf import json_format
from google.protobuf.message import Message

if TYPE_CHECKING:
    # Message.DESCRIPTOR is typed as descriptor.Descriptor or this (the upb implementation's descriptor).
    from google._upb._message import Descriptor as _UpbDescriptor

_SCALARS = {
    _d.FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    _d.FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    _d.FieldDescriptor.TYPE_INT32: {"type": "integer"},
    _d.FieldDescriptor.TYPE_SINT32: {"type": "integer"},
    _d.FieldDescriptor.TYPE_UINT32: {"type": "integer"},
    _d.FieldDescriptor.TYPE_FIXED32: {"type": "integer"},
    _d.FieldDescriptor.TYPE_SFIXED32: {"type": "integer"},
    # 64-bit integers travel as strings in protobuf's JSON mapping.
    _d.FieldDescriptor.TYPE_INT64: {"type": "string"},
    _d.FieldDescriptor.TYPE_SINT64: {"type": "string"},
    _d.FieldDescriptor.TYPE_UINT64: {"type": "string"},
    _d.FieldDescriptor.TYPE_FIXED64: {"type": "string"},
    _d.FieldDescriptor.TYPE_SFIXED64: {"type": "string"},
    _d.FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    _d.FieldDescriptor.TYPE_STRING: {"type": "string"},
    _d.FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string"},
}


# Fields that name the inside of the system (where a media instance listens): never sent to a browser.
INTERNAL_FIELDS = frozenset({"media_address"})


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in INTERNAL_FIELDS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def to_json(message: Message) -> dict:
    return _strip(json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    ))


def ref(descriptor: _d.Descriptor | _UpbDescriptor) -> dict:
    return {"$ref": f"#/components/schemas/{descriptor.full_name}"}


def _message_type(field: _d.FieldDescriptor) -> _d.Descriptor:
    """A message field's message type (set on every field of TYPE_MESSAGE)."""
    return cast(_d.Descriptor, field.message_type)


def schemas_for(descriptors: list[_d.Descriptor]) -> dict[str, dict]:
    """JSON schemas for these messages and every message they contain, by full name."""
    out: dict[str, dict] = {}

    def field_schema(field: _d.FieldDescriptor) -> dict:
        if field.type == _d.FieldDescriptor.TYPE_MESSAGE:
            message_type = _message_type(field)
            name = message_type.full_name
            if message_type.GetOptions().map_entry:
                value = message_type.fields_by_name["value"]
                return {"type": "object", "additionalProperties": field_schema(value)}
            if name in _WELL_KNOWN:
                return dict(_WELL_KNOWN[name])
            visit(message_type)
            return ref(message_type)
        if field.type == _d.FieldDescriptor.TYPE_ENUM:
            enum_type = cast(_d.EnumDescriptor, field.enum_type)  # set on every enum field
            return {"type": "string", "enum": [v.name for v in enum_type.values]}
        return dict(_SCALARS[field.type])

    def visit(desc: _d.Descriptor) -> None:
        if desc.full_name in out:
            return
        out[desc.full_name] = {}  # placeholder: recursion guard
        props, required = {}, []
        for field in desc.fields:
            if field.name in INTERNAL_FIELDS:
                continue
            schema = field_schema(field)
            repeated = field.is_repeated and not (
                field.type == _d.FieldDescriptor.TYPE_MESSAGE and _message_type(field).GetOptions().map_entry)
            if repeated:
                schema = {"type": "array", "items": schema}
            props[field.name] = schema
            # Fields without presence are always printed; messages only when set.
            if repeated or field.type != _d.FieldDescriptor.TYPE_MESSAGE:
                required.append(field.name)
        schema = {"type": "object", "properties": props, "additionalProperties": False}
        if required:
            schema["required"] = required
        out[desc.full_name] = schema

    for d in descriptors:
        visit(d)
    return out
