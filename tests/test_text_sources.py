"""Text sources: a local WikiText mirror gives the hub's text; hub sources fail fast offline."""

from __future__ import annotations

import pytest

import mech_interp as mi
import mech_interp.data.texts as text_sources
from mech_interp.data.texts import load_text


def test_local_wikitext_is_joined_like_the_hub_rows(tmp_path, monkeypatch):
    raw = tmp_path / "wikitext-2-raw" / "wiki.test.raw"
    raw.parent.mkdir()
    raw.write_bytes(b" \r\n = Title = \r\n \r\n Body one .\r\n Body two .\r\n")
    monkeypatch.setenv("MECH_INTERP_DATA", str(tmp_path))
    source = load_text("wikitext2")
    # datasets' wikitext builder: one row per line, newline kept, blank lines as "".
    rows = ["", " = Title = \n", "", " Body one .\n", " Body two .\n"]
    assert source.text == "\n\n".join(rows)
    assert str(raw) in source.origin


def test_hub_text_offline_is_a_usage_error_at_once(monkeypatch):
    monkeypatch.setattr(text_sources, "hub_reachable", lambda: False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(mi.UsageError, match="text source 'someone/corpus' is not available .*hub is unreachable"):
        load_text("hf:someone/corpus")


def test_c4_and_pg19_are_joined_and_tokenized_as_the_paper(monkeypatch):
    """The paper's loader joins C4 / PG-19 documents with one space and keeps the tokenizer's
    default special tokens; WikiText rows are joined with a blank line and get none."""
    import sys
    import types

    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return {"text": ["first doc.", "second doc."]}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(text_sources, "hub_reachable", lambda: True)
    monkeypatch.setattr(text_sources, "find_data", lambda relative: None)  # no local mirror: the hub path
    c4, pg19, wikitext = load_text("c4"), load_text("pg19"), load_text("wikitext2")
    assert calls == [("NeelNanda/c4-10k", None, "train[:5000]"), ("emozilla/pg19", None, "validation[:5]"),
                     ("Salesforce/wikitext", "wikitext-2-raw-v1", "test")]
    assert c4.text == pg19.text == "first doc. second doc." and c4.special_tokens and pg19.special_tokens
    assert wikitext.text == "first doc.\n\nsecond doc." and not wikitext.special_tokens


def test_local_text_files_are_read_strictly(tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(mi.UsageError, match=r"is not UTF-8 \(byte 0xe9 at offset 3\)"):
        load_text(str(tmp_path / "latin.txt"))  # never decoded with replacement characters
    with pytest.raises(mi.UsageError, match="is a directory"):
        load_text(str(tmp_path))
    (tmp_path / "ok ü.txt").write_text("Grüße. ", encoding="utf-8")
    source = load_text(str(tmp_path / "ok ü.txt"))
    assert source.text == "Grüße. " and source.name == "ok ü.txt" and not source.special_tokens


def test_text_files_are_read_with_universal_newlines(tmp_path):
    """A file saved with CRLF (or old Mac CR) line ends gives the same text, hence the same tokens, as the LF
    file; the named wikitext2 source always did (it reads lines as a text-mode file does), a path did not."""
    lines = [" = Title = ", "", " First line . ", " Second line . ", ""]
    for name, end in (("lf.txt", "\n"), ("crlf.txt", "\r\n"), ("cr.txt", "\r")):
        (tmp_path / name).write_bytes(end.join(lines).encode())
    lf, crlf, cr = (load_text(str(tmp_path / n)) for n in ("lf.txt", "crlf.txt", "cr.txt"))
    assert crlf.text == lf.text == cr.text and "\r" not in crlf.text
    assert lf.origin == str((tmp_path / "lf.txt").resolve())  # nothing translated, nothing said
    assert crlf.origin.endswith("(universal newlines: 4 \\r\\n or \\r read as \\n)")
    assert cr.origin.endswith("(universal newlines: 4 \\r\\n or \\r read as \\n)")

