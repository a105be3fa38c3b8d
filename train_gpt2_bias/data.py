"""Text -> GPT-2 BPE tokens -> ``train.bin`` / ``val.bin`` (uint16 memmaps, as nanoGPT's prepare.py) -> batches.

Sources (``TrainConfig.corpus``): ``debian-docs`` (the offline English corpus: Debian's python3.11-doc reST
sources, perl-doc POD files, gnu-standards, plus ``wikitext-2-raw/wiki.test.raw`` from ../shared/data; about 7 M
GPT-2 tokens), ``wikitext2``, a text file, a directory (its ``.txt .rst .pod .md .raw .text .gz`` files,
recursively) or ``hf:NAME[:CONFIG[:SPLIT]]`` (a Hugging Face dataset's ``text`` column). Each document ends with the
tokenizer's end-of-text token. Files are read as UTF-8 (anything else is refused in one line, as mech-interp
refuses a text) with universal newlines (``\r\n`` and ``\r`` read as ``\n``, as a text-mode file reads them).
Documents longer than 64 KiB are cut at blank lines into pieces of about that size, and each piece goes to the
validation split when a hash of (source, piece) falls below ``val_fraction``: a stable split spread over every
source. A corpus with too few pieces for that hash to fill both splits (a small file) is split by tokens instead:
the last ``val_fraction`` of its token stream is held out (``meta.json`` says which split was made).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Int

from mech_interp.storage.user_files import decode_utf8, universal_newlines
from mech_interp.validation.errors import UsageError, reason

UINT16_LIMIT = 2**16
READING = "utf-8, universal newlines"  # in meta.json: memmaps made by an earlier way of reading are made again
PIECE_CHARS = 64 * 1024
TEXT_SUFFIXES = (".txt", ".rst", ".pod", ".md", ".raw", ".text", ".gz")
DEBIAN_DOCS = {  # what scripts/install.sh installs (as root, through apt)
    "python3.11-doc": (Path("/usr/share/doc/python3.11/html/_sources"), "*.txt"),
    "perl-doc": (Path("/usr/share/perl"), "*.pod"),
    "gnu-standards": (Path("/usr/share/doc/gnu-standards"), "*.text.gz"),
}


def debian_docs_available() -> list[str]:
    """The Debian documentation packages whose files are on this machine."""
    return [name for name, (root, pattern) in DEBIAN_DOCS.items() if root.is_dir() and any(root.rglob(pattern))]


def load_tokenizer(name: str):
    """``gpt2`` (the files in ../shared/data/gpt2-tokenizer when present, else the hub), ``byte`` (built in), or a
    local directory any ``AutoTokenizer`` reads."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    from mech_interp.data.locations import find_data

    if name == "byte":
        from mech_interp.models.tokenizers import byte_tokenizer

        tokenizer = byte_tokenizer()
    elif name == "gpt2" and find_data("gpt2-tokenizer") is not None:
        tokenizer = GPT2TokenizerFast.from_pretrained(str(find_data("gpt2-tokenizer")))
    elif Path(name).expanduser().is_dir():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(Path(name).expanduser()), trust_remote_code=False)
        except (OSError, ValueError, TypeError) as err:  # no tokenizer files, broken ones, or custom code it would need
            raise UsageError(f"--tokenizer {name!r} cannot be loaded ({reason(err)}): expected a directory with a "
                             "tokenizer of transformers' own classes (tokenizer.json, or vocab.json and merges.txt)"
                             ) from None
    elif name == "gpt2":
        try:
            tokenizer = AutoTokenizer.from_pretrained("gpt2")
        except OSError as err:
            raise UsageError("cannot load the gpt2 tokenizer: ../shared/data/gpt2-tokenizer is absent and the hub is "
                             f"unreachable ({type(err).__name__}): pass --tokenizer DIR") from None
    else:
        raise UsageError(f"tokenizer {name!r} not found: expected gpt2, byte, or a local tokenizer directory")
    if tokenizer.eos_token_id is None:
        raise UsageError(f"tokenizer {name!r} has no end-of-text token to separate documents")
    tokenizer.model_max_length = 2**62  # documents are longer than any context; windows are cut later
    return tokenizer


