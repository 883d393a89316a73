"""On-air encoder for the Bluetooth SIG health characteristics the simulated wearables send.

Written from the Bluetooth SIG byte formats only (GATT Specification Supplement; Heart Rate,
Health Thermometer, Blood Pressure and Pulse Oximeter services; IEEE 11073-20601 SFLOAT/FLOAT),
never from ``monitor.devices.gatt``, so
that the production decoder is tested against bytes it did not produce. Frames are immutable
descriptions of what a device sends; an optional field is on air iff it is not None.

Frames also let tests build deliberately odd traffic: reserved (RFU) flag bits, trailing bytes,
special IEEE-11073 values, raw sensor-contact bits and impossible Date Time values. Structural
limits (field widths, finite mantissa ranges, which flag bits are RFU) are still enforced so that a
malformed frame is always a deliberate choice.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import ClassVar, Final, Literal, Protocol, TypeAlias

__all__ = [
    "BATTERY_LEVEL",
    "BLOOD_PRESSURE_MEASUREMENT",
    "BLOOD_PRESSURE_RFU_FLAGS",
    "BLOOD_PRESSURE_STATUS_RFU_BITS",
    "FLOAT_EXPONENT_MAX",
    "FLOAT_EXPONENT_MIN",
    "FLOAT_MANTISSA_MAX",
    "FLOAT_NAN",
    "FLOAT_NEGATIVE_INFINITY",
    "FLOAT_NRES",
    "FLOAT_POSITIVE_INFINITY",
    "FLOAT_RESERVED",
    "FLOAT_SPECIAL_RAW",
    "HEART_RATE_MEASUREMENT",
    "HEART_RATE_RFU_FLAGS",
    "INTERMEDIATE_CUFF_PRESSURE",
    "INTERMEDIATE_TEMPERATURE",
    "PLX_CONTINUOUS_MEASUREMENT",
    "PLX_CONTINUOUS_RFU_FLAGS",
    "PLX_DEVICE_SENSOR_STATUS_RFU_BITS",
    "PLX_MEASUREMENT_STATUS_RFU_BITS",
    "PLX_SPOT_CHECK_MEASUREMENT",
    "PLX_SPOT_CHECK_RFU_FLAGS",
    "SFLOAT_EXPONENT_MAX",
    "SFLOAT_EXPONENT_MIN",
    "SFLOAT_MANTISSA_MAX",
    "SFLOAT_NAN",
    "SFLOAT_NEGATIVE_INFINITY",
    "SFLOAT_NRES",
    "SFLOAT_POSITIVE_INFINITY",
    "SFLOAT_RESERVED",
    "SFLOAT_SPECIAL_RAW",
    "TEMPERATURE_MEASUREMENT",
    "TEMPERATURE_RFU_FLAGS",
    "BatteryLevelFrame",
    "BloodPressureFrame",
    "DateTime",
    "Float32",
    "FloatField",
    "GattFrame",
    "HeartRateFrame",
    "IntermediateCuffPressureFrame",
    "IntermediateTemperatureFrame",
    "PlxContinuousFrame",
    "PlxDeviceSensorStatus",
    "PlxMeasurementStatus",
    "PlxSpotCheckFrame",
    "PulseRateRange",
    "Sfloat",
    "SfloatField",
    "Special",
    "TemperatureFrame",
    "TemperatureType",
    "Timestamp",
    "blood_pressure_status",
    "encode_battery_level",
    "encode_float",
    "encode_float_special",
    "encode_sfloat",
    "encode_sfloat_special",
    "float_from_value",
    "rr_1024_from_seconds",
    "sfloat_from_value",
]

HEART_RATE_MEASUREMENT: Final = 0x2A37
BLOOD_PRESSURE_MEASUREMENT: Final = 0x2A35
INTERMEDIATE_CUFF_PRESSURE: Final = 0x2A36
TEMPERATURE_MEASUREMENT: Final = 0x2A1C
INTERMEDIATE_TEMPERATURE: Final = 0x2A1E
PLX_SPOT_CHECK_MEASUREMENT: Final = 0x2A5E
PLX_CONTINUOUS_MEASUREMENT: Final = 0x2A5F
BATTERY_LEVEL: Final = 0x2A19

SFLOAT_MANTISSA_MAX: Final = 2045
SFLOAT_EXPONENT_MIN: Final = -8
SFLOAT_EXPONENT_MAX: Final = 7
FLOAT_MANTISSA_MAX: Final = 8_388_605
FLOAT_EXPONENT_MIN: Final = -128
FLOAT_EXPONENT_MAX: Final = 127

SFLOAT_NAN: Final = 0x07FF
SFLOAT_NRES: Final = 0x0800
SFLOAT_POSITIVE_INFINITY: Final = 0x07FE
SFLOAT_NEGATIVE_INFINITY: Final = 0x0802
SFLOAT_RESERVED: Final = 0x0801

FLOAT_NAN: Final = 0x007F_FFFF
FLOAT_NRES: Final = 0x0080_0000
FLOAT_POSITIVE_INFINITY: Final = 0x007F_FFFE
FLOAT_NEGATIVE_INFINITY: Final = 0x0080_0002
FLOAT_RESERVED: Final = 0x0080_0001

HEART_RATE_RFU_FLAGS: Final = 0xE0
BLOOD_PRESSURE_RFU_FLAGS: Final = 0xE0
TEMPERATURE_RFU_FLAGS: Final = 0xF8
PLX_SPOT_CHECK_RFU_FLAGS: Final = 0xE0
PLX_CONTINUOUS_RFU_FLAGS: Final = 0xE0
BLOOD_PRESSURE_STATUS_RFU_BITS: Final = 0xFFC0
PLX_MEASUREMENT_STATUS_RFU_BITS: Final = 0x001F
PLX_DEVICE_SENSOR_STATUS_RFU_BITS: Final = 0xFF_0000


class Special(enum.Enum):
    """IEEE 11073-20601 special values; a device sends these instead of a number."""

    NAN = "nan"
    NRES = "nres"
    POSITIVE_INFINITY = "+inf"
    NEGATIVE_INFINITY = "-inf"
    RESERVED = "reserved"


SFLOAT_SPECIAL_RAW: Final[Mapping[Special, int]] = MappingProxyType(
    {
        Special.NAN: SFLOAT_NAN,
        Special.NRES: SFLOAT_NRES,
        Special.POSITIVE_INFINITY: SFLOAT_POSITIVE_INFINITY,
        Special.NEGATIVE_INFINITY: SFLOAT_NEGATIVE_INFINITY,
        Special.RESERVED: SFLOAT_RESERVED,
    }
)
FLOAT_SPECIAL_RAW: Final[Mapping[Special, int]] = MappingProxyType(
    {
        Special.NAN: FLOAT_NAN,
        Special.NRES: FLOAT_NRES,
        Special.POSITIVE_INFINITY: FLOAT_POSITIVE_INFINITY,
        Special.NEGATIVE_INFINITY: FLOAT_NEGATIVE_INFINITY,
        Special.RESERVED: FLOAT_RESERVED,
    }
)


def _check_int(what: str, value: int, low: int, high: int) -> None:
    """Refuse non-integers and out-of-range values with a message naming the field."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{what} must be an int, got {value!r}"
        raise TypeError(msg)
    if not low <= value <= high:
        msg = f"{what} {value} outside {low}..{high}"
        raise ValueError(msg)


