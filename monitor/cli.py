"""The ``monitor`` command line.

Exit status (:mod:`monitor.exits`): 0 on success, 2 for bad input (config, arguments), 3 when a
service it needs cannot be used (the broker refuses the credentials or its certificate does not
verify, the store cannot be opened), 130 when stopped by SIGINT/SIGTERM, 1 when a check fails
(``score``, ``bench``) or for anything unexpected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor import __version__
from monitor.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE
from monitor.logs import configure_logging, logging_configured, logging_options

if TYPE_CHECKING:
    from monitor.clock import Clock
    from monitor.config import SiteConfig
    from monitor.devices.connector import BleBackend
    from monitor.models import DoseMarker
    from monitor.service import RunOptions

MAX_SPEED = 10_000
"""The fastest ``--speed``: a day of session time in under nine wall-clock seconds."""
DEFAULT_STORE = Path("var/monitor-store.sqlite")


def _run_until_signal(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main``; SIGINT/SIGTERM cancel it so every context manager closes cleanly."""

    async def runner() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            return await main
        except asyncio.CancelledError:
            print("interrupted: stopped cleanly", file=sys.stderr)
            return EXIT_INTERRUPTED

    return asyncio.run(runner())


def _check_config(args: argparse.Namespace) -> int:
    """The site file as the services will run it: with the environment's overrides applied."""
    from monitor.config import (  # noqa: PLC0415 - keep --help fast
        load_config_or_report,
        resolve_influx_config,
        resolve_mqtt_config,
        summarize,
    )

    config = load_config_or_report(args.file)
    if config is None:
        return EXIT_BAD_INPUT
    problems = []
    try:
        mqtt = resolve_mqtt_config(config, os.environ)
    except ValueError as error:
        problems.append(str(error))
        mqtt = config.mqtt
    try:
        influx = resolve_influx_config(config.influx, os.environ)
    except ValueError as error:
        problems.append(str(error))
        influx = config.influx
    if problems:
        print(f"{args.file}: invalid settings from the environment:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summarize(config.model_copy(update={"mqtt": mqtt, "influx": influx})))
    return EXIT_OK


def _record(args: argparse.Namespace) -> int:
    from monitor.config import load_config_or_report  # noqa: PLC0415 - keep --help fast
    from monitor.recording import record  # noqa: PLC0415

    config = load_config_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    if args.speed != 1.0 and args.simulate is None:
        print("--speed only applies with --simulate", file=sys.stderr)
        return EXIT_BAD_INPUT

    async def main() -> int:
        wearables = await _wearables(args, config, markers_file=args.out / "markers.jsonl")
        if wearables is None:
            return EXIT_BAD_INPUT
        clock, backend, simulation = wearables
        summary = await record(
            config,
            args.out,
            duration_s=args.duration,
            clock=clock,
            backend=backend,
            simulation=simulation,
        )
        print(f"recorded to {args.out}/")
        print("\n".join(summary.lines()))
        return EXIT_OK

    return _run_until_signal(main())


async def _simulation(
    scenario_name: str,
    clock: Clock,
    config: SiteConfig,
    *,
    start_s: float = 0.0,
    markers_file: Path | None = None,
) -> tuple[BleBackend, contextlib.AbstractAsyncContextManager[list[DoseMarker]]] | None:
    """The virtual radio and a scenario's wearables; the CLI is the one door into simulators.

    Entering the returned context starts the wearables and yields the scenario's dose markers
    (as staff would enter them), also written to ``markers_file`` when given, so that ``monitor
    replay`` of a recording fixes the same pre-dose baselines the service does.
    """
    from monitor.devices.connector import BleBackend  # noqa: PLC0415
    from monitor.jsonl import JsonlWriter  # noqa: PLC0415
    from monitor.models import DoseMarker  # noqa: PLC0415
    from simulators.radio import VirtualRadio  # noqa: PLC0415
    from simulators.scenario import ScenarioError, load_scenario  # noqa: PLC0415
    from simulators.session import SimulatedSession  # noqa: PLC0415

    logging.getLogger("bumble").setLevel(logging.ERROR)  # the emulated controller is chatty
    try:
        scenario = load_scenario(scenario_name)
        radio = VirtualRadio()
        # Device clocks keep the site's local time, as staff set them; the connector reads
        # their naive timestamps in that zone.
        simulated = SimulatedSession(
            scenario, radio, clock, start_s=start_s, device_timezone=config.site.zone
        )
    except (ScenarioError, ValueError) as error:
        print(f"--simulate: {error}", file=sys.stderr)
        return None
    session_of = {
        participant.code: session.id
        for session in config.sessions
        for participant in session.participants
    }

    @contextlib.asynccontextmanager
    async def wearables() -> AsyncIterator[list[DoseMarker]]:
        async with radio, simulated as session:
            markers = [
                DoseMarker(
                    session=session_of[participant.code],
                    participant=participant.code,
                    given_at=session.wall_time(dose.at_s),
                )
                for participant in scenario.participants
                if participant.code in session_of
                for dose in participant.doses
            ]
            if markers_file is not None:
                async with JsonlWriter(markers_file) as writer:
                    for marker in markers:
                        writer.put(marker)
            yield markers

    backend = BleBackend(scanner=radio.scanner_backend, client=radio.client_backend)
    return backend, wearables()


async def _wearables(
    args: argparse.Namespace,
    config: SiteConfig,
    *,
    start_s: float = 0.0,
    markers_file: Path | None = None,
) -> (
    tuple[Clock, BleBackend, contextlib.AbstractAsyncContextManager[list[DoseMarker]] | None] | None
):
    """The clock, radio and wearables a command reads: the real ones, or ``--simulate``'s at
    ``--speed`` (see :func:`_simulation`); ``None`` after reporting a bad scenario."""
    from monitor.clock import AcceleratedClock, SystemClock  # noqa: PLC0415
    from monitor.devices.connector import BleBackend  # noqa: PLC0415

    if args.simulate is None:
        return SystemClock(), BleBackend(), None
    clock = AcceleratedClock(SystemClock().now(), args.speed)
    simulated = await _simulation(
        args.simulate, clock, config, start_s=start_s, markers_file=markers_file
    )
    if simulated is None:
        return None
    backend, simulation = simulated
    return clock, backend, simulation


def _config_for_wearables(args: argparse.Namespace) -> SiteConfig | None:
    """The site config of a command with wearables, and its simulation options checked;
    ``None`` once the problem is reported."""
    from monitor.config import load_config_or_report  # noqa: PLC0415 - keep --help fast

    config = load_config_or_report(args.config)
    if config is not None and args.simulate is None and (args.speed != 1.0 or args.start != 0.0):
        print("--speed and --start only apply with --simulate", file=sys.stderr)
        return None
    return config


def _run(args: argparse.Namespace) -> int:
    config = _config_for_wearables(args)
    if config is None:
        return EXIT_BAD_INPUT
    options = _service_options(args, simulated=args.simulate is not None)

    async def main() -> int:
        markers_file = None if args.record is None else args.record / "markers.jsonl"
        wearables = await _wearables(args, config, start_s=args.start, markers_file=markers_file)
        if wearables is None:
            return EXIT_BAD_INPUT
        clock, backend, simulation = wearables
        return await _serve(config, clock, backend, options, simulation)

    return _run_until_signal(main())


def _detect(args: argparse.Namespace) -> int:
    from monitor.clock import FollowingClock, SystemClock  # noqa: PLC0415
    from monitor.config import load_config_or_report  # noqa: PLC0415 - keep --help fast

    config = load_config_or_report(args.config)
    if config is None:
        return EXIT_BAD_INPUT
    following = args.speed != 1.0
    options = _service_options(args, simulated=following)
    clock = FollowingClock(args.speed) if following else SystemClock()
    return _run_until_signal(_serve(config, clock, None, options, None))


def _service_options(args: argparse.Namespace, *, simulated: bool) -> RunOptions:
    """``run`` and ``detect``: the options they share, and the log file of the live view."""
    from monitor.service import RunOptions  # noqa: PLC0415

    live = sys.stdout.isatty() and not args.no_live
    if live:  # log lines would tear the live view apart: they go to a file beside the store
        log_file = args.store.parent / "monitor.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        configure_logging(args.log_level, args.log_format, file=log_file)
    return RunOptions(
        store=args.store,
        duration_s=args.duration,
        record=args.record,
        wait_for_devices_s=30.0 if simulated else 0.0,
        http=args.http,
        live=live,
    )


async def _serve(
    config: SiteConfig,
    clock: Clock,
    backend: BleBackend | None,
    options: RunOptions,
    simulation: contextlib.AbstractAsyncContextManager[list[DoseMarker]] | None,
) -> int:
    from monitor.mqtt.client import BrokerUnusableError  # noqa: PLC0415
    from monitor.service import Service, StoreUnavailableError  # noqa: PLC0415

    service = Service(config, clock=clock, backend=backend, options=options, simulation=simulation)
    try:
        summary = await service.run()
    except ValueError as error:  # a connection setting from the environment, named
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (BrokerUnusableError, StoreUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    print("\n".join(summary.lines()))
    return EXIT_OK


def _gateway(args: argparse.Namespace) -> int:
    from monitor.gateway import Gateway  # noqa: PLC0415
    from monitor.mqtt.client import BrokerUnusableError  # noqa: PLC0415

    config = _config_for_wearables(args)
    if config is None:
        return EXIT_BAD_INPUT

    async def main() -> int:
        wearables = await _wearables(args, config, start_s=args.start)
        if wearables is None:
            return EXIT_BAD_INPUT
        clock, backend, simulation = wearables
        try:
            gateway = Gateway(
                config,
                clock=clock,
                backend=backend,
                rooms=args.room,
                name=args.name,
                duration_s=args.duration,
                simulation=simulation,
            )
        except ValueError as error:  # a room, the name or the broker settings
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            await gateway.run()
        except BrokerUnusableError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_UNAVAILABLE
        finally:  # also when stopped by SIGINT/SIGTERM, the usual way a gateway ends
            print("\n".join(gateway.summary.lines()))
        return EXIT_OK

    return _run_until_signal(main())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; exposed so tests and docs can inspect it."""
    parser = argparse.ArgumentParser(
        prog="monitor",
        description=(
            "Vital-sign monitoring for psychedelic-assisted therapy sessions. "
            "Decision support for session staff; not a certified medical device."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    logs = logging_options()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check-config",
        parents=[logs],
        help="validate a site configuration and print a summary",
        description=(
            "Validate a site configuration and the protocol profiles it names. "
            "Lists every problem at once; exits 2 when the configuration is invalid."
        ),
    )
    check.add_argument("file", type=Path, metavar="FILE", help="site configuration (TOML)")
    check.set_defaults(handler=_check_config)

    rec = commands.add_parser(
        "record",
        parents=[logs],
        help="record readings and device events from the configured wearables to files",
        description=(
            "Connect to the configured wearables and write DIR/readings.jsonl (one reading per "
            "line) and DIR/device-events.jsonl. With --simulate, the scenario's simulated "
            "wearables are started on a virtual radio first."
        ),
    )
    rec.add_argument("--config", type=Path, required=True, metavar="FILE", help="site config")
    rec.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    _add_simulation_options(rec)
    rec.set_defaults(handler=_record)

    run = commands.add_parser(
        "run",
        parents=[logs],
        help="run the monitoring service: wearables, detection, alarms over MQTT, storage",
        description=(
            "Connect to the configured wearables, detect, publish every alarm transition over "
            "MQTT and store every reading and alarm (InfluxDB, or the local store). Without a "
            "broker or database configured (site file or MONITOR_MQTT_URL / MONITOR_INFLUX_URL) "
            "it runs an embedded broker on loopback and keeps everything in the local store. "
            "Stops on SIGINT/SIGTERM or after --duration."
        ),
    )
    run.add_argument("--config", type=Path, required=True, metavar="FILE", help="site config")
    _add_simulation_options(run)
    _add_start_option(run)
    _add_service_options(run)
    run.set_defaults(handler=_run)

    detect = commands.add_parser(
        "detect",
        parents=[logs],
        help="the detector of a site with gateways: their readings over MQTT -> alarms, storage",
        description=(
            "Read every gateway's readings and device events from the site's broker (site file "
            "or MONITOR_MQTT_URL; required), detect, publish every alarm transition and store "
            "everything, as monitor run does with its own wearables. Lost gateway batches are "
            "counted. With --speed N it follows gateways that run a simulation at xN (their "
            "clock, from their first batch). Stops on SIGINT/SIGTERM or after --duration."
        ),
    )
    detect.add_argument("--config", type=Path, required=True, metavar="FILE", help="site config")
    detect.add_argument(
        "--duration", type=_positive_float, metavar="S", help="stop after S wall-clock seconds"
    )
    detect.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="N",
        help="the gateways simulate at xN: follow their clock (default 1: real time)",
    )
    _add_service_options(detect)
    detect.set_defaults(handler=_detect)

    gateway = commands.add_parser(
        "gateway",
        parents=[logs],
        help="publish the wearables of some rooms to the site's MQTT broker (no detection)",
        description=(
            "Connect to the wearables of the chosen rooms (--room, repeatable; default every "
            "room with devices) and publish their readings, a few times a second, as numbered "
            "batches per participant, and every device event, to the site's broker (site file "
            "or MONITOR_MQTT_URL; required: there is no embedded broker for a gateway). A "
            "detector elsewhere reads them and counts lost batches. Stops on SIGINT/SIGTERM or "
            "after --duration, after handing the broker what was read; prints a summary."
        ),
    )
    gateway.add_argument("--config", type=Path, required=True, metavar="FILE", help="site config")
    gateway.add_argument(
        "--room",
        action="append",
        metavar="ID",
        help="a room whose wearables this gateway reaches (repeatable; default all rooms)",
    )
    gateway.add_argument(
        "--name",
        metavar="NAME",
        help="the gateway's name in its batches and client id (default gateway-<room>, or "
        "gateway-<site> for several rooms)",
    )
    _add_simulation_options(gateway)
    _add_start_option(gateway)
    gateway.set_defaults(handler=_gateway)

    export = commands.add_parser(
        "export",
        parents=[logs],
        help="write the local store (or a spool) as line protocol or CSV",
        description=(
            "Read a store or spool file (read-only; also while the service runs) and write its "
            "points, oldest first, as line protocol (exactly as stored, for InfluxDB) or CSV (one "
            "row per point; tags as tag_<key> columns). Writes to stdout unless --out is given; "
            "a summary goes to stderr. --since is inclusive, --until exclusive; both need a UTC "
            "offset. Exits 2 for a missing or unreadable store or a bad argument."
        ),
    )
    export.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_STORE,
        metavar="FILE",
        help=f"the store or spool (default {DEFAULT_STORE}, as for monitor run)",
    )
    export.add_argument(
        "--format", choices=("lp", "csv"), default="lp", help="line protocol (default) or CSV"
    )
    export.add_argument(
        "--measurement",
        action="extend",
        nargs="+",
        metavar="NAME",
        help="only these measurements (vitals, alarm_events, device_status); default all",
    )
    export.add_argument(
        "--state",
        action="extend",
        nargs="+",
        choices=("pending", "delivered", "quarantined", "stored"),
        metavar="STATE",
        help="only points in these states (pending, delivered, quarantined, stored); default all",
    )
    export.add_argument("--since", metavar="ISO", help="only points at or after this time")
    export.add_argument("--until", metavar="ISO", help="only points before this time")
    export.add_argument("--out", type=Path, metavar="FILE", help="write here instead of stdout")
    export.set_defaults(handler=_export)

    replay = commands.add_parser(
        "replay",
        parents=[logs],
        help="evaluate recorded readings and write the alarm events they would have raised",
        description=(
            "Run detection over readings.jsonl files (the format monitor record writes) in their "
            "own time, as fast as the engine goes, and write DIR/alarms.jsonl plus a summary. "
            "Bad lines are reported with their line number and skipped."
        ),
    )
    replay.add_argument("readings", type=Path, nargs="+", metavar="READINGS.jsonl")
    replay.add_argument(
        "--config",
        type=Path,
        default=Path("config/demo.toml"),
        metavar="FILE",
        help="site configuration naming the sessions, participants and protocols "
        "(default config/demo.toml)",
    )
    replay.add_argument("--out", type=Path, metavar="DIR", help="write alarms.jsonl here")
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    replay.set_defaults(handler=_replay)

    score = commands.add_parser(
        "score",
        parents=[logs],
        help="score detection against simulated scenarios' ground truth",
        description=(
            "Run the engine over simulated sessions (the physiology driven directly, no radio) "
            "and report, per ground-truth event, whether and how late it was detected, and "
            "non-actionable alarms per participant-hour, next to a naive single-threshold "
            "configuration. Exits 1 when a target is missed."
        ),
    )
    score.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="default: all shipped")
    score.add_argument("--json", action="store_true", help="print the report as JSON")
    score.set_defaults(handler=_score)

    bench = commands.add_parser("bench", help="benchmarks (see docs/benchmarks.md)")
    benches = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)
    detect = benches.add_parser(
        "detect",
        parents=[logs],
        help="time the vectorised engine against the per-reading reference",
        description=(
            "Run engine and reference on identical synthetic input; fail (exit 1) if their "
            "outputs differ; print readings/s of each, their ratio and the peak RSS."
        ),
    )
    detect.add_argument("--streams", type=_positive_int, default=10_000, metavar="N")
    detect.add_argument("--seconds", type=_positive_int, default=5, metavar="S")
    detect.add_argument("--seed", type=int, default=0, metavar="SEED")
    detect.add_argument(
        "--repeats",
        type=_positive_int,
        default=25,
        metavar="R",
        help="engine runs on the same input; the fastest is reported (default 25)",
    )
    detect.add_argument("--json", action="store_true", help="print one JSON object")
    detect.set_defaults(handler=_bench_detect)
    return parser


def _replay(args: argparse.Namespace) -> int:
    from monitor.replay import run_replay  # noqa: PLC0415 - keep --help fast

    return run_replay(args)


def _export(args: argparse.Namespace) -> int:
    from monitor.export import run_export  # noqa: PLC0415 - keep --help fast

    return run_export(args)


def _score(args: argparse.Namespace) -> int:
    from monitor.scoring import run_score  # noqa: PLC0415 - keep --help fast

    return run_score(args)


def _bench_detect(args: argparse.Namespace) -> int:
    from monitor.alerts.benchmark import run_bench  # noqa: PLC0415 - keep --help fast

    result = run_bench(args.streams, args.seconds, seed=args.seed, repeats=args.repeats)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"streams                {result['streams']:,}")
        print(f"readings               {result['readings']:,}")
        fastest, repeats = result["engine_readings_per_s"], result["repeats"]
        median, first = (
            result["engine_readings_per_s_median"],
            result["engine_readings_per_s_first"],
        )
        print(f"engine readings/s      {fastest:,} (fastest of {repeats})")
        print(f"  median, first run    {median:,}, {first:,}")
        print(f"reference readings/s   {result['reference_readings_per_s']:,}")
        print(f"ratio                  {result['ratio']}x")
        print(f"identical              {str(result['identical']).lower()}")
        print(f"peak RSS (engine)      {result['peak_rss_mb']} MB")
    if not result["identical"]:
        print("error: engine and reference outputs differ", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:9100: {text!r}")
    return host.strip("[]"), int(port)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _add_simulation_options(command: argparse.ArgumentParser) -> None:
    """``--duration``, ``--simulate`` and ``--speed``, the same for every command with wearables."""
    command.add_argument(
        "--duration", type=_positive_float, metavar="S", help="stop after S wall-clock seconds"
    )
    command.add_argument(
        "--simulate", metavar="SCENARIO", help="run a simulated scenario's wearables"
    )
    command.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        metavar="N",
        help="with --simulate: session time N times faster than real time (default 1)",
    )


def _add_service_options(command: argparse.ArgumentParser) -> None:
    """``--record``, ``--store``, ``--http`` and ``--no-live``: the detector's, in ``run`` and
    ``detect``."""
    command.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="also write DIR/readings.jsonl, DIR/alarms.jsonl and DIR/device-events.jsonl",
    )
    command.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_STORE,
        metavar="FILE",
        help=f"the spool / local store (SQLite; default {DEFAULT_STORE})",
    )
    command.add_argument(
        "--http",
        type=_host_port,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free port)",
    )
    command.add_argument(
        "--no-live",
        action="store_true",
        help="no live terminal view (it is shown only when stdout is a terminal anyway)",
    )


def _add_start_option(command: argparse.ArgumentParser) -> None:
    """``--start``, for the commands whose simulated session may begin part-way through."""
    command.add_argument(
        "--start",
        type=_finite_float,
        default=0.0,
        metavar="S",
        help="with --simulate: begin at session time S seconds (default 0)",
    )


def _finite_float(text: str) -> float:
    """A number on the command line: ``inf`` and ``nan`` parse as floats but mean nothing here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _speed(text: str) -> float:
    """``--speed``: session time at most ``MAX_SPEED`` times real time; far beyond it the clocks'
    arithmetic overflows and no detection pass could keep up anyway."""
    value = _positive_float(text)
    if value > MAX_SPEED:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SPEED:,}: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitor`` console script."""
    args = build_parser().parse_args(argv)
    with logging_configured(args.log_level, args.log_format):
        status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
