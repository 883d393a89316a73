"""A scenario's wearables, driven by the session physiology on the injectable clock.

:class:`SimulatedSession` creates one wearable per (participant, device kind), named
``device_name(kind, code)`` (``SIM-HR-P-001``), and runs one behaviour task per wearable. A
behaviour walks session time on the clock (``clock.sleep`` only, so x60 runs an hour in a minute),
samples the participant's true vitals, applies the artefact timeline and sends what a real device
of its kind would send. It sends only while a central is subscribed, and records every reading that
reached the central (``log``) next to the per-characteristic counts (``delivered``), so a test can
match what a receiver decoded against what was sent and prove that nothing was lost.

The wearables add no random measurement noise: the physiology already carries the variability of
a live signal, and the ground truth is defined on the true values. What a wearable sends is the
true value at the sample's session time, quantised as on air (whole bpm, mmHg and %, 0.01 degC),
plus any motion spike. Device timestamps are the clock's time of that session instant, written in
``device_timezone`` (UTC unless told otherwise), as a device whose clock was set by its app.
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
import heapq
import logging
import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Final, Generic, Self, TypeAlias, TypeVar

import numpy as np

from monitor.clock import Clock
from monitor.models import DeviceKind, Parameter, QualityFlag
from simulators.gatt_encoder import (
    BATTERY_LEVEL,
    BLOOD_PRESSURE_MEASUREMENT,
    HEART_RATE_MEASUREMENT,
    INTERMEDIATE_CUFF_PRESSURE,
    INTERMEDIATE_TEMPERATURE,
    PLX_CONTINUOUS_MEASUREMENT,
    TEMPERATURE_MEASUREMENT,
    PlxDeviceSensorStatus,
    PlxMeasurementStatus,
    blood_pressure_status,
)
from simulators.physiology import ArtefactKind, Vitals, VitalsSeries
from simulators.radio import VirtualRadio
from simulators.radio.peripheral import HciTransport
from simulators.scenario import Scenario, SessionModel, SessionTime, device_name
from simulators.traces import (
    CUFF_INFLATION_STEPS,
    CUFF_OVERPRESSURE_MMHG,
    CUFF_RESULT_AFTER_S,
    THERMOMETER_INTERMEDIATE_PERIOD_S,
)
from simulators.traces import on_air as _on_air
from simulators.wearables import BloodPressureCuff, ChestStrap, PulseOximeter, Thermometer, Wearable

__all__ = [
    "CUFF_INFLATION_STEPS",
    "CUFF_OVERPRESSURE_MMHG",
    "CUFF_RESULT_AFTER_S",
    "MEASUREMENT_CHARACTERISTIC",
    "THERMOMETER_INTERMEDIATE_PERIOD_S",
    "WEARABLE_CLASSES",
    "Delivery",
    "SimulatedSession",
    "WearableKey",
]

log = logging.getLogger(__name__)

WearableKey: TypeAlias = tuple[str, DeviceKind]
"""(participant code, device kind): one wearable of the session."""

WEARABLE_CLASSES: Final[Mapping[DeviceKind, type[Wearable]]] = MappingProxyType(
    {
        DeviceKind.HEART_RATE: ChestStrap,
        DeviceKind.BLOOD_PRESSURE: BloodPressureCuff,
        DeviceKind.THERMOMETER: Thermometer,
        DeviceKind.PULSE_OXIMETER: PulseOximeter,
    }
)

MEASUREMENT_CHARACTERISTIC: Final[Mapping[DeviceKind, int]] = MappingProxyType(
    {
        DeviceKind.HEART_RATE: HEART_RATE_MEASUREMENT,
        DeviceKind.BLOOD_PRESSURE: BLOOD_PRESSURE_MEASUREMENT,
        DeviceKind.THERMOMETER: TEMPERATURE_MEASUREMENT,
        DeviceKind.PULSE_OXIMETER: PLX_CONTINUOUS_MEASUREMENT,
    }
)
"""The characteristic a wearable's main measurement goes out on."""

_MAX_RR_PER_FRAME: Final = 8  # what a frame holds comfortably; straps drop the oldest beyond it