def _files(root: Path, pattern: str | None = None) -> list[Path]:
    if pattern is not None:
        return sorted(p for p in root.rglob(pattern) if p.is_file())
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(TEXT_SUFFIXES))


def _read(path: Path) -> str:
    fix = "convert it to UTF-8 text, or leave it out of --corpus"
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError) as err:  # unreadable, or not a whole gzip stream
        raise UsageError(f"corpus file {str(path)!r} cannot be read ({type(err).__name__}: {err}): {fix}") from None
    text = decode_utf8(data, f"corpus file {str(path)!r}", fix,
                       offsets=" of its decompressed data" if path.suffix == ".gz" else "")
    return universal_newlines(text)


def _documents(source: str) -> Iterator[tuple[str, str]]:
    """(document id, text) for one corpus source."""
    from mech_interp.data.locations import find_data

    if source == "debian-docs":
        found = debian_docs_available()
        if not found:
            raise UsageError("corpus 'debian-docs' is not installed: run scripts/install.sh as root (apt-get install "
                             "python3.11-doc perl-doc gnu-standards), or pass --corpus FILE_OR_DIR")
        for name in found:
            root, pattern = DEBIAN_DOCS[name]
            for path in _files(root, pattern):
                yield str(path), _read(path)
        wikitext = find_data("wikitext-2-raw/wiki.test.raw")
        if wikitext is not None:
            yield str(wikitext), _read(wikitext)
        return
    if source == "wikitext2":
        wikitext = find_data("wikitext-2-raw/wiki.test.raw")
        if wikitext is None:
            raise UsageError("corpus 'wikitext2': wikitext-2-raw/wiki.test.raw not found under ../shared/data or "
                             "$MECH_INTERP_DATA")
        yield str(wikitext), _read(wikitext)
        return
    if source.startswith("hf:"):
        name, config, split = (source[3:].split(":") + [None, None])[:3]
        try:
            import datasets

            rows = datasets.load_dataset(name, config, split=split or "train")
        except Exception as err:  # offline, unknown name, ...: the user's to fix
            raise UsageError(f"corpus {source!r} cannot be loaded ({reason(err)})") from None
        for i, row in enumerate(rows):
            yield f"{source}#{i}", row["text"]
        return
    path = Path(source).expanduser()
    if path.is_dir():
        for file in _files(path):
            yield str(file), _read(file)
    elif path.is_file():
        yield str(path), _read(path)
    else:
        raise UsageError(f"corpus source {source!r} not found: expected debian-docs, wikitext2, a file, a directory or "
                         "hf:NAME[:CONFIG[:SPLIT]]")


def check_sources(corpus: list[str]) -> None:
    """Refuse a source that cannot be read before anything starts: a missing file or directory, an uninstalled
    Debian corpus, an absent WikiText file (hf: datasets are only known once loaded)."""
    for source in corpus:
        path = Path(source).expanduser()
        if source.startswith("hf:") or (source == "debian-docs" and debian_docs_available()):
            continue
        if source in ("debian-docs", "wikitext2") or not path.exists():
            next(_documents(source))  # raises the source's one-line error (or reads it, when it is there)
        elif path.is_dir() and not _files(path):
            raise UsageError(f"corpus directory {source!r} holds no text files ({' '.join(TEXT_SUFFIXES)})")


def _pieces(text: str) -> list[str]:
    if len(text) <= PIECE_CHARS:
        return [text]
    pieces, start = [], 0
    while start < len(text):
        cut = text.find("\n\n", start + PIECE_CHARS)
        end = len(text) if cut < 0 else cut + 2
        pieces.append(text[start:end])
        start = end
    return pieces


