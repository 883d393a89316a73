"""Detection benchmark: the vectorised engine against the per-reading reference.

Synthetic sessions: ``streams // 5`` participants, one sample per stream per second, values
around plausible resting levels with some participants near the MDMA limits, plus spikes, NaN and
flagged readings. The rule set follows the MDMA defaults (limit tiers, a temperature trend, a
baseline rule, staleness, a combined rule and NEWS2), with per-participant overrides and a missing
rule for some participants.

The engine is fed 1-second micro-batches, each followed by a tick; the reference gets the same
calls. Input is generated second by second from a seeded generator, outside the timed calls, so
both detectors see identical input and memory does not grow with the session length.

The engine runs ``repeats`` times (a fresh engine on the same input each time): the first run of a
process pays one-off costs (numpy's first calls, the heap growing to its working size) that a
service running for hours pays once, so ``engine_readings_per_s`` is the fastest run and
``engine_readings_per_s_median`` and ``engine_readings_per_s_first`` are reported beside it. Every
run's output must equal the first's.

``peak_rss_mb`` is the process peak (``getrusage``) after generating input and running the
engine, before the reference runs: the engine's footprint. ``peak_rss_total_mb`` is the peak at
the end, with the reference's state included. The reference is slow, so for large inputs it runs
on the first ``reference_seconds`` seconds only, and the outputs are compared on that prefix
(detection is causal, so the engine's updates up to that time are the same as on the prefix).

Run: ``monitor bench detect --streams 10000 --seconds 5 [--json]`` (``bench/detect.py`` runs it
and checks the targets of docs/benchmarks.md).
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from monitor.alerts.engine import Engine
from monitor.alerts.inputs import Detector, SampleBatch
from monitor.alerts.reference import ReferenceDetector
from monitor.alerts.rules import (
    BaselineSpec,
    CombinedPart,
    CombinedSpec,
    CompiledRule,
    ConditionUpdate,
    LimitSpec,
    News2Spec,
    RuleSet,
    StalenessSpec,
    TrendSpec,
)
from monitor.models import AlarmCategory, AlarmPriority, Parameter

__all__ = ["mdma_rules", "run_bench"]

ORIGIN_MS = 1_760_000_000_000
REFERENCE_BUDGET = 100_000  # readings the reference is timed on at most
PARAMETERS = 5
LOW, MEDIUM, HIGH = AlarmPriority.LOW, AlarmPriority.MEDIUM, AlarmPriority.HIGH
HR, SBP, DBP = Parameter.HEART_RATE, Parameter.SYSTOLIC_BP, Parameter.DIASTOLIC_BP
TEMP, SPO2 = Parameter.TEMPERATURE, Parameter.SPO2

# heart_rate, systolic, diastolic, temperature, spo2
REST = np.array([72.0, 122.0, 76.0, 36.8, 98.0])
REST_SPREAD = np.array([8.0, 10.0, 6.0, 0.3, 0.7])
STRESSED = np.array([112.0, 165.0, 98.0, 38.3, 94.0])  # a participant near the MDMA limits
NOISE = np.array([3.0, 4.0, 3.0, 0.05, 0.5])
SPIKE = np.array([45.0, 40.0, 30.0, 2.0, 10.0])
DECIMALS = np.array([0, 0, 0, 1, 0])


def _limit(
    rule_id: str,
    parameter: Parameter,
    threshold: float,
    priority: AlarmPriority,
    *,
    alarm: str,
    high: bool = True,
    inclusive: bool = True,
    clear_band: float = 0.0,
    delay_s: int = 0,
    confirm: int = 1,
) -> CompiledRule:
    return CompiledRule(
        id=rule_id,
        spec=LimitSpec(parameter, high, threshold, inclusive, clear_band),
        priority=priority,
        alarm=alarm,
        delay_s=delay_s,
        confirm=confirm,
    )


def _participant_rules(index: int) -> list[CompiledRule]:
    """MDMA defaults (docs/clinical-basis.md); every 10th participant has a lower HR tier, every 7th
    has no temperature trend rule."""
    hr_low_tier = 95.0 if index % 10 == 0 else 100.0
    rules = [
        _limit("sbp-160", SBP, 160, LOW, alarm="sbp", inclusive=False, clear_band=5),
        _limit("sbp-180", SBP, 180, MEDIUM, alarm="sbp", confirm=2, clear_band=5),
        _limit("sbp-200", SBP, 200, HIGH, alarm="sbp", confirm=2, clear_band=5),
        _limit("dbp-100", DBP, 100, LOW, alarm="dbp", inclusive=False, clear_band=5),
        _limit("dbp-110", DBP, 110, MEDIUM, alarm="dbp", confirm=2, clear_band=5),
        _limit("dbp-120", DBP, 120, HIGH, alarm="dbp", confirm=2, clear_band=5),
        _limit(
            "hr-100", HR, hr_low_tier, LOW, alarm="hr", inclusive=False, delay_s=120, clear_band=5
        ),
        _limit("hr-120", HR, 120, MEDIUM, alarm="hr", inclusive=False, delay_s=120, clear_band=5),
        _limit("hr-131", HR, 131, HIGH, alarm="hr", delay_s=60, clear_band=5),
        _limit("hr-40", HR, 40, HIGH, alarm="hr-low", high=False, delay_s=10, clear_band=5),
        _limit("temp-38", TEMP, 38.0, LOW, alarm="temp", clear_band=0.2),
        _limit("temp-38.5", TEMP, 38.5, MEDIUM, alarm="temp", clear_band=0.2),
        _limit("temp-39", TEMP, 39.0, HIGH, alarm="temp", clear_band=0.2),
        _limit("spo2-95", SPO2, 95, LOW, alarm="spo2", high=False, clear_band=1),
        _limit("spo2-93", SPO2, 93, MEDIUM, alarm="spo2", high=False, delay_s=15, clear_band=1),
        _limit("spo2-91", SPO2, 91, HIGH, alarm="spo2", high=False, delay_s=15, clear_band=1),
        _limit("spo2-88", SPO2, 88, HIGH, alarm="spo2", high=False, clear_band=1),
        CompiledRule(
            id="temp-rise",
            spec=TrendSpec(
                Parameter.TEMPERATURE,
                rising=True,
                rate_per_min=0.5 / 30,
                window_s=1800,
                resolution_s=30,
                while_at_least=38.0,
            ),
            priority=HIGH,
        ),
        CompiledRule(
            id="temp-baseline",
            spec=BaselineSpec(Parameter.TEMPERATURE, high=True, delta=1.0, clear_band=0.2),
            priority=MEDIUM,
        ),
        CompiledRule(
            id="hyperthermia",
            spec=CombinedSpec(
                parts=(
                    CombinedPart(Parameter.TEMPERATURE, True, 38.5, True),
                    CombinedPart(Parameter.HEART_RATE, True, 120.0, True),
                )
            ),
            priority=HIGH,
            delay_s=60,
        ),
        CompiledRule(id="news2", spec=News2Spec(), priority=MEDIUM),
    ]
    for parameter, stale_after_s in (
        (Parameter.HEART_RATE, 60),
        (Parameter.SYSTOLIC_BP, 1800),
        (Parameter.DIASTOLIC_BP, 1800),
        (Parameter.TEMPERATURE, 300),
        (Parameter.SPO2, 60),
    ):
        rules.append(
            CompiledRule(
                id=f"{parameter.value}-stale",
                spec=StalenessSpec(parameter, stale_after_s),
                priority=MEDIUM,
                category=AlarmCategory.TECHNICAL,
            )
        )
    if index % 7 == 3:
        rules = [rule for rule in rules if rule.id != "temp-rise"]
    return rules


def mdma_rules(participants: int) -> RuleSet:
    """The benchmark's rule table."""
    return RuleSet.build({f"B-{i:05d}": _participant_rules(i) for i in range(participants)})


