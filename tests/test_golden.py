"""Golden result tables of the four studies: small configurations run through the public command lines, and every
table they write compared with the copy recorded from an earlier commit (first recorded at 822a40c, before the
refactoring of the run machinery began). A refactoring that changes no result passes; one that moves a number beyond
float32 rounding, changes an integer, a name or a NaN, drops a table or renames a column fails and says where.

What runs (inputs under ``tests/golden/``, goldens under ``tests/golden/tables/<study>/``):

- ``lm``: ``mech-interp batch golden/lm.toml`` on the embedded SmolLM2-135M (one model load): layerwise,
  feature_view, attention, and intervention on two windows of WikiText-2 with means from the built-in text
  (acceptance; skips without ``../shared/data``);
- ``heads``: ``mech-interp batch golden/heads.toml``, the six head experiments on ``planted:gpt2-tiny`` and the
  built-in text (integration);
- ``vit``: ``vit-hooks batch golden/vit.toml``, every vision experiment on the planted and the random tiny register
  ViT, and layerwise on the embedded DINOv2 ViT-S, over the first images of imagenet-samples (acceptance; skips
  without ``../shared/data``);
- ``train``: ``train-gpt2-bias experiment`` of the four variants, tiny preset, 6 steps, byte tokenizer, on
  ``golden/train_corpus`` (the built-in text of 822a40c cut into 16 documents): the comparison tables and every
  table of the analysis runs (integration).

Each test runs its command into ``tmp_path``; every ``*.parquet`` under the output, keyed by its path relative to
``--out`` (run directory + table name), must have a golden copy and every golden copy a fresh table, and each pair
must have the same columns in the same order, dtypes and index, every column that is not a float equal, NaN where
NaN, and every float within ``FLOAT_RTOL`` / ``SCALE_TOL`` (below). Floats are not compared bit for bit: the CPU's
instruction set picks other kernels (the goldens were written on another CPU type than an AMD EPYC with AVX-512, and
differ there in the last bits), and float sums split over threads round differently, so every test here also runs
on one torch thread. Only the columns in ``EXCLUDED`` (provenance and timing) are left out, each with its reason.

When a change of results is intended, rewrite the goldens from the fresh runs and commit them with the reason:

    MECH_INTERP_WRITE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py [-k lm|heads|vit|train]
    git diff --stat tests/golden/tables

In that mode each test replaces ``tests/golden/tables/<study>/`` with what its run wrote and then skips (it
compares nothing), saying how many tables it wrote.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_index_equal

import mech_interp.cli
import train_gpt2_bias.cli
import vit_hooks.cli

from .conftest import shared_data

GOLDEN = Path(__file__).parent / "golden"
TABLES = GOLDEN / "tables"
WRITE_VARIABLE = "MECH_INTERP_WRITE_GOLDEN"
# Floats agree to float32 rounding on any x86 CPU: within FLOAT_RTOL of the golden value, or within SCALE_TOL of the
# table's largest |value| (a difference of nearly equal values, such as a change of 0.01 in an entry of 3918, keeps
# only the precision of the values it is a difference of). Measured between the machine that wrote them and an AMD
# EPYC with AVX-512, one thread each: 3e-6 relative at most, and up to 7e-6 absolute in tables of scale ~1
# (attention logits, and the activations of a model trained six steps, where the differences grow with training).
FLOAT_RTOL, SCALE_TOL = 1e-5, 1e-5

# (table name, column): why it is not compared. Nothing else is left out.
EXCLUDED = {
    ("perplexity_long", "origin"): "provenance: names the absolute path the text was read from (../shared/data as "
                                   "resolved from the checkout), which differs between checkouts",
    ("losses", "train_seconds"): "timing: wall time of the training loop",
    ("losses", "train_tokens_per_second"): "timing: tokens per second of wall time of the training loop",
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py says why


def _run(main, args: list, capsys) -> None:
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, f"{' '.join(map(str, args))} exited with {code}; end of stderr:\n{captured.err[-4000:]}"


def _tables(out: Path) -> dict[str, Path]:
    """Every table under ``out``, keyed by its path relative to ``out`` (run directory / table name)."""
    return {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*.parquet"))}


def _compared(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[column for name, column in EXCLUDED if name == table], errors="ignore")


def _float_scale(golden: pd.DataFrame) -> float:
    """The largest |value| of the table's float columns: the scale a difference of nearly equal values keeps."""
    floats = [c for c in golden.columns if pd.api.types.is_float_dtype(golden[c]) and golden[c].notna().any()]
    return max((float(np.nanmax(np.abs(golden[c].to_numpy(float)))) for c in floats), default=0.0)


def _differing_rows(new: pd.Series, old: pd.Series, scale: float) -> list[int]:
    if not pd.api.types.is_float_dtype(old):
        return [i for i, (x, y) in enumerate(zip(new.tolist(), old.tolist()))
                if not (x == y or (pd.isna(x) and pd.isna(y)))]
    x, y = new.to_numpy(float), old.to_numpy(float)
    with np.errstate(invalid="ignore"):
        close = (np.isnan(x) & np.isnan(y)) | (x == y) | (np.abs(x - y) <= FLOAT_RTOL * np.abs(y) + SCALE_TOL * scale)
    return np.flatnonzero(~close).tolist()


