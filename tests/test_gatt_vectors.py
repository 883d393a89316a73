"""Hand-checked vectors from the Bluetooth SIG and IEEE 11073-20601 formats, and the parser policy
around them (docs/gatt.md)."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pytest

from monitor.devices.gatt import (
    BatteryLevel,
    BloodPressureStatus,
    DateTimeFields,
    GattParseError,
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    PulseRateRange,
    SpecialValue,
    TemperatureType,
    decode_float,
    decode_sfloat,
    float_special,
    parse_battery_level,
    parse_blood_pressure,
    parse_heart_rate,
    parse_intermediate_cuff_pressure,
    parse_intermediate_temperature,
    parse_plx_continuous,
    parse_plx_spot_check,
    parse_temperature,
    sfloat_special,
)

Parser = Callable[[bytes], Any]

NAN = math.nan
INF = math.inf

HEART_RATE = "Heart Rate Measurement (0x2A37)"
BLOOD_PRESSURE = "Blood Pressure Measurement (0x2A35)"
CUFF_PRESSURE = "Intermediate Cuff Pressure (0x2A36)"
TEMPERATURE = "Temperature Measurement (0x2A1C)"
INTERMEDIATE_TEMPERATURE = "Intermediate Temperature (0x2A1E)"
PLX_SPOT_CHECK = "PLX Spot-Check Measurement (0x2A5E)"
PLX_CONTINUOUS = "PLX Continuous Measurement (0x2A5F)"
BATTERY = "Battery Level (0x2A19)"


def frame(hex_bytes: str) -> bytes:
    return bytes.fromhex(hex_bytes)


def assert_same_float(actual: float | None, expected: float | None) -> None:
    """Equality that treats nan as equal to nan; vectors demand exact doubles otherwise."""
    if isinstance(expected, float) and math.isnan(expected):
        assert actual is not None
        assert math.isnan(actual)
    else:
        assert actual == expected


def assert_fields(record: object, expected: Mapping[str, object]) -> None:
    for name, want in expected.items():
        got = getattr(record, name)
        if isinstance(want, float):
            assert isinstance(got, float), name
            assert_same_float(got, want)
        else:
            assert got == want, name


# --- IEEE 11073 numbers --------------------------------------------------------------------------

SFLOAT_VECTORS = [
    pytest.param("78 00", 120.0, None, id="S1"),
    pytest.param("A0 F0", 16.0, None, id="S2"),
    pytest.param("F1 FF", -1.5, None, id="S3"),
    pytest.param("05 20", 500.0, None, id="S4"),
    pytest.param("FD 07", 2045.0, None, id="S5"),
    pytest.param("03 08", -2045.0, None, id="S6"),
    pytest.param("FF 07", NAN, SpecialValue.NAN, id="S7"),
    pytest.param("00 08", NAN, SpecialValue.NRES, id="S8"),
    pytest.param("FE 07", INF, SpecialValue.POSITIVE_INFINITY, id="S9"),
    pytest.param("02 08", -INF, SpecialValue.NEGATIVE_INFINITY, id="S10"),
    pytest.param("01 08", NAN, SpecialValue.RESERVED, id="S11"),
    # IEEE 11073-20601: special values need exponent 0, so 0x17FF is 2047 x 10, not NaN.
    pytest.param("FF 17", 20470.0, None, id="S12"),
]

FLOAT_VECTORS = [
    pytest.param("74 01 00 FF", 37.2, None, id="F1"),
    pytest.param("C9 FF FF FF", -5.5, None, id="F2"),
    pytest.param("FF FF 7F 00", NAN, SpecialValue.NAN, id="F3"),
    pytest.param("00 00 80 00", NAN, SpecialValue.NRES, id="F4"),
    pytest.param("FE FF 7F 00", INF, SpecialValue.POSITIVE_INFINITY, id="F5"),
    pytest.param("02 00 80 00", -INF, SpecialValue.NEGATIVE_INFINITY, id="F6"),
    pytest.param("01 00 80 00", NAN, SpecialValue.RESERVED, id="F7"),
    # By IEEE 11073-20601, 0x07FFFFFF (an NXP SDK header's "NaN") is really m=-1, exp=+7.
    pytest.param("FF FF FF 07", -10_000_000.0, None, id="F8"),
]


@pytest.mark.parametrize(("hex_bytes", "expected", "special"), SFLOAT_VECTORS)
def test_sfloat_vectors(hex_bytes: str, expected: float, special: SpecialValue | None) -> None:
    raw = int.from_bytes(frame(hex_bytes), "little")
    assert_same_float(decode_sfloat(raw), expected)
    assert sfloat_special(raw) is special


@pytest.mark.parametrize(("hex_bytes", "expected", "special"), FLOAT_VECTORS)
def test_float_vectors(hex_bytes: str, expected: float, special: SpecialValue | None) -> None:
    raw = int.from_bytes(frame(hex_bytes), "little")
    assert_same_float(decode_float(raw), expected)
    assert float_special(raw) is special


def test_sfloat_is_the_nearest_double_for_every_word() -> None:
    for raw in range(1 << 16):
        if sfloat_special(raw) is not None:
            continue
        mantissa = (raw & 0x0FFF) - (0x1000 if raw & 0x0800 else 0)
        exponent = (raw >> 12) - (0x10 if raw & 0x8000 else 0)
        assert decode_sfloat(raw) == float(Decimal(mantissa).scaleb(exponent)), hex(raw)


def test_float_is_the_nearest_double() -> None:
    rng = random.Random(0x2A1C)
    for _ in range(20_000):
        raw = rng.getrandbits(32)
        if float_special(raw) is not None:
            continue
        mantissa = (raw & 0x00FFFFFF) - (0x01000000 if raw & 0x00800000 else 0)
        exponent = (raw >> 24) - (0x100 if raw & 0x80000000 else 0)
        assert decode_float(raw) == float(Decimal(mantissa).scaleb(exponent)), hex(raw)


@pytest.mark.parametrize(
    ("decode", "raw"),
    [
        pytest.param(decode_sfloat, -1, id="sfloat-negative"),
        pytest.param(decode_sfloat, 0x1_0000, id="sfloat-17-bit"),
        pytest.param(sfloat_special, 0x1_0000, id="sfloat-special-17-bit"),
        pytest.param(decode_float, -1, id="float-negative"),
        pytest.param(decode_float, 0x1_0000_0000, id="float-33-bit"),
        pytest.param(float_special, -1, id="float-special-negative"),
    ],
)
def test_raw_word_out_of_range_is_a_value_error(decode: Callable[[int], object], raw: int) -> None:
    with pytest.raises(ValueError, match="bit word"):
        decode(raw)


# --- characteristic vectors ----------------------------------------------------------------------

DECODE_VECTORS = [
    pytest.param(
        parse_heart_rate,
        "00 48",
        {"bpm": 72, "sensor_contact": None, "energy_expended": None, "rr_intervals": ()},
        id="H1",
    ),
    pytest.param(parse_heart_rate, "01 2C 01", {"bpm": 300, "sensor_contact": None}, id="H2"),
    pytest.param(parse_heart_rate, "06 48", {"bpm": 72, "sensor_contact": True}, id="H3"),
    pytest.param(parse_heart_rate, "04 48", {"bpm": 72, "sensor_contact": False}, id="H4"),
    pytest.param(
        parse_heart_rate,
        "08 48 10 27",
        {"bpm": 72, "sensor_contact": None, "energy_expended": 10_000},
        id="H6",
    ),
    pytest.param(
        parse_heart_rate,
        "10 48 00 04 00 02",
        {"bpm": 72, "sensor_contact": None, "rr_intervals": (1.0, 0.5)},
        id="H7",
    ),
    pytest.param(
        parse_blood_pressure,
        "00 78 00 50 00 5D 00",
        {
            "unit": "mmHg",
            "systolic": 120.0,
            "diastolic": 80.0,
            "mean_arterial": 93.0,
            "timestamp": None,
            "timestamp_fields": None,
            "pulse_rate": None,
            "user_id": None,
            "status": None,
            "special_values": {},
        },
        id="B1",
    ),
    pytest.param(
        parse_blood_pressure,
        "01 A0 F0 6B F0 7D F0",
        {"unit": "kPa", "systolic": 16.0, "diastolic": 10.7, "mean_arterial": 12.5},
        id="B2",
    ),
    pytest.param(
        parse_blood_pressure,
        "10 78 00 50 00 5D 00 32 00",
        {
            "unit": "mmHg",
            "systolic": 120.0,
            "diastolic": 80.0,
            "mean_arterial": 93.0,
            "status": BloodPressureStatus(
                body_movement=False,
                cuff_too_loose=True,
                irregular_pulse=False,
                pulse_rate_range=PulseRateRange.BELOW_LOWER_LIMIT,
                improper_position=True,
                reserved_bits=0,
                raw=0x0032,
            ),
        },
        id="B4",
    ),
    pytest.param(
        parse_blood_pressure,
        "08 78 00 50 00 5D 00 FF",
        {
            "unit": "mmHg",
            "systolic": 120.0,
            "diastolic": 80.0,
            "mean_arterial": 93.0,
            "user_id": 255,
        },
        id="B7",
    ),
    pytest.param(
        parse_blood_pressure,
        "02 78 00 50 00 5D 00 00 00 00 00 0C 00 00",
        {
            "unit": "mmHg",
            "systolic": 120.0,
            "diastolic": 80.0,
            "mean_arterial": 93.0,
            "timestamp": None,
            "timestamp_fields": DateTimeFields(0, 0, 0, 12, 0, 0),
        },
        id="B11",
    ),
    pytest.param(parse_temperature, "00 74 01 00 FF", {"value": 37.2, "unit": "C"}, id="T1"),
    pytest.param(parse_temperature, "01 DA 03 00 FF", {"value": 98.6, "unit": "F"}, id="T2"),
    pytest.param(
        parse_temperature,
        "04 74 01 00 FF 09",
        {"value": 37.2, "unit": "C", "temperature_type": TemperatureType.TYMPANUM},
        id="T4",
    ),
    pytest.param(
        parse_temperature,
        "00 FF FF 7F 00",
        {"value": NAN, "unit": "C", "special_values": {"value": SpecialValue.NAN}},
        id="T5",
    ),
    pytest.param(parse_temperature, "00 C9 FF FF FF", {"value": -5.5, "unit": "C"}, id="T6"),
    pytest.param(
        parse_temperature,
        "04 74 01 00 FF 00",
        {"value": 37.2, "unit": "C", "temperature_type": 0},
        id="T8",
    ),
    pytest.param(
        parse_intermediate_temperature, "00 6E 01 00 FF", {"value": 36.6, "unit": "C"}, id="T12"
    ),
    pytest.param(
        parse_plx_continuous,
        "00 62 00 48 00",
        {
            "spo2": 98.0,
            "pulse_rate": 72.0,
            "spo2_fast": None,
            "spo2_slow": None,
            "measurement_status": None,
            "device_sensor_status": None,
            "pulse_amplitude_index": None,
        },
        id="P1",
    ),
    pytest.param(
        parse_plx_continuous,
        "04 62 00 48 00 1F 00",
        {"spo2": 98.0, "pulse_rate": 72.0, "measurement_status": PlxMeasurementStatus(0x1F)},
        id="P6",
    ),
    pytest.param(
        parse_plx_spot_check,
        "00 62 00 48 00",
        {"spo2": 98.0, "pulse_rate": 72.0, "timestamp": None, "device_clock_not_set": False},
        id="P7",
    ),
    pytest.param(
        parse_plx_spot_check,
        "01 61 00 48 00 E8 07 03 0F 08 1E 05",
        {
            "spo2": 97.0,
            "pulse_rate": 72.0,
            "timestamp": dt.datetime(2024, 3, 15, 8, 30, 5),
            "timestamp_fields": DateTimeFields(2024, 3, 15, 8, 30, 5),
        },
        id="P8",
    ),
    pytest.param(parse_battery_level, "57", {"percent": 87, "reserved": False}, id="BL1"),
    pytest.param(parse_battery_level, "64", {"percent": 100, "reserved": False}, id="BL2"),
]


@pytest.mark.parametrize(("parse", "hex_bytes", "expected"), DECODE_VECTORS)
def test_decode_vectors(parse: Parser, hex_bytes: str, expected: Mapping[str, object]) -> None:
    assert_fields(parse(frame(hex_bytes)), expected)


ERROR_VECTORS = [
    pytest.param(
        parse_heart_rate, "01 2C", HEART_RATE, 1, "heart rate (uint16) cut short", id="H10"
    ),
    pytest.param(parse_heart_rate, "", HEART_RATE, 0, "empty PDU", id="H11"),
    pytest.param(
        parse_heart_rate, "08 48", HEART_RATE, 2, "flag bit 3 announces energy expended", id="H12"
    ),
    pytest.param(
        parse_heart_rate, "10 48", HEART_RATE, 2, "flag bit 4 announces RR-intervals", id="H13"
    ),
    pytest.param(
        parse_blood_pressure,
        "04 78 00 50 00",
        BLOOD_PRESSURE,
        5,
        "mean arterial (SFLOAT) is missing",
        id="B8",
    ),
    pytest.param(
        parse_blood_pressure,
        "02 78 00 50 00 5D 00 E8 07 03",
        BLOOD_PRESSURE,
        7,
        "time stamp (Date Time, 7 bytes) cut short: 3 of 7 bytes",
        id="B9",
    ),
    pytest.param(
        parse_temperature,
        "00 74 01 00",
        TEMPERATURE,
        1,
        "value (FLOAT) cut short: 3 of 4 bytes",
        id="T9",
    ),
    pytest.param(
        parse_temperature,
        "04 74 01 00 FF",
        TEMPERATURE,
        5,
        "flag bit 2 announces temperature type, but it is absent",
        id="T10",
    ),
    pytest.param(
        parse_temperature,
        "02 74 01 00 FF E8 07 03 0F",
        TEMPERATURE,
        5,
        "time stamp (Date Time, 7 bytes) cut short: 4 of 7 bytes",
        id="T11",
    ),
    pytest.param(
        parse_plx_continuous,
        "00 62 00 48",
        PLX_CONTINUOUS,
        3,
        "pulse rate (SFLOAT) cut short: 1 of 2 bytes",
        id="P4",
    ),
    pytest.param(
        parse_plx_continuous,
        "04 62 00 48 00",
        PLX_CONTINUOUS,
        5,
        "flag bit 2 announces measurement status, but it is absent",
        id="P5",
    ),
    pytest.param(
        parse_plx_spot_check,
        "01 61 00 48 00 E8 07 03",
        PLX_SPOT_CHECK,
        5,
        "time stamp (Date Time, 7 bytes) cut short: 3 of 7 bytes",
        id="P11",
    ),
    pytest.param(parse_battery_level, "", BATTERY, 0, "empty PDU", id="BL4"),
]


@pytest.mark.parametrize(("parse", "hex_bytes", "name", "offset", "reason"), ERROR_VECTORS)
def test_error_vectors(parse: Parser, hex_bytes: str, name: str, offset: int, reason: str) -> None:
    with pytest.raises(GattParseError) as caught:
        parse(frame(hex_bytes))
    error = caught.value
    assert error.characteristic == name
    assert error.offset == offset
    assert reason in error.reason
    assert str(error).startswith(f"{name}: byte {offset}: ")
    assert reason in str(error)


def test_error_message_reads_as_one_line() -> None:
    with pytest.raises(GattParseError) as caught:
        parse_blood_pressure(frame("02 78 00 50 00 5D 00 E8 07 03"))
    assert str(caught.value) == (
        "Blood Pressure Measurement (0x2A35): byte 7: "
        "time stamp (Date Time, 7 bytes) cut short: 3 of 7 bytes"
    )
    assert isinstance(caught.value, ValueError)


# --- parser policy -------------------------------------------------------------------------------

# One minimal well-formed frame per decoder, with the flag byte's reserved (RFU) bits.
MINIMAL_FRAMES = [
    pytest.param(parse_heart_rate, "00 48", HEART_RATE, 0xE0, id="heart_rate"),
    pytest.param(parse_blood_pressure, "00 78 00 50 00 5D 00", BLOOD_PRESSURE, 0xE0, id="bp"),
    pytest.param(
        parse_intermediate_cuff_pressure, "00 78 00 FF 07 FF 07", CUFF_PRESSURE, 0xE0, id="icp"
    ),
    pytest.param(parse_temperature, "00 74 01 00 FF", TEMPERATURE, 0xF8, id="temperature"),
    pytest.param(
        parse_intermediate_temperature,
        "00 74 01 00 FF",
        INTERMEDIATE_TEMPERATURE,
        0xF8,
        id="intermediate_temperature",
    ),
    pytest.param(parse_plx_spot_check, "00 62 00 48 00", PLX_SPOT_CHECK, 0xE0, id="plx_spot"),
    pytest.param(parse_plx_continuous, "00 62 00 48 00", PLX_CONTINUOUS, 0xE0, id="plx_cont"),
]


@pytest.mark.parametrize(("parse", "hex_bytes", "name", "rfu_mask"), MINIMAL_FRAMES)
def test_every_decoder_rejects_an_empty_pdu_by_name(
    parse: Parser, hex_bytes: str, name: str, rfu_mask: int
) -> None:
    with pytest.raises(GattParseError, match=r"^.* \(0x2A[0-9A-F]{2}\): byte 0: empty PDU$") as e:
        parse(b"")
    assert e.value.characteristic == name


@pytest.mark.parametrize(("parse", "hex_bytes", "name", "rfu_mask"), MINIMAL_FRAMES)
def test_trailing_bytes_without_reserved_flags_are_an_error(
    parse: Parser, hex_bytes: str, name: str, rfu_mask: int
) -> None:
    payload = frame(hex_bytes) + b"\x00\x01"
    with pytest.raises(GattParseError) as caught:
        parse(payload)
    assert caught.value.characteristic == name
    assert caught.value.offset == len(frame(hex_bytes))
    assert "2 trailing byte(s)" in caught.value.reason


@pytest.mark.parametrize(("parse", "hex_bytes", "name", "rfu_mask"), MINIMAL_FRAMES)
def test_trailing_bytes_are_tolerated_when_reserved_flags_are_set(
    parse: Parser, hex_bytes: str, name: str, rfu_mask: int
) -> None:
    lowest_rfu_bit = rfu_mask & -rfu_mask
    for flag in (lowest_rfu_bit, rfu_mask):
        payload = bytes([flag]) + frame(hex_bytes)[1:]
        assert parse(payload).reserved_flags == flag
        assert parse(payload + b"\xaa\xbb\xcc").reserved_flags == flag


def test_battery_level_is_exactly_one_byte() -> None:
    with pytest.raises(GattParseError) as caught:
        parse_battery_level(frame("64 00"))
    assert caught.value.characteristic == BATTERY
    assert caught.value.offset == 1
    assert "trailing" in caught.value.reason


@pytest.mark.parametrize(("raw", "reserved"), [(0, False), (100, False), (101, True), (255, True)])
def test_battery_level_above_100_is_reported_not_rejected(raw: int, reserved: bool) -> None:
    level = parse_battery_level(bytes([raw]))
    assert level == BatteryLevel(percent=raw)
    assert level.reserved is reserved


def test_decoders_accept_the_bytearray_bleak_delivers() -> None:
    assert parse_heart_rate(bytearray(frame("10 48 00 04 00 02"))).rr_intervals == (1.0, 0.5)
    assert parse_temperature(memoryview(frame("00 74 01 00 FF"))).value == 37.2


# --- heart rate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "contact"),
    [(0x00, None), (0x02, None), (0x04, False), (0x06, True)],
    ids=["unsupported", "detected-bit-alone-means-nothing", "no-contact", "contact"],
)
def test_sensor_contact_needs_the_supported_bit(flags: int, contact: bool | None) -> None:
    assert parse_heart_rate(bytes([flags, 72])).sensor_contact is contact


def test_heart_rate_with_every_field() -> None:
    record = parse_heart_rate(frame("1F 2C 01 FF FF 00 04 00 02 00 03"))
    assert record.bpm == 300
    assert record.sensor_contact is True
    assert record.energy_expended == 0xFFFF  # kJ, saturated
    assert record.rr_intervals == (1.0, 0.5, 0.75)
    assert record.reserved_flags == 0


def test_rr_intervals_with_an_odd_byte_count_are_an_error() -> None:
    with pytest.raises(GattParseError) as caught:
        parse_heart_rate(frame("10 48 00 04 00"))
    assert caught.value.offset == 4
    assert "odd number of RR-interval bytes (3)" in caught.value.reason


def test_rr_intervals_with_an_odd_byte_count_are_an_error_even_with_reserved_flags() -> None:
    with pytest.raises(GattParseError, match="odd number of RR-interval bytes"):
        parse_heart_rate(frame("30 48 00 04 00"))


# --- blood pressure and cuff pressure ------------------------------------------------------------


def test_blood_pressure_special_values_are_named_by_attribute() -> None:
    record = parse_blood_pressure(frame("04 FF 07 00 08 01 08 FE 07"))
    assert math.isnan(record.systolic)
    assert math.isnan(record.diastolic)
    assert math.isnan(record.mean_arterial)
    assert record.pulse_rate == math.inf
    assert record.special_values == {
        "systolic": SpecialValue.NAN,
        "diastolic": SpecialValue.NRES,
        "mean_arterial": SpecialValue.RESERVED,
        "pulse_rate": SpecialValue.POSITIVE_INFINITY,
    }


def test_kpa_flag_applies_to_pressures_not_to_pulse_rate() -> None:
    record = parse_blood_pressure(frame("05 A0 F0 6B F0 7D F0 48 00"))
    assert record.unit == "kPa"
    assert (record.systolic, record.diastolic, record.mean_arterial) == (16.0, 10.7, 12.5)
    assert record.pulse_rate == 72.0


@pytest.mark.parametrize(
    ("raw", "pulse_rate_range", "reserved_bits"),
    [
        (0x0018, PulseRateRange.RESERVED, 0),
        (0x0008, PulseRateRange.ABOVE_UPPER_LIMIT, 0),
        (0xFFC0, PulseRateRange.IN_RANGE, 0xFFC0),
        (0xFFFF, PulseRateRange.RESERVED, 0xFFC0),
    ],
)
def test_blood_pressure_status_reserved_values_are_reported(
    raw: int, pulse_rate_range: PulseRateRange, reserved_bits: int
) -> None:
    payload = frame("10 78 00 50 00 5D 00") + raw.to_bytes(2, "little")
    status = parse_blood_pressure(payload).status
    assert status is not None
    assert status.raw == raw
    assert status.pulse_rate_range is pulse_rate_range
    assert status.reserved_bits == reserved_bits
    all_flags = raw == 0xFFFF
    assert status.body_movement is status.cuff_too_loose is status.irregular_pulse is all_flags
    assert status.improper_position is all_flags


def test_blood_pressure_with_every_field() -> None:
    record = parse_blood_pressure(frame("1E 78 00 50 00 5D 00 E8 07 03 0F 08 1E 05 48 00 02 01 00"))
    assert record.timestamp == dt.datetime(2024, 3, 15, 8, 30, 5)
    assert record.pulse_rate == 72.0
    assert record.user_id == 2
    assert record.status is not None
    assert record.status.body_movement
    assert record.special_values == {}


def test_cuff_pressure_ignores_the_unused_slots() -> None:
    record = parse_intermediate_cuff_pressure(frame("00 FE 07 FF 07 FF 07"))
    assert record.cuff_pressure == math.inf
    assert record.special_values == {"cuff_pressure": SpecialValue.POSITIVE_INFINITY}


def test_cuff_pressure_shares_the_blood_pressure_layout() -> None:
    payload = frame("1F A0 F0 FF 07 FF 07 E8 07 03 0F 08 1E 05 00 08 FF 20 00")
    record = parse_intermediate_cuff_pressure(payload)
    assert record.cuff_pressure == 16.0
    assert record.unit == "kPa"
    assert record.timestamp == dt.datetime(2024, 3, 15, 8, 30, 5)
    assert record.pulse_rate is not None
    assert math.isnan(record.pulse_rate)
    assert record.special_values == {"pulse_rate": SpecialValue.NRES}
    assert record.user_id == 255
    assert record.status is not None
    assert record.status.improper_position


def test_cuff_pressure_unused_slots_must_still_be_present() -> None:
    with pytest.raises(GattParseError) as caught:
        parse_intermediate_cuff_pressure(frame("00 78 00 FF 07 FF"))
    assert caught.value.characteristic == CUFF_PRESSURE
    assert caught.value.offset == 5
    assert "cut short: 1 of 2 bytes" in caught.value.reason


# --- temperature ---------------------------------------------------------------------------------


def test_fahrenheit_is_converted_by_celsius() -> None:
    record = parse_temperature(frame("01 DA 03 00 FF"))
    assert record.value == 98.6
    assert math.isclose(record.celsius, 37.0, abs_tol=1e-9)


def test_celsius_is_returned_as_sent() -> None:
    assert parse_temperature(frame("00 74 01 00 FF")).celsius == 37.2


@pytest.mark.parametrize(
    ("hex_value", "special"),
    [
        ("FF FF 7F 00", SpecialValue.NAN),
        ("00 00 80 00", SpecialValue.NRES),
        ("FE FF 7F 00", SpecialValue.POSITIVE_INFINITY),
        ("02 00 80 00", SpecialValue.NEGATIVE_INFINITY),
        ("01 00 80 00", SpecialValue.RESERVED),
    ],
)
def test_special_fahrenheit_stays_special_in_celsius(hex_value: str, special: SpecialValue) -> None:
    record = parse_temperature(frame("01 " + hex_value))
    assert record.special_values == {"value": special}
    assert_same_float(record.celsius, record.value)


@pytest.mark.parametrize("code", [0, 10, 255])
def test_reserved_temperature_type_is_kept_as_sent(code: int) -> None:
    record = parse_temperature(frame("04 74 01 00 FF") + bytes([code]))
    assert record.temperature_type == code
    assert type(record.temperature_type) is int


def test_temperature_with_every_field() -> None:
    record = parse_intermediate_temperature(frame("06 6E 01 00 FF E8 07 03 0F 08 1E 05 01"))
    assert record.value == 36.6
    assert record.timestamp == dt.datetime(2024, 3, 15, 8, 30, 5)
    assert record.temperature_type is TemperatureType.ARMPIT


# --- pulse oximetry ------------------------------------------------------------------------------


def test_plx_spot_check_clock_flag_adds_no_field() -> None:
    record = parse_plx_spot_check(frame("10 62 00 48 00"))
    assert record.device_clock_not_set is True
    with pytest.raises(GattParseError, match="byte 5: 1 trailing byte"):
        parse_plx_spot_check(frame("10 62 00 48 00 00"))


def test_plx_spot_check_with_every_field() -> None:
    payload = frame("1F 61 00 48 00 E8 07 03 0F 08 1E 05 80 00 20 00 01 32 F0")
    assert len(payload) == 19
    record = parse_plx_spot_check(payload)
    assert record.timestamp == dt.datetime(2024, 3, 15, 8, 30, 5)
    assert record.measurement_status == PlxMeasurementStatus.VALIDATED_DATA
    assert record.device_sensor_status == (
        PlxDeviceSensorStatus.LOW_PERFUSION | PlxDeviceSensorStatus(1 << 16)
    )
    assert record.pulse_amplitude_index == 5.0
    assert record.device_clock_not_set is True


def test_plx_continuous_with_every_field_and_special_values() -> None:
    payload = frame("1F 62 00 48 00 FF 07 00 08 FE 07 02 08 00 20 00 80 00 01 08")
    assert len(payload) == 20
    record = parse_plx_continuous(payload)
    assert (record.spo2, record.pulse_rate) == (98.0, 72.0)
    assert record.spo2_slow == math.inf
    assert record.pulse_rate_slow == -math.inf
    assert record.measurement_status == PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE
    assert record.device_sensor_status == PlxDeviceSensorStatus.SENSOR_DISCONNECTED
    assert record.special_values == {
        "spo2_fast": SpecialValue.NAN,
        "pulse_rate_fast": SpecialValue.NRES,
        "spo2_slow": SpecialValue.POSITIVE_INFINITY,
        "pulse_rate_slow": SpecialValue.NEGATIVE_INFINITY,
        "pulse_amplitude_index": SpecialValue.RESERVED,
    }


def test_plx_spot_check_special_values_are_named_by_attribute() -> None:
    record = parse_plx_spot_check(frame("08 FF 07 00 08 FE 07"))
    assert record.special_values == {
        "spo2": SpecialValue.NAN,
        "pulse_rate": SpecialValue.NRES,
        "pulse_amplitude_index": SpecialValue.POSITIVE_INFINITY,
    }


def test_plx_reserved_status_bits_are_kept() -> None:
    measurement = PlxMeasurementStatus(0x801F)
    assert int(measurement) == 0x801F
    assert PlxMeasurementStatus.INVALID_MEASUREMENT in measurement
    device = parse_plx_continuous(frame("08 62 00 48 00 01 00 FF")).device_sensor_status
    assert device is not None
    assert int(device) == 0xFF0001
    assert PlxDeviceSensorStatus.EXTENDED_DISPLAY_UPDATE_ONGOING in device


# --- Date Time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hex_stamp",
    [
        pytest.param("E7 07 02 1E 08 00 00", id="february-30"),
        pytest.param("E8 07 03 0F 18 00 00", id="hour-24"),
        pytest.param("E8 07 0D 0F 08 00 00", id="month-13"),
        pytest.param("E8 03 03 0F 08 00 00", id="year-1000-before-1582"),
        pytest.param("E8 07 00 0F 08 00 00", id="month-unknown"),
    ],
)
def test_invalid_or_unknown_date_time_keeps_the_fields(hex_stamp: str) -> None:
    stamp = frame(hex_stamp)
    record = parse_plx_spot_check(frame("01 62 00 48 00") + stamp)
    assert record.timestamp is None
    fields = record.timestamp_fields
    assert fields is not None
    assert fields.year == int.from_bytes(stamp[:2], "little")
    assert (fields.month, fields.day, fields.hours, fields.minutes, fields.seconds) == tuple(
        stamp[2:]
    )
