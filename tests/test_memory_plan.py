"""The memory planner: parameter counts from configs equal the built models', byte sizes parse as written, and
``mech-interp plan`` prints the placements or refuses in one line before reading any weight."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mech_interp as mi
from mech_interp.models.placement.memory_plan import RUNTIME_BYTES, MemoryPlan
from mech_interp.models.placement.memory_units import format_bytes, parse_bytes
from mech_interp.models.placement.model_shape import model_shape, shape_from_config
from mech_interp.models.spec import ModelSpec
from mech_interp.validation.errors import UsageError

from .cli_runs import assert_refused, run_cli


def _configs():
    from transformers import FalconConfig, GPT2Config, LlamaConfig, MixtralConfig, MptConfig, PhiConfig

    return {
        "llama-gqa-untied": LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                        num_key_value_heads=2, vocab_size=300, tie_word_embeddings=False),
        "gpt2-tied": GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=300),
        "mixtral-moe": MixtralConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=300),
        "falcon-mqa-parallel": FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, multi_query=True,
                                            parallel_attn=True, new_decoder_architecture=False, vocab_size=300),
        "mpt": MptConfig(d_model=32, n_layers=2, n_heads=4, expansion_ratio=4, vocab_size=300, max_seq_len=64),
        "phi": PhiConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=300, partial_rotary_factor=0.5),
    }


@pytest.mark.parametrize("name", list(_configs()))
def test_shapes_count_the_parameters_of_the_built_model(name):
    from transformers import AutoModelForCausalLM

    config = _configs()[name]
    shape = shape_from_config(config, name)
    model = AutoModelForCausalLM.from_config(config)  # real tensors, to compare the meta-device count with
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    blocks = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == shape.n_layers)
    assert shape.block_params == tuple(sum(p.numel() for p in b.parameters()) for b in blocks)
    assert shape.embed_params >= model.get_input_embeddings().weight.numel()
    if name == "mixtral-moe":
        assert (shape.n_experts, shape.n_experts_per_token) == (4, 2)
    if name == "falcon-mqa-parallel":
        assert shape.n_kv_heads == 1


@pytest.mark.parametrize("name", ["random:llama-tiny", "random:gpt2-tiny"])
def test_registered_models_plan_from_their_own_configs(name):
    shape = model_shape(ModelSpec.parse(name))
    hf = mi.load_hf(name)
    assert shape.n_params == sum(p.numel() for p in hf.model.parameters()) == mi.models.registry.model_entry(name).n_params


def test_peaks_add_up():
    shape = shape_from_config(_configs()["llama-gqa-untied"], "llama")
    plan = MemoryPlan(shape, "bfloat16", seq_len=16, batch_size=2, n_windows=8)
    assert plan.weight_bytes == 2 * shape.n_params == sum(plan.block_bytes) + plan.embed_bytes + plan.head_bytes
    assert plan.peak("whole") == RUNTIME_BYTES + plan.weight_bytes + plan.activation_bytes
    assert plan.peak("streamed") == RUNTIME_BYTES + 8 * 16 * 64 * 2 + max(plan.embed_bytes, max(plan.block_bytes) + plan.activation_bytes)
    assert plan.choose(plan.peak("whole")) == "whole"
    assert plan.peak("spilled") == RUNTIME_BYTES + max(plan.embed_bytes + 2 * 16 * 64 * 2,
                                                       max(plan.block_bytes) + plan.activation_bytes)
    assert plan.choose(plan.peak("whole") - 1) == "streamed"
    assert plan.choose(plan.peak("streamed") - 1) == "spilled"
    with pytest.raises(UsageError, match="does not fit .* even streamed"):
        plan.choose(plan.peak("spilled") - 1)


@pytest.mark.parametrize("text, size", [("20GiB", 20 * 2**30), ("512 MB", 512 * 10**6), ("1.5TB", 1.5e12),
                                        ("100b", 100), ("3kib", 3072)])
def test_sizes_parse_as_written(text, size):
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["20", "20GiBs", "GiB", "-1GB", "0.1B", "1e9B", "20 gigabytes", ""])
def test_sizes_without_a_known_unit_are_refused_in_one_line(text):
    with pytest.raises(UsageError, match="is not a size: expected a number with a unit"):
        parse_bytes(text)


def test_format_bytes():
    assert [format_bytes(n) for n in (12, 2048, 1.5 * 2**30)] == ["12 B", "2 KiB", "1.5 GiB"]


def test_plan_prints_each_placement(capsys):
    code, out, err = run_cli(["plan", "--model", "random:llama-tiny", "--max-memory", "1GiB"], capsys)
    assert code == 0, err
    assert "random:llama-tiny (LlamaForCausalLM): 164,480 parameters, 4 blocks" in out
    assert "peak, whole:" in out and "peak, streamed:" in out and "with 1 GiB (--max-memory 1GiB): a layer-wise run (--placement auto) takes the whole placement" in out


@pytest.mark.parametrize("args, needle", [
    (["--max-memory", "2 GiBs"], "--max-memory '2 GiBs' is not a size"),
    (["--max-memory", "1KiB"], "does not fit 1 KiB even streamed"),
    (["--seq-len", "0"], "--seq-len 0 is not a positive integer"),
    (["--dtype", "float8"], "float8"),
    (["--device", "cuda:99"], "device 'cuda:99' is not available here"),
])
def test_plan_refuses_bad_input_in_one_line(args, needle, capsys, tmp_path):
    code, _, err = run_cli(["plan", "--model", "random:llama-tiny", *args], capsys)
    assert_refused(code, err, needle, tmp_path)


# Parameter counts the models' publishers and HF report (model cards, `num_parameters()`): independent of the planner.
PUBLISHED = {"gpt2": 124_439_808, "smollm2-135m": 134_515_008, "tinyllama-1.1b": 1_100_048_384,
             "phi-2": 2_779_683_840, "llama-2-7b": 6_738_415_616, "llama-2-13b": 13_015_864_320,
             "llama-2-70b": 68_976_648_192, "mixtral-8x7b": 46_702_792_704}
ROOT = Path(__file__).resolve().parent.parent


def _table_script():
    spec = importlib.util.spec_from_file_location("memory_table", ROOT / "scripts" / "memory_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_configs_give_the_published_parameter_counts(name):
    table = _table_script()
    assert shape_from_config(table.config(name), name).n_params == PUBLISHED[name]


def test_the_readme_memory_table_is_the_one_the_planner_writes():
    script = ROOT / "scripts" / "memory_table.py"
    table = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.strip()
    page = ROOT / "docs" / "running" / "memory.md"
    assert table in page.read_text(), f"{page}'s memory table is stale: python {script}"
