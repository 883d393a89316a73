"""Turn decoded GATT records into normalised readings: canonical units, quality flags, device time.

Pure: the connector hands in the payload, the characteristic and when it arrived; what comes out
is the same :class:`~monitor.models.Reading` that detection, MQTT and storage use. A special
IEEE-11073 value becomes ``None`` with ``value_unusable``, so the reading is kept and counted.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from monitor.devices import gatt
from monitor.models import DeviceKind, Parameter, QualityFlag, Reading, ReadingKind

__all__ = [
    "CHARACTERISTICS_BY_KIND",
    "DeviceIdentity",
    "UnknownCharacteristicError",
    "decode_notification",
]

MMHG_PER_KPA = 7.500615758  # 1 kPa in mmHg (BIPM: 1 mmHg = 133.322387415 Pa)

CHARACTERISTICS_BY_KIND: Mapping[DeviceKind, tuple[int, ...]] = {
    DeviceKind.HEART_RATE: (gatt.HEART_RATE_MEASUREMENT,),
    DeviceKind.BLOOD_PRESSURE: (gatt.BLOOD_PRESSURE_MEASUREMENT, gatt.INTERMEDIATE_CUFF_PRESSURE),
    DeviceKind.THERMOMETER: (gatt.TEMPERATURE_MEASUREMENT, gatt.INTERMEDIATE_TEMPERATURE),
    DeviceKind.PULSE_OXIMETER: (gatt.PLX_CONTINUOUS_MEASUREMENT, gatt.PLX_SPOT_CHECK_MEASUREMENT),
}
"""Measurement characteristics the connector subscribes to per device kind (battery is common)."""


class UnknownCharacteristicError(ValueError):
    """A notification from a characteristic we never subscribed to."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who a device belongs to, and the zone its clock runs in (device timestamps carry none)."""

    session: str
    participant: str
    device: str
    timezone: ZoneInfo


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _mmhg(value: float, unit: str) -> float:
    return value * MMHG_PER_KPA if unit == "kPa" else value


def _device_time(
    timestamp: dt.datetime | None, identity: DeviceIdentity, *, clock_not_set: bool = False
) -> dt.datetime | None:
    if timestamp is None or clock_not_set:
        return None
    return timestamp.replace(tzinfo=identity.timezone).astimezone(dt.UTC)


def _blood_pressure_quality(status: gatt.BloodPressureStatus | None) -> set[QualityFlag]:
    if status is None:
        return set()
    flags = set()
    if status.body_movement:
        flags.add(QualityFlag.BODY_MOVEMENT)
    if status.cuff_too_loose:
        flags.add(QualityFlag.IMPROPER_CUFF_FIT)
    if status.irregular_pulse:
        flags.add(QualityFlag.IRREGULAR_PULSE)
    if status.improper_position:
        flags.add(QualityFlag.IMPROPER_POSITION)
    if status.pulse_rate_range is not gatt.PulseRateRange.IN_RANGE:
        flags.add(QualityFlag.PULSE_RATE_OUT_OF_RANGE)
    return flags


_PLX_CONTACT_LOST = (
    gatt.PlxDeviceSensorStatus.SENSOR_UNCONNECTED_TO_USER
    | gatt.PlxDeviceSensorStatus.SENSOR_DISPLACED
    | gatt.PlxDeviceSensorStatus.SENSOR_DISCONNECTED
)
_PLX_POOR_SIGNAL = (
    gatt.PlxDeviceSensorStatus.INADEQUATE_SIGNAL
    | gatt.PlxDeviceSensorStatus.POOR_SIGNAL
    | gatt.PlxDeviceSensorStatus.LOW_PERFUSION
    | gatt.PlxDeviceSensorStatus.ERRATIC_SIGNAL
    | gatt.PlxDeviceSensorStatus.NON_PULSATILE_SIGNAL
    | gatt.PlxDeviceSensorStatus.QUESTIONABLE_PULSE
    | gatt.PlxDeviceSensorStatus.SENSOR_INTERFERENCE
)
_PLX_UNUSABLE_DEVICE = (
    gatt.PlxDeviceSensorStatus.EQUIPMENT_MALFUNCTION
    | gatt.PlxDeviceSensorStatus.SENSOR_MALFUNCTIONING
    | gatt.PlxDeviceSensorStatus.UNKNOWN_SENSOR_CONNECTED
)
_PLX_UNUSABLE_MEASUREMENT = (
    gatt.PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE
    | gatt.PlxMeasurementStatus.INVALID_MEASUREMENT
    | gatt.PlxMeasurementStatus.CALIBRATION_ONGOING
)


