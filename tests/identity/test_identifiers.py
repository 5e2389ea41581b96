"""Personnummer / samordningsnummer and HSA-id: a hand-checked table, properties (hypothesis), and the RPCs."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from personnummer.personnummer import Personnummer as Reference
from svpl.identity.v1 import identity_pb2 as pb

from devstack.harness import as_token
from services.identity import hsa_id, personnummer
from services.identity.personnummer import luhn_check_digit, parse
from services.runtime.errors import InvalidArgument
from tests.identity.test_tokens_rpc import field_violation

TODAY = dt.date(2026, 11, 25)

# Check digits worked out by hand (weights 2,1,2,1,2,1,2,1,2 over YYMMDDNNN, digits of products summed).
VALID = [
    # input, normalised, birth date, kind
    ("19121212-1212", "191212121212", "1912-12-12", personnummer.PERSONNUMMER),
    ("191212121212", "191212121212", "1912-12-12", personnummer.PERSONNUMMER),
    ("121212+1212", "191212121212", "1912-12-12", personnummer.PERSONNUMMER),  # 100 or older: '+'
    ("121212-1212", "201212121212", "2012-12-12", personnummer.PERSONNUMMER),  # '-': under 100
    ("1212121212", "201212121212", "2012-12-12", personnummer.PERSONNUMMER),
    ("  811228-9874 ", "198112289874", "1981-12-28", personnummer.PERSONNUMMER),  # spaces around
    ("701063-2391", "197010632391", "1970-10-03", personnummer.SAMORDNINGSNUMMER),  # day 63 = the 3rd
    ("20000229-1235", "200002291235", "2000-02-29", personnummer.PERSONNUMMER),  # leap day of 2000
    ("991231-1231", "199912311231", "1999-12-31", personnummer.PERSONNUMMER),
]

INVALID = [
    ("19121212-1213", "check digit should be 2"),
    ("811228-9870", "check digit should be 4"),
    ("19121312-1211", "month 13 does not exist"),
    ("19120012-1212", "month 00 does not exist"),
    ("19121232-1212", "day 32 does not exist (a samordningsnummer adds 60 to the day)"),
    ("19121292-1212", "day 92 does not exist (a samordningsnummer adds 60 to the day)"),
    ("19000229-1235", "1900-02-29 is not a date"),  # 1900 was no leap year
    ("20991231-1231", "birth date 2099-12-31 is in the future"),
    ("20261126-1231", "check digit should be"),  # wrong digit reported before the date
    ("19121212-0008", "serial number 000 is never issued"),
    ("19121212+1212", "'+' (100 years or older) only goes with a two-digit year: YYMMDD+NNNC"),
    ("", "is required"),
    ("1912121-21212", "expected YYMMDD-NNNC"),
    ("19121212 1212", "expected YYMMDD-NNNC"),
    ("١٢١٢١٢-١٢١٢", "expected YYMMDD-NNNC"),  # Arabic-Indic digits are not digits here
]


@pytest.mark.parametrize("text, normalized, birth, kind", VALID)
def test_hand_checked_valid_numbers(text, normalized, birth, kind):
    p = parse(text, today=TODAY)
    assert (p.normalized, p.birth_date.isoformat(), p.kind) == (normalized, birth, kind)
    assert p.masked == normalized[:8] + "-****"


@pytest.mark.parametrize("text, message", INVALID)
def test_hand_checked_invalid_numbers(text, message):
    with pytest.raises(InvalidArgument) as err:
        parse(text, field="personnummer", today=TODAY)
    assert err.value.field == "personnummer"
    assert err.value.description.startswith(message)


def test_future_date_with_two_digit_year_is_read_as_last_century():
    assert parse(f"261231-123{luhn_check_digit('261231123')}", today=TODAY).birth_date == dt.date(1926, 12, 31)


def test_leap_day_over_a_hundred_years_ago_that_never_was():
    # 1900-02-29 does not exist, and no other year ending 00 that is 100+ years ago is a leap year until 1600.
    with pytest.raises(InvalidArgument, match="02-29 is not a date"):
        parse(f"000229+123{luhn_check_digit('000229123')}", today=TODAY)


# ---------------------------------------------------------------- properties

days = st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY)
serials = st.integers(min_value=1, max_value=999).map(lambda n: f"{n:03d}")


def make(day: dt.date, serial: str, coordination: bool = False) -> str:
    dd = day.day + (60 if coordination else 0)
    nine = f"{day:%y%m}{dd:02d}{serial}"
    return f"{day.year:04d}{day:%m}{dd:02d}{serial}{luhn_check_digit(nine)}"


@settings(deadline=None)  # a shared, busy machine: no per-example deadline
@given(days, serials, st.booleans())
def test_every_written_form_normalises_to_the_same_twelve_digits(day, serial, coordination):
    number = make(day, serial, coordination)
    sep = "+" if day <= TODAY.replace(year=TODAY.year - 100) else "-"
    forms = [number, f"{number[:8]}-{number[8:]}", f" {number} ", f"{number[2:8]}{sep}{number[8:]}"]
    for form in forms:
        p = parse(form, today=TODAY)
        assert p.normalized == number, form
        assert p.birth_date == day
        assert p.kind == (personnummer.SAMORDNINGSNUMMER if coordination else personnummer.PERSONNUMMER)


@settings(deadline=None)  # a shared, busy machine: no per-example deadline
@given(days, serials, st.integers(min_value=1, max_value=9))
def test_any_other_check_digit_is_refused_and_the_right_one_named(day, serial, shift):
    number = make(day, serial)
    wrong = number[:-1] + str((int(number[-1]) + shift) % 10)
    with pytest.raises(InvalidArgument) as err:
        parse(wrong, today=TODAY)
    assert err.value.description == f"check digit should be {number[-1]}"


@settings(deadline=None)  # a shared, busy machine: no per-example deadline
@given(days, serials)
def test_agrees_with_the_reference_package_on_valid_numbers(day, serial):
    number = make(day, serial)
    assert Reference(number).format(long_format=True) == number


@settings(deadline=None)  # a shared, busy machine: no per-example deadline
@given(st.text(alphabet="0123456789-+ ", max_size=16))
def test_any_input_is_either_refused_clearly_or_normalised_idempotently(text):
    try:
        p = parse(text, today=TODAY)
    except InvalidArgument as exc:
        assert exc.field == "personnummer" and exc.description
        return
    assert len(p.normalized) == 12 and p.normalized.isdigit()
    assert p.birth_date <= TODAY
    assert parse(p.normalized, today=TODAY) == p


@settings(deadline=None)  # a shared, busy machine: no per-example deadline
@given(st.dates(min_value=TODAY + dt.timedelta(days=1), max_value=dt.date(2099, 12, 31)), serials)
def test_future_birth_dates_are_refused(day, serial):
    with pytest.raises(InvalidArgument, match="is in the future"):
        parse(make(day, serial), today=TODAY)


# ---------------------------------------------------------------- HSA-id

@pytest.mark.parametrize("text, normalized, org", [
    ("SE2321000057-4665", "SE2321000057-4665", "2321000057"),
    (" SE2120000829-abcXYZ09 ", "SE2120000829-abcXYZ09", "2120000829"),
    ("se2321000057-1", "SE2321000057-1", "2321000057"),
    ("SE2321000057-" + "A" * 18, "SE2321000057-" + "A" * 18, "2321000057"),  # exactly 31
    ("SE165565594230-1000", "SE165565594230-1000", "5565594230"),  # Inera's own: 12-digit form
    ("SE165565594230-WEBCERT00001", "SE165565594230-WEBCERT00001", "5565594230"),
])
def test_valid_hsa_ids(text, normalized, org):
    h = hsa_id.parse(text)
    assert (h.normalized, h.organization_number, h.test) == (normalized, org, False)


@pytest.mark.parametrize("text, org", [
    ("TSTNMT2321000156-1019", "2321000156"),  # a real test SITHS card's HSA-id
    ("T-SERVICES-SE165565594230-11JQ", "5565594230"),  # a real test function certificate's
])
def test_test_environment_hsa_ids_only_in_a_test_environment(text, org):
    h = hsa_id.parse(text, test_environment=True)
    assert (h.normalized, h.organization_number, h.test) == (text, org, True)
    with pytest.raises(InvalidArgument) as err:
        hsa_id.parse(text)
    assert err.value.description == "a test-environment HSA-id (TSTNMT…, T-SERVICES-SE…) is not accepted here"
    assert not hsa_id.is_valid(text) and hsa_id.is_valid(text, test_environment=True)


@pytest.mark.parametrize("text, message", [
    ("SE2321000057-" + "A" * 19, "an HSA-id has at most 31 characters (this one has 32)"),
    ("DK2321000057-1", "an HSA-id starts with SE"),
    ("SE232100005-1", "SE must be followed by the organisation number: 10 digits, or 12 beginning with 16"),
    ("SE232321000057-1", "SE must be followed by the organisation number: 10 digits, or 12 beginning with 16"),
    ("SE2321000057_1", "a '-' must follow the organisation number"),
    ("TSTNMT2321000156_1", "a test-environment HSA-id (TSTNMT…, T-SERVICES-SE…) is not accepted here"),
    ("SE2321000057-", "after the '-', one or more of A-Z a-z 0-9"),
    ("SE2321000057-Åsa", "after the '-', only A-Z a-z 0-9 are allowed (found 'Å')"),
    ("SE2321000057-a@b", "after the '-', only A-Z a-z 0-9 are allowed (found '@')"),
    ("", "is required"),
])
def test_invalid_hsa_ids(text, message):
    with pytest.raises(InvalidArgument) as err:
        hsa_id.parse(text)
    assert (err.value.field, err.value.description) == ("hsa_id", message)


@settings(deadline=None)  # a shared, busy machine: no per-example deadline
@given(st.from_regex(r"\ASE(16)?[0-9]{10}-[A-Za-z0-9]{1,16}\Z"))
def test_every_well_formed_hsa_id_is_accepted(text):
    assert hsa_id.parse(text).normalized == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_hsa_id_is_accepted_only_when_it_matches_the_rule(text):
    import re
    ok = re.fullmatch(r"SE(16)?[0-9]{10}-[A-Za-z0-9]+", text.strip(), flags=re.ASCII) and len(text.strip()) <= 31
    assert hsa_id.is_valid(text) == bool(ok)


# ---------------------------------------------------------------- over gRPC

@pytest.fixture
async def identity(system_factory):
    return (await system_factory(["identity"])).stub("identity")


async def test_validate_personnummer_rpc(identity, person_token, service_token):
    r = await identity.ValidatePersonnummer(pb.ValidatePersonnummerRequest(personnummer="701063-2391"),
                                            metadata=as_token(person_token("coordinator")))
    assert (r.normalized, r.birth_date, r.kind, r.masked) == (
        "197010632391", "1970-10-03", pb.PERSONNUMMER_KIND_SAMORDNINGSNUMMER, "19701063-****")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity.ValidatePersonnummer(pb.ValidatePersonnummerRequest(personnummer="19121212-1213"),
                                            metadata=as_token(service_token("roster")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violation(err.value) == ("personnummer", "check digit should be 2")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity.ValidatePersonnummer(pb.ValidatePersonnummerRequest(personnummer="191212121212"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_validate_hsa_id_rpc(identity, service_token):
    r = await identity.ValidateHsaId(pb.ValidateHsaIdRequest(hsa_id=" SE2321000057-4665"),
                                     metadata=as_token(service_token("booking")))
    assert (r.normalized, r.organization_number) == ("SE2321000057-4665", "2321000057")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await identity.ValidateHsaId(pb.ValidateHsaIdRequest(hsa_id="SE2321000057-Å"),
                                     metadata=as_token(service_token("booking")))
    assert field_violation(err.value) == ("hsa_id", "after the '-', only A-Z a-z 0-9 are allowed (found 'Å')")
