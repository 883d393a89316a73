"""Round trips: frames from the independent simulator encoder, decoded by the production parsers.

Every flag combination is generated (each optional field present or absent, both HR widths, both
units, every contact state, random status bits including reserved ones, special values in any
SFLOAT/FLOAT field, RFU flag bits with trailing bytes). Expectations are computed here from the
SIG spec (docs/gatt.md), never from the decoder: numbers exactly as ``mantissa * 10**exponent``.
"""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction

from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor.devices import gatt
from simulators.gatt_encoder import (
    FLOAT_EXPONENT_MAX,
    FLOAT_EXPONENT_MIN,
    FLOAT_MANTISSA_MAX,
    FLOAT_SPECIAL_RAW,
    SFLOAT_EXPONENT_MAX,
    SFLOAT_EXPONENT_MIN,
    SFLOAT_MANTISSA_MAX,
    SFLOAT_SPECIAL_RAW,
    BatteryLevelFrame,
    BloodPressureFrame,
    DateTime,
    Float32,
    FloatField,
    HeartRateFrame,
    IntermediateCuffPressureFrame,
    IntermediateTemperatureFrame,
    PlxContinuousFrame,
    PlxSpotCheckFrame,
    Sfloat,
    SfloatField,
    Special,
    TemperatureFrame,
    Timestamp,
    encode_float,
    encode_sfloat,
)

ROUND_TRIP = settings(max_examples=300, deadline=None, derandomize=True)

SPECIAL_AS_FLOAT = {
    Special.NAN: math.nan,
    Special.NRES: math.nan,
    Special.RESERVED: math.nan,
    Special.POSITIVE_INFINITY: math.inf,
    Special.NEGATIVE_INFINITY: -math.inf,
}

specials = st.sampled_from(Special)
finite_sfloats = st.builds(
    Sfloat,
    st.integers(-SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX),
    st.integers(SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX),
)
finite_floats = st.builds(
    Float32,
    st.integers(-FLOAT_MANTISSA_MAX, FLOAT_MANTISSA_MAX),
    st.integers(FLOAT_EXPONENT_MIN, FLOAT_EXPONENT_MAX),
)
# Three finite draws to one special keeps specials frequent without crowding out numbers.
sfloat_fields: st.SearchStrategy[SfloatField] = st.one_of(
    finite_sfloats, finite_sfloats, finite_sfloats, specials
)
float_fields: st.SearchStrategy[FloatField] = st.one_of(
    finite_floats, finite_floats, finite_floats, specials
)

valid_datetimes = st.datetimes(
    min_value=dt.datetime(1582, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)
).map(lambda moment: moment.replace(microsecond=0))
# Mostly near the valid ranges (so single bad fields and 0 = unknown are common), sometimes wild.
raw_date_times = st.builds(
    DateTime,
    st.one_of(
        st.sampled_from([0, 1, 1581, 1582, 2024, 2025, 9999, 10000, 0xFFFF]),
        st.integers(0, 0xFFFF),
    ),
    st.one_of(st.integers(0, 13), st.integers(0, 0xFF)),
    st.one_of(st.integers(0, 32), st.integers(0, 0xFF)),
    st.one_of(st.integers(0, 24), st.integers(0, 0xFF)),
    st.one_of(st.integers(0, 60), st.integers(0, 0xFF)),
    st.one_of(st.integers(0, 60), st.integers(0, 0xFF)),
)
timestamps: st.SearchStrategy[Timestamp] = st.one_of(valid_datetimes, raw_date_times)


def rfu_flags(mask: int) -> st.SearchStrategy[int]:
    """Any combination of the bits in ``mask``, given in place."""
    bits = [1 << position for position in range(8) if mask & (1 << position)]
    return st.lists(st.sampled_from(bits), unique=True).map(sum)


def trailing_for(reserved_flags: int) -> st.SearchStrategy[bytes]:
    """Trailing bytes are only legitimate behind RFU flags (a future field), so only then."""
    return st.binary(max_size=4) if reserved_flags else st.just(b"")


def expected_number(sent: SfloatField | FloatField) -> float:
    """The spec value of a field: mantissa * 10**exponent, correctly rounded to a float."""
    if isinstance(sent, Special):
        return SPECIAL_AS_FLOAT[sent]
    if isinstance(sent, Sfloat | Float32):
        mantissa, exponent = sent.mantissa, sent.exponent
    elif isinstance(sent, tuple):
        mantissa, exponent = sent
    else:
        mantissa, exponent = sent, 0
    return float(Fraction(mantissa) * Fraction(10) ** exponent)