def _plx_quality(
    measurement: gatt.PlxMeasurementStatus | None, device: gatt.PlxDeviceSensorStatus | None
) -> set[QualityFlag]:
    flags = set()
    if measurement is not None:
        if measurement & _PLX_UNUSABLE_MEASUREMENT:
            flags.add(QualityFlag.VALUE_UNUSABLE)
        if measurement & gatt.PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT:
            flags.add(QualityFlag.QUESTIONABLE_MEASUREMENT)
    if device is not None:
        if device & _PLX_CONTACT_LOST:
            flags.add(QualityFlag.SENSOR_CONTACT_LOST)
        if device & _PLX_POOR_SIGNAL:
            flags.add(QualityFlag.SIGNAL_QUALITY_LOW)
        if device & _PLX_UNUSABLE_DEVICE:
            flags.add(QualityFlag.VALUE_UNUSABLE)
    return flags


def _reading(
    identity: DeviceIdentity,
    kind: ReadingKind,
    values: dict[Parameter, float | None],
    received_at: dt.datetime,
    quality: set[QualityFlag],
    *,
    measured_at: dt.datetime | None = None,
) -> Reading:
    clean = {parameter: _finite_or_none(value) for parameter, value in values.items()}
    if any(value is None for value in clean.values()):
        quality.add(QualityFlag.VALUE_UNUSABLE)
    return Reading(
        session=identity.session,
        participant=identity.participant,
        device=identity.device,
        kind=kind,
        values=clean,
        measured_at=measured_at,
        received_at=received_at,
        quality=frozenset(quality),
    )


def _heart_rate(data: bytes, identity: DeviceIdentity, received_at: dt.datetime) -> Reading:
    record = gatt.parse_heart_rate(data)
    quality = set()
    if record.sensor_contact is False:
        quality.add(QualityFlag.SENSOR_CONTACT_LOST)
    bpm = float(record.bpm) if record.bpm > 0 else None  # straps send 0 when they have no beat
    return _reading(
        identity, ReadingKind.HEART_RATE, {Parameter.HEART_RATE: bpm}, received_at, quality
    )


def _blood_pressure(data: bytes, identity: DeviceIdentity, received_at: dt.datetime) -> Reading:
    record = gatt.parse_blood_pressure(data)
    values: dict[Parameter, float | None] = {
        Parameter.SYSTOLIC_BP: _mmhg(record.systolic, record.unit),
        Parameter.DIASTOLIC_BP: _mmhg(record.diastolic, record.unit),
        Parameter.MEAN_ARTERIAL_BP: _mmhg(record.mean_arterial, record.unit),
    }
    if record.pulse_rate is not None:
        values[Parameter.PULSE_RATE] = record.pulse_rate
    return _reading(
        identity,
        ReadingKind.BLOOD_PRESSURE,
        values,
        received_at,
        _blood_pressure_quality(record.status),
        measured_at=_device_time(record.timestamp, identity),
    )


def _cuff_pressure(data: bytes, identity: DeviceIdentity, received_at: dt.datetime) -> Reading:
    record = gatt.parse_intermediate_cuff_pressure(data)
    values: dict[Parameter, float | None] = {
        Parameter.CUFF_PRESSURE: _mmhg(record.cuff_pressure, record.unit)
    }
    if record.pulse_rate is not None:
        values[Parameter.PULSE_RATE] = record.pulse_rate
    return _reading(
        identity,
        ReadingKind.CUFF_PRESSURE,
        values,
        received_at,
        _blood_pressure_quality(record.status),
        measured_at=_device_time(record.timestamp, identity),
    )