@dataclass(frozen=True, slots=True)
class Delivery:
    """One reading a wearable delivered: notification sent, or indication confirmed.

    ``values`` and ``quality`` say what the frame carries in the receiver's vocabulary: values as
    quantised on air, ``None`` where the device sent NaN (which also implies ``value_unusable``),
    and the quality its status bits express. ``measured_at`` is the device timestamp, if the frame
    has one (whole seconds, in the device's time zone).
    """

    t_s: float
    characteristic: int
    values: Mapping[Parameter, float | None]
    quality: frozenset[QualityFlag] = frozenset()
    measured_at: dt.datetime | None = None


def _delivery(
    t_s: float,
    characteristic: int,
    values: Mapping[Parameter, float],
    quality: frozenset[QualityFlag] = frozenset(),
    measured_at: dt.datetime | None = None,
) -> Delivery:
    clean = {
        parameter: value if math.isfinite(value) else None for parameter, value in values.items()
    }
    if any(value is None for value in clean.values()):
        quality |= {QualityFlag.VALUE_UNUSABLE}
    return Delivery(t_s, characteristic, clean, quality, measured_at)


class _Sampler:
    """True vitals on a regular grid of session times, computed a block of samples at a time.

    One vectorised physiology call per block is what keeps twenty 1 Hz wearables at x60 cheap.
    """

    BLOCK: ClassVar[int] = 64

    def __init__(self, model: SessionModel, period_s: float) -> None:
        self._model = model
        self._period_s = period_s
        self._block = -1
        self._series: VitalsSeries | None = None

    def at(self, index: int) -> Vitals:
        """Vitals at session time ``index * period_s``."""
        block, offset = divmod(index, self.BLOCK)
        if block != self._block or self._series is None:
            times = (block * self.BLOCK + np.arange(self.BLOCK, dtype=np.float64)) * self._period_s
            self._series = self._model.vitals_array(times)
            self._block = block
        return self._series.at(offset)


Step: TypeAlias = tuple[float, Callable[[float], Awaitable[None]] | None]
"""A session time and what happens then; ``None`` only brings the device state up to date."""

W = TypeVar("W", bound=Wearable)


class _Behaviour(abc.ABC, Generic[W]):
    """What all wearables share: the walk through session time, battery and link artefacts."""

    def __init__(
        self, session: SimulatedSession, model: SessionModel, kind: DeviceKind, wearable: W
    ) -> None:
        self.session = session
        self.model = model
        self.kind = kind
        self.wearable = wearable
        self.log = session.log[(model.code, kind)]
        self.settings = model.spec.settings
        self.in_contact = True
        self.notifying = True
        self._in_range = True
        self._battery = wearable.battery_percent
        # Spikes from the window start on hit the first sample; earlier ones hit earlier samples.
        self._previous_sample_s = math.nextafter(session.start_s, -math.inf)

    async def run(self) -> None:
        """Walk the steps up to the end of the session window."""
        steps = heapq.merge(self._state_changes(), self.steps(), key=itemgetter(0))
        for t_s, action in steps:
            if t_s >= self.session.end_s:
                return
            await self._until(t_s)
            await self._sync(t_s)
            if action is not None:
                await action(t_s)

    @abc.abstractmethod
    def steps(self) -> Iterator[Step]:
        """The device's own schedule (measurements), in time order, from the window start."""

    def _state_changes(self) -> Iterator[Step]:
        """Battery changes and disconnects take effect on time, even between measurements."""
        yield self.session.start_s, None
        times: set[float] = set()
        for event in self.model.artefacts:
            if event.device is not self.kind:
                continue
            if event.kind is ArtefactKind.BATTERY_LEVEL:
                times.add(event.t_s)
            elif event.kind is ArtefactKind.DISCONNECT:
                times.update((event.t_s, event.end_s))
        for t_s in sorted(times):
            if t_s > self.session.start_s:
                yield t_s, None

    def grid(self, period_s: float) -> Iterator[tuple[int, float]]:
        """Sample indices and times ``k * period_s`` from the window start on."""
        index = math.ceil(self.session.start_s / period_s - 1e-9)
        while True:
            yield index, index * period_s
            index += 1

    async def _until(self, t_s: float) -> None:
        delay = t_s - self.session.now_s()
        if delay > 0:
            await self.session.clock.sleep(delay)
        else:
            await asyncio.sleep(0)  # catching up: still let the receiver run

    async def _sync(self, t_s: float) -> None:
        state = self.model.device_state(self.kind, t_s)
        self.in_contact, self.notifying = state.in_contact, state.notifying
        battery = round(state.battery_percent)
        if battery != self._battery and state.notifying:
            self._battery = battery
            if await self.wearable.set_battery(battery):
                self.record(t_s, BATTERY_LEVEL, {Parameter.BATTERY: float(battery)})
        if state.connected != self._in_range:
            self._in_range = state.connected
            change = (
                self.wearable.come_back() if state.connected else self.wearable.go_out_of_range()
            )
            await self.session.uninterrupted(change)

    def listening(self, characteristic: int) -> bool:
        """Whether a reading sent now can arrive: a central subscribed and no dropout."""
        return self.notifying and self.wearable.subscribed(characteristic).is_set()

    def motion_spike(self, t_s: float) -> float:
        """Sum of the motion spikes since the previous sample (each hits one sample only)."""
        after = math.nextafter(self._previous_sample_s, math.inf)
        self._previous_sample_s = t_s
        events = self.model.artefacts_between(after, math.nextafter(t_s, math.inf), self.kind)
        return sum(
            event.magnitude or 0.0 for event in events if event.kind is ArtefactKind.MOTION_SPIKE
        )

    def device_time(self, t_s: float) -> dt.datetime:
        """The device clock at session time ``t_s``, to the second, as a Date Time field sends."""
        return (
            self.session.wall_time(t_s)
            .astimezone(self.session.device_timezone)
            .replace(microsecond=0)
        )

    def record(
        self,
        t_s: float,
        characteristic: int,
        values: Mapping[Parameter, float],
        quality: frozenset[QualityFlag] = frozenset(),
        measured_at: dt.datetime | None = None,
    ) -> None:
        self.log.append(_delivery(t_s, characteristic, values, quality, measured_at))

    async def indicated(self, indication: Awaitable[bool]) -> bool:
        """An indication's outcome; a central that never confirms costs a reading, not the task."""
        try:
            return await indication
        except TimeoutError:
            log.warning("%s: indication not confirmed in time", self.wearable.name)
            return False


