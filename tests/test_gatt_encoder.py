"""The simulator encoder reproduces every well-formed vector of test_gatt_vectors byte for byte."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

import pytest

from simulators.gatt_encoder import (
    BatteryLevelFrame,
    BloodPressureFrame,
    DateTime,
    Float32,
    GattFrame,
    HeartRateFrame,
    IntermediateCuffPressureFrame,
    IntermediateTemperatureFrame,
    PlxContinuousFrame,
    PlxMeasurementStatus,
    PlxSpotCheckFrame,
    PulseRateRange,
    Sfloat,
    Special,
    TemperatureFrame,
    TemperatureType,
    blood_pressure_status,
    encode_battery_level,
    encode_float,
    encode_float_special,
    encode_sfloat,
    encode_sfloat_special,
    float_from_value,
    rr_1024_from_seconds,
    sfloat_from_value,
)

SFLOAT_VECTORS = [
    ("S1", (120, 0), "78 00"),
    ("S2", (160, -1), "A0 F0"),
    ("S3", (-15, -1), "F1 FF"),
    ("S4", (5, 2), "05 20"),
    ("S5", (2045, 0), "FD 07"),
    ("S6", (-2045, 0), "03 08"),
]
SFLOAT_SPECIAL_VECTORS = [
    ("S7", Special.NAN, "FF 07"),
    ("S8", Special.NRES, "00 08"),
    ("S9", Special.POSITIVE_INFINITY, "FE 07"),
    ("S10", Special.NEGATIVE_INFINITY, "02 08"),
    ("S11", Special.RESERVED, "01 08"),
]
FLOAT_VECTORS = [
    ("F1", (372, -1), "74 01 00 FF"),
    ("F2", (-55, -1), "C9 FF FF FF"),
]
FLOAT_SPECIAL_VECTORS = [
    ("F3", Special.NAN, "FF FF 7F 00"),
    ("F4", Special.NRES, "00 00 80 00"),
    ("F5", Special.POSITIVE_INFINITY, "FE FF 7F 00"),
    ("F6", Special.NEGATIVE_INFINITY, "02 00 80 00"),
    ("F7", Special.RESERVED, "01 00 80 00"),
]

MARCH_15 = dt.datetime(2024, 3, 15, 8, 30, 5)

FRAME_VECTORS: list[tuple[str, GattFrame, str]] = [
    ("H1", HeartRateFrame(bpm=72), "00 48"),
    ("H2", HeartRateFrame(bpm=300), "01 2C 01"),
    ("H3", HeartRateFrame(bpm=72, contact=True), "06 48"),
    ("H4", HeartRateFrame(bpm=72, contact=False), "04 48"),
    ("H6", HeartRateFrame(bpm=72, energy_kj=10000), "08 48 10 27"),
    ("H7", HeartRateFrame(bpm=72, rr_1024=(1024, 512)), "10 48 00 04 00 02"),
    (
        "B1",
        BloodPressureFrame(systolic=120, diastolic=80, mean_arterial=93),
        "00 78 00 50 00 5D 00",
    ),
    (
        "B2",
        BloodPressureFrame(
            systolic=sfloat_from_value(16.0, 1),
            diastolic=sfloat_from_value(10.7, 1),
            mean_arterial=sfloat_from_value(12.5, 1),
            unit="kPa",
        ),
        "01 A0 F0 6B F0 7D F0",
    ),
    (
        "B4",
        BloodPressureFrame(
            systolic=120,
            diastolic=80,
            mean_arterial=93,
            status=blood_pressure_status(
                cuff_too_loose=True,
                pulse_rate_range=PulseRateRange.BELOW_LOWER_LIMIT,
                improper_position=True,
            ),
        ),
        "10 78 00 50 00 5D 00 32 00",
    ),
    (
        "B7",
        BloodPressureFrame(systolic=120, diastolic=80, mean_arterial=93, user_id=0xFF),
        "08 78 00 50 00 5D 00 FF",
    ),
    (
        "B11",
        BloodPressureFrame(
            systolic=120, diastolic=80, mean_arterial=93, timestamp=DateTime(0, 0, 0, 12, 0, 0)
        ),
        "02 78 00 50 00 5D 00 00 00 00 00 0C 00 00",
    ),
    ("T1", TemperatureFrame(temperature=(372, -1)), "00 74 01 00 FF"),
    ("T2", TemperatureFrame(temperature=float_from_value(98.6, 1), unit="F"), "01 DA 03 00 FF"),
    (
        "T4",
        TemperatureFrame(temperature=(372, -1), temperature_type=TemperatureType.TYMPANUM),
        "04 74 01 00 FF 09",
    ),
    ("T5", TemperatureFrame(temperature=Special.NAN), "00 FF FF 7F 00"),
    ("T6", TemperatureFrame(temperature=(-55, -1)), "00 C9 FF FF FF"),
    ("T8", TemperatureFrame(temperature=(372, -1), temperature_type=0), "04 74 01 00 FF 00"),
    ("T12", IntermediateTemperatureFrame(temperature=(366, -1)), "00 6E 01 00 FF"),
    ("P1", PlxContinuousFrame(spo2=98, pulse_rate=72), "00 62 00 48 00"),
    (
        "P6",
        PlxContinuousFrame(spo2=98, pulse_rate=72, measurement_status=0x1F),
        "04 62 00 48 00 1F 00",
    ),
    ("P7", PlxSpotCheckFrame(spo2=98, pulse_rate=72), "00 62 00 48 00"),
    (
        "P8",
        PlxSpotCheckFrame(spo2=97, pulse_rate=72, timestamp=MARCH_15),
        "01 61 00 48 00 E8 07 03 0F 08 1E 05",
    ),
    ("BL1", BatteryLevelFrame(87), "57"),
    ("BL2", BatteryLevelFrame(100), "64"),
]


@pytest.mark.parametrize(("vector", "parts", "expected"), SFLOAT_VECTORS)
def test_sfloat_vectors(vector: str, parts: tuple[int, int], expected: str) -> None:
    assert encode_sfloat(*parts) == bytes.fromhex(expected), vector
    assert Sfloat(*parts).to_bytes() == bytes.fromhex(expected), vector


@pytest.mark.parametrize(("vector", "special", "expected"), SFLOAT_SPECIAL_VECTORS)
def test_sfloat_special_vectors(vector: str, special: Special, expected: str) -> None:
    assert encode_sfloat_special(special) == bytes.fromhex(expected), vector


@pytest.mark.parametrize(("vector", "parts", "expected"), FLOAT_VECTORS)
def test_float_vectors(vector: str, parts: tuple[int, int], expected: str) -> None:
    assert encode_float(*parts) == bytes.fromhex(expected), vector
    assert Float32(*parts).to_bytes() == bytes.fromhex(expected), vector


@pytest.mark.parametrize(("vector", "special", "expected"), FLOAT_SPECIAL_VECTORS)
def test_float_special_vectors(vector: str, special: Special, expected: str) -> None:
    assert encode_float_special(special) == bytes.fromhex(expected), vector


@pytest.mark.parametrize(("vector", "frame", "expected"), FRAME_VECTORS)
def test_frame_vectors(vector: str, frame: GattFrame, expected: str) -> None:
    assert frame.to_bytes() == bytes.fromhex(expected), vector


def test_brief_example_heart_rate() -> None:
    frame = HeartRateFrame(bpm=72, contact=True, rr_1024=(1024, 512))
    assert bytes(frame) == bytes.fromhex("16 48 00 04 00 02")


def test_date_time_example_from_spec() -> None:
    assert DateTime.from_datetime(MARCH_15).to_bytes() == bytes.fromhex("E8 07 03 0F 08 1E 05")


def test_characteristic_uuids() -> None:
    assert HeartRateFrame.UUID16 == 0x2A37
    assert BloodPressureFrame.UUID16 == 0x2A35
    assert IntermediateCuffPressureFrame.UUID16 == 0x2A36
    assert TemperatureFrame.UUID16 == 0x2A1C
    assert IntermediateTemperatureFrame.UUID16 == 0x2A1E
    assert PlxSpotCheckFrame.UUID16 == 0x2A5E
    assert PlxContinuousFrame.UUID16 == 0x2A5F
    assert BatteryLevelFrame.UUID16 == 0x2A19


@pytest.mark.parametrize(
    ("mantissa", "exponent"),
    [(2046, 0), (-2046, 0), (2047, 1), (-2048, -1), (0, 8), (0, -9)],
)
def test_sfloat_refuses_non_finite_range(mantissa: int, exponent: int) -> None:
    with pytest.raises(ValueError, match="SFLOAT"):
        encode_sfloat(mantissa, exponent)
    with pytest.raises(ValueError, match="SFLOAT"):
        Sfloat(mantissa, exponent)


@pytest.mark.parametrize(
    ("mantissa", "exponent"),
    [(8_388_606, 0), (-8_388_606, 0), (8_388_607, 3), (0, 128), (0, -129)],
)
def test_float_refuses_non_finite_range(mantissa: int, exponent: int) -> None:
    with pytest.raises(ValueError, match="FLOAT"):
        encode_float(mantissa, exponent)


def test_float_extremes_are_encodable() -> None:
    assert encode_float(8_388_605, 127) == bytes.fromhex("FD FF 7F 7F")
    assert encode_float(-8_388_605, -128) == bytes.fromhex("03 00 80 80")


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (16.0, 1, Sfloat(160, -1)),
        (36.65, 1, Sfloat(367, -1)),
        (-1.5, 1, Sfloat(-15, -1)),
        (500, -2, Sfloat(5, 2)),
        (97.0, 0, Sfloat(97, 0)),
        (0.004, 3, Sfloat(4, -3)),
    ],
)
def test_sfloat_from_value(value: float, decimals: int, expected: Sfloat) -> None:
    assert sfloat_from_value(value, decimals) == expected


def test_value_helpers_keep_exact_decimal() -> None:
    assert sfloat_from_value(10.7, 1).value == Decimal("10.7")
    assert float_from_value(37.2, 1).value == Decimal("37.2")
    assert float_from_value(37.2, 1) == Float32(372, -1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_value_helpers_refuse_non_finite(value: float) -> None:
    with pytest.raises(ValueError, match="not finite"):
        sfloat_from_value(value, 0)
    with pytest.raises(ValueError, match="not finite"):
        float_from_value(value, 0)


def test_value_helper_refuses_precision_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match="mantissa"):
        sfloat_from_value(300.0, 1)


def test_frame_field_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="diastolic"):
        BloodPressureFrame(systolic=120, diastolic=(3000, 0), mean_arterial=93)
    with pytest.raises(TypeError, match="spo2"):
        PlxSpotCheckFrame(spo2=97.5, pulse_rate=72)  # type: ignore[arg-type]


def test_heart_rate_forced_wide_format() -> None:
    assert HeartRateFrame(bpm=72, wide=True).to_bytes() == bytes.fromhex("01 48 00")


def test_heart_rate_raw_contact_bits() -> None:
    assert HeartRateFrame(bpm=72, contact_bits=1).to_bytes() == bytes.fromhex("02 48")
    with pytest.raises(ValueError, match="not both"):
        HeartRateFrame(bpm=72, contact=True, contact_bits=3)


def test_heart_rate_rr_flag_without_values_is_encodable_for_malformed_tests() -> None:
    assert HeartRateFrame(bpm=72, rr_1024=()).to_bytes() == bytes.fromhex("10 48")  # H13


def test_rr_from_seconds() -> None:
    assert rr_1024_from_seconds(1.0) == 1024
    assert rr_1024_from_seconds(0.5) == 512
    assert rr_1024_from_seconds(0.8) == 819


def test_reserved_flags_and_trailing_bytes() -> None:
    frame = HeartRateFrame(bpm=72, reserved_flags=0x80, trailing=b"\xaa\xbb")
    assert frame.to_bytes() == bytes.fromhex("80 48 AA BB")
    temperature = TemperatureFrame(temperature=(372, -1), reserved_flags=0x08, trailing=b"\x01")
    assert temperature.to_bytes() == bytes.fromhex("08 74 01 00 FF 01")


@pytest.mark.parametrize(
    "build",
    [
        lambda: HeartRateFrame(bpm=72, reserved_flags=0x10),
        lambda: BloodPressureFrame(systolic=1, diastolic=1, mean_arterial=1, reserved_flags=0x01),
        lambda: TemperatureFrame(temperature=1, reserved_flags=0x04),
        lambda: PlxSpotCheckFrame(spo2=1, pulse_rate=1, reserved_flags=0x10),
        lambda: PlxContinuousFrame(spo2=1, pulse_rate=1, reserved_flags=0x10),
    ],
)
def test_reserved_flags_cannot_redefine_known_bits(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="reserved mask"):
        build()


def test_intermediate_cuff_pressure_sends_nan_diastolic_and_map() -> None:
    frame = IntermediateCuffPressureFrame(cuff_pressure=(1205, -1), pulse_rate=72)
    assert frame.to_bytes() == bytes.fromhex("04 B5 F4 FF 07 FF 07 48 00")


def test_blood_pressure_status_bits() -> None:
    assert blood_pressure_status() == 0
    assert blood_pressure_status(body_movement=True, irregular_pulse=True) == 0x0005
    assert blood_pressure_status(pulse_rate_range=PulseRateRange.ABOVE_UPPER_LIMIT) == 0x0008
    assert blood_pressure_status(pulse_rate_range=PulseRateRange.RESERVED) == 0x0018
    assert blood_pressure_status(reserved_bits=0x8040) == 0x8040
    with pytest.raises(ValueError, match="reserved mask"):
        blood_pressure_status(reserved_bits=0x0001)
    with pytest.raises(ValueError, match="pulse_rate_range"):
        blood_pressure_status(pulse_rate_range=4)


def test_plx_spot_check_clock_not_set_adds_no_field() -> None:
    frame = PlxSpotCheckFrame(spo2=97, pulse_rate=72, device_clock_not_set=True)
    assert frame.to_bytes() == bytes.fromhex("10 61 00 48 00")


def test_plx_continuous_full_frame_is_twenty_bytes() -> None:
    frame = PlxContinuousFrame(
        spo2=98,
        pulse_rate=72,
        fast=(97, 73),
        slow=(98, 71),
        measurement_status=PlxMeasurementStatus.VALIDATED_DATA,
        device_sensor_status=0x01_0203,
        pulse_amplitude_index=(25, -1),
    )
    assert frame.to_bytes() == bytes.fromhex(
        "1F 62 00 48 00 61 00 49 00 62 00 47 00 80 00 03 02 01 19 F0"
    )


def test_battery_level_range() -> None:
    assert encode_battery_level(255) == b"\xff"
    with pytest.raises(ValueError, match="battery"):
        BatteryLevelFrame(256)


def test_date_time_refuses_values_wider_than_the_field() -> None:
    assert DateTime(2024, 13, 40, 25, 61, 61).to_bytes() == bytes.fromhex("E8 07 0D 28 19 3D 3D")
    with pytest.raises(ValueError, match="month"):
        DateTime(2024, 256, 1)
