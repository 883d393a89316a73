"""Pure decoders for the Bluetooth SIG health characteristics our wearables send.

Formats, special values and parser policy: ``docs/gatt.md`` (summarised from the SIG GATT XML and
IEEE 11073-20601). Every decoder takes the raw ATT value and returns a frozen record, or raises
:class:`GattParseError` naming the characteristic, the byte offset and the reason. Oddities a real
device may send (reserved bits, reserved enum values, impossible dates) are decoded and reported on
the record, never fatal; special IEEE-11073 values come out as ``nan``/``±inf`` floats and are
named in ``special_values`` so downstream code can mark the reading unusable instead of dropping it.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "BATTERY_LEVEL",
    "BLOOD_PRESSURE_MEASUREMENT",
    "HEART_RATE_MEASUREMENT",
    "INTERMEDIATE_CUFF_PRESSURE",
    "INTERMEDIATE_TEMPERATURE",
    "PLX_CONTINUOUS_MEASUREMENT",
    "PLX_SPOT_CHECK_MEASUREMENT",
    "TEMPERATURE_MEASUREMENT",
    "BatteryLevel",
    "BloodPressureMeasurement",
    "BloodPressureStatus",
    "DateTimeFields",
    "GattParseError",
    "HeartRateMeasurement",
    "IntermediateCuffPressure",
    "PlxContinuousMeasurement",
    "PlxDeviceSensorStatus",
    "PlxMeasurementStatus",
    "PlxSpotCheckMeasurement",
    "PulseRateRange",
    "SpecialValue",
    "TemperatureMeasurement",
    "TemperatureType",
    "decode_float",
    "decode_sfloat",
    "float_special",
    "parse_battery_level",
    "parse_blood_pressure",
    "parse_heart_rate",
    "parse_intermediate_cuff_pressure",
    "parse_intermediate_temperature",
    "parse_plx_continuous",
    "parse_plx_spot_check",
    "parse_temperature",
    "sfloat_special",
]

# 16-bit characteristic UUIDs (Bluetooth SIG assigned numbers).
HEART_RATE_MEASUREMENT = 0x2A37
BLOOD_PRESSURE_MEASUREMENT = 0x2A35
INTERMEDIATE_CUFF_PRESSURE = 0x2A36
TEMPERATURE_MEASUREMENT = 0x2A1C
INTERMEDIATE_TEMPERATURE = 0x2A1E
PLX_SPOT_CHECK_MEASUREMENT = 0x2A5E
PLX_CONTINUOUS_MEASUREMENT = 0x2A5F
BATTERY_LEVEL = 0x2A19


class GattParseError(ValueError):
    """A payload that cannot be decoded; carries where and why so it can be logged and kept."""

    def __init__(self, characteristic: str, offset: int, reason: str) -> None:
        self.characteristic = characteristic
        self.offset = offset
        self.reason = reason
        super().__init__(f"{characteristic}: byte {offset}: {reason}")


class SpecialValue(enum.StrEnum):
    """IEEE 11073-20601 special values; distinct on the wire, so kept distinct here."""

    NAN = "nan"
    NRES = "nres"
    POSITIVE_INFINITY = "+inf"
    NEGATIVE_INFINITY = "-inf"
    RESERVED = "reserved"


# Every special value has exponent 0, so the whole raw word identifies it.
_SFLOAT_SPECIALS: Final[Mapping[int, SpecialValue]] = {
    0x07FF: SpecialValue.NAN,
    0x0800: SpecialValue.NRES,
    0x07FE: SpecialValue.POSITIVE_INFINITY,
    0x0802: SpecialValue.NEGATIVE_INFINITY,
    0x0801: SpecialValue.RESERVED,
}
_FLOAT_SPECIALS: Final[Mapping[int, SpecialValue]] = {
    0x007FFFFF: SpecialValue.NAN,
    0x00800000: SpecialValue.NRES,
    0x007FFFFE: SpecialValue.POSITIVE_INFINITY,
    0x00800002: SpecialValue.NEGATIVE_INFINITY,
    0x00800001: SpecialValue.RESERVED,
}
_SPECIAL_AS_FLOAT: Final[Mapping[SpecialValue, float]] = {
    SpecialValue.NAN: math.nan,
    SpecialValue.NRES: math.nan,
    SpecialValue.POSITIVE_INFINITY: math.inf,
    SpecialValue.NEGATIVE_INFINITY: -math.inf,
    SpecialValue.RESERVED: math.nan,
}
# Exact integer powers of ten: the FLOAT exponent spans -128..127.
_POW10: Final[tuple[int, ...]] = tuple(10**k for k in range(129))


def _scaled(mantissa: int, exponent: int) -> float:
    """Nearest double to mantissa x 10**exponent.

    Both int-to-float conversion and int/int true division round correctly, so 372 / 10 is the
    same double as the literal 37.2; multiplying by a float 0.1 would not be.
    """
    if exponent >= 0:
        return float(mantissa * _POW10[exponent])
    return mantissa / _POW10[-exponent]


def _sfloat_value(raw: int) -> float:
    special = _SFLOAT_SPECIALS.get(raw)
    if special is not None:
        return _SPECIAL_AS_FLOAT[special]
    mantissa = raw & 0x0FFF
    if mantissa >= 0x0800:
        mantissa -= 0x1000
    exponent = raw >> 12
    if exponent >= 0x8:
        exponent -= 0x10
    return _scaled(mantissa, exponent)


def _float_value(raw: int) -> float:
    special = _FLOAT_SPECIALS.get(raw)
    if special is not None:
        return _SPECIAL_AS_FLOAT[special]
    mantissa = raw & 0x00FFFFFF
    if mantissa >= 0x00800000:
        mantissa -= 0x01000000
    exponent = raw >> 24
    if exponent >= 0x80:
        exponent -= 0x100
    return _scaled(mantissa, exponent)


def _check_word(raw: int, bits: int) -> None:
    if not 0 <= raw < 1 << bits:
        raise ValueError(f"{raw!r} is not a {bits}-bit word (0..{(1 << bits) - 1})")


def sfloat_special(raw: int) -> SpecialValue | None:
    """The special value a 16-bit SFLOAT encodes, or None for a finite number."""
    _check_word(raw, 16)
    return _SFLOAT_SPECIALS.get(raw)


def float_special(raw: int) -> SpecialValue | None:
    """The special value a 32-bit FLOAT encodes, or None for a finite number."""
    _check_word(raw, 32)
    return _FLOAT_SPECIALS.get(raw)


def decode_sfloat(raw: int) -> float:
    """Value of a 16-bit SFLOAT: nan for NaN, NRes and reserved; ±inf for ±INF."""
    _check_word(raw, 16)
    return _sfloat_value(raw)


def decode_float(raw: int) -> float:
    """Value of a 32-bit FLOAT: nan for NaN, NRes and reserved; ±inf for ±INF."""
    _check_word(raw, 32)
    return _float_value(raw)


# Date Time (0x2A08) defines years 1582-9999; datetime would accept earlier ones.
_DATE_TIME_MIN_YEAR: Final = 1582


@dataclass(frozen=True, slots=True)
class DateTimeFields:
    """A Date Time (0x2A08) as sent: device-local wall clock, no zone; 0 means unknown."""

    year: int
    month: int
    day: int
    hours: int
    minutes: int
    seconds: int

    def to_datetime(self) -> dt.datetime | None:
        """Naive datetime, or None when a field is unknown (0) or out of range."""
        if self.year < _DATE_TIME_MIN_YEAR:
            return None
        try:
            return dt.datetime(  # noqa: DTZ001 - the device clock carries no zone
                self.year, self.month, self.day, self.hours, self.minutes, self.seconds
            )
        except ValueError:
            return None


class PulseRateRange(enum.IntEnum):
    """Blood Pressure Measurement Status bits 3-4 (a 2-bit field, not a flag)."""

    IN_RANGE = 0
    ABOVE_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2
    RESERVED = 3


@dataclass(frozen=True, slots=True)
class BloodPressureStatus:
    """Measurement Status (uint16) of a blood-pressure record."""

    body_movement: bool
    cuff_too_loose: bool
    irregular_pulse: bool
    pulse_rate_range: PulseRateRange
    improper_position: bool
    reserved_bits: int  # bits 6-15 as sent, 0 when none are set
    raw: int


class PlxMeasurementStatus(enum.IntFlag, boundary=enum.KEEP):
    """PLX Measurement Status (uint16); reserved bits 0-4 stay in the value as sent."""

    MEASUREMENT_ONGOING = 1 << 5
    EARLY_ESTIMATED_DATA = 1 << 6
    VALIDATED_DATA = 1 << 7
    FULLY_QUALIFIED_DATA = 1 << 8
    DATA_FROM_STORAGE = 1 << 9
    DATA_FOR_DEMONSTRATION = 1 << 10
    DATA_FOR_TESTING = 1 << 11
    CALIBRATION_ONGOING = 1 << 12
    MEASUREMENT_UNAVAILABLE = 1 << 13
    QUESTIONABLE_MEASUREMENT = 1 << 14
    INVALID_MEASUREMENT = 1 << 15


class PlxDeviceSensorStatus(enum.IntFlag, boundary=enum.KEEP):
    """PLX Device and Sensor Status (uint24); reserved bits 16-23 stay in the value as sent."""

    EXTENDED_DISPLAY_UPDATE_ONGOING = 1 << 0
    EQUIPMENT_MALFUNCTION = 1 << 1
    SIGNAL_PROCESSING_IRREGULARITY = 1 << 2
    INADEQUATE_SIGNAL = 1 << 3
    POOR_SIGNAL = 1 << 4
    LOW_PERFUSION = 1 << 5
    ERRATIC_SIGNAL = 1 << 6
    NON_PULSATILE_SIGNAL = 1 << 7
    QUESTIONABLE_PULSE = 1 << 8
    SIGNAL_ANALYSIS_ONGOING = 1 << 9
    SENSOR_INTERFERENCE = 1 << 10
    SENSOR_UNCONNECTED_TO_USER = 1 << 11
    UNKNOWN_SENSOR_CONNECTED = 1 << 12
    SENSOR_DISPLACED = 1 << 13
    SENSOR_MALFUNCTIONING = 1 << 14
    SENSOR_DISCONNECTED = 1 << 15


class TemperatureType(enum.IntEnum):
    """Temperature Type codes (0x2A1D); 0 and 10-255 are reserved."""

    ARMPIT = 1
    BODY = 2
    EAR = 3
    FINGER = 4
    GASTROINTESTINAL_TRACT = 5
    MOUTH = 6
    RECTUM = 7
    TOE = 8
    TYMPANUM = 9


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """Heart Rate Measurement (0x2A37)."""

    bpm: int
    sensor_contact: bool | None  # None: the sensor does not support contact detection
    energy_expended: int | None  # kJ, cumulative
    rr_intervals: tuple[float, ...]  # seconds, oldest first
    reserved_flags: int = 0  # RFU flag bits 5-7 as sent


@dataclass(frozen=True, slots=True)
class BloodPressureMeasurement:
    """Blood Pressure Measurement (0x2A35); pressures in ``unit``."""

    systolic: float
    diastolic: float
    mean_arterial: float
    unit: Literal["mmHg", "kPa"]
    timestamp: dt.datetime | None
    pulse_rate: float | None  # bpm
    user_id: int | None  # 255 = unknown user
    status: BloodPressureStatus | None
    timestamp_fields: DateTimeFields | None = None
    special_values: Mapping[str, SpecialValue] = field(default_factory=dict)
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressure:
    """Intermediate Cuff Pressure (0x2A36): the current cuff pressure while inflating."""

    cuff_pressure: float
    unit: Literal["mmHg", "kPa"]
    timestamp: dt.datetime | None
    pulse_rate: float | None
    user_id: int | None
    status: BloodPressureStatus | None
    timestamp_fields: DateTimeFields | None = None
    special_values: Mapping[str, SpecialValue] = field(default_factory=dict)
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True)
class TemperatureMeasurement:
    """Temperature Measurement (0x2A1C) or Intermediate Temperature (0x2A1E)."""

    value: float
    unit: Literal["C", "F"]
    timestamp: dt.datetime | None
    temperature_type: int | None  # see TemperatureType; reserved codes are kept as sent
    timestamp_fields: DateTimeFields | None = None
    special_values: Mapping[str, SpecialValue] = field(default_factory=dict)
    reserved_flags: int = 0

    @property
    def celsius(self) -> float:
        """The value in degrees Celsius, whatever unit the device sent."""
        if self.unit == "C" or not math.isfinite(self.value):
            return self.value
        return (self.value - 32.0) * 5.0 / 9.0


@dataclass(frozen=True, slots=True)
class PlxSpotCheckMeasurement:
    """PLX Spot-Check Measurement (0x2A5E)."""

    spo2: float  # %
    pulse_rate: float  # bpm
    timestamp: dt.datetime | None
    measurement_status: PlxMeasurementStatus | None
    device_sensor_status: PlxDeviceSensorStatus | None
    pulse_amplitude_index: float | None  # %
    device_clock_not_set: bool
    timestamp_fields: DateTimeFields | None = None
    special_values: Mapping[str, SpecialValue] = field(default_factory=dict)
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True)
class PlxContinuousMeasurement:
    """PLX Continuous Measurement (0x2A5F)."""

    spo2: float  # %, SpO2PR-Normal
    pulse_rate: float  # bpm, SpO2PR-Normal
    spo2_fast: float | None
    pulse_rate_fast: float | None
    spo2_slow: float | None
    pulse_rate_slow: float | None
    measurement_status: PlxMeasurementStatus | None
    device_sensor_status: PlxDeviceSensorStatus | None
    pulse_amplitude_index: float | None
    special_values: Mapping[str, SpecialValue] = field(default_factory=dict)
    reserved_flags: int = 0


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    """Battery Level (0x2A19); values above 100 are reserved and reported, not rejected."""

    percent: int

    @property
    def reserved(self) -> bool:
        """True when the device sent a reserved value (101-255)."""
        return self.percent > 100


_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_DATE_TIME: Final = struct.Struct("<HBBBBB")  # year, month, day, hours, minutes, seconds

_HEART_RATE_NAME: Final = "Heart Rate Measurement (0x2A37)"
_BLOOD_PRESSURE_NAME: Final = "Blood Pressure Measurement (0x2A35)"
_CUFF_PRESSURE_NAME: Final = "Intermediate Cuff Pressure (0x2A36)"
_TEMPERATURE_NAME: Final = "Temperature Measurement (0x2A1C)"
_INTERMEDIATE_TEMPERATURE_NAME: Final = "Intermediate Temperature (0x2A1E)"
_PLX_SPOT_CHECK_NAME: Final = "PLX Spot-Check Measurement (0x2A5E)"
_PLX_CONTINUOUS_NAME: Final = "PLX Continuous Measurement (0x2A5F)"
_BATTERY_LEVEL_NAME: Final = "Battery Level (0x2A19)"

_TEMPERATURE_TYPES: Final[Mapping[int, TemperatureType]] = {
    member.value: member for member in TemperatureType
}

# bleak hands notifications over as bytearray; tests and replays use bytes.
_Payload = bytes | bytearray | memoryview


class _Reader:
    """Cursor over one PDU that turns every shortfall into a GattParseError at its offset."""

    __slots__ = ("_data", "characteristic", "offset", "special_values")

    def __init__(self, characteristic: str, data: _Payload) -> None:
        if not data:
            raise GattParseError(characteristic, 0, "empty PDU")
        self._data = data
        self.characteristic = characteristic
        self.offset = 0
        self.special_values: dict[str, SpecialValue] = {}

    def _claim(self, size: int, what: str, flag_bit: int | None, encoding: str = "") -> int:
        """Reserve the next ``size`` bytes and return where they start."""
        start = self.offset
        end = start + size
        if end > len(self._data):
            raise self._shortfall(size, what, flag_bit, encoding)
        self.offset = end
        return start

    def _shortfall(
        self, size: int, what: str, flag_bit: int | None, encoding: str
    ) -> GattParseError:
        """The error for a field that does not fit; built only on failure to keep reads cheap."""
        if encoding:
            what = f"{what.replace('_', ' ')} ({encoding})"
        left = len(self._data) - self.offset
        if left:
            reason = f"{what} cut short: {left} of {size} bytes"
        elif flag_bit is not None:
            reason = f"flag bit {flag_bit} announces {what}, but it is absent"
        else:
            reason = f"{what} is missing"
        return GattParseError(self.characteristic, self.offset, reason)

    def u8(self, what: str, flag_bit: int | None = None) -> int:
        return self._data[self._claim(1, what, flag_bit)]

    def u16(self, what: str, flag_bit: int | None = None) -> int:
        value: int = _U16.unpack_from(self._data, self._claim(2, what, flag_bit))[0]
        return value

    def u24(self, what: str, flag_bit: int | None = None) -> int:
        start = self._claim(3, what, flag_bit)
        return int.from_bytes(self._data[start : start + 3], "little")

    def sfloat(self, key: str, flag_bit: int | None = None) -> float:
        """An SFLOAT field; a special value is recorded under ``key``, the record attribute."""
        raw: int = _U16.unpack_from(self._data, self._claim(2, key, flag_bit, "SFLOAT"))[0]
        special = _SFLOAT_SPECIALS.get(raw)
        if special is None:
            return _sfloat_value(raw)
        self.special_values[key] = special
        return _SPECIAL_AS_FLOAT[special]

    def float32(self, key: str) -> float:
        """A FLOAT field; a special value is recorded under ``key``, the record attribute."""
        raw: int = _U32.unpack_from(self._data, self._claim(4, key, None, "FLOAT"))[0]
        special = _FLOAT_SPECIALS.get(raw)
        if special is None:
            return _float_value(raw)
        self.special_values[key] = special
        return _SPECIAL_AS_FLOAT[special]

    def date_time(self, flag_bit: int) -> DateTimeFields:
        start = self._claim(7, "time stamp (Date Time, 7 bytes)", flag_bit)
        return DateTimeFields(*_DATE_TIME.unpack_from(self._data, start))

    def rr_intervals(self, flag_bit: int) -> tuple[float, ...]:
        """The RR-intervals that fill the rest of the PDU, in seconds, oldest first."""
        start = self.offset
        left = len(self._data) - start
        if left == 0:
            reason = f"flag bit {flag_bit} announces RR-intervals, but none follow"
            raise GattParseError(self.characteristic, start, reason)
        if left % 2:
            reason = f"odd number of RR-interval bytes ({left}): the last interval is cut short"
            raise GattParseError(self.characteristic, len(self._data) - 1, reason)
        self.offset = len(self._data)
        return tuple(ticks / 1024 for (ticks,) in _U16.iter_unpack(self._data[start:]))

    def finish(self, reserved_flags: int) -> None:
        """Reject leftover bytes, unless reserved flag bits hint at fields from a later revision."""
        extra = len(self._data) - self.offset
        if extra and not reserved_flags:
            reason = (
                f"{extra} trailing byte(s) after the last field, and no reserved flag bit is set"
            )
            raise GattParseError(self.characteristic, self.offset, reason)


def _blood_pressure_status(raw: int) -> BloodPressureStatus:
    return BloodPressureStatus(
        body_movement=bool(raw & 0x0001),
        cuff_too_loose=bool(raw & 0x0002),
        irregular_pulse=bool(raw & 0x0004),
        pulse_rate_range=PulseRateRange((raw >> 3) & 0b11),
        improper_position=bool(raw & 0x0020),
        reserved_bits=raw & 0xFFC0,
        raw=raw,
    )


def _read_blood_pressure_tail(
    reader: _Reader, flags: int
) -> tuple[DateTimeFields | None, float | None, int | None, BloodPressureStatus | None]:
    """The optional fields 0x2A35 and 0x2A36 share, after the three pressures."""
    stamp = reader.date_time(flag_bit=1) if flags & 0x02 else None
    pulse_rate = reader.sfloat("pulse_rate", flag_bit=2) if flags & 0x04 else None
    user_id = reader.u8("user ID", flag_bit=3) if flags & 0x08 else None
    status = (
        _blood_pressure_status(reader.u16("measurement status", flag_bit=4))
        if flags & 0x10
        else None
    )
    reader.finish(flags & 0xE0)
    return stamp, pulse_rate, user_id, status


def _parse_temperature(characteristic: str, data: _Payload) -> TemperatureMeasurement:
    reader = _Reader(characteristic, data)
    flags = reader.u8("flags")
    value = reader.float32("value")
    stamp = reader.date_time(flag_bit=1) if flags & 0x02 else None
    temperature_type: int | None = None
    if flags & 0x04:
        code = reader.u8("temperature type", flag_bit=2)
        temperature_type = _TEMPERATURE_TYPES.get(code, code)
    reader.finish(flags & 0xF8)
    return TemperatureMeasurement(
        value=value,
        unit="F" if flags & 0x01 else "C",
        timestamp=stamp.to_datetime() if stamp else None,
        temperature_type=temperature_type,
        timestamp_fields=stamp,
        special_values=reader.special_values,
        reserved_flags=flags & 0xF8,
    )


def parse_heart_rate(data: _Payload) -> HeartRateMeasurement:
    """Decode a Heart Rate Measurement (0x2A37)."""
    reader = _Reader(_HEART_RATE_NAME, data)
    flags = reader.u8("flags")
    bpm = reader.u16("heart rate (uint16)") if flags & 0x01 else reader.u8("heart rate (uint8)")
    energy = reader.u16("energy expended", flag_bit=3) if flags & 0x08 else None
    rr_intervals = reader.rr_intervals(flag_bit=4) if flags & 0x10 else ()
    reader.finish(flags & 0xE0)
    # Bit 2 says contact detection is supported; bit 1 is meaningless without it.
    contact_bits = (flags >> 1) & 0b11
    return HeartRateMeasurement(
        bpm=bpm,
        sensor_contact=contact_bits == 0b11 if contact_bits & 0b10 else None,
        energy_expended=energy,
        rr_intervals=rr_intervals,
        reserved_flags=flags & 0xE0,
    )


def parse_blood_pressure(data: _Payload) -> BloodPressureMeasurement:
    """Decode a Blood Pressure Measurement (0x2A35)."""
    reader = _Reader(_BLOOD_PRESSURE_NAME, data)
    flags = reader.u8("flags")
    systolic = reader.sfloat("systolic")
    diastolic = reader.sfloat("diastolic")
    mean_arterial = reader.sfloat("mean_arterial")
    stamp, pulse_rate, user_id, status = _read_blood_pressure_tail(reader, flags)
    return BloodPressureMeasurement(
        systolic=systolic,
        diastolic=diastolic,
        mean_arterial=mean_arterial,
        unit="kPa" if flags & 0x01 else "mmHg",
        timestamp=stamp.to_datetime() if stamp else None,
        pulse_rate=pulse_rate,
        user_id=user_id,
        status=status,
        timestamp_fields=stamp,
        special_values=reader.special_values,
        reserved_flags=flags & 0xE0,
    )


def parse_intermediate_cuff_pressure(data: _Payload) -> IntermediateCuffPressure:
    """Decode an Intermediate Cuff Pressure (0x2A36).

    The layout is that of 0x2A35; the diastolic and MAP slots must be there but carry no meaning
    (devices send NaN), so they are skipped and never reported as special values.
    """
    reader = _Reader(_CUFF_PRESSURE_NAME, data)
    flags = reader.u8("flags")
    cuff_pressure = reader.sfloat("cuff_pressure")
    reader.u16("unused diastolic slot (SFLOAT)")
    reader.u16("unused mean arterial pressure slot (SFLOAT)")
    stamp, pulse_rate, user_id, status = _read_blood_pressure_tail(reader, flags)
    return IntermediateCuffPressure(
        cuff_pressure=cuff_pressure,
        unit="kPa" if flags & 0x01 else "mmHg",
        timestamp=stamp.to_datetime() if stamp else None,
        pulse_rate=pulse_rate,
        user_id=user_id,
        status=status,
        timestamp_fields=stamp,
        special_values=reader.special_values,
        reserved_flags=flags & 0xE0,
    )


def parse_temperature(data: _Payload) -> TemperatureMeasurement:
    """Decode a Temperature Measurement (0x2A1C)."""
    return _parse_temperature(_TEMPERATURE_NAME, data)


def parse_intermediate_temperature(data: _Payload) -> TemperatureMeasurement:
    """Decode an Intermediate Temperature (0x2A1E)."""
    return _parse_temperature(_INTERMEDIATE_TEMPERATURE_NAME, data)


def parse_plx_spot_check(data: _Payload) -> PlxSpotCheckMeasurement:
    """Decode a PLX Spot-Check Measurement (0x2A5E)."""
    reader = _Reader(_PLX_SPOT_CHECK_NAME, data)
    flags = reader.u8("flags")
    spo2 = reader.sfloat("spo2")
    pulse_rate = reader.sfloat("pulse_rate")
    stamp = reader.date_time(flag_bit=0) if flags & 0x01 else None
    measurement_status = (
        PlxMeasurementStatus(reader.u16("measurement status", flag_bit=1)) if flags & 0x02 else None
    )
    device_sensor_status = (
        PlxDeviceSensorStatus(reader.u24("device and sensor status", flag_bit=2))
        if flags & 0x04
        else None
    )
    pulse_amplitude_index = (
        reader.sfloat("pulse_amplitude_index", flag_bit=3) if flags & 0x08 else None
    )
    reader.finish(flags & 0xE0)
    return PlxSpotCheckMeasurement(
        spo2=spo2,
        pulse_rate=pulse_rate,
        timestamp=stamp.to_datetime() if stamp else None,
        measurement_status=measurement_status,
        device_sensor_status=device_sensor_status,
        pulse_amplitude_index=pulse_amplitude_index,
        device_clock_not_set=bool(flags & 0x10),
        timestamp_fields=stamp,
        special_values=reader.special_values,
        reserved_flags=flags & 0xE0,
    )


def parse_plx_continuous(data: _Payload) -> PlxContinuousMeasurement:
    """Decode a PLX Continuous Measurement (0x2A5F)."""
    reader = _Reader(_PLX_CONTINUOUS_NAME, data)
    flags = reader.u8("flags")
    spo2 = reader.sfloat("spo2")
    pulse_rate = reader.sfloat("pulse_rate")
    spo2_fast = pulse_rate_fast = spo2_slow = pulse_rate_slow = None
    if flags & 0x01:
        spo2_fast = reader.sfloat("spo2_fast", flag_bit=0)
        pulse_rate_fast = reader.sfloat("pulse_rate_fast")
    if flags & 0x02:
        spo2_slow = reader.sfloat("spo2_slow", flag_bit=1)
        pulse_rate_slow = reader.sfloat("pulse_rate_slow")
    measurement_status = (
        PlxMeasurementStatus(reader.u16("measurement status", flag_bit=2)) if flags & 0x04 else None
    )
    device_sensor_status = (
        PlxDeviceSensorStatus(reader.u24("device and sensor status", flag_bit=3))
        if flags & 0x08
        else None
    )
    pulse_amplitude_index = (
        reader.sfloat("pulse_amplitude_index", flag_bit=4) if flags & 0x10 else None
    )
    reader.finish(flags & 0xE0)
    return PlxContinuousMeasurement(
        spo2=spo2,
        pulse_rate=pulse_rate,
        spo2_fast=spo2_fast,
        pulse_rate_fast=pulse_rate_fast,
        spo2_slow=spo2_slow,
        pulse_rate_slow=pulse_rate_slow,
        measurement_status=measurement_status,
        device_sensor_status=device_sensor_status,
        pulse_amplitude_index=pulse_amplitude_index,
        special_values=reader.special_values,
        reserved_flags=flags & 0xE0,
    )


def parse_battery_level(data: _Payload) -> BatteryLevel:
    """Decode a Battery Level (0x2A19): exactly one byte, no flags to excuse extra bytes."""
    reader = _Reader(_BATTERY_LEVEL_NAME, data)
    percent = reader.u8("battery level")
    reader.finish(reserved_flags=0)
    return BatteryLevel(percent=percent)