def assert_number(decoded: float | None, sent: SfloatField | FloatField) -> None:
    expected = expected_number(sent)
    assert isinstance(decoded, float), f"expected a plain float for {sent!r}, got {decoded!r}"
    if math.isnan(expected):
        assert math.isnan(decoded), f"{sent!r} decoded as {decoded!r}, expected nan"
    else:
        assert decoded == expected, f"{sent!r} decoded as {decoded!r}, expected {expected!r}"


def assert_optional_number(decoded: float | None, sent: SfloatField | None) -> None:
    if sent is None:
        assert decoded is None
    else:
        assert_number(decoded, sent)


def expected_specials(
    **fields: SfloatField | FloatField | None,
) -> dict[str, gatt.SpecialValue]:
    return {
        name: gatt.SpecialValue(sent.value)
        for name, sent in fields.items()
        if isinstance(sent, Special)
    }


def expected_datetime(fields: DateTime) -> dt.datetime | None:
    """Spec: year 1582-9999 (0 unknown), month/day 0 unknown; anything impossible is no time."""
    if not 1582 <= fields.year <= 9999:
        return None
    try:
        return dt.datetime(
            fields.year, fields.month, fields.day, fields.hours, fields.minutes, fields.seconds
        )
    except ValueError:
        return None


def assert_timestamp(
    decoded_timestamp: dt.datetime | None,
    decoded_fields: gatt.DateTimeFields | None,
    sent: Timestamp | None,
) -> None:
    if sent is None:
        assert decoded_timestamp is None
        assert decoded_fields is None
        return
    fields = DateTime.from_datetime(sent) if isinstance(sent, dt.datetime) else sent
    assert decoded_fields == gatt.DateTimeFields(
        fields.year, fields.month, fields.day, fields.hours, fields.minutes, fields.seconds
    )
    assert decoded_timestamp == expected_datetime(fields)
    if decoded_timestamp is not None:
        assert decoded_timestamp.tzinfo is None


# ---------------------------------------------------------------- SFLOAT / FLOAT


def test_sfloat_every_finite_mantissa_and_exponent() -> None:
    for exponent in range(SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX + 1):
        for mantissa in range(-SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX + 1):
            raw = int.from_bytes(encode_sfloat(mantissa, exponent), "little")
            decoded = gatt.decode_sfloat(raw)
            expected = float(Fraction(mantissa) * Fraction(10) ** exponent)
            assert decoded == expected, (mantissa, exponent, hex(raw), decoded)
            assert gatt.sfloat_special(raw) is None, (mantissa, exponent, hex(raw))


@given(
    mantissa=st.integers(-FLOAT_MANTISSA_MAX, FLOAT_MANTISSA_MAX),
    exponent=st.integers(FLOAT_EXPONENT_MIN, FLOAT_EXPONENT_MAX),
)
@example(mantissa=FLOAT_MANTISSA_MAX, exponent=FLOAT_EXPONENT_MAX)
@example(mantissa=-FLOAT_MANTISSA_MAX, exponent=FLOAT_EXPONENT_MAX)
@example(mantissa=FLOAT_MANTISSA_MAX, exponent=FLOAT_EXPONENT_MIN)
@example(mantissa=-FLOAT_MANTISSA_MAX, exponent=FLOAT_EXPONENT_MIN)
@example(mantissa=3, exponent=-1)
@example(mantissa=372, exponent=-1)
@example(mantissa=1, exponent=23)
@settings(max_examples=2000, deadline=None, derandomize=True)
def test_float_round_trip_over_full_finite_range(mantissa: int, exponent: int) -> None:
    raw = int.from_bytes(encode_float(mantissa, exponent), "little")
    assert gatt.decode_float(raw) == float(Fraction(mantissa) * Fraction(10) ** exponent)
    assert gatt.float_special(raw) is None


def test_special_values_decode_to_sentinels_and_are_named() -> None:
    for special, raw in SFLOAT_SPECIAL_RAW.items():
        assert_number(gatt.decode_sfloat(raw), special)
        assert gatt.sfloat_special(raw) == gatt.SpecialValue(special.value)
    for special, raw in FLOAT_SPECIAL_RAW.items():
        assert_number(gatt.decode_float(raw), special)
        assert gatt.float_special(raw) == gatt.SpecialValue(special.value)