def _uint(what: str, value: int, size: int) -> bytes:
    _check_int(what, value, 0, (1 << (8 * size)) - 1)
    return value.to_bytes(size, "little")


def _check_flag_bits(what: str, value: int, allowed_mask: int) -> None:
    """Only the RFU positions may be set, so a frame cannot silently redefine a known flag."""
    _check_int(what, value, 0, 0xFFFF_FFFF)
    if value & ~allowed_mask:
        msg = f"{what} {value:#x} sets bits outside the reserved mask {allowed_mask:#x}"
        raise ValueError(msg)


def encode_sfloat(mantissa: int, exponent: int = 0) -> bytes:
    """The two on-air bytes of ``mantissa * 10**exponent`` as an SFLOAT.

    The mantissa is kept within ±2045 at every exponent: patterns such as 0x17FF are finite by the
    definition but read as NaN by decoders that test only the 12-bit mantissa.
    """
    _check_int("SFLOAT mantissa", mantissa, -SFLOAT_MANTISSA_MAX, SFLOAT_MANTISSA_MAX)
    _check_int("SFLOAT exponent", exponent, SFLOAT_EXPONENT_MIN, SFLOAT_EXPONENT_MAX)
    raw = ((exponent & 0x0F) << 12) | (mantissa & 0x0FFF)
    return raw.to_bytes(2, "little")


