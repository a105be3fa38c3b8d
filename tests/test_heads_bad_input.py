"""The head study's bad input, as a hostile user would try it: heads named in another script's digits,
as numbers, twice, outside the model; head_sets.csv files with float, NaN, negative or missing cells.
Each is refused in one line ``mech-interp: error: ...`` naming the value, exit status 2, nothing
written; before the model loads unless only the model can tell (how many heads it has).

And a model without a massive token: the head experiments rank by the first score instead, and say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from .cli_runs import assert_refused, run_cli

TINY = ["--model", "random:gpt2-tiny", "--device", "cpu"]
FAST = ["--n-seqs", "2", "--seq-len", "16"]
HEAD_3D = ["head-3d", *TINY, "--layer", "1"]  # --layer: the tiny model has no massive entry to find the block by
ABLATE = ["head-ablation", *TINY, *FAST, "--n-boot", "20", "--head-sets", "{tmp}/h.csv"]
HEADER = "set,draw,rank,layer,head,score,rank_by\n"  # as head-scores writes head_sets.csv
ONE_LINE_FORM = "is not allowed: expected LxHy (block x, head y: 0-based decimal integers in ASCII digits 0-9"
CELL_FORM = "expected a 0-based integer in ASCII digits 0-9"


def _csv(text: str | bytes):
    def write(t: Path) -> None:
        (t / "h.csv").write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return write


def _batch(text: str):
    def write(t: Path) -> None:
        (t / "b.toml").write_text("[defaults]\ndevice = 'cpu'\n[[runs]]\nmodels = ['random:gpt2-tiny']\n"
                                  f"experiments = ['head_3d']\nparams = {{ layer = 1, {text} }}\n")
    return write


# (id, setup(tmp) -> None, args with {tmp} placeholders, expected substring of the one error line, model loads)
CASES = [
    # 1. --heads that are no LxHy (or older LAYER.HEAD) of decimal integers
    ("heads-nan", None, [*HEAD_3D, "--heads", "nan"], f"head 'nan' {ONE_LINE_FORM}", False),
    ("heads-letters", None, [*HEAD_3D, "--heads", "a.b"], f"head 'a.b' {ONE_LINE_FORM}", False),
    ("heads-letter-head", None, [*HEAD_3D, "--heads", "0.1,1.x"], f"head '1.x' {ONE_LINE_FORM}", False),
    ("heads-leading-zero", None, [*HEAD_3D, "--heads", "1.01"], f"head '1.01' {ONE_LINE_FORM}", False),
    ("heads-space-inside", None, [*HEAD_3D, "--heads", "1 . 2"], f"head '1 . 2' {ONE_LINE_FORM}", False),
    ("batch-heads-float", _batch("heads = [1.10]"), ["batch", "{tmp}/b.toml"],
     "head 1.1 is not allowed: expected the text LxHy", False),
    ("heads-float-head-2.5", None, [*HEAD_3D, "--heads", "2.5"],
     "head L2H5 is out of range for random-gpt2-tiny: expected LAYER 0..3 and HEAD 0..3 (0-based)", True),
    ("heads-float-head-1.7", None, [*HEAD_3D, "--heads", "0.0,1.7"], "head L1H7 is out of range for random-gpt2-tiny", True),
    ("heads-named-out-of-range", None, [*HEAD_3D, "--heads", "L0H0,L1H7"], "head L1H7 is out of range for random-gpt2-tiny", True),
    ("heads-named-leading-zero", None, [*HEAD_3D, "--heads", "L01H2"], f"head 'L01H2' {ONE_LINE_FORM}", False),
    ("heads-named-half", None, [*HEAD_3D, "--heads", "L1"], f"head 'L1' {ONE_LINE_FORM}", False),
    ("heads-both-spellings-twice", None, [*HEAD_3D, "--heads", "L1H2,1.2"], "head L1H2 is named twice in --heads", False),
    # 2. digits other than ASCII 0-9
    ("heads-arabic-indic", None, [*HEAD_3D, "--heads", "١.٢"], f"head '١.٢' {ONE_LINE_FORM}", False),
    ("heads-fullwidth", None, [*HEAD_3D, "--heads", "１.２"], f"head '１.２' {ONE_LINE_FORM}", False),
    ("heads-superscript", None, [*HEAD_3D, "--heads", "1.²"], f"head '1.²' {ONE_LINE_FORM}", False),
    # 3. head_sets.csv cells and files
    ("csv-float-layer", _csv(HEADER + "top,0,0,1.7,2,0.5,massive\n"), ABLATE,
     f"--head-sets '{{tmp}}/h.csv' row 1 (line 2): layer '1.7' is not allowed (not a whole number): {CELL_FORM}", False),
    ("csv-float-head", _csv(HEADER + "top,0,0,1,1,0.5,massive\ntop,0,1,1,2.9,0.4,massive\n"), ABLATE,
     "row 2 (line 3): head '2.9' is not allowed (not a whole number)", False),
    ("csv-nan-text", _csv(HEADER + "top,0,0,nan,1,0.5,massive\n"), ABLATE, "row 1 (line 2): layer 'nan' is not allowed (NaN)", False),
    ("csv-empty-cell", _csv(HEADER + "top,0,0,,1,0.5,massive\n"), ABLATE,
     "row 1 (line 2): layer '' is not allowed (an empty cell)", False),
    ("csv-negative", _csv(HEADER + "top,0,0,-1,1,0.5,massive\n"), ABLATE, "row 1 (line 2): layer '-1' is not allowed (negative)", False),
    ("csv-arabic-indic-digit", _csv(HEADER + "top,0,0,1,٢,0.5,massive\n"), ABLATE, "head '٢' is not allowed", False),
    ("csv-missing-column", _csv("set,draw,rank,layer\ntop,0,0,1\n"), ABLATE, "has no column head: expected the head_sets.csv", False),
    ("csv-column-twice", _csv("set,draw,layer,head,layer\ntop,0,1,1,2\n"), ABLATE, "names column 'layer' twice", False),
    ("csv-short-row", _csv(HEADER + "top,0,0,1,1\n"), ABLATE, "row 1 (line 2) has 5 cells, the header 7", False),
    ("csv-unknown-set", _csv(HEADER + "mine,0,0,1,1,0.5,massive\n"), ABLATE,
     "row 1 (line 2): set 'mine' is not allowed: expected one of top, bottom, random", False),
    ("csv-draw-of-top", _csv(HEADER + "top,1,0,1,1,0.5,massive\n"), ABLATE,
     "draw 1 of set top is not allowed: only random sets have draws other than 0", False),
    ("csv-empty-file", _csv(""), ABLATE, "--head-sets '{tmp}/h.csv' is empty: expected the head_sets.csv", False),
    ("csv-header-only", _csv(HEADER), ABLATE, "--head-sets '{tmp}/h.csv' has no heads", False),
    ("csv-not-utf8", _csv(HEADER.encode() + "top,0,0,1,1,0.5,caf\xe9\n".encode("latin-1")), ABLATE,
     "--head-sets '{tmp}/h.csv' is not UTF-8 (byte 0xe9 at offset 58)", False),
    ("csv-is-a-directory", lambda t: (t / "h.csv").mkdir(), ABLATE, "--head-sets '{tmp}/h.csv' is a directory", False),
    ("csv-out-of-range", _csv(HEADER + "top,0,0,9,1,0.5,massive\n"), ABLATE,
     "row 1 (line 2): head L9H1 is out of range for random-gpt2-tiny: expected LAYER 0..3 and HEAD 0..3", True),
    # 4. a head named twice in one set
    ("csv-head-twice", _csv(HEADER + "top,0,0,1,1,0.5,massive\ntop,0,1,1,1,0.4,massive\n"), ABLATE,
     "row 2 (line 3): head L1H1 is named twice in set top draw 0 (also row 1 (line 2)): give each head once per set", False),
]


@pytest.mark.parametrize("case_id, setup, args, needle, loads", [
    pytest.param(*case, id=case[0], marks=pytest.mark.integration if case[4] else pytest.mark.unit) for case in CASES])
def test_bad_heads_are_refused_in_one_line(tmp_path, capsys, monkeypatch, case_id, setup, args, needle, loads):
    if not loads:
        from mech_interp.models.language_study import LanguageModelStudy

        monkeypatch.setattr(LanguageModelStudy, "open", lambda self, run: pytest.fail("the model was loaded"))
    if setup is not None:
        setup(tmp_path)
    monkeypatch.chdir(tmp_path)  # nothing may be written into the working directory either
    out = tmp_path / "results"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    before = set(tmp_path.rglob("*"))
    code, stdout, stderr = run_cli([*args, "--out", out], capsys)
    assert_refused(code, stderr, needle.replace("{tmp}", str(tmp_path)), out)
    assert set(tmp_path.rglob("*")) == before, "a refused run created files"
    assert "[done]" not in stdout


# 5. random:gpt2-tiny has no massive activation: no head has a massive score to rank by
@pytest.mark.parametrize("args", [
    ["head-scores", "--n-boot", "20"],
    ["head-ablation", "--n-boot", "20", "--n-random", "1"],
    ["head-cumulative", "--max-heads", "2"],
], ids=lambda args: args[0])
def test_no_massive_token_ranks_by_first_score_and_says_so(tmp_path, capsys, args):
    out = tmp_path / "results"
    code, stdout, stderr = run_cli([*args, *TINY, *FAST, "--out", out], capsys)
    assert code == 0, stderr
    said = "no head has a massive score (no block's input has a massive token before a query by |a| > 100"
    assert said in stdout and "heads ranked by first score instead (attention to residual position 0)" in stdout
    assert "by massive score" not in stdout
    (manifest,) = out.rglob("manifest.json")
    summary = json.loads(manifest.read_text())["summary"]
    assert summary["rank_by"] == "first" and summary["rank_by_note"].startswith(said)
    if args[0] == "head-scores":
        assert summary["ranked_by_definition"].startswith("mean over queries q > 0 of attention[q, 0]")
        sets = pd.read_csv(manifest.parent / "head_sets.csv")
        assert set(sets["rank_by"]) == {"first"} and sets["score"].notna().all()
