"""Hostile input against a running detector: nothing may crash it, hang it or silence an alarm.

Run from the repository root after ``scripts/test`` (or any install of the dev extra)::

    .venv/bin/python bench/fuzz.py                      # 60 s, seed 1
    .venv/bin/python bench/fuzz.py --seconds 300 --seed 7 --json

It starts a private Mosquitto on a free loopback port and one ``monitor detect`` process (real
time, local store, metrics on ``--http``) for a generated site of several participants, then for
a fixed time:

- publishes ordinary readings for every participant (so the session looks like a real one);
- throws random and hostile messages at every topic the detector reads, at a bounded rate:
  bytes that are not JSON, deep nesting, duplicate keys, oversized bodies, sequence numbers
  from 0 to 2**63 and beyond, timestamps from 1970 to 9999 and seconds to hours ahead, NaN and
  absurd values, payloads that contradict their topic, and commands of every kind with unknown
  alarms, unknown or spoofed staff, reused command ids and doses given in the future;
- plants a real event for one participant after another (SpO2 at 85 %, which the MDMA profile
  alarms on at once) and waits for the high alarm at an independent subscriber;
- asks the detector's ``/metrics`` every second (an event loop that does not answer within
  ``HANG_AFTER_S`` is a hang).

It reports crashes (the detector exited before its time, or not cleanly on SIGTERM), hangs,
every planted alarm's latency from its due time, and the detector's peak memory; it exits 1 if
a target is missed. Every message sent is reproducible from ``--seed``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK  # noqa: E402  (run as a script from the root)
from tests.services import Mosquitto, free_port  # noqa: E402

SITE = "FUZZ"
SESSION = "FUZZ-MDMA-1"
ROOT_TOPIC = f"vitals/{SITE}"
HANG_AFTER_S = 5.0
HOSTILE_IN_FLIGHT = 50  # hostile publishes awaited together (QoS 1 waits for each PUBACK)
PLANT_SLACK_S = 2.0  # an immediate alarm is due when its second low sample arrives (spike filter)
TARGETS = {"crashes": 0, "hangs": 0, "planted_missed": 0, "peak_rss_mb": 400}
DEVICES = (
    ("hr", "heart_rate"),
    ("bp", "blood_pressure"),
    ("temp", "thermometer"),
    ("spo2", "pulse_oximeter"),
)


def site_file(folder: Path, participants: int) -> Path:
    """A one-room site with ``participants`` people, four wearables each, on the MDMA profile."""
    lines = [
        "[site]",
        f'code = "{SITE}"',
        'timezone = "UTC"',
        f'protocols_dir = "{ROOT / "config" / "protocols"}"',
        "",
        "[[staff]]",  # a real member, so some hostile commands pass the identity check
        'id = "nurse-07"',
        'roles = ["room-staff"]',
        'accounts = ["nurse-07"]',
        "",
        "[[rooms]]",
        'id = "fuzz-room"',
        f"max_connections = {4 * participants}",
        "",
        "[[sessions]]",
        f'id = "{SESSION}"',
        'room = "fuzz-room"',
        'protocol = "mdma"',
    ]
    for code in codes(participants):
        lines += ["", "[[sessions.participants]]", f'code = "{code}"']
        for prefix, kind in DEVICES:
            lines += [
                "",
                "[[sessions.participants.devices]]",
                f'id = "{prefix}-{code.lower()}"',
                f'kind = "{kind}"',
                f'name_pattern = "SIM-{prefix.upper()}-{code}"',
            ]
    path = folder / "fuzz.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def codes(participants: int) -> list[str]:
    return [f"P-{i:03d}" for i in range(1, participants + 1)]


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def reading(code: str, kind: str, values: dict[str, object], at: dt.datetime) -> dict[str, object]:
    prefix = {"heart_rate": "hr", "blood_pressure": "bp", "temperature": "temp", "spo2": "spo2"}
    return {
        "session": SESSION,
        "participant": code,
        "device": f"{prefix[kind]}-{code.lower()}",
        "kind": kind,
        "values": values,
        "measured_at": None,
        "received_at": iso(at),
        "quality": [],
    }


@dataclass
class Gateway:
    """One honest gateway: numbered batches per participant, as ``monitor gateway`` sends them."""

    name: str = "gw-fuzz"
    run: str = field(default_factory=lambda: str(uuid.uuid4()))
    sequence: dict[str, int] = field(default_factory=dict)

    def batch(self, code: str, readings: list[dict[str, object]]) -> bytes:
        self.sequence[code] = self.sequence.get(code, 0) + 1
        return json.dumps(
            {
                "schema_version": 1,
                "gateway": self.name,
                "run": self.run,
                "sequence": self.sequence[code],
                "session": SESSION,
                "participant": code,
                "sent_at": iso(now()),
                "readings": readings,
            }
        ).encode()


def ordinary_readings(code: str, second: int, low: bool) -> list[dict[str, object]]:
    at = now()
    spo2 = 85.0 if low else 97.0
    out = [
        reading(code, "heart_rate", {"heart_rate": 82.0}, at),
        reading(code, "spo2", {"spo2": spo2, "pulse_rate": 82.0}, at),
    ]
    if second % 10 == 0:
        out.append(reading(code, "temperature", {"temperature": 36.9}, at))
    if second % 300 == 0:
        bp = {"systolic_bp": 128.0, "diastolic_bp": 80.0, "mean_arterial_bp": 96.0}
        out.append(reading(code, "blood_pressure", {**bp, "pulse_rate": 82.0}, at))
    return out


class Hostile:
    """Random and hostile messages; every choice comes from one seeded generator."""

    def __init__(self, rng: random.Random, participants: list[str]) -> None:
        self.rng = rng
        self.participants = participants
        self.used_ids: list[str] = []
        # Participants whose SpO2 carries a planted event: forged SpO2 values there are data,
        # not an attack (only an authorised gateway may publish readings), and would rightly
        # change what detection sees; every other stream stays fair game.
        self.planted: set[str] = set()

    def message(self) -> tuple[str, bytes]:
        maker = self.rng.choice(
            [self.junk_bytes, self.hostile_batch, self.hostile_command, self.hostile_device]
        )
        return maker()

    def topic(self, family: str) -> str:
        code = self.rng.choice([*self.participants, "P-999", "x" * 40, "+", "#", ""])
        session = self.rng.choice([SESSION, "OTHER-1", "", "a" * 80])
        kind = self.rng.choice(
            ["acknowledge", "pause", "resume", "dose", "consciousness", "nope", ""]
        )
        account = self.rng.choice(["nurse-07", "dashboard", "console", "intruder", ""])
        return self.rng.choice(
            {
                "readings": [f"{ROOT_TOPIC}/readings/{SESSION}/{code}"],
                "commands": [
                    f"{ROOT_TOPIC}/commands/{session}/{kind}",
                    f"{ROOT_TOPIC}/commands/{session}/{kind}/{account}",
                    f"{ROOT_TOPIC}/commands/{SESSION}/{kind}",
                ],
                "devices": [f"{ROOT_TOPIC}/devices/{SESSION}/{code}/spo2-{code.lower()}"],
            }[family]
        )

    def junk_bytes(self) -> tuple[str, bytes]:
        family = self.rng.choice(["readings", "commands", "devices"])
        body = self.rng.choice(
            [
                self.rng.randbytes(self.rng.randint(0, 512)),
                b"",
                b"{",
                b"null",
                b"[]",
                b"[" * 20_000 + b"]" * 20_000,
                b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
                b"\xff\xfe\x00",
                b'{"schema_version": 1}' * 1000,
                json.dumps({"k": "v" * 200_000}).encode(),
            ]
        )
        return self.topic(family), body

    def timestamp(self) -> str:
        base = now()
        choice = self.rng.randrange(9)
        if choice == 0:
            return "9999-12-31T23:59:59Z"
        if choice == 1:
            return "1970-01-01T00:00:00Z"
        if choice == 2:
            return iso(base + dt.timedelta(hours=self.rng.choice([1, 2, 24, 24 * 365])))
        if choice == 3:
            return iso(base + dt.timedelta(seconds=self.rng.uniform(1, 120)))
        if choice == 4:
            return iso(base - dt.timedelta(hours=self.rng.choice([1, 24, 24 * 365])))
        if choice == 5:
            return "2026-13-45T99:99:99Z"
        if choice == 6:
            return "2026-01-01T00:00:00"  # naive
        return iso(base)

    def value(self) -> object:
        """Never a plausible normal value: a forged normal SpO2 is data, not an attack, and would
        rightly mask a planted desaturation (the broker's ACL is what keeps forgers out)."""
        return self.rng.choice(
            [85.0, 0.0, -1.0, 1e308, -1e308, 1000.0, math.nan, math.inf, None, "97", True, 12]
        )

    def hostile_batch(self) -> tuple[str, bytes]:
        code = self.rng.choice(self.participants)
        at = self.timestamp()
        kinds = ["heart_rate", "temperature", "blood_pressure"]
        kind = self.rng.choice(kinds if code in self.planted else [*kinds, "spo2"])
        parameter = {"blood_pressure": "systolic_bp"}.get(kind, kind)
        one = reading(code, kind, {parameter: self.value()}, now())
        one["received_at"] = at
        if self.rng.random() < 0.3:
            one["measured_at"] = self.timestamp()
        if self.rng.random() < 0.2:
            one["participant"] = self.rng.choice(self.participants)  # contradicts the topic
            if one["participant"] in self.planted and kind == "spo2":
                one["participant"] = code
        sequence = self.rng.choice(
            [0, -1, 1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, 20_000_000]
        )
        batch = {
            "schema_version": self.rng.choice([1, 1, 1, 2, 0]),
            "gateway": self.rng.choice(["gw-fuzz", "gw-evil", "x" * 100]),
            "run": self.rng.choice([str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000"]),
            "sequence": sequence,
            "session": SESSION,
            "participant": code,
            "sent_at": self.timestamp(),
            "readings": [one] * self.rng.choice([1, 1, 2, 1000, 1001]),
        }
        text = json.dumps(batch, allow_nan=True)
        if self.rng.random() < 0.1:
            text = text.replace('"sequence"', '"sequence": 1, "sequence"', 1)  # duplicate key
        return f"{ROOT_TOPIC}/readings/{SESSION}/{code}", text.encode()

    def hostile_command(self) -> tuple[str, bytes]:
        kind = self.rng.choice(["acknowledge", "pause", "resume", "dose", "consciousness"])
        command_id = (
            self.rng.choice(self.used_ids)
            if self.used_ids and self.rng.random() < 0.2
            else str(uuid.uuid4())
        )
        self.used_ids = [*self.used_ids[-50:], command_id]
        body: dict[str, object] = {
            "schema_version": 1,
            "command_id": command_id,
            "session": SESSION,
            "staff": self.rng.choice(["MD-CHIEF-01", "NOBODY", "nurse-07", "", "x" * 500]),
            "issued_at": self.timestamp(),
            "kind": kind,
        }
        # Never a well-formed pause of a participant an event is planted on: a real pause by real
        # staff is allowed to silence medium alarms, and this benchmark plants high ones only.
        participant = self.rng.choice([*self.participants, "P-999"])
        if kind == "acknowledge":
            body["alarm_id"] = str(uuid.uuid4())
        elif kind in {"pause", "resume"}:
            body["participant"] = participant
            body["duration_s"] = self.rng.choice([1, 60, 10**9, -5, "600"])
        elif kind == "dose":
            body["participant"] = participant
            body["given_at"] = self.timestamp()
        else:
            body["participant"] = participant
            body["level"] = self.rng.choice(["alert", "voice", "pain", "unresponsive", "new", "?"])
            body["observed_at"] = self.timestamp()
        if self.rng.random() < 0.2:
            body[self.rng.choice(["extra", "kind", "staff"])] = "surprise"
        return self.topic("commands"), json.dumps(body).encode()

    def hostile_device(self) -> tuple[str, bytes]:
        code = self.rng.choice(self.participants)
        event = {
            "session": SESSION,
            "participant": code,
            "device": f"spo2-{code.lower()}",
            "device_kind": "pulse_oximeter",
            "event": self.rng.choice(["state_changed", "no_data", "battery_low", "bogus"]),
            "state": self.rng.choice(["connected", "disconnected", "bogus"]),
            "occurred_at": self.timestamp(),
            "detail": "d" * self.rng.choice([0, 10, 100_000]),
        }
        body = {"schema_version": 1, "event": event}
        return f"{ROOT_TOPIC}/devices/{SESSION}/{code}/spo2-{code.lower()}", json.dumps(
            body
        ).encode()


@dataclass
class Plant:
    participant: str
    low_samples: int = 0
    due: float | None = None  # monotonic time of the second low sample: the alarm is due then
    seen: float | None = None


@dataclass
class Outcome:
    seconds: float
    seed: int
    participants: int
    rate: float
    hostile_messages: int = 0
    ordinary_batches: int = 0
    crashes: int = 0
    hangs: int = 0
    slowest_metrics_s: float = 0.0
    exit_code: int | None = None
    peak_rss_mb: float = 0.0
    planted: int = 0
    planted_missed: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        latencies = sorted(self.latencies_s)
        return {
            "seconds": self.seconds,
            "seed": self.seed,
            "participants": self.participants,
            "hostile_per_s": self.rate,
            "hostile_messages": self.hostile_messages,
            "ordinary_batches": self.ordinary_batches,
            "crashes": self.crashes,
            "hangs": self.hangs,
            "slowest_metrics_s": round(self.slowest_metrics_s, 3),
            "detector_exit": self.exit_code,
            "planted": self.planted,
            "planted_missed": self.planted_missed,
            "planted_latency_s_median": round(statistics.median(latencies), 3)
            if latencies
            else None,
            "planted_latency_s_max": round(latencies[-1], 3) if latencies else None,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


class Fuzzer:
    """One run: the broker, the detector, the driver, the watcher and the probe."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.outcome = Outcome(
            seconds=args.seconds, seed=args.seed, participants=args.participants, rate=args.rate
        )
        self.rng = random.Random(args.seed)
        self.participants = codes(args.participants)
        self.plants = [Plant(code) for code in self.participants]
        self.watching = asyncio.Event()
        self.online = asyncio.Event()
        self.all_seen = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> Outcome:
        outcome = self.outcome
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp, Mosquitto(Path(tmp) / "mq") as mq:
            folder = Path(tmp)
            config = site_file(folder, outcome.participants)
            http_port = free_port()
            env = {**os.environ, "MONITOR_MQTT_URL": mq.url, "MONITOR_INFLUX_URL": ""}
            log = folder / "detector.log"
            with log.open("wb") as stderr:
                detector = await asyncio.create_subprocess_exec(
                    *(sys.executable, "-m", "monitor", "detect", "--config", str(config)),
                    *("--store", str(folder / "store.sqlite"), "--http", f"127.0.0.1:{http_port}"),
                    *("--duration", str(outcome.seconds + 60), "--no-live"),
                    cwd=ROOT,
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=stderr,
                )
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self.watch(mq.port))
                    await asyncio.wait_for(self.watching.wait(), 20)
                    online = asyncio.ensure_future(self.online.wait())
                    exited = asyncio.ensure_future(detector.wait())
                    await asyncio.wait({online, exited}, timeout=60, return_when="FIRST_COMPLETED")
                    exited.cancel()
                    if not online.done():
                        online.cancel()
                        raise TimeoutError  # exited, or still not online after a minute
                    group.create_task(self.probe(http_port, detector.pid))
                    await self.drive(mq.port)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.all_seen.wait(), PLANT_SLACK_S + 3)
                    self.stop.set()
            except* TimeoutError:
                self.stop.set()
                print("error: the detector never came online", file=sys.stderr)
            await self.end(detector)
            if outcome.crashes or detector.returncode not in {EXIT_OK, EXIT_INTERRUPTED}:
                outcome.crashes = max(outcome.crashes, 1)  # 130 is our SIGTERM, handled cleanly
                print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        for plant in self.plants:
            if plant.due is None:
                continue
            outcome.planted += 1
            if plant.seen is None or plant.seen - plant.due > PLANT_SLACK_S:
                outcome.planted_missed += 1
            if plant.seen is not None:
                outcome.latencies_s.append(max(0.0, plant.seen - plant.due))
        return outcome

    async def end(self, detector: asyncio.subprocess.Process) -> None:
        """SIGTERM; a detector already gone crashed, one that ignores the signal hangs."""
        if detector.returncode is not None:
            self.outcome.crashes += 1
            print("error: the detector ended before its time", file=sys.stderr)
        else:
            detector.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(detector.wait(), 20)
            except TimeoutError:
                self.outcome.hangs += 1
                detector.kill()
                await detector.wait()
        self.outcome.exit_code = detector.returncode

    async def watch(self, port: int) -> None:
        """The independent subscriber: the detector's status and every alarm event."""
        async with aiomqtt.Client("127.0.0.1", port, identifier="fuzz-watcher") as client:
            await client.subscribe(f"{ROOT_TOPIC}/alarms/{SESSION}/+", qos=1)
            await client.subscribe(f"{ROOT_TOPIC}/status/+", qos=1)
            self.watching.set()
            async with asyncio.TaskGroup() as group:
                reader = group.create_task(self._read(client))
                await self.stop.wait()
                reader.cancel()

    async def _read(self, client: aiomqtt.Client) -> None:
        by_code = {plant.participant: plant for plant in self.plants}
        async for message in client.messages:
            body = json.loads(bytes(message.payload))
            if "/status/" in str(message.topic):
                if body.get("state") == "online":
                    self.online.set()
                continue
            event = body.get("event", {})
            plant = by_code.get(event.get("participant"))
            if (
                plant is not None
                and plant.low_samples > 0
                and plant.seen is None
                and event.get("parameter") == "spo2"
                and event.get("priority") == "high"
                and event.get("state") == "active"
            ):
                plant.seen = time.monotonic()
                self._check_all_seen()

    def _check_all_seen(self) -> None:
        if all(p.seen is not None for p in self.plants if p.due is not None):
            self.all_seen.set()

    async def drive(self, port: int) -> None:
        """Ordinary readings every second, hostile messages in between, a planted event in turn."""
        gateway = Gateway()
        hostile = Hostile(self.rng, self.participants)
        seconds = self.outcome.seconds
        per_second = max(1, round(self.outcome.rate))
        plant_every = seconds / (len(self.plants) + 1)
        start = time.monotonic()
        driver = aiomqtt.Client("127.0.0.1", port, identifier="fuzz-driver")
        driver.pending_calls_threshold = 2 * HOSTILE_IN_FLIGHT  # in flight by design
        async with driver as client:
            second = 0
            while (elapsed := time.monotonic() - start) < seconds:
                planted = int(elapsed // plant_every)  # participants 1..planted are now low
                for index, code in enumerate(self.participants):
                    plant = self.plants[index]
                    low = index < planted
                    body = gateway.batch(code, ordinary_readings(code, second, low))
                    await client.publish(f"{ROOT_TOPIC}/readings/{SESSION}/{code}", body, qos=1)
                    self.outcome.ordinary_batches += 1
                    if low:
                        hostile.planted.add(code)
                        plant.low_samples += 1
                        if plant.low_samples == 2:
                            plant.due = time.monotonic()
                tick_end = start + second + 1
                for first in range(0, per_second, HOSTILE_IN_FLIGHT):
                    messages = [
                        (*hostile.message(), self.rng.choice([0, 1]))
                        for _ in range(min(HOSTILE_IN_FLIGHT, per_second - first))
                    ]
                    sent = await asyncio.gather(
                        *(self._send(client, *message) for message in messages)
                    )
                    self.outcome.hostile_messages += sum(sent)
                    if time.monotonic() >= tick_end:
                        break
                await asyncio.sleep(max(0.0, tick_end - time.monotonic()))
                second += 1
        self._check_all_seen()

    @staticmethod
    async def _send(client: aiomqtt.Client, topic: str, body: bytes, qos: int) -> bool:
        """One hostile message; ``False`` for a topic the client itself refuses (wildcards)."""
        try:
            await client.publish(topic, body, qos=qos)
        except (ValueError, aiomqtt.MqttError):
            return False
        return True

    async def probe(self, port: int, pid: int) -> None:
        """``/metrics`` once a second (a hang is no answer in time) and the detector's memory."""
        url = f"http://127.0.0.1:{port}/metrics"
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                await asyncio.to_thread(_get, url, HANG_AFTER_S)
            except OSError:
                self.outcome.hangs += 1
            slowest = max(self.outcome.slowest_metrics_s, time.monotonic() - started)
            self.outcome.slowest_metrics_s = slowest
            self.outcome.peak_rss_mb = max(self.outcome.peak_rss_mb, _rss_mb(pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)


def _get(url: str, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        response.read()


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--participants",
        type=int,
        default=5,
        choices=range(1, 6),
        metavar="1..5",
        help="participants of the one session (a room links at most 20 wearables, four each)",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="hostile messages per second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(Fuzzer(args).run()).report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:26} {value}")
    failures = []
    for key, limit in TARGETS.items():
        value = report[key]
        assert isinstance(value, int | float)
        if value > limit:
            failures.append(f"{key} {value} > {limit}")
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return EXIT_FAILED if failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