def encode_float(mantissa: int, exponent: int = 0) -> bytes:
    """The four on-air bytes of ``mantissa * 10**exponent`` as a 32-bit FLOAT."""
    _check_int("FLOAT mantissa", mantissa, -FLOAT_MANTISSA_MAX, FLOAT_MANTISSA_MAX)
    _check_int("FLOAT exponent", exponent, FLOAT_EXPONENT_MIN, FLOAT_EXPONENT_MAX)
    raw = ((exponent & 0xFF) << 24) | (mantissa & 0xFF_FFFF)
    return raw.to_bytes(4, "little")


def encode_sfloat_special(special: Special) -> bytes:
    """The two on-air bytes of an SFLOAT special value."""
    return SFLOAT_SPECIAL_RAW[special].to_bytes(2, "little")


def encode_float_special(special: Special) -> bytes:
    """The four on-air bytes of a FLOAT special value."""
    return FLOAT_SPECIAL_RAW[special].to_bytes(4, "little")


def _scaled_mantissa(value: float, decimals: int) -> int:
    """Round half away from zero on the shortest decimal repr, as a person would round 36.65."""
    if not math.isfinite(value):
        msg = f"{value!r} is not finite; send a Special value instead"
        raise ValueError(msg)
    scaled = Decimal(repr(value)).scaleb(decimals)
    return int(scaled.to_integral_value(rounding=ROUND_HALF_UP))


@dataclass(frozen=True, slots=True)
class Sfloat:
    """A finite SFLOAT; the exponent carries the precision, so (160, -1) is 16.0, not 16."""

    mantissa: int
    exponent: int = 0

    def __post_init__(self) -> None:
        encode_sfloat(self.mantissa, self.exponent)

    @classmethod
    def from_value(cls, value: float, decimals: int) -> Sfloat:
        """``value`` rounded to ``decimals`` places (negative: tens, hundreds...)."""
        return cls(_scaled_mantissa(value, decimals), -decimals)

    @property
    def value(self) -> Decimal:
        """The exact decimal this SFLOAT stands for."""
        return Decimal(self.mantissa).scaleb(self.exponent)

    def to_bytes(self) -> bytes:
        return encode_sfloat(self.mantissa, self.exponent)


@dataclass(frozen=True, slots=True)
class Float32:
    """A finite 32-bit IEEE-11073 FLOAT (medfloat32)."""

    mantissa: int
    exponent: int = 0

    def __post_init__(self) -> None:
        encode_float(self.mantissa, self.exponent)

    @classmethod
    def from_value(cls, value: float, decimals: int) -> Float32:
        """``value`` rounded to ``decimals`` places (negative: tens, hundreds...)."""
        return cls(_scaled_mantissa(value, decimals), -decimals)

    @property
    def value(self) -> Decimal:
        """The exact decimal this FLOAT stands for."""
        return Decimal(self.mantissa).scaleb(self.exponent)

    def to_bytes(self) -> bytes:
        return encode_float(self.mantissa, self.exponent)


def sfloat_from_value(value: float, decimals: int) -> Sfloat:
    """The SFLOAT for ``value`` at ``decimals`` places; ValueError if it does not fit."""
    return Sfloat.from_value(value, decimals)


def float_from_value(value: float, decimals: int) -> Float32:
    """The FLOAT for ``value`` at ``decimals`` places; ValueError if it does not fit."""
    return Float32.from_value(value, decimals)


SfloatField: TypeAlias = Sfloat | Special | tuple[int, int] | int
"""An SFLOAT field: ``Sfloat``, a special value, ``(mantissa, exponent)`` or an integer."""

FloatField: TypeAlias = Float32 | Special | tuple[int, int] | int
"""A FLOAT field: ``Float32``, a special value, ``(mantissa, exponent)`` or an integer."""


