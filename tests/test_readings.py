"""Decoded GATT records become readings in canonical units, with quality flags and device time."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from monitor.devices import gatt
from monitor.devices.readings import (
    DeviceIdentity,
    UnknownCharacteristicError,
    decode_notification,
)
from monitor.models import Parameter, QualityFlag, Reading, ReadingKind

IDENTITY = DeviceIdentity(
    session="S-1", participant="P-001", device="dev-1", timezone=ZoneInfo("Europe/Zurich")
)
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def decode(characteristic: int, hex_payload: str) -> Reading:
    return decode_notification(characteristic, bytes.fromhex(hex_payload), IDENTITY, NOW)


def test_heart_rate_with_contact() -> None:
    reading = decode(gatt.HEART_RATE_MEASUREMENT, "06 48")
    assert reading.kind is ReadingKind.HEART_RATE
    assert reading.values == {Parameter.HEART_RATE: 72.0}
    assert reading.usable
    assert (reading.session, reading.participant, reading.device) == ("S-1", "P-001", "dev-1")


def test_heart_rate_without_contact_is_not_evidence() -> None:
    reading = decode(gatt.HEART_RATE_MEASUREMENT, "04 48")
    assert QualityFlag.SENSOR_CONTACT_LOST in reading.quality
    assert not reading.usable


def test_heart_rate_zero_is_unusable_not_dropped() -> None:
    reading = decode(gatt.HEART_RATE_MEASUREMENT, "00 00")
    assert reading.values == {Parameter.HEART_RATE: None}
    assert QualityFlag.VALUE_UNUSABLE in reading.quality


def test_blood_pressure_in_kpa_becomes_mmhg() -> None:
    reading = decode(gatt.BLOOD_PRESSURE_MEASUREMENT, "01 A0 F0 6B F0 7D F0")
    assert reading.values[Parameter.SYSTOLIC_BP] == pytest.approx(120.01, abs=0.01)
    assert reading.values[Parameter.DIASTOLIC_BP] == pytest.approx(80.26, abs=0.01)


def test_blood_pressure_status_becomes_quality_flags() -> None:
    reading = decode(gatt.BLOOD_PRESSURE_MEASUREMENT, "10 78 00 50 00 5D 00 32 00")
    assert reading.quality == {
        QualityFlag.IMPROPER_CUFF_FIT,
        QualityFlag.PULSE_RATE_OUT_OF_RANGE,
        QualityFlag.IMPROPER_POSITION,
    }
    assert not reading.usable


def test_device_time_is_read_in_the_site_zone() -> None:
    payload = "02 78 00 50 00 5D 00 E8 07 03 0F 08 1E 05"  # 2024-03-15 08:30:05 local
    reading = decode(gatt.BLOOD_PRESSURE_MEASUREMENT, payload)
    assert reading.measured_at == dt.datetime(2024, 3, 15, 7, 30, 5, tzinfo=dt.UTC)


def test_unknown_device_date_is_no_device_time() -> None:
    reading = decode(gatt.BLOOD_PRESSURE_MEASUREMENT, "02 78 00 50 00 5D 00 00 00 00 00 0C 00 00")
    assert reading.measured_at is None


def test_cuff_inflation_is_context_not_evidence() -> None:
    reading = decode(gatt.INTERMEDIATE_CUFF_PRESSURE, "00 96 00 FF 07 FF 07")
    assert reading.kind is ReadingKind.CUFF_PRESSURE
    assert reading.values == {Parameter.CUFF_PRESSURE: 150.0}
    assert QualityFlag.VALUE_UNUSABLE not in reading.quality
    assert not reading.usable


def test_fahrenheit_becomes_celsius() -> None:
    reading = decode(gatt.TEMPERATURE_MEASUREMENT, "01 DA 03 00 FF")
    assert reading.values[Parameter.TEMPERATURE] == pytest.approx(37.0)


def test_nan_temperature_is_kept_as_unusable() -> None:
    reading = decode(gatt.TEMPERATURE_MEASUREMENT, "00 FF FF 7F 00")
    assert reading.values == {Parameter.TEMPERATURE: None}
    assert QualityFlag.VALUE_UNUSABLE in reading.quality


def test_intermediate_temperature_is_its_own_kind() -> None:
    reading = decode(gatt.INTERMEDIATE_TEMPERATURE, "00 6E 01 00 FF")
    assert reading.kind is ReadingKind.INTERMEDIATE_TEMPERATURE
    assert not reading.usable


def test_spo2_continuous() -> None:
    reading = decode(gatt.PLX_CONTINUOUS_MEASUREMENT, "00 62 00 48 00")
    assert reading.values == {Parameter.SPO2: 98.0, Parameter.PULSE_RATE: 72.0}
    assert reading.usable


def test_spo2_sensor_off_finger_is_contact_lost() -> None:
    status = gatt.PlxDeviceSensorStatus.SENSOR_UNCONNECTED_TO_USER
    payload = bytes([0x08, 0x62, 0x00, 0x48, 0x00]) + int(status).to_bytes(3, "little")
    reading = decode_notification(gatt.PLX_CONTINUOUS_MEASUREMENT, payload, IDENTITY, NOW)
    assert QualityFlag.SENSOR_CONTACT_LOST in reading.quality


def test_spot_check_with_unset_clock_has_no_device_time() -> None:
    reading = decode(gatt.PLX_SPOT_CHECK_MEASUREMENT, "11 61 00 48 00 E8 07 03 0F 08 1E 05")
    assert reading.measured_at is None
    assert QualityFlag.DEVICE_CLOCK_NOT_SET in reading.quality


def test_battery() -> None:
    assert decode(gatt.BATTERY_LEVEL, "57").values == {Parameter.BATTERY: 87.0}
    reserved = decode(gatt.BATTERY_LEVEL, "C8")
    assert reserved.values == {Parameter.BATTERY: None}


def test_malformed_payload_raises_the_codec_error() -> None:
    with pytest.raises(gatt.GattParseError, match="0x2A37"):
        decode(gatt.HEART_RATE_MEASUREMENT, "")


def test_unknown_characteristic() -> None:
    with pytest.raises(UnknownCharacteristicError, match="0x2A00"):
        decode(0x2A00, "00")
