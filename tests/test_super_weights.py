"""The super-weight scan (Yu et al. 2024): against Yu et al.'s own way on plain HF (hooks on every down_proj, the
weight edited in place), on a tiny LLaMA with a super weight planted where the answer is known, one forward plus one
per candidate, resumed after a kill, bad input refused in one line, and on SmolLM2 the weight the head study's
attribution names by another route."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

import mech_interp as mi
from mech_interp.core.criterion import MassiveCriterion, massive_mask
from mech_interp.core.token_layout import TokenLayout
from mech_interp.data.texts import load_text
from mech_interp.data.tokens import encode, windows
from mech_interp.metrics.attribution import direct_writes, neuron_writes
from mech_interp.models.context import ModelContext
from mech_interp.models.engines import HOOKED_TRANSFORMER, TRANSFORMER_BRIDGE, resolve_engine
from mech_interp.models.hook_names import resid_post
from mech_interp.models.run_options import RunOptions
from mech_interp.studies.followups.down_proj_edits import conditions, edited_forward
from mech_interp.studies.followups.down_proj_scan import scan_down_proj
from mech_interp.studies.followups.scan_inputs import ScanInputs
from mech_interp.studies.followups.super_weight_config import YU_PROMPT, SuperWeightsConfig
from mech_interp.studies.followups.super_weights import super_weights
from mech_interp.viz.print_style import untitled_axes

from .cli_runs import assert_refused, run_cli
from .support.engines import AVAILABLE

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
PLANT = (1, 77, 21)  # block, W_out row (hidden neuron), W_out col (residual dim) of the planted super weight


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py says why


def planted_hf():
    """random:llama-tiny with a super weight planted: hidden neuron 77 of block 1 made to fire hard (its gate and up
    rows x30) and down_proj.weight[21, 77] = 300, so that dim 21 spikes wherever it fires."""
    layer, row, col = PLANT
    hf = mi.load_hf("random:llama-tiny")
    mlp = hf.model.model.layers[layer].mlp
    with torch.no_grad():
        mlp.gate_proj.weight[row] *= 30
        mlp.up_proj.weight[row] *= 30
        mlp.down_proj.weight[col, row] = 300.0
    return hf


def planted_llama(engine: str | None = None):
    """(HF model, the same weights on ``engine``, default: the installed TransformerLens' own); the bridge takes its
    HF model in, so it gets a copy of its own."""
    from mech_interp.models.bridge import bridge_from_hf

    hf = planted_hf()
    if (engine or resolve_engine("auto")) == TRANSFORMER_BRIDGE:
        return hf, bridge_from_hf(planted_hf(), CPU, "planted-llama")
    from mech_interp.models.conversion import hooked_from_hf

    return hf, hooked_from_hf(hf, CPU, torch.float32)


def hf_down_proj(hf, tokens):
    """Yu et al.'s scan, on plain HF: forward hooks on every layer's down_proj (input, output) and decoder layer
    (output), one forward; returns ({layer: input}, {layer: output}, {layer: residual after it}, logits)."""
    inputs, outputs, resid = {}, {}, {}

    def down_proj(i):
        def hook(_module, args, out) -> None:
            inputs[i], outputs[i] = args[0], out
        return hook

    def layer_out(i):
        def hook(_module, _args, out) -> None:
            resid[i] = out[0] if isinstance(out, tuple) else out
        return hook

    handles = []
    for i, layer in enumerate(hf.model.model.layers):
        handles += [layer.mlp.down_proj.register_forward_hook(down_proj(i)), layer.register_forward_hook(layer_out(i))]
    try:
        with torch.no_grad():
            logits = hf.model(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    return inputs, outputs, resid, logits


def hf_edited(hf, tokens, layer, row, col, scale, restore):
    """``hf_down_proj``'s residuals and logits with ``down_proj.weight[col, row]`` of ``layer`` multiplied by ``scale``
    in place and, with ``restore``, each sequence's clean down_proj output spike in dim ``col`` (at the position of its
    largest |value|) written back; the weight is put back after."""
    down = hf.model.model.layers[layer].mlp.down_proj
    handle = None
    if restore:
        clean = hf_down_proj(hf, tokens)[1][layer]
        at, rows = clean[..., col].abs().argmax(1), torch.arange(len(tokens))

        def put_back(_module, _args, out):
            out = out.clone()
            out[rows, at, col] = clean[rows, at, col]
            return out

        handle = down.register_forward_hook(put_back)
    saved = down.weight[col, row].item()
    with torch.no_grad():
        down.weight[col, row] = saved * scale
    try:
        _, _, resid, logits = hf_down_proj(hf, tokens)
    finally:
        with torch.no_grad():
            down.weight[col, row] = saved
        if handle is not None:
            handle.remove()
    return resid, logits


def hf_nll(logits, tokens):
    log_probs = torch.log_softmax(logits[:, :-1].double(), -1)
    return -log_probs.gather(-1, tokens[:, 1:, None])[..., 0].sum(1)


def run(model, **params):
    return super_weights(ModelContext(model, RunOptions(device="cpu")), SuperWeightsConfig(**params))


# --- against plain HF --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine,seq_len", [  # windows shorter than the 39-token prompt (they are padded), and longer
    *((engine, 16) for engine in AVAILABLE), (AVAILABLE[0], 48)])
def test_scan_and_edits_equal_hf_hooks_and_hf_weights_edited_in_place(engine, seq_len):
    hf, model = planted_llama(engine)
    result = run(model, n_seqs=2, seq_len=seq_len, top_k=2, scales=[2.0])
    spikes, effects = result.tables["spikes"].set_index("layer"), result.tables["effects"]
    prompt = encode(model.tokenizer, YU_PROMPT)[None]
    seqs = windows(model.tokenizer, load_text("builtin").text, seq_len, 2)
    ins, outs, resid, _ = hf_down_proj(hf, prompt)
    for layer in range(model.cfg.n_layers):  # each block's spikes, from the prompt alone (no padding, no windows)
        x, y, s = ins[layer][0], outs[layer][0], spikes.loc[layer]
        in_position, row = divmod(int(x.abs().argmax()), x.shape[1])
        out_position, col = divmod(int(y.abs().argmax()), y.shape[1])
        weight = hf.model.model.layers[layer].mlp.down_proj.weight[col, row].item()
        assert (s.row, s.col, s.input_position, s.output_position) == (row, col, in_position, out_position)
        assert (s.hf_row, s.hf_col) == (col, row) and s.weight == pytest.approx(weight, rel=1e-6)
        # Within 1e-3 of the block's largest |input| / |output|: after the planted block the residual holds ~5e4, and
        # the HookedTransformer's and HF's float32 orders of operations differ there by up to ~2e-4 of a spike of 0.08
        # (an AMD EPYC with AVX-512); the coordinates above are what must be exact.
        x_scale, y_scale = 1e-3 * x.abs().max().item(), 1e-3 * y.abs().max().item()
        assert s.input_spike == pytest.approx(x[in_position, row].item(), rel=1e-4, abs=x_scale)
        assert s.output_spike == pytest.approx(y[out_position, col].item(), rel=1e-4, abs=y_scale)
        assert s.write == pytest.approx(x[out_position, row].item() * weight, rel=1e-4, abs=x_scale * abs(weight))
        assert s.resid_after == pytest.approx(resid[layer][0, out_position, col].item(), rel=1e-4, abs=1e-5)
    _, _, _, clean_logits = hf_down_proj(hf, seqs)
    clean = hf_nll(clean_logits, seqs).sum().item()
    assert result.summary["clean_perplexity"] == pytest.approx(math.exp(clean / (2 * (seq_len - 1))), rel=1e-5)

    position, dim, _ = result.summary["massive_entry"]
    first = result.summary["first_massive_block_prompt"]
    for r in effects.itertuples():  # each edit, as HF runs with the weight itself edited, prompt and windows apart
        resid, _ = hf_edited(hf, prompt, r.layer, r.row, r.col, r.scale, r.spike_restored)
        _, logits = hf_edited(hf, seqs, r.layer, r.row, r.col, r.scale, r.spike_restored)
        at = int(spikes.loc[r.layer].output_position)
        rounding = 1e-5 * abs(r.spike_clean) + 1e-4  # zeroing a spike of ~5e4 leaves ~0.03: float32 cancellation
        assert r.spike == pytest.approx(resid[r.layer][0, at, r.col].item(), rel=1e-4, abs=rounding)
        if r.layer <= first:
            assert r.massive == pytest.approx(resid[first][0, position, dim].item(), rel=1e-4, abs=rounding)
        nll = hf_nll(logits, seqs).sum().item()
        assert r.perplexity == pytest.approx(math.exp(nll / (2 * (seq_len - 1))), rel=1e-5)


# --- a planted super weight --------------------------------------------------------------------------------------

class _Pieces:
    """The run writer's piece store, in memory; ``stop_after`` pieces saved, it interrupts like a kill."""

    def __init__(self, stop_after=None):
        self.saved, self.stop_after, self.loaded = {}, stop_after, 0

    def load_piece(self, key):
        value = self.saved.get(repr(key))
        self.loaded += value is not None
        return value

    def save_piece(self, key, value):
        self.saved[repr(key)] = value
        if self.stop_after is not None and len(self.saved) >= self.stop_after:
            raise KeyboardInterrupt