def _sfloat_field(what: str, value: SfloatField) -> bytes:
    if isinstance(value, Special):
        return encode_sfloat_special(value)
    if isinstance(value, Sfloat):
        return value.to_bytes()
    if isinstance(value, tuple) and len(value) == 2:
        mantissa, exponent = value
    elif isinstance(value, int) and not isinstance(value, bool):
        mantissa, exponent = value, 0
    else:
        msg = f"{what}: expected Sfloat, Special, (mantissa, exponent) or int, got {value!r}"
        raise TypeError(msg)
    try:
        return encode_sfloat(mantissa, exponent)
    except ValueError as error:
        msg = f"{what}: {error}"
        raise ValueError(msg) from error


def _float_field(what: str, value: FloatField) -> bytes:
    if isinstance(value, Special):
        return encode_float_special(value)
    if isinstance(value, Float32):
        return value.to_bytes()
    if isinstance(value, tuple) and len(value) == 2:
        mantissa, exponent = value
    elif isinstance(value, int) and not isinstance(value, bool):
        mantissa, exponent = value, 0
    else:
        msg = f"{what}: expected Float32, Special, (mantissa, exponent) or int, got {value!r}"
        raise TypeError(msg)
    try:
        return encode_float(mantissa, exponent)
    except ValueError as error:
        msg = f"{what}: {error}"
        raise ValueError(msg) from error


@dataclass(frozen=True, slots=True)
class DateTime:
    """Date Time (0x2A08) fields exactly as sent; 0 in year/month/day means unknown.

    Values are only checked against their field widths, so tests can send impossible dates.
    """

    year: int
    month: int
    day: int
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def __post_init__(self) -> None:
        self.to_bytes()

    @classmethod
    def from_datetime(cls, moment: dt.datetime) -> DateTime:
        """The wall-clock fields of ``moment``; any zone is dropped, as the format has none."""
        return cls(moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)

    def to_bytes(self) -> bytes:
        return b"".join(
            (
                _uint("Date Time year", self.year, 2),
                _uint("Date Time month", self.month, 1),
                _uint("Date Time day", self.day, 1),
                _uint("Date Time hours", self.hours, 1),
                _uint("Date Time minutes", self.minutes, 1),
                _uint("Date Time seconds", self.seconds, 1),
            )
        )


Timestamp: TypeAlias = dt.datetime | DateTime
"""A timestamp field: a datetime (its wall clock is sent) or raw ``DateTime`` fields."""


def _timestamp_bytes(value: Timestamp) -> bytes:
    if isinstance(value, dt.datetime):
        return DateTime.from_datetime(value).to_bytes()
    return value.to_bytes()


class GattFrame(Protocol):
    """Anything a simulated wearable can put in a notification or indication."""

    UUID16: ClassVar[int]

    def to_bytes(self) -> bytes: ...


def rr_1024_from_seconds(seconds: float) -> int:
    """An RR interval in the 1/1024 s units of the Heart Rate Measurement."""
    units = round(seconds * 1024)
    _check_int("RR interval (1/1024 s)", units, 0, 0xFFFF)
    return units


@dataclass(frozen=True, slots=True)
class HeartRateFrame:
    """Heart Rate Measurement (0x2A37).

    ``contact``: None = sensor contact not supported, False = supported but no contact, True =
    contact. ``contact_bits`` overrides that with the raw 2-bit field (e.g. 1: "detected" without
    "supported"). The HR goes out as uint16 when ``wide`` or when it exceeds 255. ``rr_1024=()``
    sets the RR flag with no values, which is malformed on purpose.
    """

    UUID16: ClassVar[int] = HEART_RATE_MEASUREMENT

    bpm: int
    contact: bool | None = None
    energy_kj: int | None = None
    rr_1024: tuple[int, ...] | None = None
    wide: bool = False
    contact_bits: int | None = None
    reserved_flags: int = 0
    trailing: bytes = b""
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_encoded", self._encode())

    def _contact_field(self) -> int:
        if self.contact_bits is not None:
            if self.contact is not None:
                msg = "give either contact or contact_bits, not both"
                raise ValueError(msg)
            _check_int("contact_bits", self.contact_bits, 0, 3)
            return self.contact_bits
        if self.contact is None:
            return 0b00
        return 0b11 if self.contact else 0b10

    def _encode(self) -> bytes:
        _check_flag_bits("reserved_flags", self.reserved_flags, HEART_RATE_RFU_FLAGS)
        wide = self.wide or self.bpm > 0xFF
        flags = self.reserved_flags | (self._contact_field() << 1)
        body = [_uint("bpm", self.bpm, 2 if wide else 1)]
        if wide:
            flags |= 0x01
        if self.energy_kj is not None:
            flags |= 0x08
            body.append(_uint("energy_kj", self.energy_kj, 2))
        if self.rr_1024 is not None:
            flags |= 0x10
            body.extend(_uint("rr_1024", interval, 2) for interval in self.rr_1024)
        return bytes([flags]) + b"".join(body) + bytes(self.trailing)

    def to_bytes(self) -> bytes:
        return self._encoded

    def __bytes__(self) -> bytes:
        return self._encoded