def test_special_patterns_only_at_exponent_zero() -> None:
    """IEEE 11073-20601: every special value has exponent 0, so 0x17FF is 20470 (S12) and the NXP
    "NaN" 0x07FFFFFF is -10,000,000 (F8)."""
    assert gatt.decode_sfloat(0x17FF) == 20470.0
    assert gatt.sfloat_special(0x17FF) is None
    assert gatt.decode_sfloat(0xF800) == -204.8
    assert gatt.decode_float(0x07FF_FFFF) == -10_000_000.0
    assert gatt.float_special(0x07FF_FFFF) is None


# ---------------------------------------------------------------- Heart Rate 0x2A37


@st.composite
def heart_rate_frames(draw: st.DrawFn) -> HeartRateFrame:
    contact_bits = draw(st.sampled_from([None, 0, 1, 2, 3]))
    rr_1024 = draw(st.none() | st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=9).map(tuple))
    reserved_flags = draw(rfu_flags(0xE0))
    return HeartRateFrame(
        bpm=draw(st.integers(0, 0xFFFF)),
        contact=draw(st.sampled_from([None, False, True])) if contact_bits is None else None,
        contact_bits=contact_bits,
        energy_kj=draw(st.none() | st.integers(0, 0xFFFF)),
        rr_1024=rr_1024,
        wide=draw(st.booleans()),
        reserved_flags=reserved_flags,
        # RR intervals fill the rest of the PDU, so extra bytes there would be more intervals.
        trailing=draw(trailing_for(reserved_flags if rr_1024 is None else 0)),
    )


CONTACT_FROM_BITS = {0: None, 1: None, 2: False, 3: True}


@given(frame=heart_rate_frames())
@ROUND_TRIP
def test_heart_rate_round_trip(frame: HeartRateFrame) -> None:
    decoded = gatt.parse_heart_rate(frame.to_bytes())
    assert decoded.bpm == frame.bpm
    expected_contact = (
        frame.contact if frame.contact_bits is None else CONTACT_FROM_BITS[frame.contact_bits]
    )
    assert decoded.sensor_contact is expected_contact
    assert decoded.energy_expended == frame.energy_kj
    assert decoded.rr_intervals == tuple(raw / 1024 for raw in frame.rr_1024 or ())
    assert decoded.reserved_flags == frame.reserved_flags


# ---------------------------------------------------------------- Blood pressure 0x2A35 / 0x2A36


def expected_bp_status(raw: int | None) -> gatt.BloodPressureStatus | None:
    if raw is None:
        return None
    return gatt.BloodPressureStatus(
        body_movement=bool(raw & 0x0001),
        cuff_too_loose=bool(raw & 0x0002),
        irregular_pulse=bool(raw & 0x0004),
        pulse_rate_range=gatt.PulseRateRange((raw >> 3) & 0b11),
        improper_position=bool(raw & 0x0020),
        reserved_bits=raw & 0xFFC0,
        raw=raw,
    )


@st.composite
def blood_pressure_frames(draw: st.DrawFn) -> BloodPressureFrame:
    reserved_flags = draw(rfu_flags(0xE0))
    return BloodPressureFrame(
        systolic=draw(sfloat_fields),
        diastolic=draw(sfloat_fields),
        mean_arterial=draw(sfloat_fields),
        unit=draw(st.sampled_from(["mmHg", "kPa"])),
        timestamp=draw(st.none() | timestamps),
        pulse_rate=draw(st.none() | sfloat_fields),
        user_id=draw(st.none() | st.integers(0, 0xFF)),
        status=draw(st.none() | st.integers(0, 0xFFFF)),
        reserved_flags=reserved_flags,
        trailing=draw(trailing_for(reserved_flags)),
    )


@given(frame=blood_pressure_frames())
@ROUND_TRIP
def test_blood_pressure_round_trip(frame: BloodPressureFrame) -> None:
    decoded = gatt.parse_blood_pressure(frame.to_bytes())
    assert_number(decoded.systolic, frame.systolic)
    assert_number(decoded.diastolic, frame.diastolic)
    assert_number(decoded.mean_arterial, frame.mean_arterial)
    assert decoded.unit == frame.unit
    assert_timestamp(decoded.timestamp, decoded.timestamp_fields, frame.timestamp)
    assert_optional_number(decoded.pulse_rate, frame.pulse_rate)
    assert decoded.user_id == frame.user_id
    assert decoded.status == expected_bp_status(frame.status)
    assert dict(decoded.special_values) == expected_specials(
        systolic=frame.systolic,
        diastolic=frame.diastolic,
        mean_arterial=frame.mean_arterial,
        pulse_rate=frame.pulse_rate,
    )
    assert decoded.reserved_flags == frame.reserved_flags