class _ChestStrapBehaviour(_Behaviour[ChestStrap]):
    """One heart-rate notification per period, with the RR intervals of the beats in it.

    Without skin contact the strap keeps notifying with the contact bit cleared and no RR
    intervals (it detects no beats), as real straps do.
    """

    def __init__(
        self, session: SimulatedSession, model: SessionModel, kind: DeviceKind, wearable: ChestStrap
    ) -> None:
        super().__init__(session, model, kind, wearable)
        self.period_s = self.settings.heart_rate_period_s
        self.sampler = _Sampler(model, self.period_s)
        self.beats_pending = 0.0

    def steps(self) -> Iterator[Step]:
        for index, t_s in self.grid(self.period_s):
            yield t_s, partial(self.sample, index)

    async def sample(self, index: int, t_s: float) -> None:
        spike = self.motion_spike(t_s)
        if not self.listening(HEART_RATE_MEASUREMENT):
            return
        bpm = max(0, round(self.sampler.at(index).heart_rate_bpm + spike))
        rr: tuple[float, ...] = ()
        if self.in_contact and bpm > 0:
            self.beats_pending += self.period_s * bpm / 60.0
            beats = int(self.beats_pending)
            self.beats_pending -= beats
            rr = (60.0 / bpm,) * min(beats, _MAX_RR_PER_FRAME)
        if await self.wearable.send_heart_rate(bpm, contact=self.in_contact, rr_seconds=rr):
            quality = (
                frozenset() if self.in_contact else frozenset({QualityFlag.SENSOR_CONTACT_LOST})
            )
            values = {Parameter.HEART_RATE: float(bpm) if bpm > 0 else math.nan}
            self.record(t_s, HEART_RATE_MEASUREMENT, values, quality)


