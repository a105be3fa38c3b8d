"""The layer-streamed statistics pass: one block's weights at a time, values equal to a whole-model HF forward bit for
bit, resumable at the block where it stopped."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import mech_interp as mi
from mech_interp.models.placement.streamed_pass import STATE_FILE, streamed_layer_stats
from mech_interp.models.placement.weight_source import STREAMABLE
from mech_interp.validation.errors import UsageError

from .support.hf_reference import hf_layer_stats
from .test_architectures import TINY, save_tiny


def _saved(name, tmp_path):
    hf = mi.load_hf(name)
    hf.model.save_pretrained(tmp_path / "model")
    return hf, tmp_path / "model"


def _assert_same(got, want):
    for table in ("summary", "top_entries", "massive"):
        pd.testing.assert_frame_equal(getattr(got, table), getattr(want, table), check_exact=True)


def test_streamed_statistics_equal_the_whole_models_bit_for_bit(tmp_path):
    hf, directory = _saved("random:llama-tiny", tmp_path)
    windows = torch.randint(0, 256, (5, 24), generator=torch.Generator().manual_seed(0))
    got = streamed_layer_stats(directory, windows, batch_size=2, progress=False)
    _assert_same(got, hf_layer_stats(hf.model, windows, 2))
    assert got.summary["n_sequences"].tolist() == [5] * 4


def test_a_stopped_pass_resumes_at_the_next_block(tmp_path):
    _, directory = _saved("random:llama-tiny", tmp_path)
    windows = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(1))
    whole = streamed_layer_stats(directory, windows, progress=False)

    def stop_after_block_1(block):
        if block == 1:
            raise KeyboardInterrupt

    state = tmp_path / "state"
    with pytest.raises(KeyboardInterrupt):
        streamed_layer_stats(directory, windows, state_dir=state, progress=False, after_block=stop_after_block_1)
    assert torch.load(state / STATE_FILE, weights_only=True)["next_block"] == 2
    ran = []
    resumed = streamed_layer_stats(directory, windows, state_dir=state, progress=False, after_block=ran.append)
    assert ran == [2, 3], "blocks 0 and 1 are not run again"
    _assert_same(resumed, whole)
    other = streamed_layer_stats(directory, windows[:2], state_dir=state, progress=False, after_block=ran.append)
    assert ran[2:] == [0, 1, 2, 3], "a state saved for other windows is not resumed"
    assert other.summary["n_sequences"].tolist() == [2] * 4


def test_spilled_streams_give_the_same_tables_and_resume_from_their_files(tmp_path):
    _, directory = _saved("random:llama-tiny", tmp_path)
    windows = torch.randint(0, 256, (5, 16), generator=torch.Generator().manual_seed(2))
    in_memory = streamed_layer_stats(directory, windows, batch_size=2, progress=False)
    spill, state = tmp_path / "spill", tmp_path / "state"

    def stop_after_block_2(block):
        assert sorted(p.name for p in spill.iterdir()) == [f"g{block + 2}"], "one generation kept: the current"
        assert len(list((spill / f"g{block + 2}").iterdir())) == 3, "a file per batch"
        if block == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        streamed_layer_stats(directory, windows, batch_size=2, state_dir=state, spill_dir=spill, progress=False,
                             after_block=stop_after_block_2)
    ran = []
    resumed = streamed_layer_stats(directory, windows, batch_size=2, state_dir=state, spill_dir=spill, progress=False,
                                   after_block=ran.append)
    assert ran == [3]
    _assert_same(resumed, in_memory)
    ran.clear()
    again = streamed_layer_stats(directory, windows, batch_size=2, state_dir=state, progress=False,
                                 after_block=ran.append)
    assert ran == [0, 1, 2, 3], "an in-memory pass does not take a spilled state for its own: it runs every block"
    _assert_same(again, in_memory)


def test_families_stored_otherwise_are_refused_in_one_line(tmp_path):
    _, directory = _saved("random:gpt2-tiny", tmp_path)
    with pytest.raises(UsageError, match="GPT2LMHeadModel cannot be streamed yet: expected one of ApertusForCausalLM, "):
        streamed_layer_stats(directory, torch.zeros(1, 4, dtype=torch.long), progress=False)


STREAMED_FAMILIES = sorted(case for case, (architecture, _, _) in TINY.items() if architecture in STREAMABLE)


def test_every_streamable_family_has_a_tiny_model_here():
    assert {TINY[case][0] for case in STREAMED_FAMILIES} == STREAMABLE


@pytest.mark.parametrize("case", STREAMED_FAMILIES)
def test_every_streamable_familys_blocks_equal_its_whole_forward_bit_for_bit(case, tmp_path):
    """Each tiny model has its family's own features on (sliding windows and their per-layer masks, soft-capping,
    q/k norms, scaled embeddings, no-rope layers, stored activation constants), and a config dropout where it has one,
    which a streamed pass must leave off as HF's eval mode does."""
    from transformers import AutoModelForCausalLM

    save_tiny(case, tmp_path / case)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / case).eval()
    windows = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(3))
    _assert_same(streamed_layer_stats(tmp_path / case, windows, batch_size=2, progress=False),
                 hf_layer_stats(hf, windows, 2))


