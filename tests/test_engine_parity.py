"""The same tables on the transformer_bridge engine as on the hooked_transformer engine: the golden configurations of
the language-model and head studies (``tests/golden/lm.toml``, ``heads.toml``) run through ``mech-interp batch`` on
the bridge, compared with the golden tables, which the HookedTransformer wrote (``tests/test_golden.py``).

Runs where the bridge is the installed TransformerLens' own engine (.venv-tl4, TransformerLens 4.x; ``make test``
runs it there); in .venv the golden test itself checks the HookedTransformer, and the beta bridge of 3.x is checked
family by family (tests/test_architectures.py) and by tests/test_engines.py.

What must hold, as the engines differ only in float rounding (the bridge runs the HF modules, the HookedTransformer
its own):

- every table the golden run wrote, with the same columns, rows and dtypes, and every column that is not a float
  (layers, positions, dims, tokens, heads, counts) equal: so the same massive (layer, position, dim) entries, the
  same heads in the same sets;
- per-layer statistics (top-1/2/3, median, mean |a|) equal to 1e-5 relative, perplexities to 1e-4 relative;
- the single-head sweep ranks the heads in the same order, up to heads whose changes differ by less than the
  tolerance of the values they are differences of;
- every other float within 1e-4 of the largest magnitude in its table: differences of nearly equal values (a
  change of 0.1 in an entry of 3918), standard deviations over a few sequences and attention logits far below
  their table's scale keep only the precision of the values they come from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mech_interp.cli
from mech_interp.models.engines import TRANSFORMER_BRIDGE, resolve_engine

from .conftest import shared_data
from .test_golden import GOLDEN, TABLES, _compared, _run, _tables

pytestmark = [pytest.mark.skipif(
    resolve_engine("auto") != TRANSFORMER_BRIDGE,
    reason="the bridge's parity runs in .venv-tl4 (TransformerLens 4.x), where make test runs this module; here the "
           "HookedTransformer writes the golden tables themselves (tests/test_golden.py)"),
              pytest.mark.usefixtures("one_torch_thread")]  # tests/conftest.py says why

LAYER_STATS = {"top1", "top2", "top3", "median", "mean_abs"}  # in layerwise.parquet and mean_pass_layerwise.parquet
PERPLEXITIES = {"perplexity", "perplexity_clean", "original", "set_zero", "set_mean"}
RTOL_STATS, RTOL_PERPLEXITY, TABLE_SCALE = 1e-5, 1e-4, 1e-4


def _on_bridge(config: Path, target: Path) -> Path:
    """A copy of a golden batch file that runs on the bridge (its defaults gain ``engine``)."""
    text = config.read_text()
    assert "[defaults]\n" in text
    target.write_text(text.replace("[defaults]\n", f'[defaults]\nengine = "{TRANSFORMER_BRIDGE}"\n', 1))
    return target


def _close(fresh: np.ndarray, golden: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    both_nan = np.isnan(fresh) & np.isnan(golden)
    return both_nan | (np.abs(fresh - golden) <= rtol * np.abs(golden) + atol)


def _problems(key: str, fresh: pd.DataFrame, golden: pd.DataFrame) -> list[str]:
    table = Path(key).stem
    fresh, golden = _compared(table, fresh), _compared(table, golden)
    if list(fresh.columns) != list(golden.columns) or len(fresh) != len(golden):
        return [f"{key}: shape or columns differ: {fresh.shape} {list(fresh.columns)} vs {golden.shape}"]
    floats = [c for c in golden.columns if pd.api.types.is_float_dtype(golden[c])]
    scale = max((np.nanmax(np.abs(golden[c].to_numpy(float))) for c in floats if golden[c].notna().any()), default=0.0)
    found = []
    for column in golden.columns:
        new, old = fresh[column], golden[column]
        if new.dtype != old.dtype:
            found.append(f"{key}:{column}: dtype {new.dtype} vs {old.dtype}")
        elif column not in floats:
            if not new.equals(old):
                found.append(f"{key}:{column}: differs (first at row {int((new != old).to_numpy().argmax())})")
        else:
            x, y = new.to_numpy(float), old.to_numpy(float)
            if column in PERPLEXITIES:
                ok = _close(x, y, RTOL_PERPLEXITY, 0.0)
            elif column in LAYER_STATS and table in ("layerwise", "mean_pass_layerwise"):
                ok = _close(x, y, RTOL_STATS, 0.0)
            else:
                ok = _close(x, y, 0.0, TABLE_SCALE * scale)
            if not ok.all():
                i = int(np.argmin(ok))
                found.append(f"{key}:{column}: row {i}: bridge {x[i]!r}, golden {y[i]!r}")
    return found


def _assert_like_golden(study: str, out: Path) -> None:
    fresh, golden = _tables(out), _tables(TABLES / study)
    assert set(fresh) == set(golden), f"tables differ: {sorted(set(fresh) ^ set(golden))}"
    problems = [p for key in sorted(golden) for p in _problems(key, pd.read_parquet(fresh[key]),
                                                                pd.read_parquet(golden[key]))]
    assert not problems, f"{study} on the bridge differs from the golden tables:\n  " + "\n  ".join(problems)


def _sweep_ranks_alike(out: Path) -> None:
    key = next(k for k in _tables(TABLES / "heads") if k.endswith("sweep_heads.parquet"))
    fresh, golden = pd.read_parquet(_tables(out)[key]), pd.read_parquet(TABLES / "heads" / key)
    for column, tolerance in (("massive_change_pct", 2 * 100 * RTOL_STATS),
                              ("perplexity_change_pct", 2 * 100 * RTOL_PERPLEXITY)):
        order = np.argsort(golden[column].to_numpy(), kind="stable")
        in_golden_order = fresh[column].to_numpy()[order]
        assert (np.diff(in_golden_order) >= -tolerance).all(), f"the sweep ranks heads by {column} differently"


def test_head_study_on_the_bridge_gives_the_golden_tables(tmp_path, capsys):
    config = _on_bridge(GOLDEN / "heads.toml", tmp_path / "heads.toml")
    _run(mech_interp.cli.main, ["batch", config, "--out", tmp_path / "out"], capsys)
    _assert_like_golden("heads", tmp_path / "out")
    _sweep_ranks_alike(tmp_path / "out")


def test_language_model_study_on_the_bridge_gives_the_golden_tables(tmp_path, capsys):
    shared_data("wikitext-2-raw/wiki.test.raw")
    config = _on_bridge(GOLDEN / "lm.toml", tmp_path / "lm.toml")
    _run(mech_interp.cli.main, ["batch", config, "--out", tmp_path / "out"], capsys)
    _assert_like_golden("lm", tmp_path / "out")
