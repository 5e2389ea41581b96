"""Small helpers the roster tests share: reading a refusal's reason, and a caller's metadata."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from devstack.harness import as_token


def reason(exc: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason of a refusal ("" when there is none)."""
    status = rpc_status.from_call(exc)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def md(token: str):
    return as_token(token)