class _CuffBehaviour(_Behaviour[BloodPressureCuff]):
    """A measurement every ``bp_interval``: inflation notified, the result indicated.

    A scheduled cuff failure (or a cuff without contact) indicates NaN values with the cause in
    the measurement status: body movement or cuff too loose.
    """

    def __init__(
        self,
        session: SimulatedSession,
        model: SessionModel,
        kind: DeviceKind,
        wearable: BloodPressureCuff,
    ) -> None:
        super().__init__(session, model, kind, wearable)
        self.failures = {
            event.t_s: event.flags
            for event in model.artefacts
            if event.kind is ArtefactKind.CUFF_FAILURE
        }

    def steps(self) -> Iterator[Step]:
        for start in self.model.cuff_schedule_s():
            start_s = float(start)
            if start_s < self.session.start_s:
                continue
            for offset_s, fraction in CUFF_INFLATION_STEPS:
                yield start_s + offset_s, partial(self.inflate, start_s, fraction)
            yield start_s + CUFF_RESULT_AFTER_S, partial(self.result, start_s)

    async def inflate(self, start_s: float, fraction: float, t_s: float) -> None:
        if not self.listening(INTERMEDIATE_CUFF_PRESSURE):
            return
        target = self.model.vitals(start_s).systolic_mmhg + CUFF_OVERPRESSURE_MMHG
        pressure = _on_air(target * fraction, 0)
        if await self.wearable.send_cuff_pressure(pressure):
            self.record(t_s, INTERMEDIATE_CUFF_PRESSURE, {Parameter.CUFF_PRESSURE: pressure})

    async def result(self, start_s: float, t_s: float) -> None:
        if not self.listening(BLOOD_PRESSURE_MEASUREMENT):
            return
        failure = self.failures.get(start_s)
        if failure is None and not self.in_contact:
            failure = frozenset({QualityFlag.IMPROPER_CUFF_FIT, QualityFlag.VALUE_UNUSABLE})
        timestamp = self.device_time(t_s)
        if failure is not None:
            systolic = diastolic = pulse_rate = mean_arterial = math.nan
            status = blood_pressure_status(
                body_movement=QualityFlag.BODY_MOVEMENT in failure,
                cuff_too_loose=QualityFlag.IMPROPER_CUFF_FIT in failure,
            )
            quality = failure
        else:
            vitals = self.model.vitals(t_s)
            systolic = _on_air(vitals.systolic_mmhg, 0)
            diastolic = _on_air(vitals.diastolic_mmhg, 0)
            pulse_rate = _on_air(vitals.heart_rate_bpm, 0)
            mean_arterial = _on_air(diastolic + (systolic - diastolic) / 3, 0)
            status = blood_pressure_status()
            quality = frozenset()
        confirmed = await self.indicated(
            self.wearable.send_measurement(
                systolic, diastolic, pulse_rate=pulse_rate, timestamp=timestamp, status=status
            )
        )
        if confirmed:
            values = {
                Parameter.SYSTOLIC_BP: systolic,
                Parameter.DIASTOLIC_BP: diastolic,
                Parameter.MEAN_ARTERIAL_BP: mean_arterial,
                Parameter.PULSE_RATE: pulse_rate,
            }
            self.record(t_s, BLOOD_PRESSURE_MEASUREMENT, values, quality, timestamp)


class _ThermometerBehaviour(_Behaviour[Thermometer]):
    """Core temperature: a final reading indicated every ``temperature_period_s``, intermediate
    ones notified every 10 s in between. Without contact the thermometer sends NaN."""

    def steps(self) -> Iterator[Step]:
        period_s = self.settings.temperature_period_s
        for _, final_s in self.grid(period_s):
            yield final_s, self.final
            intermediate_s = final_s + THERMOMETER_INTERMEDIATE_PERIOD_S
            while intermediate_s < final_s + period_s - 1e-9:
                if intermediate_s >= self.session.start_s:
                    yield intermediate_s, self.intermediate
                intermediate_s += THERMOMETER_INTERMEDIATE_PERIOD_S

    def celsius(self, t_s: float) -> float:
        if not self.in_contact:
            return math.nan
        return _on_air(self.model.vitals(t_s).core_temperature_c, 2)

    async def final(self, t_s: float) -> None:
        if not self.listening(TEMPERATURE_MEASUREMENT):
            return
        celsius = self.celsius(t_s)
        timestamp = self.device_time(t_s)
        if await self.indicated(self.wearable.send_temperature(celsius, timestamp=timestamp)):
            values = {Parameter.TEMPERATURE: celsius}
            self.record(t_s, TEMPERATURE_MEASUREMENT, values, measured_at=timestamp)

    async def intermediate(self, t_s: float) -> None:
        if not self.listening(INTERMEDIATE_TEMPERATURE):
            return
        celsius = self.celsius(t_s)
        if await self.wearable.send_intermediate(celsius):
            self.record(t_s, INTERMEDIATE_TEMPERATURE, {Parameter.TEMPERATURE: celsius})


_FINGER_OUT_DEVICE_STATUS: Final = int(PlxDeviceSensorStatus.SENSOR_UNCONNECTED_TO_USER)
_FINGER_OUT_MEASUREMENT_STATUS: Final = int(PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE)


