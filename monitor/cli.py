"""The ``monitor`` command line.

Exit status: 0 on success, 2 for bad input (config, arguments), 1 for anything unexpected.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor import __version__

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _check_config(args: argparse.Namespace) -> int:
    from monitor.config import ConfigError, load_config, summarize  # noqa: PLC0415 - fast --help

    try:
        config = load_config(args.file)
    except ConfigError as error:
        count = len(error.problems)
        print(f"{args.file}: invalid configuration ({count} problem(s)):", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summarize(config))
    return EXIT_OK


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check-config",
        help="validate a site configuration and print a summary",
        description=(
            "Validate a site configuration and the protocol profiles it names. "
            "Lists every problem at once; exits 2 when the configuration is invalid."
        ),
    )
    check.add_argument("file", type=Path, metavar="FILE", help="site configuration (TOML)")
    check.set_defaults(handler=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``monitor`` console script."""
    args = build_parser().parse_args(argv)
    handler = args.handler
    status: int = handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