class PulseRateRange(enum.IntEnum):
    """Blood-pressure Measurement Status bits 3-4: a 2-bit field, not a flag."""

    IN_RANGE = 0
    ABOVE_UPPER_LIMIT = 1
    BELOW_LOWER_LIMIT = 2
    RESERVED = 3


def blood_pressure_status(
    *,
    body_movement: bool = False,
    cuff_too_loose: bool = False,
    irregular_pulse: bool = False,
    pulse_rate_range: int = PulseRateRange.IN_RANGE,
    improper_position: bool = False,
    reserved_bits: int = 0,
) -> int:
    """The raw uint16 Measurement Status; ``reserved_bits`` are given in place (bits 6-15)."""
    _check_int("pulse_rate_range", pulse_rate_range, 0, 3)
    _check_flag_bits("reserved_bits", reserved_bits, BLOOD_PRESSURE_STATUS_RFU_BITS)
    return (
        int(body_movement)
        | int(cuff_too_loose) << 1
        | int(irregular_pulse) << 2
        | pulse_rate_range << 3
        | int(improper_position) << 5
        | reserved_bits
    )


PressureUnit: TypeAlias = Literal["mmHg", "kPa"]


def _encode_blood_pressure(
    *,
    pressures: tuple[SfloatField, SfloatField, SfloatField],
    unit: PressureUnit,
    timestamp: Timestamp | None,
    pulse_rate: SfloatField | None,
    user_id: int | None,
    status: int | None,
    reserved_flags: int,
    trailing: bytes,
) -> bytes:
    """Shared by 0x2A35 and 0x2A36, whose layouts are identical."""
    _check_flag_bits("reserved_flags", reserved_flags, BLOOD_PRESSURE_RFU_FLAGS)
    if unit not in ("mmHg", "kPa"):
        msg = f"unit must be 'mmHg' or 'kPa', got {unit!r}"
        raise ValueError(msg)
    flags = reserved_flags | (0x01 if unit == "kPa" else 0)
    names = ("systolic", "diastolic", "mean_arterial")
    body = [_sfloat_field(name, pressure) for name, pressure in zip(names, pressures, strict=True)]
    if timestamp is not None:
        flags |= 0x02
        body.append(_timestamp_bytes(timestamp))
    if pulse_rate is not None:
        flags |= 0x04
        body.append(_sfloat_field("pulse_rate", pulse_rate))
    if user_id is not None:
        flags |= 0x08
        body.append(_uint("user_id", user_id, 1))
    if status is not None:
        flags |= 0x10
        body.append(_uint("status", status, 2))
    return bytes([flags]) + b"".join(body) + bytes(trailing)


