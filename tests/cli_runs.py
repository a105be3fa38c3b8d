"""Running the CLI in-process in tests, and what a refusal must look like."""

from __future__ import annotations

from pathlib import Path

from mech_interp import cli


def run_cli(args, capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.exists() else []


def assert_refused(code: int, stderr: str, needle: str, out: Path) -> None:
    """Exit 2, exactly one ``mech-interp: error:`` line holding ``needle``, no traceback, no file under ``out``."""
    errors = [line for line in stderr.splitlines() if line.startswith("mech-interp: error:")]
    assert code == 2, stderr
    assert len(errors) == 1 and needle in errors[0], stderr
    assert "Traceback" not in stderr, stderr
    assert not files_under(out), f"a refused run left files behind: {files_under(out)}"
