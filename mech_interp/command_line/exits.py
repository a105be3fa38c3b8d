"""What every study's command line shares (``mech-interp``, ``vit-hooks``, ``train-gpt2-bias``): bad
input is one line on stderr with status 2, Ctrl-C one line with 130, an output that cannot be written
(no space, read-only, no permission) one line with 2; anything else is a bug and keeps its traceback.
Imports no torch."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from typing import Callable

from ..validation.errors import UsageError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


class DefaultsShown(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and each option's default after its help unless the help already says it (flags from
    dataclass fields keep None as their argparse default and say theirs in the help: ``command_line.flags``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, False) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose own errors are one line naming the program and the subcommand, status 2; every parser shows
    its options' defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsShown)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        prog, _, where = self.prog.partition(" ")
        self.exit(EXIT_USAGE, f"{prog}: error: {where + ': ' if where else ''}{message}\n")


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace | int:
    """The parsed command line, or the exit status when there is nothing to run: ``--help`` (0),
    argparse's one-line error (2), no command given (2, with the commands listed)."""
    try:
        ns = parser.parse_args(argv)
    except SystemExit as done:  # a status, also when called in-process
        return int(done.code or 0)
    if getattr(ns, "command", None) is None:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        print(f"{parser.prog}: error: no command given: expected one of {', '.join(commands)} "
              f"({parser.prog} --help explains each)", file=sys.stderr)
        return EXIT_USAGE
    return ns


def run_main(parser: argparse.ArgumentParser, argv, body: Callable[[argparse.Namespace], int | None],
             interrupted: str) -> int:
    """Parse ``argv`` and run ``body(ns)`` as ``run_command`` does; ``interrupted`` says what Ctrl-C keeps."""
    ns = parse(parser, argv)
    if isinstance(ns, int):
        return ns

    def with_figure_format() -> int | None:
        if getattr(ns, "figure_format", None) is None:
            return body(ns)
        from ..viz.writing import FORMAT_ENV, set_formats

        before = os.environ.get(FORMAT_ENV)
        set_formats(ns.figure_format)  # checked before anything is read or written
        try:
            return body(ns)
        finally:  # the command's alone: a main() called in-process (a notebook, a test) leaves the process as it was
            if before is None:
                os.environ.pop(FORMAT_ENV, None)
            else:
                os.environ[FORMAT_ENV] = before

    return run_command(parser.prog, with_figure_format, interrupted, getattr(ns, "out", None) or "")


def one_line(err: Exception) -> str:
    return " ".join(str(err).split("\n"))


def run_command(prog: str, body: Callable[[], int | None], interrupted: str, out: str = "") -> int:
    """Run ``body`` and turn its outcome into an exit status. ``interrupted`` says what Ctrl-C keeps;
    ``out`` names the output for a write error that carries no file name."""
    try:
        return body() or 0
    except UsageError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted: {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of the output left (``| head``): stop quietly, as a shell tool does, and keep the interpreter's
        # final flush of stdout from failing the same way.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as err:
        from ..runs.output import WRITE_ERRNOS

        if err.errno not in WRITE_ERRNOS:
            raise  # not the user's to fix: a bug, shown with its traceback
        print(f"{prog}: error: cannot write {err.filename or out!s}: {err.strerror}", file=sys.stderr)
        return EXIT_USAGE
