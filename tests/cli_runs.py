"""Running the CLI in-process in tests, and what a refusal must look like."""

from __future__ import annotations

import re
from pathlib import Path

from mech_interp import cli


def run_cli(args, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the command alone: what the test printed before (a model saved as its
    input, with its own progress bars) is dropped."""
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def assert_refused(code: int, stderr: str, needle: str, out: Path) -> None:
    """Exit 2, exactly one line on stderr, ``mech-interp: error: ...`` holding ``needle``: no traceback, warning or
    prompt, and no progress bar left unfinished (work begun before the refusal; loading a model that is then refused
    may show its finished bar); no file under ``out``."""
    errors = [line for line in stderr.splitlines() if line.startswith("mech-interp: error:")]
    assert code == 2, stderr
    assert len(errors) == 1 and needle in errors[0], stderr
    assert "Traceback" not in stderr, stderr
    last = dict(re.findall(r"(?:^|[\r\n])([^\r\n|%]*?)\s*(\d+)%\|", stderr))  # each bar's description -> last percentage
    assert all(percent == "100" for percent in last.values()), f"work started before the refusal: {stderr}"
    others = [line for line in re.split(r"[\r\n]", stderr)  # tqdm redraws a bar after \r; a line is one bar or not
              if line.strip() and not line.startswith("mech-interp: error:") and not re.fullmatch(r"[^|%]*\d+%\|.*", line)]
    assert not others, f"more than the one line: {others}"  # a library's prompt or warning is not one line
    assert not files_under(out), f"a refused run left files behind: {files_under(out)}"
