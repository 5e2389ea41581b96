"""JSON logs to stdout with a request id (and, while tracing, the trace and span ids), and
personnummer masked by the logging layer itself.

The masking filter is attached to the handler, so every record, from our code or a
library, passes through it: no call site can forget.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import TextIO

from opentelemetry import trace

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("svpl_request_id", default="")

# A personnummer / samordningsnummer shape: optional century, YYMMDD with a plausible
# month and day (samordningsnummer: day + 60), an optional - or +, and four digits.
# A whole token: not preceded or followed by a letter or digit (so HSA-ids' organisation
# numbers, whose "month" is not 01-12, and digit runs inside hex ids, such as a booking id
# "…70f0504892076e61…", are left alone: a log line's ids stay searchable).
_PNR_RE = re.compile(
    r"(?<![0-9A-Za-z])((?:19|20)?[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]|6[1-9]|[78][0-9]|9[01]))"
    r"([-+]?)([0-9]{4})(?![0-9A-Za-z])"
)


def mask_personnummer(text: str) -> str:
    """Replace the last four digits of anything shaped like a personnummer with ****."""
    return _PNR_RE.sub(lambda m: f"{m.group(1)}{m.group(2) or '-'}****", text)


class PersonnummerMaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_personnummer(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_personnummer(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if key.startswith("svpl_") and isinstance(value, str):
                setattr(record, key, mask_personnummer(value))
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # the same ids the trace shows: a log line found from a trace and back
            entry["trace_id"] = trace.format_trace_id(span.trace_id)
            entry["span_id"] = trace.format_span_id(span.span_id)
        for key, value in record.__dict__.items():
            if key.startswith("svpl_"):
                entry[key[5:]] = value
        if record.exc_text:
            entry["exc"] = record.exc_text
        # Masked again as a whole: a value that reached `extra` unmasked is caught here.
        return mask_personnummer(json.dumps(entry, default=str, ensure_ascii=False))


def setup_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Route every logger to one JSON handler on stdout with the masking filter."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(PersonnummerMaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