def _difference(key: str, fresh: pd.DataFrame, golden: pd.DataFrame) -> str | None:
    """None when the tables agree outside EXCLUDED (floats to FLOAT_RTOL / SCALE_TOL, everything else exactly), else
    what differs: the columns by name, each with its first differing row at full precision (pandas' own message
    rounds to 6 digits)."""
    table = Path(key).stem
    fresh, golden = _compared(table, fresh), _compared(table, golden)
    if list(fresh.columns) != list(golden.columns) or len(fresh) != len(golden):
        return (f"shape or columns differ: fresh {fresh.shape} {list(fresh.columns)}, golden {golden.shape} "
                f"{list(golden.columns)}")
    try:
        assert_index_equal(fresh.index, golden.index, exact=True)
    except AssertionError as err:
        return f"index differs: {' '.join(str(err).split())[:400]}"
    scale, found = _float_scale(golden), []
    for column in golden.columns:
        new, old = fresh[column], golden[column]
        if new.dtype != old.dtype:
            found.append(f"{column} (dtype: fresh {new.dtype}, golden {old.dtype})")
            continue
        rows = _differing_rows(new, old, scale)
        if rows:
            found.append(f"{column} ({len(rows)} of {len(old)} rows; first, row {rows[0]}: fresh "
                         f"{new.iloc[rows[0]]!r}, golden {old.iloc[rows[0]]!r})")
    return "column(s) differ: " + "; ".join(found) if found else None


def _match_golden(study: str, out: Path) -> None:
    fresh = _tables(out)
    assert fresh, f"the {study} run wrote no table under {out}"
    target = TABLES / study
    if os.environ.get(WRITE_VARIABLE) == "1":
        shutil.rmtree(target, ignore_errors=True)
        for key, path in fresh.items():
            (target / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / key)
        pytest.skip(f"{WRITE_VARIABLE}=1: wrote {len(fresh)} golden tables to {target}; review "
                    f"`git diff --stat {target}` and commit them with the reason the numbers changed")
    golden = _tables(target)
    problems = []
    missing, extra = sorted(set(golden) - set(fresh)), sorted(set(fresh) - set(golden))
    if missing:
        problems.append(f"golden tables the fresh run did not write: {', '.join(missing)}")
    if extra:
        problems.append(f"tables of the fresh run with no golden copy: {', '.join(extra)}")
    for key in sorted(set(golden) & set(fresh)):
        difference = _difference(key, pd.read_parquet(fresh[key]), pd.read_parquet(golden[key]))
        if difference:
            problems.append(f"{key}: {difference}")
    assert not problems, (
        f"{study}: {len(problems)} difference(s) from the golden tables in {target}:\n  " + "\n  ".join(problems)
        + f"\nIf the change is intended: {WRITE_VARIABLE}=1 .venv/bin/python -m pytest tests/test_golden.py -k "
          f"{study}, then review and commit {target} with the reason.")


def test_lm_tables_match_golden(tmp_path, capsys):
    shared_data("wikitext-2-raw/wiki.test.raw")
    _run(mech_interp.cli.main, ["batch", GOLDEN / "lm.toml", "--out", tmp_path / "out"], capsys)
    _match_golden("lm", tmp_path / "out")


def test_heads_tables_match_golden(tmp_path, capsys):
    _run(mech_interp.cli.main, ["batch", GOLDEN / "heads.toml", "--out", tmp_path / "out"], capsys)
    _match_golden("heads", tmp_path / "out")


def test_vit_tables_match_golden(tmp_path, capsys):
    shared_data("imagenet-samples")
    _run(vit_hooks.cli.main, ["batch", GOLDEN / "vit.toml", "--out", tmp_path / "out"], capsys)
    _match_golden("vit", tmp_path / "out")


def test_train_tables_match_golden(tmp_path, capsys, monkeypatch):
    # The trainer puts a document in the validation split by a hash of its path: a relative corpus path keeps the
    # split, and so every number, the same wherever the checkout and tmp_path are.
    shutil.copytree(GOLDEN / "train_corpus", tmp_path / "corpus")
    monkeypatch.chdir(tmp_path)
    _run(train_gpt2_bias.cli.main,
         ["experiment", "--preset", "tiny", "--variants", "default,sink,attn_bias,gated", "--corpus", "corpus",
          "--tokenizer", "byte", "--data-dir", "data", "--val-fraction", "0.3", "--no-progress", "--max-steps", "6",
          "--eval-interval", "3", "--device", "cpu", "--root", "exp", "--text", "builtin", "--n-seqs", "2",
          "--attention-windows", "2", "--attention-prompt", "Summer is warm. Winter is cold."], capsys)
    _match_golden("train", tmp_path / "exp")
