"""User-facing errors.

Anything the user can fix (a bad file, a wrong argument, a checkpoint that does not match) is
raised as :class:`MorphableError`. The command line prints its message as one line and exits
with status 2, without a traceback.
"""

from __future__ import annotations

import os


class MorphableError(Exception):
    """An error caused by the user's input; the message names the file and the problem."""


def input_error(path: str | os.PathLike, problem: str) -> MorphableError:
    """Build a :class:`MorphableError` of the form ``"<path>: <problem>"``."""
    return MorphableError(f"{os.fspath(path)}: {problem}")


def os_error_message(exc: OSError) -> str:
    """One line for an :class:`OSError` the user can fix (a full disk, a read-only or missing folder):
    ``"<file>: <reason>"``, naming the file the system refused."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    target = f" -> {os.fspath(exc.filename2)}" if exc.filename2 is not None else ""
    return f"{os.fspath(exc.filename)}{target}: {reason}"
