"""The ``morphable`` command.

Argument parsing imports neither torch nor numpy, so ``morphable --help`` answers at once.
Each verb lives in ``morphable/commands/<verb>.py`` with a ``register(subparsers)`` function that adds
its parser and sets ``func`` to a handler; handlers import what they need. A verb that uses a trained
model takes the run folder first and works out what to do from the run's family, never from a method
name.
A :class:`~morphable.errors.MorphableError`, or an :class:`OSError` (a full disk, a read-only folder), is printed
as one line naming the file and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from morphable import __version__

COMMAND_GROUPS = ("demo", "data", "train", "eval", "sample", "interpolate", "extract", "fit", "fit_linear", "export",
                  "parts", "mesh", "report", "landmarks", "reconstruct", "transfer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="morphable",
        description="Learn, fit, evaluate and generate 3D face and head models.",
    )
    parser.add_argument("--version", action="version", version=f"morphable {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        importlib.import_module(f"morphable.commands.{group}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from morphable.errors import MorphableError, os_error_message

    try:
        result = args.func(args)
    except MorphableError as exc:
        print(f"morphable: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only output folder: the writers have removed their temporary files
        print(f"morphable: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("morphable: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