@st.composite
def cuff_pressure_frames(draw: st.DrawFn) -> IntermediateCuffPressureFrame:
    reserved_flags = draw(rfu_flags(0xE0))
    unused = st.one_of(st.just(Special.NAN), st.just(Special.NAN), sfloat_fields)
    return IntermediateCuffPressureFrame(
        cuff_pressure=draw(sfloat_fields),
        unit=draw(st.sampled_from(["mmHg", "kPa"])),
        timestamp=draw(st.none() | timestamps),
        pulse_rate=draw(st.none() | sfloat_fields),
        user_id=draw(st.none() | st.integers(0, 0xFF)),
        status=draw(st.none() | st.integers(0, 0xFFFF)),
        # Spec: diastolic and MAP are unused (sent as NaN) and a receiver must ignore them.
        diastolic=draw(unused),
        mean_arterial=draw(unused),
        reserved_flags=reserved_flags,
        trailing=draw(trailing_for(reserved_flags)),
    )


@given(frame=cuff_pressure_frames())
@ROUND_TRIP
def test_intermediate_cuff_pressure_round_trip(frame: IntermediateCuffPressureFrame) -> None:
    decoded = gatt.parse_intermediate_cuff_pressure(frame.to_bytes())
    assert_number(decoded.cuff_pressure, frame.cuff_pressure)
    assert decoded.unit == frame.unit
    assert_timestamp(decoded.timestamp, decoded.timestamp_fields, frame.timestamp)
    assert_optional_number(decoded.pulse_rate, frame.pulse_rate)
    assert decoded.user_id == frame.user_id
    assert decoded.status == expected_bp_status(frame.status)
    assert dict(decoded.special_values) == expected_specials(
        cuff_pressure=frame.cuff_pressure, pulse_rate=frame.pulse_rate
    )
    assert decoded.reserved_flags == frame.reserved_flags


# ---------------------------------------------------------------- Temperature 0x2A1C / 0x2A1E


@st.composite
def temperature_frames(draw: st.DrawFn) -> TemperatureFrame:
    frame_type = draw(st.sampled_from([TemperatureFrame, IntermediateTemperatureFrame]))
    reserved_flags = draw(rfu_flags(0xF8))
    return frame_type(
        temperature=draw(float_fields),
        unit=draw(st.sampled_from(["C", "F"])),
        timestamp=draw(st.none() | timestamps),
        temperature_type=draw(st.none() | st.integers(0, 0xFF)),
        reserved_flags=reserved_flags,
        trailing=draw(trailing_for(reserved_flags)),
    )


@given(frame=temperature_frames())
@ROUND_TRIP
def test_temperature_round_trip(frame: TemperatureFrame) -> None:
    parse = (
        gatt.parse_intermediate_temperature
        if isinstance(frame, IntermediateTemperatureFrame)
        else gatt.parse_temperature
    )
    decoded = parse(frame.to_bytes())
    assert_number(decoded.value, frame.temperature)
    assert decoded.unit == frame.unit
    assert_timestamp(decoded.timestamp, decoded.timestamp_fields, frame.timestamp)
    assert decoded.temperature_type == frame.temperature_type
    assert dict(decoded.special_values) == expected_specials(value=frame.temperature)
    assert decoded.reserved_flags == frame.reserved_flags

    sent_value = expected_number(frame.temperature)
    expected_celsius = sent_value if frame.unit == "C" else (sent_value - 32) * 5 / 9
    if math.isnan(expected_celsius):
        assert math.isnan(decoded.celsius)
    elif math.isinf(expected_celsius) or frame.unit == "C":
        assert decoded.celsius == expected_celsius
    else:
        assert math.isclose(decoded.celsius, expected_celsius, rel_tol=1e-12, abs_tol=1e-12)


# ---------------------------------------------------------------- Pulse oximetry 0x2A5E / 0x2A5F


def assert_plx_status(
    decoded_measurement: gatt.PlxMeasurementStatus | None,
    decoded_device: gatt.PlxDeviceSensorStatus | None,
    sent_measurement: int | None,
    sent_device: int | None,
) -> None:
    """Raw status bits survive, reserved ones included (bits 0-4 and 16-23)."""
    if sent_measurement is None:
        assert decoded_measurement is None
    else:
        assert isinstance(decoded_measurement, gatt.PlxMeasurementStatus)
        assert int(decoded_measurement) == sent_measurement
    if sent_device is None:
        assert decoded_device is None
    else:
        assert isinstance(decoded_device, gatt.PlxDeviceSensorStatus)
        assert int(decoded_device) == sent_device