@dataclass(frozen=True, slots=True)
class BloodPressureFrame:
    """Blood Pressure Measurement (0x2A35); ``status`` is the raw uint16 (see
    :func:`blood_pressure_status`), ``user_id`` 255 means unknown user."""

    UUID16: ClassVar[int] = BLOOD_PRESSURE_MEASUREMENT

    systolic: SfloatField
    diastolic: SfloatField
    mean_arterial: SfloatField
    unit: PressureUnit = "mmHg"
    timestamp: Timestamp | None = None
    pulse_rate: SfloatField | None = None
    user_id: int | None = None
    status: int | None = None
    reserved_flags: int = 0
    trailing: bytes = b""
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = _encode_blood_pressure(
            pressures=(self.systolic, self.diastolic, self.mean_arterial),
            unit=self.unit,
            timestamp=self.timestamp,
            pulse_rate=self.pulse_rate,
            user_id=self.user_id,
            status=self.status,
            reserved_flags=self.reserved_flags,
            trailing=self.trailing,
        )
        object.__setattr__(self, "_encoded", encoded)

    def to_bytes(self) -> bytes:
        return self._encoded

    def __bytes__(self) -> bytes:
        return self._encoded


@dataclass(frozen=True, slots=True)
class IntermediateCuffPressureFrame:
    """Intermediate Cuff Pressure (0x2A36): the systolic slot carries the current cuff pressure.

    Diastolic and MAP are unused and sent as NaN; override them to check a receiver ignores them.
    """

    UUID16: ClassVar[int] = INTERMEDIATE_CUFF_PRESSURE

    cuff_pressure: SfloatField
    unit: PressureUnit = "mmHg"
    timestamp: Timestamp | None = None
    pulse_rate: SfloatField | None = None
    user_id: int | None = None
    status: int | None = None
    diastolic: SfloatField = Special.NAN
    mean_arterial: SfloatField = Special.NAN
    reserved_flags: int = 0
    trailing: bytes = b""
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = _encode_blood_pressure(
            pressures=(self.cuff_pressure, self.diastolic, self.mean_arterial),
            unit=self.unit,
            timestamp=self.timestamp,
            pulse_rate=self.pulse_rate,
            user_id=self.user_id,
            status=self.status,
            reserved_flags=self.reserved_flags,
            trailing=self.trailing,
        )
        object.__setattr__(self, "_encoded", encoded)

    def to_bytes(self) -> bytes:
        return self._encoded

    def __bytes__(self) -> bytes:
        return self._encoded


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
class TemperatureFrame:
    """Temperature Measurement (0x2A1C); ``temperature_type`` is any uint8 (0, 10+ reserved)."""

    UUID16: ClassVar[int] = TEMPERATURE_MEASUREMENT

    temperature: FloatField
    unit: Literal["C", "F"] = "C"
    timestamp: Timestamp | None = None
    temperature_type: int | None = None
    reserved_flags: int = 0
    trailing: bytes = b""
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_encoded", self._encode())

    def _encode(self) -> bytes:
        _check_flag_bits("reserved_flags", self.reserved_flags, TEMPERATURE_RFU_FLAGS)
        if self.unit not in ("C", "F"):
            msg = f"unit must be 'C' or 'F', got {self.unit!r}"
            raise ValueError(msg)
        flags = self.reserved_flags | (0x01 if self.unit == "F" else 0)
        body = [_float_field("temperature", self.temperature)]
        if self.timestamp is not None:
            flags |= 0x02
            body.append(_timestamp_bytes(self.timestamp))
        if self.temperature_type is not None:
            flags |= 0x04
            body.append(_uint("temperature_type", self.temperature_type, 1))
        return bytes([flags]) + b"".join(body) + bytes(self.trailing)

    def to_bytes(self) -> bytes:
        return self._encoded

    def __bytes__(self) -> bytes:
        return self._encoded


@dataclass(frozen=True, slots=True)
class IntermediateTemperatureFrame(TemperatureFrame):
    """Intermediate Temperature (0x2A1E): the Temperature Measurement layout, notified."""

    UUID16: ClassVar[int] = INTERMEDIATE_TEMPERATURE


class PlxMeasurementStatus(enum.IntFlag):
    """PLX Measurement Status bits (uint16); bits 0-4 are reserved."""

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


class PlxDeviceSensorStatus(enum.IntFlag):
    """PLX Device and Sensor Status bits (uint24); bits 16-23 are reserved."""

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


