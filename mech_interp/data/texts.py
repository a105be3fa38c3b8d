"""Where text comes from: the built-in sample, a local file, or a named/hub dataset.

Named datasets look for a local mirror first (directories in ``$MECH_INTERP_DATA``, separated by
``os.pathsep``, then ``../shared/data`` beside the checkout), then the Hugging Face hub through
``datasets``.

How each named text is joined and tokenized, against the paper's code (Sun et al. 2024):

- ``wikitext2``: the test split's rows joined with "\\n\\n", tokenized without special tokens (as
  the paper). The paper evaluates every window; the CLI's default ``--n-windows 32`` takes the
  first 32 (``--n-windows 0`` takes all).
- ``c4``: the first 5000 documents of ``NeelNanda/c4-10k`` (train), ``pg19``: the first 5 books of
  ``emozilla/pg19`` (validation). As the paper's loader, documents are joined with a single " " and
  tokenized with the tokenizer's default special tokens (``TextSource.special_tokens``; one BOS at
  the start of the stream for LLaMA tokenizers). The paper evaluates the first 100 windows of 4096
  tokens; here the window length is ``--seq-len`` (512 by default, capped by the model's context) and
  the count ``--n-windows``, so the numbers are comparable in kind, not digit for digit.
- a text file: read as UTF-8 (a file that is not is refused, not decoded with replacement
  characters) with universal newlines, as a text-mode reader reads it (``\\r\\n`` and ``\\r`` become
  ``\\n``, so a file saved on Windows gives the same tokens; the manifest's origin says when that
  happened), tokenized without special tokens.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from ..storage.hub import hub_reachable, offline_mode
from ..storage.user_files import decode_utf8, require_file, universal_newlines
from ..validation.errors import UsageError, reason
from .locations import find_data

BUILTIN = "builtin"
WIKITEXT2_FILE = "wikitext-2-raw/wiki.test.raw"


@dataclass(frozen=True)
class TextSource:
    name: str
    text: str
    origin: str  # file path or dataset id actually read, for the manifest
    special_tokens: bool = False  # tokenize with the tokenizer's default special tokens (as the paper's loader does)


def _from_hub(dataset: str, config: str | None, split: str, limit: int | None = None, field: str = "text",
              joiner: str = "\n\n", special_tokens: bool = False) -> TextSource:
    if not offline_mode("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") and not hub_reachable():
        raise UsageError(
            f"text source {dataset!r} is not available (the Hugging Face hub is unreachable; with a cached copy "
            "set HF_DATASETS_OFFLINE=1): pass a local text file instead"
        )
    try:
        import datasets

        spec = f"{split}[:{limit}]" if limit else split
        rows = datasets.load_dataset(dataset, config, split=spec)[field]
    except Exception as err:  # datasets raises many types for "no network / not cached"
        raise UsageError(
            f"text source {dataset!r} is not available ({reason(err, 120)}): "
            "pass a local text file instead"
        ) from err
    return TextSource(name=dataset, text=joiner.join(rows), origin=f"hf:{dataset}/{config or ''}/{spec}",
                      special_tokens=special_tokens)


def read_text_file(path: Path, what: str, shown: str | None = None) -> str:
    """The UTF-8 text of ``path``, line endings as they are; anything else (absent, a directory, not UTF-8,
    empty) is refused in one line naming it. ``what`` says which kind of file it is ("text file", "data file")."""
    shown = shown if shown is not None else str(path)
    require_file(path, what, f"a UTF-8 text file, or one of {', '.join(NAMED)}, hf:NAME[:CONFIG[:SPLIT]]", shown)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"{what} {shown!r} cannot be read: {err.strerror}") from None
    text = decode_utf8(data, f"{what} {shown!r}", "convert it to UTF-8")
    if not text.strip():
        raise UsageError(f"{what} {shown!r} is empty: expected some text")
    return text


def _wikitext2() -> TextSource:
    local = find_data(WIKITEXT2_FILE)
    if local is not None:
        # The hub dataset's rows are the file's lines (newline kept, blank lines as ""), and the
        # paper joins rows with "\n\n"; doing the same here makes the local file give the hub's text.
        text = read_text_file(local, "data file")
        rows = [line if line.strip() else "" for line in io.StringIO(text, newline=None)]  # as a text-mode file reads it
        return TextSource("wikitext2", "\n\n".join(rows), f"{local} (lines as hub rows, joined with \\n\\n)")
    return _from_hub("Salesforce/wikitext", "wikitext-2-raw-v1", "test")


def _c4() -> TextSource:
    return _from_hub("NeelNanda/c4-10k", None, "train", limit=5000, joiner=" ", special_tokens=True)


def _pg19() -> TextSource:
    return _from_hub("emozilla/pg19", None, "validation", limit=5, joiner=" ", special_tokens=True)


def _builtin() -> TextSource:
    path = resources.files("mech_interp") / "data" / "sample_text.txt"
    return TextSource(BUILTIN, path.read_text(encoding="utf-8"), "mech_interp/data/sample_text.txt")


NAMED: dict[str, Callable[[], TextSource]] = {
    BUILTIN: _builtin,
    "wikitext2": _wikitext2,
    "c4": _c4,
    "pg19": _pg19,
}
# Named texts that may come from a local mirror, checked before a run like any local file.
_MIRRORS = {"wikitext2": WIKITEXT2_FILE}


def is_local_file(spec: str) -> bool:
    """Whether ``load_text(spec)`` reads a file path (rather than a named or hub source)."""
    return spec not in NAMED and not spec.startswith("hf:")


def parse_hub_text(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG[:SPLIT]]`` -> (name, config or None, split, default "test")."""
    parts = spec[3:].split(":")
    if not parts[0].strip() or len(parts) > 3:
        raise UsageError(f"text {spec!r} is not allowed: expected hf:NAME[:CONFIG[:SPLIT]] with a dataset NAME")
    name, config, split = (parts + [None, None])[:3]
    return name, config or None, split or "test"


def check_text(spec: str) -> None:
    """Refuse, without tokenizing anything, a text that cannot load from local files: a missing,
    unreadable, non-UTF-8 or empty text file, or such a local mirror of a named dataset. Hub
    sources are not probed here (a run notes them as unavailable when it cannot reach them)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"text {spec!r} is not allowed: expected {', '.join(NAMED)}, hf:NAME[:CONFIG[:SPLIT]] or a text file")
    if spec.startswith("hf:"):
        parse_hub_text(spec)
    elif is_local_file(spec):
        read_text_file(Path(spec).expanduser(), "text file", spec)
    elif spec in _MIRRORS and (local := find_data(_MIRRORS[spec])) is not None:
        read_text_file(local, "data file")


def load_text(spec: str) -> TextSource:
    """``builtin``, ``wikitext2``, ``c4``, ``pg19``, ``hf:NAME[:CONFIG[:SPLIT]]`` or a text file path.

    ```python
    >>> import mech_interp as mi
    >>> source = mi.load_text("builtin")  # shipped with the package: no data, no network
    >>> source.name, len(source.text) > 10_000
    ('builtin', True)

    ```
    """
    if spec in NAMED:
        return NAMED[spec]()
    if spec.startswith("hf:"):
        name, config, split = parse_hub_text(spec)
        return _from_hub(name, config, split)
    path = Path(spec).expanduser()
    text = read_text_file(path, "text file", spec)
    line_ends = text.count("\r")
    origin = str(path.resolve()) + (f" (universal newlines: {line_ends} \\r\\n or \\r read as \\n)" if line_ends else "")
    return TextSource(path.name, universal_newlines(text), origin)
