"""make bench-identity: identity's validations and LDAP lookups, each next to the raw
library call it builds on, measured in the same run on the same machine. Not a test.

- personnummer: services.identity.personnummer.parse (validate, normalise, birth date,
  kind, precise errors) vs the `personnummer` package's Personnummer(...) (validate).
- HSA-id: services.identity.hsa_id.parse vs one compiled regular expression.
- LDAP: LdapDirectory.lookup (asyncio → worker thread → ldap3 → DirectoryPerson) vs a
  raw ldap3 SYNC search with the same filter, against the same slapd (started here from
  the test fixture's generated config, a few hundred entries).
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ldap3
from personnummer.personnummer import Personnummer

from devstack.slapd import BASE_DN, READER_DN, READER_PASSWORD, Slapd
from services.identity import hsa_id, personnummer
from services.identity.demo.generate import directory, people
from services.identity.directory import HsaMapping, LdapDirectory

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
LOOKUPS = max(200, N // 10)
ROUNDS = 5


def best_rate(fn, items) -> float:
    """Items per second, the median of ROUNDS runs."""
    rates = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        fn(items)
        rates.append(len(items) / (time.perf_counter() - started))
    return statistics.median(rates)


def numbers(n: int) -> list[str]:
    rnd = random.Random(1)
    out = []
    for _ in range(n):
        y, m, d, s = rnd.randint(1930, 2020), rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(1, 999)
        nine = f"{y % 100:02d}{m:02d}{d:02d}{s:03d}"
        out.append(f"{y}{m:02d}{d:02d}-{s:03d}{personnummer.luhn_check_digit(nine)}")
    return out


def row(name: str, ours: float, base: float, unit: str) -> None:
    print(f"  {name:34} {ours:12,.0f} {unit:12} baseline {base:12,.0f}   ratio {ours / base:5.2f}")


def bench_validations() -> None:
    pnrs = numbers(N)
    hsas = [f"SE2321000057-{i}" for i in range(N)]
    hsa_re = re.compile(r"SE[0-9]{10}-[A-Za-z0-9]+")

    def ours_pnr(items):
        for s in items:
            personnummer.parse(s)

    def raw_pnr(items):
        for s in items:
            Personnummer(s)

    def ours_hsa(items):
        for s in items:
            hsa_id.parse(s)

    def raw_hsa(items):
        for s in items:
            if len(s) > 31 or not hsa_re.fullmatch(s):
                raise ValueError(s)

    print(f"validations ({N} valid values, median of {ROUNDS} rounds):")
    row("personnummer parse vs package", best_rate(ours_pnr, pnrs), best_rate(raw_pnr, pnrs), "valid./s")
    row("HSA-id parse vs one regex", best_rate(ours_hsa, hsas), best_rate(raw_hsa, hsas), "valid./s")


async def bench_ldap() -> None:
    entries = directory(count=400, seed=7)
    ids = [e["hsaIdentity"] for e in people(entries)]
    rnd = random.Random(2)
    wanted = [rnd.choice(ids) for _ in range(LOOKUPS)]
    server = Slapd(Path(tempfile.mkdtemp(prefix="bench-slapd-")), entries).start()
    try:
        # The same client strategy LdapDirectory uses (thread-safe synchronous), called directly.
        raw = ldap3.Connection(ldap3.Server(server.url, get_info=ldap3.NONE), READER_DN, READER_PASSWORD,
                               client_strategy=ldap3.SAFE_SYNC, auto_bind=True, read_only=True)
        attrs = HsaMapping().person_attributes()

        def raw_lookups(items):
            for hsa in items:
                _, _, response, _ = raw.search(BASE_DN, f"(&(objectClass=HSAPersonExtension)(hsaIdentity={hsa}))",
                                               attributes=attrs)
                assert response

        ours = LdapDirectory(server.url, BASE_DN, READER_DN, READER_PASSWORD)
        await ours.start()

        async def sequential() -> float:
            started = time.perf_counter()
            for hsa in wanted:
                assert await ours.lookup(hsa)
            return len(wanted) / (time.perf_counter() - started)

        async def concurrent(width: int = 8) -> float:
            started = time.perf_counter()
            for i in range(0, len(wanted), width):
                await asyncio.gather(*(ours.lookup(h) for h in wanted[i:i + width]))
            return len(wanted) / (time.perf_counter() - started)

        base = best_rate(raw_lookups, wanted)
        seq = statistics.median([await sequential() for _ in range(ROUNDS)])
        conc = statistics.median([await concurrent() for _ in range(ROUNDS)])
        print(f"LDAP lookups by HSA-id ({LOOKUPS} lookups, {len(entries)} entries, slapd on loopback):")
        row("LdapDirectory.lookup sequential", seq, base, "lookups/s")
        row("LdapDirectory.lookup 8 at a time", conc, base, "lookups/s")
        await ours.close()
        raw.unbind()
    finally:
        server.stop()


def main() -> None:
    bench_validations()
    asyncio.run(bench_ldap())


if __name__ == "__main__":
    main()