def _in_val(doc_id: str, index: int, val_fraction: float) -> bool:
    digest = hashlib.sha256(f"{doc_id}#{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


@dataclass(frozen=True)
class TokenData:
    """The two memmaps and what made them."""

    directory: Path
    meta: dict

    def split(self, name: str) -> np.memmap:
        return np.memmap(self.directory / f"{name}.bin", dtype=np.uint16, mode="r")


def prepare_data(corpus: list[str], tokenizer_name: str, directory: str | Path, val_fraction: float,
                 max_tokens: int = 0, progress: bool = True) -> TokenData:
    """Tokenize ``corpus`` into ``directory`` (reused when its meta.json says the same inputs made it)."""
    from tqdm.auto import tqdm

    check_sources(corpus)
    tokenizer = load_tokenizer(tokenizer_name)
    vocab = len(tokenizer)
    if vocab > UINT16_LIMIT:
        raise UsageError(f"tokenizer {tokenizer_name!r} has {vocab} tokens, more than uint16 holds ({UINT16_LIMIT}): "
                         "use a tokenizer with at most 65536 tokens")
    directory = Path(directory)
    request = {"corpus": corpus, "tokenizer": tokenizer_name, "val_fraction": val_fraction, "max_tokens": max_tokens,
               "vocab_size": vocab, "eot": tokenizer.eos_token_id, "reading": READING}
    meta_file = directory / "meta.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("request") == request and all((directory / f"{s}.bin").is_file() for s in ("train", "val")):
            return TokenData(directory, meta)
    splits: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    counts = {"train": 0, "val": 0}
    documents = 0
    bar = tqdm(desc="tokenizing", unit="tok", unit_scale=True, disable=not progress)
    for source in corpus:
        for doc_id, text in _documents(source):
            pieces = _pieces(text)
            encoded = tokenizer(pieces, add_special_tokens=False)["input_ids"]
            for index, ids in enumerate(encoded):
                if not ids:
                    continue
                split = "val" if _in_val(doc_id, index, val_fraction) else "train"
                splits[split].append(np.asarray(ids + [tokenizer.eos_token_id], dtype=np.uint16))
                counts[split] += len(ids) + 1
                bar.update(len(ids) + 1)
            documents += 1
            if max_tokens and counts["train"] + counts["val"] >= max_tokens:
                break
        if max_tokens and counts["train"] + counts["val"] >= max_tokens:
            break
    bar.close()
    if counts["train"] + counts["val"] == 0:
        raise UsageError(f"corpus {', '.join(corpus)} holds no text: nothing to train on")
    split_by = "pieces"
    if counts["val"] == 0 or counts["train"] == 0:  # every piece hashed to one side: hold out the stream's tail
        tokens = np.concatenate(splits["train"] + splits["val"])
        n_val = max(1, round(val_fraction * len(tokens)))
        splits = {"train": [tokens[:-n_val]], "val": [tokens[-n_val:]]}
        counts = {"train": len(tokens) - n_val, "val": n_val}
        split_by = "tokens"
    directory.mkdir(parents=True, exist_ok=True)
    for name, arrays in splits.items():
        tokens = np.concatenate(arrays)
        out = np.memmap(directory / f"{name}.bin.tmp", dtype=np.uint16, mode="w+", shape=tokens.shape)
        out[:] = tokens
        out.flush()
        del out
        (directory / f"{name}.bin.tmp").replace(directory / f"{name}.bin")
    meta = {"request": request, "train_tokens": counts["train"], "val_tokens": counts["val"], "documents": documents,
            "split": split_by, "tokenizer_class": type(tokenizer).__name__}
    meta_file.write_text(json.dumps(meta, indent=2))
    return TokenData(directory, meta)


def check_block_size(data: TokenData, n_ctx: int) -> None:
    for name in ("train", "val"):
        n = data.meta[f"{name}_tokens"]
        if n < n_ctx + 1:
            raise UsageError(f"the {name} split has {n} tokens, fewer than one window of --n-ctx {n_ctx} + 1 (the "
                             "targets are shifted by one): add text or lower --n-ctx")


def get_batch(
    data: np.memmap, batch_size: int, n_ctx: int, generator: torch.Generator
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Random windows (nanoGPT): inputs ``data[i:i+n_ctx]`` and targets shifted by one."""
    starts = torch.randint(len(data) - n_ctx, (batch_size,), generator=generator)
    x = torch.stack([torch.from_numpy(data[i:i + n_ctx].astype(np.int64)) for i in starts.tolist()])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + n_ctx].astype(np.int64)) for i in starts.tolist()])
    return x, y


def data_dir_for(corpus: list[str], tokenizer: str, val_fraction: float, max_tokens: int) -> Path:
    key = json.dumps([corpus, tokenizer, val_fraction, max_tokens])
    return Path("results") / "train" / "data" / hashlib.sha256(key.encode()).hexdigest()[:12]
