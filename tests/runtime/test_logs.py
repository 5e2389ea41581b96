import io
import json
import logging

from hypothesis import given
from hypothesis import strategies as st

from services.runtime.logs import mask_personnummer, setup_logging


def capture(service="t"):
    stream = io.StringIO()
    setup_logging(service, "DEBUG", stream)
    return stream


def lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_personnummer_in_message_args_is_masked():
    stream = capture()
    logging.getLogger("x").info("patient %s and %s booked", "19121212-1212", "121212-1212")
    (entry,) = lines(stream)
    assert "1212-1212" not in entry["msg"] and "12121212" not in json.dumps(entry)
    assert entry["msg"] == "patient 19121212-**** and 121212-**** booked"


def test_twelve_digit_and_plus_forms_are_masked():
    stream = capture()
    logging.getLogger("x").warning("ids 191212121212 and 121212+1212")
    (entry,) = lines(stream)
    assert entry["msg"] == "ids 19121212-**** and 121212+****"


def test_personnummer_in_extra_fields_and_exceptions_is_masked():
    stream = capture()
    try:
        raise ValueError("bad 19121212-1212")
    except ValueError:
        logging.getLogger("x").exception("failed", extra={"svpl_patient": "191212121212"})
    (entry,) = lines(stream)
    text = json.dumps(entry)
    assert "1212121212" not in text and "-1212" not in text
    assert entry["patient"] == "19121212-****"


def test_hsa_ids_and_other_numbers_stay_readable():
    assert mask_personnummer("SE2321000057-4665 took 1234 ms") == "SE2321000057-4665 took 1234 ms"
    booking = "GET /api/v1/bookings/4f297a6370f0504892076e6149934680 200"  # digits that pass as a samordningsnummer
    assert mask_personnummer(booking) == booking


def test_a_personnummer_next_to_punctuation_is_masked():
    assert (mask_personnummer("GET /patients/191212121212?pnr=121212-1212&x=(19121212-1212)") ==
            "GET /patients/19121212-****?pnr=121212-****&x=(19121212-****)")
    assert mask_personnummer("id_191212121212") == "id_19121212-****"


def test_request_id_is_logged():
    from services.runtime.logs import request_id_var

    stream = capture()
    token = request_id_var.set("abc123")
    try:
        logging.getLogger("x").info("hello")
    finally:
        request_id_var.reset(token)
    assert lines(stream)[0]["request_id"] == "abc123"


@given(
    year=st.integers(1900, 2025), month=st.integers(1, 12), day=st.integers(1, 28),
    serial=st.integers(0, 9999), coordination=st.booleans(), sep=st.sampled_from(["", "-", "+"]),
    century=st.booleans(), prefix=st.sampled_from(["", "pnr ", "x:"]),
)
def test_any_personnummer_shape_is_masked(year, month, day, serial, coordination, sep, century, prefix):
    d = day + 60 if coordination else day
    date = f"{year:04d}" if century else f"{year % 100:02d}"
    value = f"{date}{month:02d}{d:02d}{sep}{serial:04d}"
    masked = mask_personnummer(prefix + value + " end")
    assert f"{serial:04d} end" not in masked
    assert masked.endswith("**** end")