def counting_forwards(model):
    """``model`` whose forwards are counted in ``model.forwards``."""
    forward = model.forward

    def counted(*args, **kwargs):
        model.forwards += 1
        return forward(*args, **kwargs)

    model.forwards = 0
    model.forward = counted
    return model


def test_the_planted_weight_is_found_and_zeroing_it_removes_its_spike_in_one_forward_each():
    _, model = planted_llama()
    layer, row, col = PLANT
    model = counting_forwards(model)
    result = run(model, n_seqs=2, seq_len=32, top_k=3, scales=[2.0])
    assert model.forwards == 1 + 3  # the scan, then one per candidate with every condition in it
    top = result.tables["spikes"].iloc[0]
    assert (top["rank"], top["layer"], top["row"], top["col"]) == (1, layer, row, col)
    assert top["relation"] == "creates" and top["write_share"] > 0.99 and top["massive_blocks"].startswith(f"{layer}-")
    assert result.summary["first_massive_block_prompt"] == layer and result.summary["massive_entry"][1] == col
    effects = result.tables["effects"].set_index(["rank", "condition"])
    assert effects.loc[(1, "zero"), "spike_change_pct"] < -99.9  # the spike was that one weight
    assert effects.loc[(1, "zero"), "massive_change_pct"] < -99.9
    assert effects.loc[(1, "zero, spike restored"), "spike_change_pct"] == pytest.approx(0, abs=1e-4)
    assert effects.loc[(1, "x2"), "spike_change_pct"] == pytest.approx(100, rel=1e-4)
    assert effects.loc[2:, "spike_change_pct"].abs().max() < 50  # random weights: their blocks barely spike at all
    assert model.blocks[layer].mlp.W_out[row, col].item() == 300.0  # never written
    for figure in result.figures.values():
        assert not untitled_axes(figure)
    lines = "\n".join(result.lines)
    assert f"#1 block {layer} W_out[{row}, {col}] = HF down_proj.weight[{col}, {row}]" in lines
    assert all(f"  {term}: " in lines for term in ("candidate", "write", "relation", "zero, spike restored"))


