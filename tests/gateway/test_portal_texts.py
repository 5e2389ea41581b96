"""The portal says every refusal in Swedish: each machine-readable reason a service or the gateway
can return (google.rpc.ErrorInfo / the problem's `reason`) has its sentence in the one table the
portal uses (services/gateway/portal/static/common.js, REASONS), so no English server detail is
ever shown for it. A new reason without a sentence fails here."""

from __future__ import annotations

import re
from pathlib import Path

from svpl.roster.v1 import roster_pb2

from services.identity import bankid
from services.roster import model

ROOT = Path(__file__).resolve().parents[2]
COMMON_JS = ROOT / "services" / "gateway" / "portal" / "static" / "common.js"


def portal_reasons() -> set[str]:
    text = COMMON_JS.read_text()
    table = text[text.index("const REASONS = {"):text.index("};", text.index("const REASONS = {"))]
    return set(re.findall(r"\b([A-Z][A-Z0-9_]+):", table))


def service_reasons() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        found |= set(re.findall(r'reason="([A-Z][A-Z0-9_]*[A-Z0-9])"', path.read_text()))
    # Reasons built at run time: a meeting's state, a BankID order's status, an admission refusal.
    found |= {f"MEETING_{state.upper()}" for state in (model.SCHEDULED, model.OPEN, model.LIVE, *model.FINAL)}
    found |= {f"ORDER_{status.upper()}" for status in (bankid.PENDING, bankid.FAILED, bankid.COMPLETE)}
    found |= {v.name for v in roster_pb2.AdmitRefusal.DESCRIPTOR.values if v.number}
    found |= {model.CONNECTED_BY_PHONE, model.CONNECTED_BY_BROWSER}  # (named by constants, not reason="...")
    return found


def test_every_reason_the_api_can_return_has_a_swedish_sentence_in_the_portal():
    reasons = service_reasons()
    assert len(reasons) > 40, reasons  # the scan found them
    assert sorted(reasons - portal_reasons()) == []


def test_the_portal_never_shows_a_server_detail_and_maps_every_status():
    text = COMMON_JS.read_text()
    function = text[text.index("function errorText(err)"):text.index("function confirmAction")]
    assert "err.message" not in function and "problem.detail" not in function
    statuses = text[text.index("const STATUSES = {"):text.index("};", text.index("const STATUSES = {"))]
    assert {int(s) for s in re.findall(r"\b(\d{3}):", statuses)} >= {400, 401, 403, 404, 409, 413, 429}
    assert "err.status >= 500" in function
