"""The four simulated wearables: real GATT servers with the SIG services a real device exposes.

Each class declares its services and adds a few typed helpers that build frames with the
simulators' own encoder (never the production codec). Anything unusual (malformed bytes, odd
flags) goes through the inherited ``notify``/``indicate`` as raw bytes. A non-finite value passed
to a typed helper goes on air as the IEEE-11073 NaN, as a device sends when it has no valid value.

Every wearable counts what actually reached a central (``delivered``, per characteristic), so a
test can prove that nothing it sent was lost on the receiving side.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections import Counter
from typing import ClassVar

from simulators.gatt_encoder import (
    BatteryLevelFrame,
    BloodPressureFrame,
    Float32,
    HeartRateFrame,
    IntermediateCuffPressureFrame,
    IntermediateTemperatureFrame,
    PlxContinuousFrame,
    PlxSpotCheckFrame,
    Sfloat,
    Special,
    TemperatureFrame,
    TemperatureType,
    float_from_value,
    rr_1024_from_seconds,
    sfloat_from_value,
)
from simulators.radio import (
    CONNECTION_TIMEOUT,
    CharacteristicSpec,
    Properties,
    ServiceSpec,
    SimulatedPeripheral,
    VirtualRadio,
    battery_service,
    device_information_service,
    normalize_uuid,
)
from simulators.radio.peripheral import HciTransport

__all__ = [
    "BloodPressureCuff",
    "ChestStrap",
    "PulseOximeter",
    "Thermometer",
    "Wearable",
]

HEART_RATE_MEASUREMENT = 0x2A37
BODY_SENSOR_LOCATION = 0x2A38
HEART_RATE_CONTROL_POINT = 0x2A39
BLOOD_PRESSURE_MEASUREMENT = 0x2A35
INTERMEDIATE_CUFF_PRESSURE = 0x2A36
BLOOD_PRESSURE_FEATURE = 0x2A49
TEMPERATURE_MEASUREMENT = 0x2A1C
TEMPERATURE_TYPE = 0x2A1D
INTERMEDIATE_TEMPERATURE = 0x2A1E
MEASUREMENT_INTERVAL = 0x2A21
PLX_SPOT_CHECK = 0x2A5E
PLX_CONTINUOUS = 0x2A5F
PLX_FEATURES = 0x2A60
BATTERY_LEVEL = 0x2A19
_BLUETOOTH_BASE_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def _sfloat(value: float, decimals: int) -> Sfloat | Special:
    return sfloat_from_value(value, decimals) if math.isfinite(value) else Special.NAN


def _float(value: float, decimals: int) -> Float32 | Special:
    return float_from_value(value, decimals) if math.isfinite(value) else Special.NAN


def _uuid16(characteristic_uuid: str | int) -> int:
    normalized = normalize_uuid(characteristic_uuid)
    if not normalized.endswith(_BLUETOOTH_BASE_SUFFIX):
        raise ValueError(f"{normalized} is not a Bluetooth SIG characteristic")
    return int(normalized[:8], 16)


class Wearable(SimulatedPeripheral):
    """What every simulated wearable can do besides its own measurement."""

    battery_percent: int = 100

    def __init__(
        self,
        radio: VirtualRadio | HciTransport,
        *,
        address: str | None = None,
        name: str | None = None,
        advertising_interval_ms: float = 10.0,
        max_att_mtu: int = 517,
    ) -> None:
        super().__init__(
            radio,
            address=address,
            name=name,
            advertising_interval_ms=advertising_interval_ms,
            max_att_mtu=max_att_mtu,
        )
        self.delivered: Counter[int] = Counter()
        """Notifications sent and indications confirmed, by 16-bit characteristic UUID."""

    async def notify(self, characteristic_uuid: str | int, raw: bytes) -> bool:
        sent = await super().notify(characteristic_uuid, raw)
        if sent:
            self.delivered[_uuid16(characteristic_uuid)] += 1
        return sent

    async def indicate(self, characteristic_uuid: str | int, raw: bytes) -> bool:
        confirmed = await super().indicate(characteristic_uuid, raw)
        if confirmed:
            self.delivered[_uuid16(characteristic_uuid)] += 1
        return confirmed

    async def set_battery(self, percent: int) -> bool:
        """Drain (or charge) the battery: readable at once, notified if a central subscribed.

        Returns whether the notification went out (the new level is readable either way).
        """
        self.battery_percent = percent
        raw = BatteryLevelFrame(percent).to_bytes()
        self.set_value(BATTERY_LEVEL, raw)
        return await self.notify(BATTERY_LEVEL, raw)

    async def go_out_of_range(self) -> None:
        """The participant walks away: the link drops with reason 0x08 and advertising stops."""
        await self.stop_advertising()
        await self.disconnect(CONNECTION_TIMEOUT)

    async def come_back(self) -> None:
        """Back in range: advertise again so the central can reconnect."""
        await self.start_advertising()


def _common_services(model: str) -> tuple[ServiceSpec, ...]:
    return (battery_service(100), device_information_service("session-vitals-monitor", model))


class ChestStrap(Wearable):
    """A chest strap: Heart Rate Service with RR intervals and sensor contact."""

    local_name: ClassVar[str] = "SIM-HR"
    services: ClassVar[tuple[ServiceSpec, ...]] = (
        ServiceSpec(
            0x180D,
            (
                CharacteristicSpec(HEART_RATE_MEASUREMENT, Properties.NOTIFY),
                CharacteristicSpec(BODY_SENSOR_LOCATION, Properties.READ, bytes([1])),  # chest
                CharacteristicSpec(HEART_RATE_CONTROL_POINT, Properties.WRITE),
            ),
        ),
        *_common_services("Chest strap"),
    )

    async def send_heart_rate(
        self, bpm: float, *, contact: bool = True, rr_seconds: tuple[float, ...] = ()
    ) -> bool:
        """One Heart Rate Measurement notification; False if nobody listens."""
        frame = HeartRateFrame(
            bpm=max(0, round(bpm)),
            contact=contact,
            rr_1024=tuple(rr_1024_from_seconds(rr) for rr in rr_seconds) or None,
        )
        return await self.notify(HEART_RATE_MEASUREMENT, frame.to_bytes())


class BloodPressureCuff(Wearable):
    """An oscillometric cuff: cuff pressure notified while inflating, the result indicated."""

    local_name: ClassVar[str] = "SIM-BP"
    services: ClassVar[tuple[ServiceSpec, ...]] = (
        ServiceSpec(
            0x1810,
            (
                CharacteristicSpec(BLOOD_PRESSURE_MEASUREMENT, Properties.INDICATE),
                CharacteristicSpec(INTERMEDIATE_CUFF_PRESSURE, Properties.NOTIFY),
                # Feature bits: body movement, cuff fit, irregular pulse, pulse range, position.
                CharacteristicSpec(BLOOD_PRESSURE_FEATURE, Properties.READ, bytes([0x1F, 0x00])),
            ),
        ),
        *_common_services("Blood pressure cuff"),
    )

    async def inflate(self, pressures_mmhg: tuple[float, ...]) -> None:
        """Intermediate cuff pressure notifications, one per step of the inflation."""
        for pressure in pressures_mmhg:
            await self.send_cuff_pressure(pressure)
            await asyncio.sleep(0)

    async def send_cuff_pressure(self, pressure_mmhg: float) -> bool:
        """One Intermediate Cuff Pressure notification; False if nobody listens."""
        frame = IntermediateCuffPressureFrame(cuff_pressure=_sfloat(pressure_mmhg, 0))
        return await self.notify(INTERMEDIATE_CUFF_PRESSURE, frame.to_bytes())

    async def send_measurement(
        self,
        systolic: float,
        diastolic: float,
        *,
        pulse_rate: float | None = None,
        timestamp: dt.datetime | None = None,
        status: int | None = None,
    ) -> bool:
        """One Blood Pressure Measurement indication; True once the central confirmed it.

        A failed measurement is sent as NaN pressures (and pulse rate) with the cause in
        ``status`` (see ``gatt_encoder.blood_pressure_status``).
        """
        mean_arterial = diastolic + (systolic - diastolic) / 3
        frame = BloodPressureFrame(
            systolic=_sfloat(systolic, 0),
            diastolic=_sfloat(diastolic, 0),
            mean_arterial=_sfloat(mean_arterial, 0),
            timestamp=timestamp,
            pulse_rate=_sfloat(pulse_rate, 0) if pulse_rate is not None else None,
            status=status,
        )
        return await self.indicate(BLOOD_PRESSURE_MEASUREMENT, frame.to_bytes())


class Thermometer(Wearable):
    """A continuous core-body thermometer: final readings indicated, intermediate ones notified.

    It reports core-equivalent body temperature (Temperature Type "body, general"), the quantity
    the clinical thresholds are written for.
    """

    local_name: ClassVar[str] = "SIM-TEMP"
    services: ClassVar[tuple[ServiceSpec, ...]] = (
        ServiceSpec(
            0x1809,
            (
                CharacteristicSpec(TEMPERATURE_MEASUREMENT, Properties.INDICATE),
                CharacteristicSpec(
                    TEMPERATURE_TYPE, Properties.READ, bytes([TemperatureType.BODY])
                ),
                CharacteristicSpec(INTERMEDIATE_TEMPERATURE, Properties.NOTIFY),
                CharacteristicSpec(
                    MEASUREMENT_INTERVAL, Properties.READ, (60).to_bytes(2, "little")
                ),
            ),
        ),
        *_common_services("Thermometer"),
    )

    async def send_temperature(
        self, celsius: float, *, timestamp: dt.datetime | None = None
    ) -> bool:
        """One Temperature Measurement indication; True once confirmed."""
        frame = TemperatureFrame(
            temperature=_float(celsius, 2),
            timestamp=timestamp,
            temperature_type=TemperatureType.BODY,
        )
        return await self.indicate(TEMPERATURE_MEASUREMENT, frame.to_bytes())

    async def send_intermediate(self, celsius: float) -> bool:
        """One Intermediate Temperature notification."""
        frame = IntermediateTemperatureFrame(temperature=_float(celsius, 2))
        return await self.notify(INTERMEDIATE_TEMPERATURE, frame.to_bytes())


class PulseOximeter(Wearable):
    """A fingertip oximeter: continuous notifications and spot-check indications."""

    local_name: ClassVar[str] = "SIM-SPO2"
    services: ClassVar[tuple[ServiceSpec, ...]] = (
        ServiceSpec(
            0x1822,
            (
                CharacteristicSpec(PLX_SPOT_CHECK, Properties.INDICATE),
                CharacteristicSpec(PLX_CONTINUOUS, Properties.NOTIFY),
                # Features: measurement status and device & sensor status supported.
                CharacteristicSpec(PLX_FEATURES, Properties.READ, bytes([0x03, 0x00])),
            ),
        ),
        *_common_services("Pulse oximeter"),
    )

    async def send_continuous(
        self,
        spo2: float,
        pulse_rate: float,
        *,
        device_status: int | None = None,
        measurement_status: int | None = None,
    ) -> bool:
        """One PLX Continuous Measurement notification.

        ``device_status`` is the raw Device and Sensor Status (``PlxDeviceSensorStatus``), e.g.
        "sensor unconnected to user" while the finger is out; ``measurement_status`` the raw
        ``PlxMeasurementStatus``.
        """
        frame = PlxContinuousFrame(
            spo2=_sfloat(spo2, 0),
            pulse_rate=_sfloat(pulse_rate, 0),
            measurement_status=measurement_status,
            device_sensor_status=device_status,
        )
        return await self.notify(PLX_CONTINUOUS, frame.to_bytes())

    async def send_spot_check(
        self, spo2: float, pulse_rate: float, *, timestamp: dt.datetime | None = None
    ) -> bool:
        """One PLX Spot-Check Measurement indication."""
        frame = PlxSpotCheckFrame(
            spo2=_sfloat(spo2, 0),
            pulse_rate=_sfloat(pulse_rate, 0),
            timestamp=timestamp,
        )
        return await self.indicate(PLX_SPOT_CHECK, frame.to_bytes())
