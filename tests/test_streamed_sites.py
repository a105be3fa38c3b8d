"""The streamed engine's sites (``streamed_sites``): every site a streamed pass hooks on HF's decoder layers holds
what TransformerLens' hook point of the same name holds, a hook's return value replaces it as in TransformerLens, and
the head scores computed one block at a time equal the whole model's and resume where a pass stopped."""

from __future__ import annotations

import pytest
import torch

import mech_interp as mi
from mech_interp.core.criterion import MassiveCriterion
from mech_interp.core.token_layout import TokenLayout
from mech_interp.interventions.heads import ablate_heads, zero_output_slice
from mech_interp.models.placement.streamed_model import StreamedModel
from mech_interp.models.placement.streamed_pass import STATE_FILE, run_blocks
from mech_interp.models.placement.streamed_sites import SITES
from mech_interp.models.placement.weight_source import STREAMABLE
from mech_interp.studies.heads.scores import HeadScoreRecorder, head_scores
from mech_interp.validation.errors import UsageError

from .test_architectures import TINY, save_tiny

LOOSE = MassiveCriterion(min_abs=0.08, min_ratio=4.0)  # the random tiny Llama has 'massive' keys under it


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sites") / "tiny-llama"
    hf = mi.load_hf("random:llama-tiny")
    hf.model.save_pretrained(directory)
    hf.tokenizer.save_pretrained(directory)
    return directory, mi.load_model(str(directory), device="cpu")


