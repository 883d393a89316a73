"""The four simulated wearables: real GATT servers with the SIG services a real device exposes.

Each class declares its services and adds a few typed helpers that build frames with the
simulators' own encoder (never the production codec). Anything unusual (malformed bytes, odd
flags) goes through the inherited ``notify``/``indicate`` as raw bytes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import ClassVar

from simulators.gatt_encoder import (
    BatteryLevelFrame,
    BloodPressureFrame,
    HeartRateFrame,
    IntermediateCuffPressureFrame,
    IntermediateTemperatureFrame,
    PlxContinuousFrame,
    PlxSpotCheckFrame,
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
    battery_service,
    device_information_service,
)

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


class Wearable(SimulatedPeripheral):
    """What every simulated wearable can do besides its own measurement."""

    battery_percent: int = 100

    async def set_battery(self, percent: int) -> None:
        """Drain (or charge) the battery: readable at once, notified if a central subscribed."""
        self.battery_percent = percent
        raw = BatteryLevelFrame(percent).to_bytes()
        self.set_value(BATTERY_LEVEL, raw)
        await self.notify(BATTERY_LEVEL, raw)

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
            frame = IntermediateCuffPressureFrame(cuff_pressure=sfloat_from_value(pressure, 0))
            await self.notify(INTERMEDIATE_CUFF_PRESSURE, frame.to_bytes())
            await asyncio.sleep(0)

    async def send_measurement(
        self,
        systolic: float,
        diastolic: float,
        *,
        pulse_rate: float | None = None,
        timestamp: dt.datetime | None = None,
        status: int | None = None,
    ) -> bool:
        """One Blood Pressure Measurement indication; True once the central confirmed it."""
        mean_arterial = diastolic + (systolic - diastolic) / 3
        frame = BloodPressureFrame(
            systolic=sfloat_from_value(systolic, 0),
            diastolic=sfloat_from_value(diastolic, 0),
            mean_arterial=sfloat_from_value(mean_arterial, 0),
            timestamp=timestamp,
            pulse_rate=sfloat_from_value(pulse_rate, 0) if pulse_rate is not None else None,
            status=status,
        )
        return await self.indicate(BLOOD_PRESSURE_MEASUREMENT, frame.to_bytes())


class Thermometer(Wearable):
    """A continuous thermometer: final readings indicated, intermediate ones notified."""

    local_name: ClassVar[str] = "SIM-TEMP"
    services: ClassVar[tuple[ServiceSpec, ...]] = (
        ServiceSpec(
            0x1809,
            (
                CharacteristicSpec(TEMPERATURE_MEASUREMENT, Properties.INDICATE),
                CharacteristicSpec(
                    TEMPERATURE_TYPE, Properties.READ, bytes([TemperatureType.ARMPIT])
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
            temperature=float_from_value(celsius, 2),
            timestamp=timestamp,
            temperature_type=TemperatureType.ARMPIT,
        )
        return await self.indicate(TEMPERATURE_MEASUREMENT, frame.to_bytes())

    async def send_intermediate(self, celsius: float) -> bool:
        """One Intermediate Temperature notification."""
        frame = IntermediateTemperatureFrame(temperature=float_from_value(celsius, 2))
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
        self, spo2: float, pulse_rate: float, *, device_status: int | None = None
    ) -> bool:
        """One PLX Continuous Measurement notification."""
        frame = PlxContinuousFrame(
            spo2=sfloat_from_value(spo2, 0),
            pulse_rate=sfloat_from_value(pulse_rate, 0),
            device_sensor_status=device_status,
        )
        return await self.notify(PLX_CONTINUOUS, frame.to_bytes())

    async def send_spot_check(
        self, spo2: float, pulse_rate: float, *, timestamp: dt.datetime | None = None
    ) -> bool:
        """One PLX Spot-Check Measurement indication."""
        frame = PlxSpotCheckFrame(
            spo2=sfloat_from_value(spo2, 0),
            pulse_rate=sfloat_from_value(pulse_rate, 0),
            timestamp=timestamp,
        )
        return await self.indicate(PLX_SPOT_CHECK, frame.to_bytes())
