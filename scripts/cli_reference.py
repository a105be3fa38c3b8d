#!/usr/bin/env python3
"""Print docs/reference/cli.md: every command and subcommand of mech-interp, vit-hooks and train-gpt2-bias with its
``--help``, written from the argument parsers the commands build (at a fixed width of 100 columns).
tests/test_docs.py checks that the page holds what this prints.

    python scripts/cli_reference.py > docs/reference/cli.md
"""

from __future__ import annotations

import argparse
import importlib
import os

COMMANDS = [("mech-interp", "mech_interp.cli"), ("vit-hooks", "vit_hooks.cli"), ("train-gpt2-bias", "train_gpt2_bias.cli")]
WIDTH = "100"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subcommands on the one _SubParsersAction
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    return parser.format_help().rstrip()


def _sections(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    """Each subcommand's help, and its own subcommands' after it (``mech-interp study lm``)."""
    lines = []
    for name, sub in _subparsers(parser).items():
        sub.prog = f"{prog} {name}"
        lines += [f"### {sub.prog}", "", "```text", _help(sub), "```", ""] + _sections(sub, sub.prog)
    return lines


def page() -> str:
    os.environ["COLUMNS"] = WIDTH  # argparse wraps at the terminal's width: a fixed one makes the page reproducible
    lines = ["# Command-line reference", "",
             "Every command's `--help`, as the installed commands print it (written by `scripts/cli_reference.py` from",
             "their argument parsers; `tests/test_docs.py` fails when this page is stale). Each experiment's own options",
             "are listed under it; the options every run of a study shares come first in each.", ""]
    for command, module in COMMANDS:
        parser = importlib.import_module(module).build_parser()
        parser.prog = command
        lines += [f"## {command}", "", "```text", _help(parser), "```", ""]
        lines += _sections(parser, command)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(page(), end="")
