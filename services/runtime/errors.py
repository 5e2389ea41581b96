"""Domain exceptions and their one mapping to gRPC status codes.

Domain code raises these (plain Python, no gRPC types); the shared interceptor turns
them into the status code with a message a person can act on, and for
InvalidArgument a google.rpc.BadRequest field violation a client can act on.
"""

from __future__ import annotations

import grpc


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        # A machine-readable reason (e.g. "REMOVED") carried as google.rpc.ErrorInfo.
        self.reason = reason


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class Aborted(DomainError):
    """A concurrent change won; the client may retry."""

    code = grpc.StatusCode.ABORTED