def test_a_killed_scan_resumes_after_its_last_finished_candidate():
    _, model = planted_llama()
    model = counting_forwards(model)
    whole = run(model, n_seqs=1, seq_len=24, top_k=3)
    pieces = _Pieces(stop_after=2)
    context, config = ModelContext(model, RunOptions(device="cpu")), SuperWeightsConfig(n_seqs=1, seq_len=24, top_k=3)
    with pytest.raises(KeyboardInterrupt):
        super_weights(context, config, pieces=pieces)
    pieces.stop_after, model.forwards = None, 0
    resumed = super_weights(context, config, pieces=pieces)
    assert pieces.loaded == 2 and model.forwards == 1 + 1  # the scan again, and the one candidate not saved
    assert resumed.tables["effects"].equals(whole.tables["effects"])


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--top-k", "0"], "--top-k 0 is not allowed"),
    (["--scales", "1"], "--scales 1 leaves the weight as it is"),
    (["--scales", "0"], "--scales 0 is the zeroed weight"),
    (["--scales", "2,x"], "--scales 'x' is not allowed: expected numbers other than 0 and 1"),
    (["--scales", "2,inf"], "--scales 'inf' is not allowed: expected finite numbers"),
    (["--scales", "2,2.0"], "--scales names 2 twice"),
    (["--prompt", " "], "empty prompt"),
])
def test_bad_values_are_refused_before_the_model_loads(args, needle, tmp_path, capsys, monkeypatch):
    from mech_interp.models.language_study import LanguageModelStudy

    monkeypatch.setattr(LanguageModelStudy, "open", lambda self, run: pytest.fail("the model was loaded"))
    out = tmp_path / "out"
    code, _, err = run_cli(["super-weights", *args, "--model", "random:llama-tiny", "--out", out], capsys)
    assert_refused(code, err, needle, out)


def test_more_candidates_than_blocks_are_refused_once_the_model_says_how_many(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["super-weights", "--top-k", "5", "--model", "random:llama-tiny", "--out", out], capsys)
    assert_refused(code, err, "--top-k 5 is more than the 4 candidates of random-llama-tiny (one per block)", out)


