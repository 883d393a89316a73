"""What detection consumes: sample batches, dose markers, consciousness entries, ticks.

The engine and the reference implement :class:`Detector` with the same semantics
(``docs/detection.md``); a batch is columnar so the engine can take it without copying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from monitor.alerts.rules import ConditionUpdate
from monitor.models import Consciousness

__all__ = ["Detector", "SampleBatch"]


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Samples in time order (non-decreasing ``t_ms``; equal times keep their order).

    ``parameter`` indexes ``models.DETECTION_PARAMETERS``; ``participant`` indexes the rule set's
    participants; ``flagged`` marks samples that are not evidence whatever their value.
    """

    t_ms: npt.NDArray[np.int64]
    participant: npt.NDArray[np.int32]
    parameter: npt.NDArray[np.int8]
    value: npt.NDArray[np.float64]
    flagged: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        n = len(self.t_ms)
        columns = (self.participant, self.parameter, self.value, self.flagged)
        if any(len(column) != n for column in columns):
            msg = "all sample columns must have the same length"
            raise ValueError(msg)
        if n > 1 and bool(np.any(np.diff(self.t_ms) < 0)):
            msg = "samples must be in non-decreasing time order"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.t_ms)

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int, int, float, bool]]) -> SampleBatch:
        """Build from ``(t_ms, participant, parameter, value, flagged)`` tuples (tests, tools)."""
        t, p, k, v, f = zip(*rows, strict=True) if rows else ((), (), (), (), ())
        return cls(
            t_ms=np.asarray(t, dtype=np.int64),
            participant=np.asarray(p, dtype=np.int32),
            parameter=np.asarray(k, dtype=np.int8),
            value=np.asarray(v, dtype=np.float64),
            flagged=np.asarray(f, dtype=np.bool_),
        )


class Detector(Protocol):
    """The engine and the reference: same inputs, identical :class:`ConditionUpdate` output.

    Callers keep global time order across calls: a batch, marker, entry or tick never carries a
    time earlier than one already given. Each call returns the updates it caused, ordered by
    ``(t_ms, participant, rule)``.
    """

    late_samples: int

    def ingest(self, batch: SampleBatch) -> list[ConditionUpdate]:
        """Evaluate the per-sample rules on a batch."""
        ...

    def mark_dose(self, participant: int, t_ms: int) -> None:
        """A dose marker: fixes the participant's baselines if not fixed yet."""
        ...

    def set_consciousness(self, participant: int, t_ms: int, level: Consciousness) -> None:
        """Staff-entered ACVPU for NEWS2."""
        ...

    def tick(self, t_ms: int) -> list[ConditionUpdate]:
        """Evaluate the time rules (staleness, combined, NEWS2) at ``t_ms``."""
        ...

    def next_due_ms(self, t_ms: int) -> int | None:
        """After a tick at ``t_ms`` with no input since: the earliest time a later tick may
        report an update (None: never without input). Answering early costs only a tick."""
        ...