def _windows(n: int = 3, seq_len: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def test_every_site_holds_transformer_lens_value(tiny):
    directory, model = tiny
    windows = _windows()
    names = [f"blocks.1.{part}" for part in ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "attn.hook_z",
                                             "attn.hook_pattern")]
    assert len(names) == len(SITES)
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    streamed = StreamedModel(directory, attention="eager")
    run_blocks(streamed, windows, lambda i: [(n, lambda acts, hook: seen[hook.name].append(acts.clone())) for n in names]
               if i == 1 else [], last=1, batch_size=2, progress=False)
    _, cache = model.run_with_cache(windows, names_filter=lambda name: name in names)
    for name in names:
        torch.testing.assert_close(torch.cat(seen[name]), cache[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("edit", ["z", "attn_out"])
def test_a_hooks_return_value_replaces_the_site_as_in_transformer_lens(edit, tiny):
    directory, model = tiny
    windows = _windows(seed=1)
    intervention = ablate_heads([(1, 2)])[0] if edit == "z" else zero_output_slice(1, 2, model.cfg.d_head)
    streams = run_blocks(StreamedModel(directory), windows, lambda i: [intervention.as_hook()] if i == 1 else [],
                         last=3, batch_size=2, progress=False)
    kept = []
    with model.hooks(fwd_hooks=[intervention.as_hook(), ("blocks.3.hook_resid_post", lambda a, hook: kept.append(a))]):
        model(windows, return_type=None)
    torch.testing.assert_close(torch.cat(streams.tensors()), kept[0], rtol=1e-5, atol=1e-5)
    with model.hooks(fwd_hooks=[("blocks.3.hook_resid_post", lambda a, hook: kept.append(a))]):
        model(windows, return_type=None)
    assert (kept[1] - kept[0]).abs().max() > 1e-3, "the edit changed the model"


def test_the_pattern_needs_eager_attention_and_unknown_sites_are_refused(tiny):
    directory, _ = tiny
    with pytest.raises(ValueError, match="the pattern site needs HF's eager attention"):
        run_blocks(StreamedModel(directory), _windows(), lambda i: [("blocks.0.attn.hook_pattern", print)], last=0,
                   progress=False)
    with pytest.raises(UsageError, match="site 'mlp_out' cannot be hooked in a streamed pass: expected one of"):
        run_blocks(StreamedModel(directory), _windows(), lambda i: [("blocks.0.hook_mlp_out", print)], last=0,
                   progress=False)


STREAMED_FAMILIES = sorted(case for case, (architecture, _, _) in TINY.items() if architecture in STREAMABLE)
HF_SITES = {  # where a whole HF model holds each site of block L: (module path, what of its call)
    "hook_resid_pre": ("", "input"), "hook_resid_post": ("", "output"), "hook_attn_out": ("self_attn", "output0"),
    "attn.hook_z": ("self_attn.o_proj", "input"), "attn.hook_pattern": ("self_attn", "output1")}


@pytest.mark.parametrize("case", STREAMED_FAMILIES)
def test_every_streamable_family_has_every_site_of_its_whole_hf_forward(case, tmp_path):
    """The sites one block at a time against the same tensors of a whole HF forward (eager attention, whose pattern
    every family returns), in each family's second block (its own mask and rotary embedding where layers differ)."""
    from transformers import AutoModelForCausalLM

    save_tiny(case, tmp_path / case)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / case, attn_implementation="eager").eval()
    layer = hf.get_decoder().layers[1]
    windows = _windows(seq_len=20, seed=4)
    want: dict[str, torch.Tensor] = {}
    handles = []
    for part, (path, what) in HF_SITES.items():
        path = path.replace("o_proj", "dense") if case == "phi" else path
        module = layer.get_submodule(path)
        if what == "input":
            handles.append(module.register_forward_pre_hook(lambda m, args, part=part: want.__setitem__(part, args[0])))
        else:
            handles.append(module.register_forward_hook(
                lambda m, args, out, part=part, what=what: want.__setitem__(
                    part, out if what == "output" else out[int(what[-1])])))
    with torch.inference_mode():
        hf.get_decoder()(windows, use_cache=False)
    for handle in handles:
        handle.remove()
    seen: dict[str, torch.Tensor] = {}
    names = [f"blocks.1.{part}" for part in HF_SITES]
    run_blocks(StreamedModel(tmp_path / case, attention="eager"), windows,
               lambda i: [(n, lambda acts, hook: seen.__setitem__(hook.name, acts.clone())) for n in names] if i == 1
               else [], last=1, batch_size=len(windows), progress=False)
    for part, value in want.items():
        got = seen[f"blocks.1.{part}"]
        assert torch.equal(got.reshape(value.shape), value), f"{case}: {part}"


def _streamed_scores(directory, windows, state_dir=None, after_block=None):
    from types import SimpleNamespace

    from mech_interp.models.placement.streamed_context import StreamedContext
    from mech_interp.models.placement.weight_source import WeightSource
    from mech_interp.studies.heads.scores import streamed_head_scores

    source = WeightSource("safetensors", directory)
    context = StreamedContext(source, source.config(), None, SimpleNamespace(dtype="float32", device="cpu"),
                              placement=None, name="tiny-llama")
    return streamed_head_scores(context, windows, LOOSE, batch_size=2, state_dir=state_dir, after_block=after_block)


def test_streamed_head_scores_equal_the_whole_models_and_resume_where_they_stopped(tiny, tmp_path):
    directory, model = tiny
    windows = _windows(4, 16, seed=2)
    whole = head_scores(model, windows, LOOSE, batch_size=2, layout=TokenLayout())
    assert not whole.massive.isnan().all(), "some block's input has a massive key under the loose criterion"

    def stop_after_block_1(block):
        if block == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _streamed_scores(directory, windows, tmp_path, stop_after_block_1)
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["next_block"] == 2
    ran = []
    streamed = _streamed_scores(directory, windows, tmp_path, ran.append)
    assert ran == [2, 3], "blocks 0 and 1 are not run again"
    for field in ("massive", "first", "slot"):
        torch.testing.assert_close(getattr(streamed, field), getattr(whole, field), rtol=1e-5, atol=1e-6,
                                   equal_nan=True, msg=field)
    assert streamed.massive_positions.equals(whole.massive_positions)


def test_the_score_recorder_state_round_trips():
    recorder = HeadScoreRecorder(2, 3, 4, LOOSE, TokenLayout())
    recorder.detect(1, torch.tensor([[[0.0, 1.0], [0.1, 0.1]], [[0.1, 0.1], [0.1, 0.1]]]))
    recorder.score(1, slice(0, 2), torch.tensor([[[[1.0, 0.0], [0.7, 0.3]]] * 4, [[[1.0, 0.0], [0.5, 0.5]]] * 4]))
    other = HeadScoreRecorder(2, 3, 4, LOOSE, TokenLayout())
    other.load_state_dict(recorder.state_dict())
    got, want = other.result(), recorder.result()
    torch.testing.assert_close(got.first, want.first, equal_nan=True)
    assert got.first[:, 1, 0].tolist() == pytest.approx([0.7, 0.5])
    assert got.massive[0, 1, 0].item() == pytest.approx(0.7) and got.massive[1, 1].isnan().all()
    assert got.massive_positions.to_dict("records") == [{"layer": 1, "position": 0, "n_sequences": 1}]