@pytest.mark.skipif(HOOKED_TRANSFORMER not in AVAILABLE, reason="builds HookedTransformers (TransformerLens 3.x)")
@pytest.mark.parametrize("kind", ["attn_only", "moe"])
def test_a_model_without_a_single_down_projection_is_refused_in_one_line(kind):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    shape = dict(n_layers=2, d_model=16, n_ctx=32, d_head=4, n_heads=4, d_vocab=50, act_fn="silu")
    extra = {"attn_only": {"attn_only": True},
             "moe": {"d_mlp": 32, "num_experts": 4, "experts_per_token": 2, "gated_mlp": True}}[kind]
    model = HookedTransformer(HookedTransformerConfig(**shape, **extra))
    with pytest.raises(mi.UsageError, match=r"needs a plain or gated MLP, with one down-projection W_out \[d_mlp, "
                                            rf"d_model\], in every block: .* block 0 has {'no MLP' if kind == 'attn_only' else 'a MoE'}$"):
        run(model)


def test_the_command_writes_its_tables_and_figures(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["super-weights", "--model", "random:llama-tiny", "--n-seqs", "1", "--seq-len", "16",
                                 "--top-k", "1", "--scales", "-1", "--out", out], capsys)
    assert code == 0, err
    run_dir = next((out / "random-llama-tiny").iterdir())
    assert {"spikes.csv", "effects.csv", "layerwise_massive.csv", "spikes.html", "effects.html",
            "manifest.json"} <= {p.name for p in run_dir.iterdir()}
    assert "#1 block" in stdout and "x-1" in stdout


# --- the guide ---------------------------------------------------------------------------------------------------

def test_the_guides_python_example_runs():
    """docs/studies/super-weights.md's Python section (the notebook section, as a guide example), on a tiny model."""
    guide = (ROOT / "docs" / "studies" / "super-weights.md").read_text()
    block = re.search(r"```python\n(.*?)```", guide, re.S).group(1)
    assert '"smollm2-135m"' in block
    namespace: dict = {}
    exec(compile(block.replace('"smollm2-135m"', '"random:llama-tiny"'), "super-weights.md", "exec"), namespace)
    assert namespace["result"].tables["spikes"]["rank"].tolist()[0] == 1


# --- SmolLM2: the weight the head study's attribution names ------------------------------------------------------

def test_on_smollm2_the_scan_finds_the_weight_the_attribution_names(smollm2):
    """Another route to the same weight: the first massive entry's direct writes name the writing MLP, and its split
    over neurons (hook_post x W_out rows) the neuron; the scan reads only the down-projection's spikes."""
    _, model = smollm2
    prompt = encode(model.tokenizer, "Summer is warm. Winter is cold.")[None]  # the attribution's prompt
    with torch.inference_mode():
        _, cache = model.run_with_cache(prompt, names_filter=lambda name: name.endswith("hook_resid_post"))
    criterion = MassiveCriterion()
    first = next(layer for layer in range(model.cfg.n_layers) if massive_mask(cache[resid_post(layer)], criterion).any())
    acts = cache[resid_post(first)][0]
    position, dim = divmod(int(acts.abs().argmax()), acts.shape[1])
    writes = direct_writes(model, prompt, torch.tensor([[0, position, dim]]), layout=TokenLayout()).table([first])
    writer = writes.loc[writes["write"].abs().idxmax(), "component"]
    mlp = int(writer.split()[1])
    neuron = int(neuron_writes(model, prompt, mlp, (0, position, dim)).neurons["neuron"].iloc[0])
    assert (first, writer, neuron, dim) == (11, "mlp 11", 1229, 507)

    labels = tuple(model.tokenizer.decode([t]) for t in prompt[0].tolist())
    inputs = ScanInputs(prompt.repeat(2, 1), prompt.shape[1], prompt.shape[1], 0, labels, "the prompt")
    scan = scan_down_proj(model, inputs, criterion)
    top = scan.spikes.iloc[0]
    assert (top["layer"], top["row"], top["col"], top["relation"]) == (mlp, neuron, dim, "creates")
    edited = edited_forward(model, inputs, mlp, neuron, dim, conditions([]), scan.restore[mlp],
                            [(mlp, int(top["output_position"]), dim)])
    zeroed, restored = edited.values[:, 0].tolist()
    assert zeroed / top["resid_after"] < 0.3 and restored == pytest.approx(top["resid_after"], rel=1e-5)
