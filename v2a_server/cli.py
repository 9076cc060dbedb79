"""The `v2a` command line: dispatches to the modules listed in `v2a_server.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys

from v2a_server.commands import COMMAND_MODULES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v2a", description="STA-V2A Foley tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"v2a_server.commands.{name}")
        except ModuleNotFoundError as exc:
            # A command whose module is not written yet is simply absent from the CLI.
            if exc.name == f"v2a_server.commands.{name}":
                continue
            raise
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
