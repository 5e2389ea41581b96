"""The development identity provider (`make run` only): log in as a demo person.

Off unless SVPL_DEVELOPMENT_LOGIN=true; the Helm chart refuses to render with it on.
Staff come from the directory (any back-end), citizens from the demo citizens file.
The token names the method it pretends (so roster's admission rules behave as they
will in production) and carries assurance "development", which no real login issues.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.identity import hsa_id as hsa
from services.identity import personnummer as pnr
from services.identity.directory import Directory
from services.identity.token_service import (
    BANKID,
    DEVELOPMENT,
    E_SERVICES_1177,
    SITHS,
    Session,
    TokenService,
    citizen_principal,
    staff_principal,
)
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound

DEMO_CITIZENS = Path(__file__).resolve().parent / "demo" / "citizens.json"
DEMO_DIRECTORY = Path(__file__).resolve().parent / "demo" / "directory.jsonl"
ASSURANCE = "development"


def load_citizens(path: str | Path = "") -> dict[str, str]:
    entries = json.loads(Path(path or DEMO_CITIZENS).read_text(encoding="utf-8"))
    return {pnr.parse(e["personnummer"]).normalized: e["name"] for e in entries}


class DevelopmentLogin:
    def __init__(self, enabled: bool, directory: Directory, tokens: TokenService, citizens: dict[str, str], *,
                 test_environment: bool = False) -> None:
        self._enabled = enabled
        self._test_environment = test_environment
        self._directory = directory
        self._tokens = tokens
        self._citizens = citizens

    async def login(self, person_id: str, method: str) -> Session:
        if not self._enabled:
            raise FailedPrecondition(
                "the development login is off (it is for `make run` only: SVPL_DEVELOPMENT_LOGIN=true)",
                reason="DEVELOPMENT_LOGIN_OFF",
            )
        person_id = (person_id or "").strip()
        if not person_id:
            raise InvalidArgument("person_id", "is required: a demo person's HSA-id or personnummer")
        if person_id.upper().startswith(("SE", *hsa.TEST_PREFIXES)):
            if method not in ("", SITHS, DEVELOPMENT):
                raise InvalidArgument("method", "staff (HSA-id) log in with SITHS")
            hsa_id = hsa.parse(person_id, "person_id", test_environment=self._test_environment).normalized
            person = await self._directory.lookup(hsa_id)
            if person is None:
                raise NotFound(f"no demo person {hsa_id} in the directory")
            return self._tokens.issue_session(staff_principal(person, SITHS, ASSURANCE))
        if method not in ("", BANKID, E_SERVICES_1177, DEVELOPMENT):
            raise InvalidArgument("method", "citizens (personnummer) log in with BankID or 1177")
        number = pnr.parse(person_id, "person_id").normalized
        name = self._citizens.get(number)
        if name is None:
            raise NotFound(f"no demo citizen {pnr.mask(number)}")
        chosen = method if method in (BANKID, E_SERVICES_1177) else BANKID
        return self._tokens.issue_session(citizen_principal(number, name, chosen, ASSURANCE))
