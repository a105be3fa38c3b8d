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