def test_smollm2_streamed_equals_its_whole_forward(smollm2, tmp_path):
    hf, _ = smollm2
    hf.model.save_pretrained(tmp_path / "model")
    windows = torch.tensor([hf.tokenizer("Summer is warm. Winter is cold. " * 8)["input_ids"][:48]] * 2)
    windows[1] = windows[1].flip(0)
    got = streamed_layer_stats(tmp_path / "model", windows, progress=False)
    _assert_same(got, hf_layer_stats(hf.model, windows, 1))
    assert got.summary["top1"].max() > 1000, "SmolLM2's massive activation is there"


def test_weights_are_read_into_the_parameters_in_the_run_dtype_and_damage_is_refused(tmp_path):
    from safetensors.torch import save_file

    from mech_interp.models.placement.safetensors_weights import SafetensorsWeights

    source = torch.nn.Linear(6, 4)
    save_file({f"layer.{k}": v.to(torch.bfloat16) for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    with torch.device("meta"):
        target = torch.nn.Linear(6, 4)
    SafetensorsWeights(tmp_path).load(target, "layer.", torch.float32)
    for name, value in source.state_dict().items():
        assert target.state_dict()[name].dtype == torch.float32
        assert torch.equal(target.state_dict()[name], value.to(torch.bfloat16).float()), name
    with torch.device("meta"):
        wider = torch.nn.Linear(6, 5)
    with pytest.raises(UsageError, match=r"tensor 'layer.weight' is \[4, 6\].*expected \[5, 6\]"):
        SafetensorsWeights(tmp_path).load(wider, "layer.", torch.float32)
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[:-8])
    with pytest.raises(UsageError, match="is truncated"):
        SafetensorsWeights(tmp_path).load(target, "layer.", torch.float32)
    (tmp_path / "w.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(UsageError, match="is not a readable safetensors file"):
        SafetensorsWeights(tmp_path)


def test_gguf_blocks_dequantize_to_the_whole_conversions_parameters(smollm2):
    """Block by block from the GGUF (rows of the embedding in slices, Llama's permuted query/key rows restored) equals
    transformers' whole-file conversion bit for bit, in float32 and after a cast to bfloat16."""
    from transformers import AutoModelForCausalLM

    from mech_interp.models.builtin import smollm2_gguf_path
    from mech_interp.models.placement.gguf_weights import GGUFWeights

    hf, _ = smollm2
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(hf.model.config, dtype=torch.float32)
    weights = GGUFWeights(smollm2_gguf_path(), "llama", meta)
    whole = hf.model.get_decoder()
    for name, dtype in (("layers.0", torch.float32), ("layers.29", torch.bfloat16), ("embed_tokens", torch.float32)):
        module = meta.get_decoder().get_submodule(name).to(dtype)  # as a model built in the run dtype
        weights.load(module, f"model.{name}.", dtype)
        for (key, got), (_, want) in zip(module.named_parameters(), whole.get_submodule(name).named_parameters()):
            assert got.dtype == dtype and torch.equal(got, want.to(dtype)), f"{name}.{key}"
