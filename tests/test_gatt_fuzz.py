"""Random and mutated payloads: every decoder either returns a record or raises GattParseError.

A notification from a flaky or hostile device must never crash the consumer task with an
IndexError or struct.error. The generator is seeded, so a failure replays exactly.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from monitor.devices.gatt import (
    GattParseError,
    parse_battery_level,
    parse_blood_pressure,
    parse_heart_rate,
    parse_intermediate_cuff_pressure,
    parse_intermediate_temperature,
    parse_plx_continuous,
    parse_plx_spot_check,
    parse_temperature,
)

PAYLOADS_PER_DECODER = 12_000
MAX_RANDOM_LENGTH = 24

STAMP = "E8 07 03 0F 08 1E 05"

# Well-formed frames to mutate: minimal, fully populated, and with special values.
SEEDS: dict[str, Sequence[str]] = {
    "heart_rate": ("00 48", "01 2C 01", "06 48", "1F 2C 01 10 27 00 04 00 02", "10 48 00 04"),
    "blood_pressure": (
        "00 78 00 50 00 5D 00",
        "01 A0 F0 6B F0 7D F0",
        f"1E 78 00 50 00 5D 00 {STAMP} 48 00 FF 32 00",
        "04 FF 07 00 08 01 08 FE 07",
    ),
    "cuff_pressure": (
        "00 78 00 FF 07 FF 07",
        f"1F A0 F0 FF 07 FF 07 {STAMP} 00 08 FF 20 00",
    ),
    "temperature": ("00 74 01 00 FF", "01 DA 03 00 FF", f"06 74 01 00 FF {STAMP} 09"),
    "intermediate_temperature": ("00 6E 01 00 FF", f"06 FF FF 7F 00 {STAMP} 00"),
    "plx_spot_check": (
        "00 62 00 48 00",
        f"1F 61 00 48 00 {STAMP} 80 00 20 00 01 32 F0",
        "08 FF 07 00 08 FE 07",
    ),
    "plx_continuous": (
        "00 62 00 48 00",
        "1F 62 00 48 00 FF 07 00 08 FE 07 02 08 00 20 00 80 00 01 08",
        "04 62 00 48 00 1F 00",
    ),
    "battery_level": ("57", "64", "FF"),
}

DECODERS: dict[str, tuple[Callable[[bytes], Any], str, int]] = {
    # name: (decoder, characteristic in errors, seed for the generator)
    "heart_rate": (parse_heart_rate, "Heart Rate Measurement (0x2A37)", 0x2A37),
    "blood_pressure": (parse_blood_pressure, "Blood Pressure Measurement (0x2A35)", 0x2A35),
    "cuff_pressure": (
        parse_intermediate_cuff_pressure,
        "Intermediate Cuff Pressure (0x2A36)",
        0x2A36,
    ),
    "temperature": (parse_temperature, "Temperature Measurement (0x2A1C)", 0x2A1C),
    "intermediate_temperature": (
        parse_intermediate_temperature,
        "Intermediate Temperature (0x2A1E)",
        0x2A1E,
    ),
    "plx_spot_check": (parse_plx_spot_check, "PLX Spot-Check Measurement (0x2A5E)", 0x2A5E),
    "plx_continuous": (parse_plx_continuous, "PLX Continuous Measurement (0x2A5F)", 0x2A5F),
    "battery_level": (parse_battery_level, "Battery Level (0x2A19)", 0x2A19),
}


def random_bytes(rng: random.Random, length: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(length))


def payloads(rng: random.Random, seeds: Sequence[bytes], count: int) -> Iterator[bytes]:
    """Pure noise for a fifth of the cases; the rest are valid frames damaged one way."""
    for _ in range(count):
        kind = rng.randrange(5)
        if kind == 0:
            yield random_bytes(rng, rng.randint(0, MAX_RANDOM_LENGTH))
            continue
        mutated = bytearray(rng.choice(seeds))
        if kind == 1:
            del mutated[rng.randrange(len(mutated)) :]
        elif kind == 2:
            mutated += random_bytes(rng, rng.randint(1, 8))
        elif kind == 3:
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        else:
            # A new flag byte makes the decoder expect a different set of fields.
            mutated[0] = rng.getrandbits(8)
            if rng.random() < 0.5:
                mutated += random_bytes(rng, rng.randint(0, 8))
        yield bytes(mutated)


def assert_specials_explain_non_finite_values(record: Any) -> None:
    """A float attribute is finite unless special_values names it, and vice versa."""
    specials = getattr(record, "special_values", {})
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if isinstance(value, float):
            assert math.isfinite(value) is (item.name not in specials), item.name
    assert set(specials) <= {item.name for item in dataclasses.fields(record)}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoders_only_ever_raise_gatt_parse_error(name: str) -> None:
    decode, characteristic, seed = DECODERS[name]
    rng = random.Random(seed)
    seeds = [bytes.fromhex(hex_frame) for hex_frame in SEEDS[name]]
    for frame in seeds:
        decode(frame)  # the seeds themselves must be valid
    decoded = rejected = 0
    for payload in payloads(rng, seeds, PAYLOADS_PER_DECODER):
        try:
            record = decode(payload)
        except GattParseError as error:
            rejected += 1
            assert error.characteristic == characteristic
            assert 0 <= error.offset <= len(payload), payload.hex(" ")
            assert error.reason
        except Exception as error:
            pytest.fail(f"{name}({payload.hex(' ')!r}) raised {error!r}")
        else:
            decoded += 1
            assert_specials_explain_non_finite_values(record)
    # Both outcomes must be common, or the generator is not exercising the decoder.
    assert decoded > PAYLOADS_PER_DECODER // 20
    assert rejected > PAYLOADS_PER_DECODER // 20
