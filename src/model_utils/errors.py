"""The project's error types and the guard every entry script runs its ``main`` under.

A user who feeds a wrong file, key or value should read one line that says what is wrong, which
file or key, and how to fix it, not forty lines of traceback that end in it. Library code raises
``SSDError`` (or a subclass) with such a message; ``run_entry`` prints it as
``<script>: error: <message>`` and exits 2 for a usage mistake (``UsageError``) or 1 for a failure
at run time. ``--debug`` on the command line or ``SSD_DEBUG=1`` in the environment shows the
traceback instead, for bug reports.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_VARIABLE = "SSD_DEBUG"
USAGE_EXIT = 2
RUNTIME_EXIT = 1


class SSDError(Exception):
    """A problem the user can fix; the message names what, which file or key, and the fix."""

    exit_code = RUNTIME_EXIT


class UsageError(SSDError):
    """A wrong argument, config key or value: found before any work starts (exit status 2)."""

    exit_code = USAGE_EXIT


class InputFileError(SSDError):
    """A file the user gave could not be read or parsed (a foreign error wrapped with the file named)."""


def wrap_foreign_error(path: str | Path, what: str, error: BaseException, fix: str = "") -> InputFileError:
    """An ``InputFileError`` for an exception raised by json, yaml, onnxruntime or MindSpore reading ``path``.

    Foreign messages rarely say which file they were reading; this one does, and ends with the fix.
    """
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    message = f"{path}: cannot read it as {what} ({detail})"
    return InputFileError(f"{message}; {fix}" if fix else message)


def _debugging(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def run_entry(main: Callable[[list[str]], int], prog: str, argv: Sequence[str] | None = None) -> int:
    """Run an entry script's ``main`` and turn every error into one line and an exit status.

    ``SSDError`` prints its own message. An ``OSError`` (a file missing, unreadable or unwritable)
    names its file. Anything else is a bug or an unforeseen input: one line with its type, and how
    to see the traceback. ``KeyboardInterrupt`` exits 130 as a shell expects.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debugging(args)
    args = [arg for arg in args if arg != DEBUG_FLAG]
    try:
        return main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SSDError as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:
        if debug:
            raise
        print(f"{prog}: error: {_describe_os_error(error)}", file=sys.stderr)
        return RUNTIME_EXIT
    except Exception as error:  # noqa: BLE001 - the last guard: one line instead of a traceback
        if debug:
            raise
        print(f"{prog}: error: {type(error).__name__}: {_first_line(error)} (unexpected; run again with "
              f"{DEBUG_FLAG} or {DEBUG_VARIABLE}=1 for the traceback and report it)", file=sys.stderr)
        return RUNTIME_EXIT


def _describe_os_error(error: OSError) -> str:
    """'<file>: <reason>' for OSErrors that carry their file, their own message otherwise."""
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror.lower()}"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