class _OximeterBehaviour(_Behaviour[PulseOximeter]):
    """One continuous SpO2/PR notification per period; motion spikes hit the pulse rate.

    With the finger out it keeps notifying NaN values with "sensor unconnected to user" in the
    device & sensor status and "measurement unavailable" in the measurement status.
    """

    def __init__(
        self,
        session: SimulatedSession,
        model: SessionModel,
        kind: DeviceKind,
        wearable: PulseOximeter,
    ) -> None:
        super().__init__(session, model, kind, wearable)
        self.period_s = self.settings.spo2_period_s
        self.sampler = _Sampler(model, self.period_s)

    def steps(self) -> Iterator[Step]:
        for index, t_s in self.grid(self.period_s):
            yield t_s, partial(self.sample, index)

    async def sample(self, index: int, t_s: float) -> None:
        spike = self.motion_spike(t_s)
        if not self.listening(PLX_CONTINUOUS_MEASUREMENT):
            return
        if self.in_contact:
            vitals = self.sampler.at(index)
            spo2 = min(100.0, _on_air(vitals.spo2_percent, 0))
            pulse_rate = max(0.0, _on_air(vitals.heart_rate_bpm + spike, 0))
            device_status = measurement_status = 0
            quality: frozenset[QualityFlag] = frozenset()
        else:
            spo2 = pulse_rate = math.nan
            device_status = _FINGER_OUT_DEVICE_STATUS
            measurement_status = _FINGER_OUT_MEASUREMENT_STATUS
            quality = frozenset({QualityFlag.SENSOR_CONTACT_LOST})
        sent = await self.wearable.send_continuous(
            spo2, pulse_rate, device_status=device_status, measurement_status=measurement_status
        )
        if sent:
            values = {Parameter.SPO2: spo2, Parameter.PULSE_RATE: pulse_rate}
            self.record(t_s, PLX_CONTINUOUS_MEASUREMENT, values, quality)


_BEHAVIOURS: Final[Mapping[DeviceKind, Callable[..., _Behaviour[Any]]]] = MappingProxyType(
    {
        DeviceKind.HEART_RATE: _ChestStrapBehaviour,
        DeviceKind.BLOOD_PRESSURE: _CuffBehaviour,
        DeviceKind.THERMOMETER: _ThermometerBehaviour,
        DeviceKind.PULSE_OXIMETER: _OximeterBehaviour,
    }
)

Radio: TypeAlias = VirtualRadio | Mapping[str, HciTransport]
"""The virtual radio every wearable joins, or real controllers by device name (only those run)."""