@dataclass(frozen=True, slots=True)
class PlxSpotCheckFrame:
    """PLX Spot-Check Measurement (0x2A5E); statuses are raw ints (reserved bits allowed).

    ``device_clock_not_set`` is flag bit 4 only; it adds no field.
    """

    UUID16: ClassVar[int] = PLX_SPOT_CHECK_MEASUREMENT

    spo2: SfloatField
    pulse_rate: SfloatField
    timestamp: Timestamp | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index: SfloatField | None = None
    device_clock_not_set: bool = False
    reserved_flags: int = 0
    trailing: bytes = b""
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_encoded", self._encode())

    def _encode(self) -> bytes:
        _check_flag_bits("reserved_flags", self.reserved_flags, PLX_SPOT_CHECK_RFU_FLAGS)
        flags = self.reserved_flags | (0x10 if self.device_clock_not_set else 0)
        body = [_sfloat_field("spo2", self.spo2), _sfloat_field("pulse_rate", self.pulse_rate)]
        if self.timestamp is not None:
            flags |= 0x01
            body.append(_timestamp_bytes(self.timestamp))
        if self.measurement_status is not None:
            flags |= 0x02
            body.append(_uint("measurement_status", self.measurement_status, 2))
        if self.device_sensor_status is not None:
            flags |= 0x04
            body.append(_uint("device_sensor_status", self.device_sensor_status, 3))
        if self.pulse_amplitude_index is not None:
            flags |= 0x08
            body.append(_sfloat_field("pulse_amplitude_index", self.pulse_amplitude_index))
        return bytes([flags]) + b"".join(body) + bytes(self.trailing)

    def to_bytes(self) -> bytes:
        return self._encoded

    def __bytes__(self) -> bytes:
        return self._encoded


@dataclass(frozen=True, slots=True)
class PlxContinuousFrame:
    """PLX Continuous Measurement (0x2A5F); ``fast``/``slow`` are (SpO2, PR) pairs."""

    UUID16: ClassVar[int] = PLX_CONTINUOUS_MEASUREMENT

    spo2: SfloatField
    pulse_rate: SfloatField
    fast: tuple[SfloatField, SfloatField] | None = None
    slow: tuple[SfloatField, SfloatField] | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index: SfloatField | None = None
    reserved_flags: int = 0
    trailing: bytes = b""
    _encoded: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_encoded", self._encode())

    def _encode(self) -> bytes:
        _check_flag_bits("reserved_flags", self.reserved_flags, PLX_CONTINUOUS_RFU_FLAGS)
        flags = self.reserved_flags
        body = [_sfloat_field("spo2", self.spo2), _sfloat_field("pulse_rate", self.pulse_rate)]
        if self.fast is not None:
            flags |= 0x01
            spo2_fast, pulse_rate_fast = self.fast
            body.append(_sfloat_field("spo2_fast", spo2_fast))
            body.append(_sfloat_field("pulse_rate_fast", pulse_rate_fast))
        if self.slow is not None:
            flags |= 0x02
            spo2_slow, pulse_rate_slow = self.slow
            body.append(_sfloat_field("spo2_slow", spo2_slow))
            body.append(_sfloat_field("pulse_rate_slow", pulse_rate_slow))
        if self.measurement_status is not None:
            flags |= 0x04
            body.append(_uint("measurement_status", self.measurement_status, 2))
        if self.device_sensor_status is not None:
            flags |= 0x08
            body.append(_uint("device_sensor_status", self.device_sensor_status, 3))
        if self.pulse_amplitude_index is not None:
            flags |= 0x10
            body.append(_sfloat_field("pulse_amplitude_index", self.pulse_amplitude_index))
        return bytes([flags]) + b"".join(body) + bytes(self.trailing)

    def to_bytes(self) -> bytes:
        return self._encoded

    def __bytes__(self) -> bytes:
        return self._encoded


def encode_battery_level(percent: int) -> bytes:
    """One uint8; 101-255 are reserved but can be sent to test the receiver."""
    return _uint("battery percent", percent, 1)


@dataclass(frozen=True, slots=True)
class BatteryLevelFrame:
    """Battery Level (0x2A19)."""

    UUID16: ClassVar[int] = BATTERY_LEVEL

    percent: int

    def __post_init__(self) -> None:
        encode_battery_level(self.percent)

    def to_bytes(self) -> bytes:
        return encode_battery_level(self.percent)

    def __bytes__(self) -> bytes:
        return self.to_bytes()
