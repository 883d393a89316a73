"""``python -m simulators``: list the scenarios, or run one's wearables on a radio.

Exit status: 0 when the run ends (scenario end, ``--duration`` or Ctrl-C), 2 for bad input
(unknown scenario, device or participant, mismatched ``--transport``/``--device``), 1 when a
controller cannot be opened or a wearable fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import sys
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.clock import AcceleratedClock, Clock, SystemClock
from monitor.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from monitor.logs import logging_configured, logging_options
from simulators.radio import VirtualRadio
from simulators.radio.peripheral import HciTransport
from simulators.scenario import Scenario, ScenarioError, list_scenarios, load_scenario
from simulators.session import SimulatedSession

_DESCRIPTION_WIDTH = 72
_STATUS_EVERY_S = 60.0


def _hms(t_s: float) -> str:
    whole = int(t_s)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _one_line(text: str, width: int = _DESCRIPTION_WIDTH) -> str:
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return flat[: width - 3].rsplit(" ", 1)[0] + "..."


def _list(args: argparse.Namespace) -> int:
    status = EXIT_OK
    for name in list_scenarios():
        try:
            scenario = load_scenario(name)
        except ScenarioError as error:
            print(f"{name:<20} INVALID: {str(error).splitlines()[-1].strip()}")
            status = EXIT_FAILED
            continue
        hours = scenario.duration_s / 3600
        print(f"{name:<20} {hours:4.1f} h  {_one_line(scenario.description)}")
    return status


def _status_line(session: SimulatedSession, t_s: float) -> str:
    delivered = sum(sum(counts.values()) for counts in session.delivered.values())
    parts = [
        f"[{_hms(t_s)}]",
        f"connected {session.connected()}/{len(session.wearables)}",
        f"delivered {delivered:,}",
    ]
    running = {code for code, _ in session.keys}
    for code, model in session.models.items():
        if code not in running:
            continue
        vitals = model.vitals(t_s)
        parts.append(
            f"| {code} HR {vitals.heart_rate_bpm:.0f} "
            f"BP {vitals.systolic_mmhg:.0f}/{vitals.diastolic_mmhg:.0f} "
            f"T {vitals.core_temperature_c:.1f} SpO2 {vitals.spo2_percent:.0f}"
        )
    return " ".join(parts)


async def _report_every_minute(session: SimulatedSession, clock: Clock) -> None:
    """One status line per minute of session time (on the minute, from the window start)."""
    minute = math.ceil(session.start_s / _STATUS_EVERY_S)
    while True:
        t_s = minute * _STATUS_EVERY_S
        await clock.sleep(t_s - session.now_s())
        print(_status_line(session, max(t_s, session.start_s)), flush=True)
        minute += 1


async def _serve(scenario: Scenario, args: argparse.Namespace) -> int:
    clock = AcceleratedClock(SystemClock().now(), args.speed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        radio: VirtualRadio | dict[str, HciTransport]
        if args.transport:
            radio = {
                name: HciTransport(spec)
                for name, spec in zip(args.device, args.transport, strict=True)
            }
            where = ", ".join(f"{name} on {hci.spec}" for name, hci in radio.items())
        else:
            radio = await stack.enter_async_context(VirtualRadio())
            where = "the virtual radio (in this process only; --transport puts them on air)"
        try:
            session = SimulatedSession(
                scenario,
                radio,
                clock,
                participants=args.participant,
                devices=None if args.transport else (args.device or None),
                start_s=args.start,
                device_timezone=args.device_timezone,
                log_limit=100,
            )
        except ValueError as error:
            print(f"python -m simulators run: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            await stack.enter_async_context(session)
        except Exception as error:
            print(f"cannot start the wearables on {where}: {error}", file=sys.stderr)
            return EXIT_FAILED
        count = len(session.wearables)
        print(
            f"{scenario.name}: {count} wearable{'' if count == 1 else 's'} on {where}; "
            f"x{args.speed:g}, session {_hms(session.start_s)} to {_hms(session.end_s)}; "
            "Ctrl-C stops",
            flush=True,
        )
        reason = await _run_until_done(session, clock, stop, args.duration)
        print(f"stopped at {_hms(session.now_s())}: {reason}", flush=True)
    return EXIT_OK


async def _run_until_done(
    session: SimulatedSession, clock: Clock, stop: asyncio.Event, duration_s: float | None
) -> str:
    finished = asyncio.create_task(session.wait())
    stopped = asyncio.create_task(stop.wait())
    reporter = asyncio.create_task(_report_every_minute(session, clock))
    try:
        done, _ = await asyncio.wait(
            {finished, stopped}, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (finished, stopped, reporter):
            task.cancel()
        await asyncio.wait({finished, stopped, reporter})
    if finished in done:
        finished.result()  # a wearable that failed ends the run with its error
        return "end of the session window"
    if stopped in done:
        return "signal received"
    return f"--duration {duration_s:g} s elapsed"


def _run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as error:
        parser.error(str(error))
    if args.transport and len(args.transport) != len(args.device):
        parser.error(
            "with --transport, give one --device per transport, in the same order "
            f"(got {len(args.transport)} transport(s) and {len(args.device)} device(s))"
        )
    if args.start >= scenario.duration_s:
        parser.error(f"--start {args.start:g} is at or after the end of {scenario.name}")
    try:
        return asyncio.run(_serve(scenario, args))
    except Exception as error:
        print(f"simulation failed: {error!r}", file=sys.stderr)
        return EXIT_FAILED


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _session_time(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds: {text!r}")
    return value


def _zone(text: str) -> ZoneInfo:
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown time zone: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; exposed so tests and docs can inspect it."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Simulated BLE wearables driven by session scenarios.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    logs = logging_options()
    listing = commands.add_parser("list", parents=[logs], help="list the shipped scenarios")
    listing.set_defaults(handler=_list)

    run = commands.add_parser(
        "run",
        parents=[logs],
        help="run a scenario's wearables",
        description=(
            "Run a scenario's wearables until the scenario ends, --duration elapses or Ctrl-C. "
            "By default they join an in-process virtual radio; with --transport, each named "
            "--device runs on its own real Bluetooth controller instead (the i-th --device on "
            "the i-th --transport, and no other wearable runs)."
        ),
    )
    run.add_argument("scenario", metavar="SCENARIO", help="scenario name (see list) or TOML file")
    run.add_argument(
        "--speed",
        type=_positive_float,
        default=1.0,
        metavar="N",
        help="session seconds per wall-clock second (default 1; 60 runs an hour in a minute)",
    )
    run.add_argument(
        "--duration", type=_positive_float, metavar="S", help="stop after S wall-clock seconds"
    )
    run.add_argument(
        "--start",
        type=_session_time,
        default=0.0,
        metavar="S",
        help="begin at session time S seconds (default 0)",
    )
    run.add_argument(
        "--participant",
        action="append",
        metavar="CODE",
        help="run only this participant's wearables (repeatable)",
    )
    run.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this wearable, e.g. SIM-HR-P-001 (repeatable; pairs with --transport)",
    )
    run.add_argument(
        "--transport",
        action="append",
        default=[],
        metavar="T",
        help=(
            "bumble transport of a real controller for the --device in the same position: "
            "usb:0, hci-socket:0, serial:/dev/ttyUSB0, tcp-client:HOST:PORT (repeatable)"
        ),
    )
    run.add_argument(
        "--device-timezone",
        type=_zone,
        default=ZoneInfo("UTC"),
        metavar="ZONE",
        help="zone of the devices' clocks for measurement timestamps (default UTC); "
        "match the site's timezone in the monitor's configuration",
    )
    run.set_defaults(handler=_run, parser=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m simulators``."""
    args = build_parser().parse_args(argv)
    with logging_configured(args.log_level, args.log_format):
        status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
