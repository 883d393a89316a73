"""Detector input as one event list, so tests and benchmarks drive any Detector the same way.

The engine and the reference must see exactly the same calls for their outputs to be comparable;
:func:`run_detector` turns an event list into those calls in the order docs/detection.md section 1
defines.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from monitor.alerts.inputs import Detector, SampleBatch
from monitor.alerts.rules import ConditionUpdate
from monitor.models import Consciousness

__all__ = [
    "ConsciousnessEvent",
    "DetectorEvent",
    "DoseEvent",
    "SamplesEvent",
    "TickEvent",
    "run_detector",
]


@dataclass(frozen=True, slots=True)
class SamplesEvent:
    """A batch of samples, each of which is an event at its own ``t_ms``."""

    batch: SampleBatch


@dataclass(frozen=True, slots=True)
class DoseEvent:
    """A dose marker (fixes baselines)."""

    participant: int
    t_ms: int


@dataclass(frozen=True, slots=True)
class ConsciousnessEvent:
    """A staff-entered ACVPU level for NEWS2."""

    participant: int
    t_ms: int
    level: Consciousness


@dataclass(frozen=True, slots=True)
class TickEvent:
    """Evaluate the time rules at ``t_ms``."""

    t_ms: int


DetectorEvent = SamplesEvent | DoseEvent | ConsciousnessEvent | TickEvent


@dataclass(frozen=True, slots=True)
class _Step:
    """One atomic input: a whole non-sample event, or one row of a batch (``row`` set)."""

    t_ms: int
    is_tick: bool
    source: int  # position of the event in the caller's list
    event: DetectorEvent
    row: int | None = None


def run_detector(detector: Detector, events: Sequence[DetectorEvent]) -> list[ConditionUpdate]:
    """Feed ``events`` to ``detector`` and return every update, in call order.

    Events must be in non-decreasing time (a batch's samples count one by one). A tick is moved
    after the non-tick events of its own time (docs/detection.md section 1), splitting a batch
    only where such a tick falls inside it; otherwise batches reach the detector as given. Raises
    ``ValueError`` when the events go back in time.
    """
    steps = _atomic_steps(events)
    _check_time_order(steps)
    ordered = sorted(steps, key=lambda step: (step.t_ms, step.is_tick))  # stable
    updates: list[ConditionUpdate] = []
    start = 0
    while start < len(ordered):
        end = _end_of_call(ordered, start)
        updates.extend(_call(detector, ordered[start:end]))
        start = end
    return updates


def _atomic_steps(events: Sequence[DetectorEvent]) -> list[_Step]:
    """Every event as its atomic inputs, in the given order."""
    steps: list[_Step] = []
    for source, event in enumerate(events):
        if isinstance(event, SamplesEvent):
            times = event.batch.t_ms.tolist()
            steps.extend(_Step(t_ms, False, source, event, row) for row, t_ms in enumerate(times))
        else:
            steps.append(_Step(event.t_ms, isinstance(event, TickEvent), source, event))
    return steps


def _check_time_order(steps: list[_Step]) -> None:
    """Only ties with ticks are reordered; sorting anything else would hide a caller's mistake."""
    for earlier, later in itertools.pairwise(steps):
        if later.t_ms < earlier.t_ms:
            msg = f"event at {later.t_ms} ms follows an event at {earlier.t_ms} ms"
            raise ValueError(msg)


def _end_of_call(steps: list[_Step], start: int) -> int:
    """Rows of one batch that stay adjacent form one ingest call; anything else is alone."""
    if steps[start].row is None:
        return start + 1
    end = start + 1
    while end < len(steps) and steps[end].source == steps[start].source:
        end += 1
    return end


def _call(detector: Detector, steps: list[_Step]) -> list[ConditionUpdate]:
    """Make the one detector call that ``steps`` (from :func:`_end_of_call`) stand for."""
    event = steps[0].event
    if isinstance(event, SamplesEvent):
        rows = [step.row for step in steps if step.row is not None]
        return detector.ingest(_rows_of(event.batch, rows))
    if isinstance(event, DoseEvent):
        detector.mark_dose(event.participant, event.t_ms)
        return []
    if isinstance(event, ConsciousnessEvent):
        detector.set_consciousness(event.participant, event.t_ms, event.level)
        return []
    return detector.tick(event.t_ms)


def _rows_of(batch: SampleBatch, rows: list[int]) -> SampleBatch:
    """The batch itself when every row is kept, else a copy of the kept rows."""
    if len(rows) == len(batch):
        return batch
    index = np.asarray(rows, dtype=np.intp)
    return SampleBatch(
        t_ms=batch.t_ms[index],
        participant=batch.participant[index],
        parameter=batch.parameter[index],
        value=batch.value[index],
        flagged=batch.flagged[index],
    )
