"""Where text comes from: the built-in sample, a local file, or a named/hub dataset.

Named datasets look for a local mirror first (directories in ``$MECH_INTERP_DATA``, separated by
``os.pathsep``, then ``../shared/data`` beside the checkout), then the Hugging Face hub through
``datasets``. Upstream conventions: documents joined with "\\n\\n".
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..hub import hub_reachable, offline_mode
from .locations import find_data

BUILTIN = "builtin"


@dataclass(frozen=True)
class TextSource:
    name: str
    text: str
    origin: str  # file path or dataset id actually read, for the manifest
    special_tokens: bool = False  # tokenize with the tokenizer's default special tokens (as the paper's loader does)


def _from_hub(dataset: str, config: str | None, split: str, limit: int | None = None, field: str = "text") -> TextSource:
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
            f"text source {dataset!r} is not available ({type(err).__name__}: {str(err).splitlines()[0][:120]}): "
            "pass a local text file instead"
        ) from err
    return TextSource(name=dataset, text="\n\n".join(rows), origin=f"hf:{dataset}/{config or ''}/{spec}")


def _wikitext2() -> TextSource:
    local = find_data("wikitext-2-raw/wiki.test.raw")
    if local is not None:
        # The hub dataset's rows are the file's lines (newline kept, blank lines as ""), and the
        # paper joins rows with "\n\n"; doing the same here makes the local file give the hub's text.
        with local.open(encoding="utf-8") as f:
            rows = [line if line.strip() else "" for line in f]
        return TextSource("wikitext2", "\n\n".join(rows), f"{local} (lines as hub rows, joined with \\n\\n)")
    return _from_hub("Salesforce/wikitext", "wikitext-2-raw-v1", "test")


def _c4() -> TextSource:
    return _from_hub("NeelNanda/c4-10k", None, "train", limit=5000)


def _pg19() -> TextSource:
    return _from_hub("emozilla/pg19", None, "validation", limit=5)


def _builtin() -> TextSource:
    path = resources.files("mech_interp") / "data" / "sample_text.txt"
    return TextSource(BUILTIN, path.read_text(encoding="utf-8"), "mech_interp/data/sample_text.txt")


NAMED: dict[str, Callable[[], TextSource]] = {
    BUILTIN: _builtin,
    "wikitext2": _wikitext2,
    "c4": _c4,
    "pg19": _pg19,
}


def is_local_file(spec: str) -> bool:
    """Whether ``load_text(spec)`` reads a file path (rather than a named or hub source)."""
    return spec not in NAMED and not spec.startswith("hf:")


def load_text(spec: str) -> TextSource:
    """``builtin``, ``wikitext2``, ``c4``, ``pg19``, ``hf:NAME[:CONFIG[:SPLIT]]`` or a text file path."""
    if spec in NAMED:
        return NAMED[spec]()
    if spec.startswith("hf:"):
        name, config, split = (spec[3:].split(":") + [None, None])[:3]
        return _from_hub(name, config or None, split or "test")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(
            f"text file {spec!r} does not exist: expected a file path or one of {', '.join(NAMED)}, hf:NAME[:CONFIG[:SPLIT]]"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise UsageError(f"text file {spec!r} is empty")
    return TextSource(path.name, text, str(path.resolve()))