@dataclass(frozen=True, slots=True)
class _Second:
    """One second of input: a batch, then any dose markers, then a tick."""

    batch: SampleBatch
    doses: tuple[int, ...]
    tick_ms: int


def _session(participants: int, seconds: int, seed: int) -> Iterator[_Second]:
    """Deterministic synthetic input, one second at a time."""
    rng = np.random.default_rng(seed)
    stressed = rng.random(participants) < 0.08
    level = np.where(
        stressed[:, None],
        STRESSED + rng.normal(0.0, 1.0, (participants, PARAMETERS)) * NOISE * 2,
        REST + rng.normal(0.0, 1.0, (participants, PARAMETERS)) * REST_SPREAD,
    )
    streams = participants * PARAMETERS
    participant = np.repeat(np.arange(participants, dtype=np.int32), PARAMETERS)
    parameter = np.tile(np.arange(PARAMETERS, dtype=np.int8), participants)
    offset_ms = rng.integers(0, 1000, streams)  # each sensor reports at its own phase
    order = np.argsort(offset_ms, kind="stable")
    participant, parameter, offset_ms = participant[order], parameter[order], offset_ms[order]
    dose_second = max(seconds // 2, 1)
    for second in range(seconds):
        level += rng.normal(0.0, 0.02, level.shape) * NOISE
        values = level.reshape(-1)[order] + rng.normal(0.0, 1.0, streams) * NOISE[parameter]
        spikes = rng.random(streams) < 0.005
        values[spikes] += SPIKE[parameter[spikes]] * rng.choice([-1.0, 1.0], int(spikes.sum()))
        values = np.round(values * 10.0 ** DECIMALS[parameter]) / 10.0 ** DECIMALS[parameter]
        values[rng.random(streams) < 0.002] = np.nan
        flagged = rng.random(streams) < 0.01
        t_ms = ORIGIN_MS + second * 1000 + offset_ms
        batch = SampleBatch(
            t_ms=t_ms.astype(np.int64),
            participant=participant,
            parameter=parameter,
            value=values,
            flagged=flagged,
        )
        doses = tuple(range(participants)) if second == dose_second else ()
        yield _Second(batch, doses, ORIGIN_MS + second * 1000 + 999)


def _run(detector: Detector, inputs: Iterator[_Second]) -> tuple[list[ConditionUpdate], float]:
    """Feed the input, timing only the detector's calls."""
    updates: list[ConditionUpdate] = []
    elapsed = 0.0
    for second in inputs:
        started = time.perf_counter()
        updates.extend(detector.ingest(second.batch))
        for participant in second.doses:
            detector.mark_dose(participant, second.tick_ms)
        updates.extend(detector.tick(second.tick_ms))
        elapsed += time.perf_counter() - started
    return updates, elapsed


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_bench(streams: int, seconds: int, *, seed: int = 0, repeats: int = 25) -> dict[str, object]:
    """Time engine and reference on identical input and check that their outputs are identical."""
    participants = max(streams // PARAMETERS, 1)
    streams = participants * PARAMETERS
    rules = mdma_rules(participants)
    readings = streams * seconds

    runs: list[float] = []
    engine_updates: list[ConditionUpdate] = []
    consistent = True
    for _ in range(max(repeats, 1)):
        engine = Engine(rules, origin_ms=ORIGIN_MS)
        updates, elapsed = _run(engine, _session(participants, seconds, seed))
        runs.append(elapsed)
        if not engine_updates:
            engine_updates = updates
        consistent &= updates == engine_updates
    engine_rss = _peak_rss_mb()

    reference_seconds = max(1, min(seconds, REFERENCE_BUDGET // streams))
    reference = ReferenceDetector(rules, origin_ms=ORIGIN_MS)
    reference_updates, reference_s = _run(
        reference, _prefix(_session(participants, seconds, seed), reference_seconds)
    )
    end_ms = ORIGIN_MS + reference_seconds * 1000
    compared = [update for update in engine_updates if update.t_ms < end_ms]
    engine_s = min(runs)
    engine_rate = readings / engine_s
    reference_rate = streams * reference_seconds / reference_s
    return {
        "streams": streams,
        "participants": participants,
        "seconds": seconds,
        "readings": readings,
        "repeats": len(runs),
        "engine_seconds": round(engine_s, 4),
        "engine_readings_per_s": round(engine_rate),
        "engine_readings_per_s_median": round(readings / statistics.median(runs)),
        "engine_readings_per_s_first": round(readings / runs[0]),
        "reference_seconds_timed": reference_seconds,
        "reference_readings": streams * reference_seconds,
        "reference_seconds": round(reference_s, 4),
        "reference_readings_per_s": round(reference_rate),
        "ratio": round(engine_rate / reference_rate, 1),
        "identical": consistent and compared == reference_updates,
        "updates_compared": len(reference_updates),
        "engine_updates": len(engine_updates),
        "peak_rss_mb": round(engine_rss, 1),
        "peak_rss_total_mb": round(_peak_rss_mb(), 1),
    }


def _prefix(inputs: Iterator[_Second], seconds: int) -> Iterator[_Second]:
    for index, second in enumerate(inputs):
        if index >= seconds:
            return
        yield second