def _temperature_reading(
    record: gatt.TemperatureMeasurement,
    kind: ReadingKind,
    identity: DeviceIdentity,
    received_at: dt.datetime,
) -> Reading:
    return _reading(
        identity,
        kind,
        {Parameter.TEMPERATURE: record.celsius},
        received_at,
        set(),
        measured_at=_device_time(record.timestamp, identity),
    )


def _temperature(data: bytes, identity: DeviceIdentity, received_at: dt.datetime) -> Reading:
    record = gatt.parse_temperature(data)
    return _temperature_reading(record, ReadingKind.TEMPERATURE, identity, received_at)


def _intermediate_temperature(
    data: bytes, identity: DeviceIdentity, received_at: dt.datetime
) -> Reading:
    record = gatt.parse_intermediate_temperature(data)
    return _temperature_reading(record, ReadingKind.INTERMEDIATE_TEMPERATURE, identity, received_at)


def _plx_continuous(data: bytes, identity: DeviceIdentity, received_at: dt.datetime) -> Reading:
    record = gatt.parse_plx_continuous(data)
    return _reading(
        identity,
        ReadingKind.SPO2,
        {Parameter.SPO2: record.spo2, Parameter.PULSE_RATE: record.pulse_rate},
        received_at,
        _plx_quality(record.measurement_status, record.device_sensor_status),
    )


def _plx_spot_check(data: bytes, identity: DeviceIdentity, received_at: dt.datetime) -> Reading:
    record = gatt.parse_plx_spot_check(data)
    quality = _plx_quality(record.measurement_status, record.device_sensor_status)
    if record.device_clock_not_set:
        quality.add(QualityFlag.DEVICE_CLOCK_NOT_SET)
    return _reading(
        identity,
        ReadingKind.SPO2,
        {Parameter.SPO2: record.spo2, Parameter.PULSE_RATE: record.pulse_rate},
        received_at,
        quality,
        measured_at=_device_time(
            record.timestamp, identity, clock_not_set=record.device_clock_not_set
        ),
    )


def _battery(data: bytes, identity: DeviceIdentity, received_at: dt.datetime) -> Reading:
    record = gatt.parse_battery_level(data)
    percent = float(record.percent) if not record.reserved else None
    return _reading(identity, ReadingKind.BATTERY, {Parameter.BATTERY: percent}, received_at, set())


_DECODERS: Mapping[int, Callable[[bytes, DeviceIdentity, dt.datetime], Reading]] = {
    gatt.HEART_RATE_MEASUREMENT: _heart_rate,
    gatt.BLOOD_PRESSURE_MEASUREMENT: _blood_pressure,
    gatt.INTERMEDIATE_CUFF_PRESSURE: _cuff_pressure,
    gatt.TEMPERATURE_MEASUREMENT: _temperature,
    gatt.INTERMEDIATE_TEMPERATURE: _intermediate_temperature,
    gatt.PLX_CONTINUOUS_MEASUREMENT: _plx_continuous,
    gatt.PLX_SPOT_CHECK_MEASUREMENT: _plx_spot_check,
    gatt.BATTERY_LEVEL: _battery,
}


def decode_notification(
    characteristic: int, data: bytes, identity: DeviceIdentity, received_at: dt.datetime
) -> Reading:
    """Decode one notification or indication into a reading.

    Raises :class:`~monitor.devices.gatt.GattParseError` for a malformed payload and
    :class:`UnknownCharacteristicError` for a characteristic this service does not read.
    """
    try:
        decoder = _DECODERS[characteristic]
    except KeyError:
        msg = f"no decoder for characteristic 0x{characteristic:04X}"
        raise UnknownCharacteristicError(msg) from None
    return decoder(bytes(data), identity, received_at)
