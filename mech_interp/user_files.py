"""Files named by users (a model, a config, a text): refused in one line when they are not files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UsageError


def require_file(path: Path, what: str, expected: str, shown: str | None = None) -> Path:
    """``path`` if it is a file; else one line saying it is a directory or absent, and what is expected.
    ``what`` names the kind of file ("GGUF file"); ``shown`` is the path as the user typed it."""
    shown = str(path) if shown is None else shown
    if path.is_dir():
        raise UsageError(f"{what} {shown!r} is a directory: expected {expected}")
    if not path.exists():
        raise UsageError(f"{what} {shown!r} does not exist: expected {expected}")
    if not path.is_file():  # /dev/null, a FIFO, a socket: nothing to read, or a read that never ends
        raise UsageError(f"{what} {shown!r} is not a regular file: expected {expected}")
    return path


def read_json_object(file: Path, where: str, fix: str = "") -> dict[str, Any]:
    """The JSON object in ``file``; else one line: ``{where} has a broken {name} (why){fix}``, or it cannot
    be read, or it holds no object. ``where`` names what the file belongs to ("model directory 'm'")."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{where} has a broken {file.name} ({err}){fix}") from None
    except OSError as err:
        raise UsageError(f"{where}: {file.name} cannot be read ({err.strerror})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where} has a {file.name} that is not a JSON object{fix}")
    return data
