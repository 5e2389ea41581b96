"""Generate the demo HSA export and demo citizens (deterministic; `python -m services.identity.demo.generate`).

The export has HSA's shape (services/identity/directory.py): one LDAP entry per line (`dn` and
attributes by their HSA names): localities, organisations with their organisation number
(`orgNo`, which makes them region or municipality), units, persons (`HSAPersonExtension`, with
svpl's functional roles as hsaSystemRole `SVPL;<role>`) and their commissions (`hsaCommission`).

The people of tests/conftest.py (PEOPLE) are included with the same HSA-ids, names and
roles, so a development login and the tests speak of the same people. Everyone else is
generated. Citizens use personnummer in Skatteverket's test-number style (serials 98x).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from services.identity.personnummer import luhn_check_digit

HERE = Path(__file__).resolve().parent
DIRECTORY_FILE = HERE / "directory.jsonl"
CITIZENS_FILE = HERE / "citizens.json"

ORGANIZATIONS = [
    # (organisation number, name, kind, units)
    ("2321000057", "Region Jönköpings län", "region",
     ["Vårdcentralen Centrum", "Psykiatriska kliniken", "Medicinkliniken", "Barn- och ungdomskliniken",
      "Svpl support"]),
    ("2120000829", "Jönköpings kommun", "municipality",
     ["Hemtjänst Öster", "Socialtjänsten", "Elevhälsan", "LSS-boende Väster"]),
    ("2120000597", "Värnamo kommun", "municipality", ["Hemsjukvården", "Socialtjänsten"]),
]
GIVEN = ["Anna", "Erik", "Maria", "Lars", "Karin", "Johan", "Sara", "Per", "Eva", "Anders", "Lena", "Mikael",
         "Elin", "Ahmed", "Fatima", "Jonas", "Ingrid", "Oskar", "Sofia", "Mohammed", "Emma", "Björn", "Åsa", "Linnea"]
SURNAMES = ["Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
            "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Hassan", "Lindberg", "Åberg", "Öberg", "Holm",
            "Berg", "Lund", "Ström", "Ali", "Wikström", "Sandberg", "Forsberg"]
TITLES = {"region": ["Sjuksköterska", "Läkare", "Kurator", "Psykolog", "Arbetsterapeut", "Fysioterapeut"],
          "municipality": ["Biståndshandläggare", "Socialsekreterare", "Undersköterska", "Skolsköterska",
                           "Enhetschef"]}

# Named demo people (same as tests/conftest.py PEOPLE), then the access-log officer.
NAMED = [
    ("SE2321000057-1001", "Vera", "Samordnare", "Samordnare SIP", 0, "Vårdcentralen Centrum", ["coordinator"]),
    ("SE2321000057-1002", "Olle", "Annan", "Samordnare SIP", 0, "Psykiatriska kliniken", ["coordinator"]),
    ("SE2321000057-2001", "Rita", "Region", "Sjuksköterska", 0, "Medicinkliniken", []),
    ("SE2120000829-3001", "Mona", "Kommun", "Biståndshandläggare", 1, "Hemtjänst Öster", []),
    ("SE2120000829-3002", "Kent", "Kommunsamordnare", "Samordnare SIP", 1, "Socialtjänsten", ["coordinator"]),
    ("SE2321000057-4001", "Sam", "Support", "Supporttekniker", 0, "Svpl support", ["support_desk"]),
    # The municipality's own IT support: works only tickets from Jönköpings kommun's staff.
    ("SE2120000829-4002", "Kim", "Kommunit", "IT-tekniker", 1, "Kommunens IT-support", ["support_desk"]),
    # Another municipality's own IT (never sees Jönköpings kommun's tickets), and a second region desk member.
    ("SE2120000597-4003", "Berit", "Värnamoit", "IT-tekniker", 2, "Socialtjänsten", ["support_desk"]),
    ("SE2321000057-4002", "Siv", "Support", "Supporttekniker", 0, "Svpl support", ["support_desk"]),
    ("SE2321000057-5001", "Lotta", "Logg", "Informationssäkerhetssamordnare", 0, "Svpl support", ["access_log"]),
]

CITIZENS = [("191212121212", "Tolvan Tolvansson"), ("198112289874", "Nils Närstående")]


PERSON_CLASSES = ["top", "person", "organizationalPerson", "inetOrgPerson", "HSAPersonExtension", "securePerson"]
COUNTY = "Jönköpings län"
PURPOSE = "Vård och behandling"
RIGHT = "Läsa;Alla;SJF"
SYSTEM_ID = "SVPL"  # the hsaSystemRole system id of the demo (HsaMapping.system_id's default)


def organization_dn(org_index: int) -> str:
    return f"o={ORGANIZATIONS[org_index][1]},l={COUNTY},c=SE"


def structure() -> list[dict]:
    """The locality, the organisations (with orgNo) and their units."""
    entries: list[dict] = [{"dn": f"l={COUNTY},c=SE", "objectClass": ["top", "locality"], "l": COUNTY}]
    for i, (number, name, _, units) in enumerate(ORGANIZATIONS):
        # HSA's own organisation object class is not needed by svpl; extensibleObject carries orgNo here.
        entries.append({"dn": organization_dn(i), "objectClass": ["top", "organization", "extensibleObject"],
                        "o": name, "orgNo": number, "hsaIdentity": f"SE{number}-ORG"})
        named_units = [n[5] for n in NAMED if n[4] == i and n[5] not in units]
        entries += [{"dn": f"ou={u},{organization_dn(i)}", "objectClass": ["top", "organizationalUnit"], "ou": u}
                    for u in [*units, *dict.fromkeys(named_units)]]
    return entries


def entry(hsa_id, given, surname, title, org_index, unit, roles, protected=False):
    _, org, kind, _ = ORGANIZATIONS[org_index]
    person = {"dn": f"hsaIdentity={hsa_id},ou={unit},{organization_dn(org_index)}", "objectClass": PERSON_CLASSES,
              "hsaIdentity": hsa_id, "givenName": given, "sn": surname, "cn": f"{given} {surname}", "title": title,
              "hsaTitle": [title] if title in ("Sjuksköterska", "Läkare", "Psykolog", "Arbetsterapeut",
                                                 "Fysioterapeut") else [],
              "mail": f"{hsa_id.lower()}@example.invalid", "o": org, "ou": unit,
              "hsaSystemRole": [f"{SYSTEM_ID};{r}" for r in roles]}
    if protected:
        person["hsaProtectedPerson"] = "TRUE"
    commission = {"dn": f"hsaIdentity={hsa_id}-MIU,ou={unit},{organization_dn(org_index)}",
                  "objectClass": ["top", "hsaCommission"], "cn": f"{PURPOSE}, {unit}",
                  "hsaIdentity": f"{hsa_id}-MIU", "hsaCommissionMember": [hsa_id], "hsaCommissionPurpose": PURPOSE,
                  "hsaCommissionRight": [RIGHT]}
    return [person, commission]


def people(entries: list[dict]) -> list[dict]:
    """The person entries of an export."""
    return [e for e in entries if "HSAPersonExtension" in e.get("objectClass", ())]


def directory(count: int = 240, seed: int = 2026) -> list[dict]:
    rnd = random.Random(seed)
    entries = structure()
    for n in NAMED:
        entries += entry(*n)
    for i in range(count - len(NAMED)):
        org_index = rnd.choices(range(len(ORGANIZATIONS)), weights=[6, 3, 1])[0]
        number, _, kind, units = ORGANIZATIONS[org_index]
        roles = ["coordinator"] if rnd.random() < 0.12 else []
        if kind == "region" and rnd.random() < 0.03:
            roles.append("support_desk")
        # A few people have protected personal data (skyddade personuppgifter).
        entries += entry(f"SE{number}-{7000 + i}", rnd.choice(GIVEN), rnd.choice(SURNAMES), rnd.choice(TITLES[kind]),
                         org_index, rnd.choice(units), roles, protected=rnd.random() < 0.02)
    return entries


def citizens(count: int = 20, seed: int = 2026) -> list[dict]:
    rnd = random.Random(seed)
    result = [{"personnummer": p, "name": n} for p, n in CITIZENS]
    while len(result) < count:
        year, month, day = rnd.randint(1930, 2015), rnd.randint(1, 12), rnd.randint(1, 28)
        serial = f"98{rnd.randint(0, 9)}"
        nine = f"{year % 100:02d}{month:02d}{day:02d}{serial}"
        result.append({"personnummer": f"{year}{month:02d}{day:02d}{serial}{luhn_check_digit(nine)}",
                       "name": f"{rnd.choice(GIVEN)} {rnd.choice(SURNAMES)}"})
    return result


def main() -> None:
    DIRECTORY_FILE.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in directory()), "utf-8")
    CITIZENS_FILE.write_text(json.dumps(citizens(), ensure_ascii=False, indent=1) + "\n", "utf-8")


if __name__ == "__main__":
    main()