class SimulatedSession:
    """A scenario's wearables running on a radio until the context exits.

    ``participants`` limits the session to some participant codes and ``devices`` to some device
    names; with a mapping of device names to :class:`HciTransport` as ``radio``, exactly those
    wearables run, each on its own real controller. ``start_s``/``end_s`` choose a window of the
    session: time starts at ``start_s`` when the context is entered and the wearables stop
    sending at ``end_s`` (the scenario's end by default) but stay on air until exit.
    ``log_limit`` keeps only the newest deliveries per wearable (all by default).
    """

    def __init__(
        self,
        scenario: Scenario,
        radio: Radio,
        clock: Clock,
        *,
        participants: Collection[str] | None = None,
        devices: Collection[str] | None = None,
        start_s: float = 0.0,
        end_s: float | None = None,
        device_timezone: dt.tzinfo = dt.UTC,
        log_limit: int | None = None,
    ) -> None:
        if isinstance(participants, str) or isinstance(devices, str):
            msg = "participants and devices are collections of names, not one string"
            raise TypeError(msg)
        self.scenario = scenario
        self.radio = radio
        self.clock = clock
        self.start_s = start_s
        self.end_s = scenario.duration_s if end_s is None else min(end_s, scenario.duration_s)
        if not 0 <= self.start_s < self.end_s:
            msg = f"session window [{start_s}, {self.end_s}) is empty or starts before 0"
            raise ValueError(msg)
        self.device_timezone = device_timezone
        known_codes = [participant.code for participant in scenario.participants]
        codes = known_codes if participants is None else list(participants)
        _require_known("participant", codes, known_codes, scenario.name)
        self.models: dict[str, SessionModel] = {
            code: SessionModel(scenario, code) for code in known_codes if code in codes
        }
        all_names = {
            device_name(kind, code): (code, kind)
            for code, model in self.models.items()
            for kind in model.devices
        }
        if isinstance(radio, Mapping):
            if devices is not None:
                msg = "with real transports, the transport mapping already names the devices"
                raise ValueError(msg)
            devices = list(radio)
        names = list(all_names) if devices is None else list(devices)
        _require_known("device", names, list(all_names), scenario.name)
        self.keys: tuple[WearableKey, ...] = tuple(all_names[name] for name in names)
        self.wearables: dict[WearableKey, Wearable] = {}
        self.log: dict[WearableKey, deque[Delivery]] = {
            key: deque(maxlen=log_limit) for key in self.keys
        }
        self.time: SessionTime | None = None
        self._origin: dt.datetime | None = None
        self._runner: asyncio.Task[None] | None = None
        self._link_changes: set[asyncio.Future[None]] = set()

    # -- time ------------------------------------------------------------------------------

    def now_s(self) -> float:
        """Current session time in seconds (the window start until the session is entered)."""
        return self.start_s if self.time is None else self.time.elapsed_s()

    def wall_time(self, t_s: float) -> dt.datetime:
        """The clock's time (UTC) at session time ``t_s``."""
        if self._origin is None:
            msg = "the session has not started"
            raise RuntimeError(msg)
        return self._origin + dt.timedelta(seconds=t_s)

    # -- what was delivered ----------------------------------------------------------------

    @property
    def delivered(self) -> dict[WearableKey, Counter[int]]:
        """Per wearable, how many readings reached a central, by 16-bit characteristic UUID."""
        return {key: wearable.delivered for key, wearable in self.wearables.items()}

    def connected(self) -> int:
        """How many wearables have a central connected right now."""
        return sum(wearable.is_connected for wearable in self.wearables.values())

    # -- running ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            for code, kind in self.keys:
                name = device_name(kind, code)
                radio = self.radio[name] if isinstance(self.radio, Mapping) else self.radio
                wearable = WEARABLE_CLASSES[kind](radio, name=name)
                await wearable.start(advertise=True)
                self.wearables[(code, kind)] = wearable
        except BaseException:
            await self._stop_wearables()
            raise
        now = self.clock.monotonic()
        self.time = SessionTime(self.clock, now - self.start_s)
        self._origin = self.clock.now() - dt.timedelta(seconds=self.start_s)
        self._runner = asyncio.create_task(
            self._run(), name=f"simulated-session[{self.scenario.name}]"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                runner.cancel()
                await asyncio.wait({runner})
                if not runner.cancelled() and (error := runner.exception()) is not None:
                    raise error
        finally:
            if self._link_changes:
                await asyncio.gather(*self._link_changes, return_exceptions=True)
            await self._stop_wearables()

    async def wait(self) -> None:
        """Return once every wearable has reached the end of the window; raise its error if one
        failed."""
        if self._runner is None:
            msg = "the session is not running"
            raise RuntimeError(msg)
        await asyncio.shield(self._runner)

    async def uninterrupted(self, change: Awaitable[None]) -> None:
        """Run a link change (advertising, disconnect) to completion even if the caller is
        cancelled: cutting bumble off mid-HCI-command leaves its host waiting for a reply."""
        future = asyncio.ensure_future(change)
        self._link_changes.add(future)
        future.add_done_callback(self._link_changes.discard)
        await asyncio.shield(future)

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for (code, kind), wearable in self.wearables.items():
                behaviour = _BEHAVIOURS[kind](self, self.models[code], kind, wearable)
                group.create_task(behaviour.run(), name=f"wearable[{wearable.name}]")

    async def _stop_wearables(self) -> None:
        """Stop every wearable, even if one fails to stop; the counts stay readable."""
        for wearable in self.wearables.values():
            try:
                await wearable.stop()
            except Exception:
                log.exception("%s: failed to stop cleanly", wearable.name)


def _require_known(what: str, given: list[str], known: list[str], scenario: str) -> None:
    unknown = [name for name in given if name not in known]
    if unknown:
        msg = (
            f"scenario {scenario} has no {what} {', '.join(unknown)}; "
            f"it has: {', '.join(known) or 'none'}"
        )
        raise ValueError(msg)
    if len(set(given)) != len(given):
        msg = f"a {what} is named twice: {', '.join(given)}"
        raise ValueError(msg)
