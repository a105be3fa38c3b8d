"""Files named by users (a model, a config, a text): refused in one line when they are not files."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..validation.errors import UsageError


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


def decode_utf8(data: bytes, subject: str, fix: str, codec: str = "utf-8", offsets: str = "") -> str:
    """``data`` as text; else one line ``{subject} is not UTF-8 (byte 0x.. at offset N{offsets}): {fix}`` (never
    decoded with replacement characters, which would pass for text). ``codec`` may be "utf-8-sig"."""
    try:
        return data.decode(codec)
    except UnicodeDecodeError as err:
        # utf-8-sig counts from after the byte-order mark it dropped
        start = err.start + (3 if codec == "utf-8-sig" and data.startswith(b"\xef\xbb\xbf") else 0)
        raise UsageError(f"{subject} is not UTF-8 (byte {data[start]:#04x} at offset {start}{offsets}): "
                         f"{fix}") from None


def universal_newlines(text: str) -> str:
    """``text`` as a text-mode reader gives it: CRLF and CR become LF."""
    return io.StringIO(text, newline=None).read()


def read_json_object(file: Path, where: str, fix: str = "") -> dict[str, Any]:
    """The JSON object in ``file``; else one line: ``{where} has a broken {name} (why){fix}``, or it cannot
    be read, or it holds no object. ``where`` names what the file belongs to ("model directory 'm'")."""
    try:
        data = parse_nested(json.loads, file.read_text(encoding="utf-8"), f"{where}: {file.name}")
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{where} has a broken {file.name} ({err}){fix}") from None
    except OSError as err:
        raise UsageError(f"{where}: {file.name} cannot be read ({err.strerror})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where} has a {file.name} that is not a JSON object{fix}")
    return data


# Deeper than any file this project writes or reads (a batch file is 4 levels, a manifest 6), far below the
# nesting at which the parsers (recursive) or later walks over the value would exhaust Python's stack.
MAX_NESTING = 32
# Values once YAML aliases are expanded: far more than any config holds, far less than what would take minutes to
# check, print or copy.
MAX_VALUES = 1_000_000


def nesting_depth(value: Any) -> tuple[int, int]:
    """(levels of lists and dicts, values once expanded) of ``value`` (a scalar: (0, 1)), without recursion. A YAML
    file can share one node among many places (``&anchor`` / ``*alias``: a billion-laughs file names 10^9 values in a
    few lines): each shared node is walked once, and what it expands to is counted. A value that contains itself (an
    alias inside its own anchor) has no depth: ValueError."""
    done: dict[int, tuple[int, int]] = {}  # id of a list or dict -> (depth, expanded size), once its children are done
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        item, children_done = stack.pop()
        children = list(item.values()) if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None or (not children_done and id(item) in done):
            continue
        if children_done:
            on_path.discard(id(item))
            parts = [done.get(id(c), (0, 1)) for c in children]
            done[id(item)] = (1 + max((d for d, _ in parts), default=0), 1 + sum(n for _, n in parts))
            continue
        if id(item) in on_path:
            raise ValueError("it contains itself")
        on_path.add(id(item))
        stack.append((item, True))
        stack.extend((c, False) for c in children)
    return done.get(id(value), (0, 1))


def parse_nested(parse: Callable[[str], Any], text: str, where: str) -> Any:
    """``parse(text)`` (json.loads, tomllib.loads, a YAML load), refused in one line when the document nests
    deeper than MAX_NESTING (the parsers recurse, so a crafted file would end in a RecursionError), contains itself,
    or expands to more than MAX_VALUES values through YAML aliases (checking or printing it would never end)."""
    too_deep = UsageError(f"{where} nests lists or tables deeper than {MAX_NESTING} levels: expected at most "
                          f"{MAX_NESTING}")
    try:
        data = parse(text)
    except RecursionError:
        raise too_deep from None
    try:
        depth, size = nesting_depth(data)
    except ValueError:
        raise UsageError(f"{where} contains itself (a YAML alias inside its own anchor): expected a tree of "
                         "tables and lists") from None
    if depth > MAX_NESTING:
        raise too_deep
    if size > MAX_VALUES:
        raise UsageError(f"{where} expands to {size} values (aliases repeat what they name): expected at most "
                         f"{MAX_VALUES}")
    return data
