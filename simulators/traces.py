"""What a scenario's wearables deliver over a whole session, computed at once as columns.

:mod:`simulators.session` walks session time on a clock and sends one frame at a time over a
radio; scoring detection over nine 6-8 h scenarios that way would take hours. This module computes
the same deliveries in a few vectorised calls: the same sampling grids, the same quantisation as on
air (:func:`on_air`, which the session uses too), the same artefacts and quality flags, with values
taken from the same physiology.

The one difference is the receiver: a trace assumes a central that is subscribed from session time
0 and confirms every indication, so it holds every frame the wearable would send while notifying.
The session records only what reached a real central (nothing before the first subscription, and
nothing while a dropped link is being re-established). ``tests/test_scoring.py`` runs both over
the same window and checks that every delivery the session recorded is a row of the trace, equal in
values and quality.

Battery notifications are left out: they carry no vital sign, and whether one is sent depends on
the central's subscription state. Device timestamps (``measured_at``) are left to the consumer:
they are the session's wall-clock origin plus ``t_s``, to the second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from monitor.models import DeviceKind, Parameter, QualityFlag, ReadingKind
from simulators.gatt_encoder import (
    BLOOD_PRESSURE_MEASUREMENT,
    HEART_RATE_MEASUREMENT,
    INTERMEDIATE_CUFF_PRESSURE,
    INTERMEDIATE_TEMPERATURE,
    PLX_CONTINUOUS_MEASUREMENT,
    TEMPERATURE_MEASUREMENT,
)
from simulators.physiology import ArtefactEvent, ArtefactKind
from simulators.scenario import SessionModel

__all__ = [
    "CUFF_INFLATION_STEPS",
    "CUFF_OVERPRESSURE_MMHG",
    "CUFF_RESULT_AFTER_S",
    "THERMOMETER_INTERMEDIATE_PERIOD_S",
    "Trace",
    "device_traces",
    "on_air",
    "on_air_array",
    "wearable_traces",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CUFF_INFLATION_STEPS: Final = ((0.0, 0.2), (5.0, 0.4), (10.0, 0.6), (15.0, 0.8), (20.0, 1.0))
"""(seconds after the measurement start, fraction of the target cuff pressure) per notification;
the cuff inflates to 30 mmHg above the systolic pressure."""
CUFF_OVERPRESSURE_MMHG: Final = 30.0
CUFF_RESULT_AFTER_S: Final = 30.0
"""The result is indicated this long after the measurement starts (inflation plus deflation)."""
THERMOMETER_INTERMEDIATE_PERIOD_S: Final = 10.0

_CONTACT_LOST: Final = frozenset({QualityFlag.SENSOR_CONTACT_LOST})
_NO_FLAGS: Final[frozenset[QualityFlag]] = frozenset()
# A cuff without skin contact reports this when no scheduled failure says otherwise.
_CUFF_WITHOUT_CONTACT: Final = frozenset(
    {QualityFlag.IMPROPER_CUFF_FIT, QualityFlag.VALUE_UNUSABLE}
)
# Within this distance of a rounding tie, float arithmetic may round the other way than the
# decimal rounding on air; those few values take the exact (slow) path.
_TIE_TOLERANCE: Final = 1e-6


def on_air(value: float, decimals: int) -> float:
    """``value`` as the receiver decodes it after the encoder rounds it (half away from zero)."""
    if not math.isfinite(value):
        return math.nan
    scaled = Decimal(repr(value)).scaleb(decimals).to_integral_value(rounding="ROUND_HALF_UP")
    return float(scaled.scaleb(-decimals))


def on_air_array(values: FloatArray, decimals: int) -> FloatArray:
    """:func:`on_air` of every element, exactly, at numpy speed away from rounding ties."""
    factor = 10.0**decimals
    with np.errstate(invalid="ignore"):
        scaled = np.abs(values) * factor
        rounded = np.sign(values) * np.floor(scaled + 0.5)
        result: FloatArray = rounded / factor
        fraction = scaled - np.floor(scaled)
    near_tie = np.flatnonzero(np.isfinite(values) & (np.abs(fraction - 0.5) < _TIE_TOLERANCE))
    for index in near_tie:
        result[index] = on_air(float(values[index]), decimals)
    result[~np.isfinite(values)] = math.nan
    return result


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """Every frame one wearable sends on one characteristic, one row per frame, in time order.

    ``values`` uses NaN where the device sends NaN; ``quality`` is what the frame's status bits
    say in the receiver's vocabulary, with ``value_unusable`` wherever a value is NaN (as
    :class:`simulators.session.Delivery` records it).
    """

    code: str
    device: DeviceKind
    kind: ReadingKind
    characteristic: int
    t_s: FloatArray
    values: Mapping[Parameter, FloatArray]
    quality: tuple[frozenset[QualityFlag], ...]

    def __len__(self) -> int:
        return int(self.t_s.shape[0])


_DEVICE: Final[Mapping[ReadingKind, DeviceKind]] = MappingProxyType(
    {
        ReadingKind.HEART_RATE: DeviceKind.HEART_RATE,
        ReadingKind.BLOOD_PRESSURE: DeviceKind.BLOOD_PRESSURE,
        ReadingKind.CUFF_PRESSURE: DeviceKind.BLOOD_PRESSURE,
        ReadingKind.TEMPERATURE: DeviceKind.THERMOMETER,
        ReadingKind.INTERMEDIATE_TEMPERATURE: DeviceKind.THERMOMETER,
        ReadingKind.SPO2: DeviceKind.PULSE_OXIMETER,
    }
)
_CHARACTERISTIC: Final[Mapping[ReadingKind, int]] = MappingProxyType(
    {
        ReadingKind.HEART_RATE: HEART_RATE_MEASUREMENT,
        ReadingKind.BLOOD_PRESSURE: BLOOD_PRESSURE_MEASUREMENT,
        ReadingKind.CUFF_PRESSURE: INTERMEDIATE_CUFF_PRESSURE,
        ReadingKind.TEMPERATURE: TEMPERATURE_MEASUREMENT,
        ReadingKind.INTERMEDIATE_TEMPERATURE: INTERMEDIATE_TEMPERATURE,
        ReadingKind.SPO2: PLX_CONTINUOUS_MEASUREMENT,
    }
)


def _trace(
    model: SessionModel,
    kind: ReadingKind,
    t_s: FloatArray,
    values: Mapping[Parameter, FloatArray],
    flags: list[frozenset[QualityFlag]],
) -> Trace:
    missing = np.zeros(t_s.shape[0], dtype=np.bool_)
    for column in values.values():
        missing |= ~np.isfinite(column)
    quality = tuple(
        flag | {QualityFlag.VALUE_UNUSABLE} if unusable else flag
        for flag, unusable in zip(flags, missing.tolist(), strict=True)
    )
    return Trace(
        code=model.code,
        device=_DEVICE[kind],
        kind=kind,
        characteristic=_CHARACTERISTIC[kind],
        t_s=t_s,
        values=MappingProxyType(dict(values)),
        quality=quality,
    )


def _grid(period_s: float, duration_s: float) -> FloatArray:
    """``k * period_s`` for every k with a time inside the session, as a wearable walks it."""
    times: FloatArray = np.arange(math.ceil(duration_s / period_s) + 1, dtype=np.float64) * period_s
    kept: FloatArray = times[times < duration_s]
    return kept


def _active(events: list[ArtefactEvent], t_s: FloatArray) -> BoolArray:
    """Where any of these interval artefacts covers the (sorted) times: ``[t_s, end_s)``."""
    mask = np.zeros(t_s.shape[0], dtype=np.bool_)
    for event in events:
        low = int(np.searchsorted(t_s, event.t_s, side="left"))
        high = int(np.searchsorted(t_s, event.end_s, side="left"))
        mask[low:high] = True
    return mask


@dataclass(frozen=True, slots=True)
class _States:
    """Contact and notification state of one wearable at the times it acts (``device_state``)."""

    in_contact: BoolArray
    notifying: BoolArray


def _states(model: SessionModel, device: DeviceKind, t_s: FloatArray) -> _States:
    mine = [event for event in model.artefacts if event.device is device]
    contact_lost = [event for event in mine if event.kind is ArtefactKind.CONTACT_LOSS]
    silent = [
        event for event in mine if event.kind in {ArtefactKind.BLE_DROPOUT, ArtefactKind.DISCONNECT}
    ]
    return _States(in_contact=~_active(contact_lost, t_s), notifying=~_active(silent, t_s))


def _spikes(model: SessionModel, device: DeviceKind, grid: FloatArray) -> FloatArray:
    """Motion spikes per grid sample: each hits the first sample at or after its time."""
    total = np.zeros(grid.shape[0])
    for event in model.artefacts:
        if event.device is device and event.kind is ArtefactKind.MOTION_SPIKE:
            index = int(np.searchsorted(grid, event.t_s, side="left"))
            if index < grid.shape[0]:
                total[index] += event.magnitude or 0.0
    return total


def _chest_strap(model: SessionModel) -> list[Trace]:
    """1 Hz heart rate; without contact it keeps sending, with the contact bit cleared."""
    grid = _grid(model.spec.settings.heart_rate_period_s, model.scenario.duration_s)
    true_bpm = model.vitals_array(grid).heart_rate_bpm
    spike = _spikes(model, DeviceKind.HEART_RATE, grid)  # spikes in a dropout are lost with it
    states = _states(model, DeviceKind.HEART_RATE, grid)
    keep = states.notifying
    bpm = np.maximum(0.0, np.rint(true_bpm + spike))[keep]
    heart_rate = np.where(bpm > 0, bpm, math.nan)
    flags = [_NO_FLAGS if contact else _CONTACT_LOST for contact in states.in_contact[keep]]
    values = {Parameter.HEART_RATE: heart_rate}
    return [
        _trace(
            model,
            ReadingKind.HEART_RATE,
            grid[keep],
            values,
            flags,
        )
    ]


def _cuff(model: SessionModel) -> list[Trace]:
    """Inflation notified every 5 s, the result indicated 30 s after the measurement starts."""
    duration_s = model.scenario.duration_s
    starts = model.cuff_schedule_s()
    failures = {
        event.t_s: event.flags
        for event in model.artefacts
        if event.kind is ArtefactKind.CUFF_FAILURE
    }
    target = model.vitals_array(starts).systolic_mmhg + CUFF_OVERPRESSURE_MMHG
    inflation_t: list[FloatArray] = []
    inflation_p: list[FloatArray] = []
    for offset_s, fraction in CUFF_INFLATION_STEPS:
        inflation_t.append(starts + offset_s)
        inflation_p.append(on_air_array(target * fraction, 0))
    t_inflate = np.stack(inflation_t, axis=1).ravel()
    pressure = np.stack(inflation_p, axis=1).ravel()
    inside = t_inflate < duration_s
    t_inflate, pressure = t_inflate[inside], pressure[inside]
    keep = _states(model, DeviceKind.BLOOD_PRESSURE, t_inflate).notifying
    inflation = _trace(
        model,
        ReadingKind.CUFF_PRESSURE,
        t_inflate[keep],
        {Parameter.CUFF_PRESSURE: pressure[keep]},
        [_NO_FLAGS] * int(keep.sum()),
    )

    inside = starts + CUFF_RESULT_AFTER_S < duration_s
    starts = starts[inside]
    t_result = starts + CUFF_RESULT_AFTER_S
    states = _states(model, DeviceKind.BLOOD_PRESSURE, t_result)
    vitals = model.vitals_array(t_result)
    systolic = on_air_array(vitals.systolic_mmhg, 0)
    diastolic = on_air_array(vitals.diastolic_mmhg, 0)
    pulse_rate = on_air_array(vitals.heart_rate_bpm, 0)
    mean_arterial = on_air_array(diastolic + (systolic - diastolic) / 3, 0)
    failed = np.zeros(starts.shape[0], dtype=np.bool_)
    flags: list[frozenset[QualityFlag]] = []
    for index, start in enumerate(starts.tolist()):
        failure = failures.get(start)
        if failure is None and not states.in_contact[index]:
            failure = _CUFF_WITHOUT_CONTACT
        failed[index] = failure is not None
        flags.append(_NO_FLAGS if failure is None else failure)
    columns = {
        Parameter.SYSTOLIC_BP: systolic,
        Parameter.DIASTOLIC_BP: diastolic,
        Parameter.MEAN_ARTERIAL_BP: mean_arterial,
        Parameter.PULSE_RATE: pulse_rate,
    }
    keep = states.notifying
    values = {p: np.where(failed, math.nan, column)[keep] for p, column in columns.items()}
    result = _trace(
        model,
        ReadingKind.BLOOD_PRESSURE,
        t_result[keep],
        values,
        [flag for flag, kept in zip(flags, keep.tolist(), strict=True) if kept],
    )
    return [result, inflation]


def _thermometer(model: SessionModel) -> list[Trace]:
    """Finals every ``temperature_period_s``, intermediates every 10 s in between; NaN without
    contact."""
    period_s = model.spec.settings.temperature_period_s
    duration_s = model.scenario.duration_s
    finals = _grid(period_s, duration_s)
    levels: list[FloatArray] = []
    current = finals + THERMOMETER_INTERMEDIATE_PERIOD_S
    while True:
        within = current < finals + period_s - 1e-9
        if not within.any():
            break
        levels.append(current[within])
        current = current + THERMOMETER_INTERMEDIATE_PERIOD_S
    intermediates = np.sort(np.concatenate(levels)) if levels else np.empty(0)
    intermediates = intermediates[intermediates < duration_s]
    traces = []
    for kind, t_s in (
        (ReadingKind.TEMPERATURE, finals),
        (ReadingKind.INTERMEDIATE_TEMPERATURE, intermediates),
    ):
        states = _states(model, DeviceKind.THERMOMETER, t_s)
        celsius = on_air_array(model.vitals_array(t_s).core_temperature_c, 2)
        celsius = np.where(states.in_contact, celsius, math.nan)
        keep = states.notifying
        traces.append(
            _trace(
                model,
                kind,
                t_s[keep],
                {Parameter.TEMPERATURE: celsius[keep]},
                [_NO_FLAGS] * int(keep.sum()),
            )
        )
    return traces


def _oximeter(model: SessionModel) -> list[Trace]:
    """Continuous SpO2 and pulse rate; spikes hit the pulse rate; NaN with the finger out."""
    grid = _grid(model.spec.settings.spo2_period_s, model.scenario.duration_s)
    vitals = model.vitals_array(grid)
    spike = _spikes(model, DeviceKind.PULSE_OXIMETER, grid)
    states = _states(model, DeviceKind.PULSE_OXIMETER, grid)
    spo2 = np.minimum(100.0, on_air_array(vitals.spo2_percent, 0))
    pulse_rate = np.maximum(0.0, on_air_array(vitals.heart_rate_bpm + spike, 0))
    spo2 = np.where(states.in_contact, spo2, math.nan)
    pulse_rate = np.where(states.in_contact, pulse_rate, math.nan)
    keep = states.notifying
    flags = [_NO_FLAGS if contact else _CONTACT_LOST for contact in states.in_contact[keep]]
    return [
        _trace(
            model,
            ReadingKind.SPO2,
            grid[keep],
            {Parameter.SPO2: spo2[keep], Parameter.PULSE_RATE: pulse_rate[keep]},
            flags,
        )
    ]


_GENERATORS: Final = MappingProxyType(
    {
        DeviceKind.HEART_RATE: _chest_strap,
        DeviceKind.BLOOD_PRESSURE: _cuff,
        DeviceKind.THERMOMETER: _thermometer,
        DeviceKind.PULSE_OXIMETER: _oximeter,
    }
)


def device_traces(model: SessionModel, device: DeviceKind) -> list[Trace]:
    """Every measurement characteristic of one of the participant's wearables."""
    if device not in model.devices:
        msg = f"{model.code} wears no {device}"
        raise ValueError(msg)
    return _GENERATORS[device](model)


def wearable_traces(model: SessionModel) -> list[Trace]:
    """Every measurement characteristic of every wearable the participant has on."""
    return [trace for device in model.devices for trace in device_traces(model, device)]