@st.composite
def plx_spot_check_frames(draw: st.DrawFn) -> PlxSpotCheckFrame:
    reserved_flags = draw(rfu_flags(0xE0))
    return PlxSpotCheckFrame(
        spo2=draw(sfloat_fields),
        pulse_rate=draw(sfloat_fields),
        timestamp=draw(st.none() | timestamps),
        measurement_status=draw(st.none() | st.integers(0, 0xFFFF)),
        device_sensor_status=draw(st.none() | st.integers(0, 0xFF_FFFF)),
        pulse_amplitude_index=draw(st.none() | sfloat_fields),
        device_clock_not_set=draw(st.booleans()),
        reserved_flags=reserved_flags,
        trailing=draw(trailing_for(reserved_flags)),
    )


@given(frame=plx_spot_check_frames())
@ROUND_TRIP
def test_plx_spot_check_round_trip(frame: PlxSpotCheckFrame) -> None:
    decoded = gatt.parse_plx_spot_check(frame.to_bytes())
    assert_number(decoded.spo2, frame.spo2)
    assert_number(decoded.pulse_rate, frame.pulse_rate)
    assert_timestamp(decoded.timestamp, decoded.timestamp_fields, frame.timestamp)
    assert_plx_status(
        decoded.measurement_status,
        decoded.device_sensor_status,
        frame.measurement_status,
        frame.device_sensor_status,
    )
    assert_optional_number(decoded.pulse_amplitude_index, frame.pulse_amplitude_index)
    assert decoded.device_clock_not_set is frame.device_clock_not_set
    assert dict(decoded.special_values) == expected_specials(
        spo2=frame.spo2,
        pulse_rate=frame.pulse_rate,
        pulse_amplitude_index=frame.pulse_amplitude_index,
    )
    assert decoded.reserved_flags == frame.reserved_flags


@st.composite
def plx_continuous_frames(draw: st.DrawFn) -> PlxContinuousFrame:
    reserved_flags = draw(rfu_flags(0xE0))
    pairs = st.none() | st.tuples(sfloat_fields, sfloat_fields)
    return PlxContinuousFrame(
        spo2=draw(sfloat_fields),
        pulse_rate=draw(sfloat_fields),
        fast=draw(pairs),
        slow=draw(pairs),
        measurement_status=draw(st.none() | st.integers(0, 0xFFFF)),
        device_sensor_status=draw(st.none() | st.integers(0, 0xFF_FFFF)),
        pulse_amplitude_index=draw(st.none() | sfloat_fields),
        reserved_flags=reserved_flags,
        trailing=draw(trailing_for(reserved_flags)),
    )


@given(frame=plx_continuous_frames())
@ROUND_TRIP
def test_plx_continuous_round_trip(frame: PlxContinuousFrame) -> None:
    decoded = gatt.parse_plx_continuous(frame.to_bytes())
    spo2_fast, pulse_rate_fast = frame.fast or (None, None)
    spo2_slow, pulse_rate_slow = frame.slow or (None, None)
    assert_number(decoded.spo2, frame.spo2)
    assert_number(decoded.pulse_rate, frame.pulse_rate)
    assert_optional_number(decoded.spo2_fast, spo2_fast)
    assert_optional_number(decoded.pulse_rate_fast, pulse_rate_fast)
    assert_optional_number(decoded.spo2_slow, spo2_slow)
    assert_optional_number(decoded.pulse_rate_slow, pulse_rate_slow)
    assert_plx_status(
        decoded.measurement_status,
        decoded.device_sensor_status,
        frame.measurement_status,
        frame.device_sensor_status,
    )
    assert_optional_number(decoded.pulse_amplitude_index, frame.pulse_amplitude_index)
    assert dict(decoded.special_values) == expected_specials(
        spo2=frame.spo2,
        pulse_rate=frame.pulse_rate,
        spo2_fast=spo2_fast,
        pulse_rate_fast=pulse_rate_fast,
        spo2_slow=spo2_slow,
        pulse_rate_slow=pulse_rate_slow,
        pulse_amplitude_index=frame.pulse_amplitude_index,
    )
    assert decoded.reserved_flags == frame.reserved_flags


# ---------------------------------------------------------------- Battery 0x2A19


def test_battery_level_round_trip_every_value() -> None:
    for percent in range(256):
        decoded = gatt.parse_battery_level(BatteryLevelFrame(percent).to_bytes())
        assert decoded.percent == percent
        assert decoded.reserved is (percent > 100)
