"""The GPT-2 variants and their trainer: attention with a key/value slot, the sink token, the gate, training,
exact resume, checkpoints that load as HookedTransformer models, and every variant through mech_interp's
experiments. Tiny models (2 blocks, width 32) on the project's built-in text with a byte-level tokenizer, so nothing
here needs ../shared/data except the corpus and GPT-2 tokenizer tests, which skip without it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train_gpt2_bias  # noqa: F401
from mech_interp.validation.errors import UsageError
from train_gpt2_bias.config import TrainConfig
from train_gpt2_bias.model import VARIANTS, build_model, config_dict, hooked_config
from train_gpt2_bias.train import train

from .cli_runs import run_cli
from .conftest import shared_data
from .support.plain_gpt import from_hooked

pytestmark = [pytest.mark.filterwarnings("ignore:no Chromium found"),
              pytest.mark.usefixtures("one_torch_thread")]  # tests/conftest.py says why

VOCAB = 61
CTX = 12


def tiny(variant: str, seed: int = 0):
    cfg = hooked_config({"n_layers": 2, "d_model": 32, "n_heads": 4, "n_ctx": CTX, "variant": variant}, VOCAB)
    return build_model(config_dict(cfg, variant, False), seed=seed)


def tokens(batch: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randint(VOCAB, (batch, CTX), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from mech_interp.data.texts import load_text

    root = tmp_path_factory.mktemp("corpus")
    text = load_text("builtin").text
    for i in range(16):  # sixteen documents: the hash split puts 4 of them in val
        (root / f"doc{i:02d}.txt").write_text(text[i * len(text) // 16:(i + 1) * len(text) // 16])
    return root


def tiny_config(corpus: Path, out: Path, **overrides) -> TrainConfig:
    values = {"preset": "tiny", "corpus": [str(corpus)], "tokenizer": "byte", "data_dir": str(out.parent / "data"),
              "val_fraction": 0.3, "out": str(out), "progress": False, "max_steps": 12, "eval_interval": 6,
              "ckpt_interval": 4, "n_ctx": 24, **overrides}
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory) -> dict[str, Path]:
    """One short training run per variant (12 steps)."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for variant in VARIANTS:
        train(tiny_config(corpus, root / variant, variant=variant))
        out[variant] = root / variant
    return out


# ---- the attention variants ----

@pytest.mark.integration  # a tiny model built in the test
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_equals_a_plain_pytorch_gpt_on_both_paths(variant):
    """The TransformerLens model (fused path, and the explicit path a cache forces) computes what an independent
    nanoGPT-style model with the same weights computes; for attn_bias that model uses upstream's boolean mask."""
    model = tiny(variant)
    plain = from_hooked(model, slot_kernel="mask")
    x = tokens()
    expected = plain(x)
    fused = model(x)
    explicit, cache = model.run_with_cache(x)
    assert fused.shape == (3, CTX, VOCAB)
    torch.testing.assert_close(fused, expected, atol=2e-5, rtol=0)
    torch.testing.assert_close(explicit, expected, atol=2e-5, rtol=0)
    assert "blocks.1.attn.hook_pattern" in cache and "blocks.1.hook_resid_post" in cache


@pytest.mark.integration  # a tiny model built in the test
def test_slot_with_logit_minus_inf_is_standard_attention():
    """Forcing the slot's pre-softmax logit to -inf in every block gives exactly the default model's computation."""
    biased, default = tiny("attn_bias"), tiny("default")
    default.load_state_dict({k: v for k, v in biased.state_dict().items() if "_slot" not in k})
    x = tokens()

    def no_slot(scores, hook):  # [batch, head_index, query_pos, 1 + key_pos]
        scores = scores.clone()
        scores[..., 0] = float("-inf")
        return scores

    hooks = [(f"blocks.{i}.attn.hook_attn_scores", no_slot) for i in range(2)]
    with biased.hooks(fwd_hooks=hooks):
        without, cache = biased.run_with_cache(x)
    reference, ref_cache = default.run_with_cache(x)
    torch.testing.assert_close(without, reference, atol=1e-6, rtol=0)
    for i in range(2):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_post"], ref_cache[f"blocks.{i}.hook_resid_post"],
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(cache[f"blocks.{i}.attn.hook_pattern"][..., 1:],
                                   ref_cache[f"blocks.{i}.attn.hook_pattern"], atol=1e-6, rtol=0)
    # and the slot does change the output when it is not masked
    assert (biased(x) - reference).abs().max() > 1e-4


@pytest.mark.integration  # a tiny model built in the test
def test_slot_is_key_column_zero_visible_to_every_query_and_future_keys_stay_masked():
    model = tiny("attn_bias")
    assert all(block.attn.n_key_slots == 1 for block in model.blocks)
    _, cache = model.run_with_cache(tokens())
    for i in range(2):
        scores = cache[f"blocks.{i}.attn.hook_attn_scores"]  # [batch, head, query, 1 + key]
        pattern = cache[f"blocks.{i}.attn.hook_pattern"]
        assert scores.shape == (3, 4, CTX, CTX + 1)
        assert torch.isfinite(scores[..., 0]).all() and (pattern[..., 0] > 0).all()  # every query sees the slot
        future = torch.ones(CTX, CTX, dtype=torch.bool).triu(1)  # key k > query q
        assert (pattern[..., 1:][..., future] == 0).all()
        torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)))
        # query 0 splits its attention between the slot and itself only
        torch.testing.assert_close(pattern[:, :, 0, :2].sum(-1), torch.ones(3, 4))
    assert cache["blocks.0.attn.hook_k"].shape[1] == CTX  # the slot is not a sequence position


@pytest.mark.integration  # a tiny model built in the test
@pytest.mark.parametrize("path", ["fused", "explicit"])
def test_gradients_reach_the_slots(path):
    model = tiny("attn_bias")
    x = tokens()
    if path == "explicit":
        with model.hooks(fwd_hooks=[(f"blocks.{i}.attn.hook_pattern", lambda p, hook: p) for i in range(2)]):
            loss = F.cross_entropy(model(x).reshape(-1, VOCAB), x.roll(-1, 1).reshape(-1))
    else:
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB), x.roll(-1, 1).reshape(-1))
    loss.backward()
    for block in model.blocks:
        assert block.attn.k_slot.grad is not None and block.attn.k_slot.grad.abs().sum() > 0
        assert block.attn.v_slot.grad is not None and block.attn.v_slot.grad.abs().sum() > 0


@pytest.mark.integration  # a tiny model built in the test
def test_sink_token_is_a_residual_position_but_never_reaches_the_loss():
    model = tiny("sink")
    assert model.n_prefix_tokens == 1
    x = tokens()
    logits, cache = model.run_with_cache(x)
    assert logits.shape == (3, CTX, VOCAB)  # token positions only
    assert cache["blocks.0.hook_resid_pre"].shape == (3, CTX + 1, 32)  # convention 2: the sink is position 0
    assert cache["hook_embed"].shape == (3, CTX, 32)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"][:, 0], model.prefix.W_prefix.expand(3, -1))

    def scramble_sink(normalized, hook):  # [batch, 1 + pos, d_model] after the final LayerNorm
        normalized = normalized.clone()
        normalized[:, 0] = 1e3
        return normalized

    with model.hooks(fwd_hooks=[("ln_final.hook_normalized", scramble_sink)]):
        scrambled = model(x)
    torch.testing.assert_close(scrambled, logits, atol=1e-6, rtol=0)  # no prediction is made from the sink
    loss = model(x, return_type="loss")  # TransformerLens' own loss: T - 1 predictions of the tokens
    manual = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
    torch.testing.assert_close(loss, manual)
    loss.backward()
    assert model.prefix.W_prefix.grad.abs().sum() > 0  # it trains, as a key/value every token attends to


@pytest.mark.integration  # a tiny model built in the test
def test_gate_is_a_hooked_sigmoid_that_scales_each_head():
    model = tiny("gated")
    x = tokens()
    _, cache = model.run_with_cache(x)
    gate = cache["blocks.0.attn.hook_gate"]
    assert gate.shape == (3, CTX, 4) and ((gate > 0) & (gate < 1)).all()
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_gate", lambda g, hook: torch.zeros_like(g))]):
        _, closed = model.run_with_cache(x)
    torch.testing.assert_close(closed["blocks.0.hook_resid_mid"], closed["blocks.0.hook_resid_pre"])
    assert (closed["blocks.0.attn.hook_z"] == 0).all()


@pytest.mark.integration  # a tiny model built in the test
def test_key_cache_is_refused_where_it_would_be_wrong():
    for variant in ("attn_bias", "sink"):
        with pytest.raises(ValueError, match="use_past_kv_cache=False"):
            tiny(variant).generate(tokens(1)[:, :5], max_new_tokens=2, use_past_kv_cache=True, verbose=False,
                                     stop_at_eos=False)
    for variant in VARIANTS:
        out = tiny(variant).generate(tokens(1)[:, :5], max_new_tokens=2, use_past_kv_cache=False, verbose=False,
                                          stop_at_eos=False)
        assert out.shape == (1, 7)


@pytest.mark.integration  # a tiny model built in the test
def test_fast_paths_of_mech_interp_never_swap_the_variants():
    from mech_interp.models.fused_attention import enable_fused_attention

    for variant in ("attn_bias", "gated"):
        model = tiny(variant)
        before = model(tokens())
        enable_fused_attention(model)
        assert all(type(b.attn).__name__ in ("SlotAttention", "GatedAttention") for b in model.blocks)
        torch.testing.assert_close(model(tokens()), before)


# ---- the trainer ----

@pytest.mark.integration  # a tiny model built in the test
def test_optimizer_decays_two_dimensional_parameters_and_says_so(corpus, tmp_path):
    from train_gpt2_bias.train import make_optimizer

    model = tiny("attn_bias")
    _, names = make_optimizer(model, TrainConfig(preset="tiny"), torch.device("cpu"))
    assert "blocks.0.attn.k_slot" in names["decayed"] and "blocks.0.attn.W_Q" in names["decayed"]
    assert "blocks.0.ln1.w" in names["not_decayed"]
    assert not any(n.endswith(".b_Q") for n in names["decayed"] + names["not_decayed"])  # bias=False: frozen zeros
    _, names = make_optimizer(model, TrainConfig(preset="tiny", decay_slots=False), torch.device("cpu"))
    assert "blocks.0.attn.k_slot" in names["not_decayed"]


def test_learning_rate_warms_up_then_follows_the_cosine():
    from train_gpt2_bias.train import learning_rate

    config = TrainConfig(preset="tiny", lr=1.0, min_lr=0.1, warmup_steps=10, lr_decay_steps=110)
    assert learning_rate(5, config) == pytest.approx(0.5)
    assert learning_rate(10, config) == pytest.approx(1.0)
    assert learning_rate(60, config) == pytest.approx(0.55)
    assert learning_rate(110, config) == pytest.approx(0.1) and learning_rate(500, config) == pytest.approx(0.1)


@pytest.mark.parametrize("lr, min_lr", [(3e-3, 3e-4), (2e-3, 2e-4), (6e-4, 6e-5), (0.7, 0.0), (0.1, 0.1)])
def test_learning_rate_stays_within_its_bounds_for_any_step_counts(lr, min_lr):
    """Warmups longer than the run or than the decay included: positive and at most lr while warming up, in
    [min_lr, lr] after (tiny's own lr 3e-3 came out 1 ulp above lr at the end of its warmup)."""
    from train_gpt2_bias.train import learning_rate

    for warmup in range(0, 24):
        for decay in range(0, 24):
            config = TrainConfig(preset="tiny", lr=lr, min_lr=min_lr, warmup_steps=warmup, lr_decay_steps=decay,
                                 max_steps=5)
            for step in range(1, 40):
                rate = learning_rate(step, config)
                low = 0.0 if step <= warmup else min_lr
                assert low <= rate <= lr and (rate > 0 or step > warmup), (warmup, decay, step, rate)


@pytest.mark.parametrize("values", [{"preset": "cpu", "max_steps": 10}, {"preset": "tiny", "max_steps": 2},
                                    {"preset": "tiny", "warmup_steps": 20, "lr_decay_steps": 10}])
def test_a_smoke_run_shorter_than_its_warmup_is_accepted(values):
    """A few steps of a preset end while warming up: allowed (they were refused as a warmup longer than the run)."""
    config = TrainConfig(**values)
    assert config.warmup_steps > min(config.max_steps, config.lr_decay_steps)


@pytest.mark.integration  # a tiny model built in the test
def test_a_few_steps_lower_the_loss_and_every_output_is_written(runs):
    for variant, out in runs.items():
        log = json.loads((out / "log.json").read_text())
        assert [r["step"] for r in log] == list(range(1, 13))
        val = [r["val_loss"] for r in log if r["val_loss"] == r["val_loss"]]
        assert len(val) == 2
        first = sum(r["train_loss"] for r in log[:3]) / 3
        last = sum(r["train_loss"] for r in log[-3:]) / 3
        assert last < first - 0.3, (variant, first, last)
        assert val[-1] < first
        for name in ("hooked_config.json", "model.safetensors", "tokenizer", "ckpt.pt", "log.csv", "loss_curve.html",
                     "manifest.json"):
            assert (out / name).exists(), name
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["summary"]["complete"] and manifest["config"]["variant"] == variant


@pytest.mark.integration  # a tiny model built in the test
def test_resume_reproduces_the_uninterrupted_losses_exactly(corpus, tmp_path):
    whole = tiny_config(corpus, tmp_path / "whole", variant="attn_bias", max_steps=8)
    train(whole)
    cut = tiny_config(corpus, tmp_path / "cut", variant="attn_bias", max_steps=8, stop_after=3)
    train(cut)  # stops after step 3 with its checkpoint, as a kill after the checkpoint would leave it
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["summary"]["steps"] == 3
    train(tiny_config(corpus, tmp_path / "cut", variant="attn_bias", max_steps=8))
    uninterrupted = json.loads((tmp_path / "whole" / "log.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "log.json").read_text())
    assert [r["train_loss"] for r in resumed] == [r["train_loss"] for r in uninterrupted]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in uninterrupted]
    with pytest.raises(UsageError, match="another configuration"):
        train(tiny_config(corpus, tmp_path / "cut", variant="attn_bias", max_steps=8, lr=1e-2))


def test_torchrun_ddp_on_two_cpu_processes(corpus, tmp_path):
    """The multi-GPU path, run here with the gloo backend: two processes, the accumulation split between them, one
    log and one checkpoint written by rank 0, each process's sampler state saved for the resume. (A stop-and-resume
    of this two-process run reproduced the uninterrupted losses exactly when checked by hand; three launches are too
    slow for the suite.)"""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "train_gpt2_bias", "train", "--preset", "tiny", "--corpus", str(corpus), "--tokenizer", "byte",
               "--data-dir", str(tmp_path / "data"), "--val-fraction", "0.3", "--grad-accum", "2", "--max-steps", "6",
               "--ckpt-interval", "3", "--eval-interval", "3", "--no-progress", "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parent.parent,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 process(es)" in done.stdout and done.stdout.count("[done]") == 1  # rank 0 alone reports
    log = json.loads((tmp_path / "ddp" / "log.json").read_text())
    assert [r["step"] for r in log] == list(range(1, 7)) and log[-1]["tokens"] == 6 * 4 * 32 * 2
    assert log[-1]["val_loss"] < log[0]["train_loss"]
    state = torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)
    assert len(state["batch_rng"]) == 2 and not torch.equal(state["batch_rng"][0], state["batch_rng"][1])


def test_checkpoint_round_trips_into_a_hooked_transformer(runs):
    from transformer_lens import HookedTransformer

    import mech_interp as mi
    from mech_interp.models.spec import ModelSpec

    for variant, out in runs.items():
        spec = ModelSpec.parse(str(out))
        assert spec.kind == "checkpoint" and spec.slug == variant
        meta = spec.metadata()
        assert (meta.n_layers, meta.n_ctx) == (2, 24)
        loaded = mi.load_model(str(out), device="cpu", fast_paths=True)
        again = mi.load_model(str(out), device="cpu")
        assert isinstance(loaded, HookedTransformer) and getattr(loaded, "n_prefix_tokens", 0) == VARIANTS[variant].n_prefix_tokens
        x = loaded.to_tokens("The cat sat on the mat.", prepend_bos=False)
        state = torch.load(out / "ckpt.pt", weights_only=True)["model"]
        rebuilt = build_model(json.loads((out / "hooked_config.json").read_text()))
        rebuilt.load_state_dict(state)
        torch.testing.assert_close(loaded(x), rebuilt(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(again(x), rebuilt(x), atol=1e-5, rtol=0)


def test_broken_checkpoints_are_refused_in_one_line(runs, tmp_path):
    import shutil

    from mech_interp.models.spec import ModelSpec

    broken = tmp_path / "broken"
    shutil.copytree(runs["default"], broken)
    config = json.loads((broken / "hooked_config.json").read_text())
    # a string, as the format says, but not one TransformerLens builds
    (broken / "hooked_config.json").write_text(json.dumps({**config, "act_fn": "nonexistent"}))
    from mech_interp.models.loading import load_model

    with pytest.raises(UsageError, match="does not describe a model"):
        load_model(str(broken), device="cpu")
    (broken / "hooked_config.json").write_text(json.dumps({**config, "d_mlp": 64}))
    with pytest.raises(UsageError, match=r"has d_mlp 64, but the weights have 128 \(model.safetensors: "
                                         r"blocks.0.mlp.W_in \[32, 128\]\)"):
        ModelSpec.parse(str(broken))  # before the build
    (broken / "hooked_config.json").write_text(json.dumps({**config, "variant": "attn_bias"}))  # sizes right, no slot
    with pytest.raises(UsageError, match="the weights do not fit"):
        load_model(str(broken), device="cpu")
    (broken / "hooked_config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").unlink()
    with pytest.raises(UsageError, match="no weights"):
        ModelSpec.parse(str(broken))


def test_weights_as_a_state_dict_in_model_pt_load(runs, tmp_path):
    import shutil

    from safetensors.torch import load_file

    import mech_interp as mi

    copy = tmp_path / "pt"
    shutil.copytree(runs["sink"], copy)
    torch.save(load_file(copy / "model.safetensors"), copy / "model.pt")
    (copy / "model.safetensors").unlink()
    x = torch.arange(10).unsqueeze(0)
    torch.testing.assert_close(mi.load_model(str(copy), device="cpu")(x), mi.load_model(str(runs["sink"]),
                                                                                          device="cpu")(x), atol=0, rtol=0)


def test_checkpoints_of_the_previous_version_still_load(runs, tmp_path):
    """They named their builder instead of a format: that exact string is still read (never imported as given)."""
    import shutil

    import mech_interp as mi

    for variant in ("default", "attn_bias"):
        old = tmp_path / variant
        shutil.copytree(runs[variant], old)
        config = json.loads((old / "hooked_config.json").read_text())
        assert (config.pop("format"), config.pop("format_version")) == ("train_gpt2_bias", 1)
        (old / "hooked_config.json").write_text(json.dumps({**config, "builder": "train_gpt2_bias.model:build_model"}))
        x = torch.arange(10).unsqueeze(0)
        torch.testing.assert_close(mi.load_model(str(old), device="cpu")(x),
                                   mi.load_model(str(runs[variant]), device="cpu")(x), atol=0, rtol=0)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_runs_through_the_layerwise_and_attention_experiments(runs, variant, tmp_path, capsys, corpus):
    out = tmp_path / "results"
    code, _, stderr = run_cli(["layerwise", "--model", runs[variant], "--text", corpus / "doc00.txt", "--n-seqs", 2,
                                    "--seq-len", 16, "--device", "cpu", "--out", out], capsys)
    assert code == 0, stderr
    import pandas as pd

    (table,) = list(out.rglob("layerwise.parquet"))
    assert list(pd.read_parquet(table)["layer"]) == [0, 1]
    code, _, stderr = run_cli(["attention", "--model", runs[variant], "--prompt", "Summer is warm.",
                                    "--device", "cpu", "--out", out], capsys)
    assert code == 0, stderr


@pytest.mark.integration  # a tiny model built in the test
def test_experiment_trains_both_variants_alike_and_writes_the_comparison(corpus, tmp_path):
    from train_gpt2_bias.experiment import ExperimentConfig, run_experiment

    shared = {"preset": "tiny", "corpus": [str(corpus)], "tokenizer": "byte", "data_dir": str(tmp_path / "data"),
              "val_fraction": 0.3, "progress": False, "max_steps": 6, "eval_interval": 3}
    result = run_experiment(None, shared, ExperimentConfig(root=str(tmp_path / "exp"), text=str(corpus / "doc01.txt"),
                                                           n_seqs=2, attention_windows=2,
                                                           attention_prompt="Summer is warm. Winter is cold."))
    table = result["comparison"]
    assert set(table["variant"]) == {"default", "attn_bias"} and len(table) == 4
    assert table[table.variant == "default"]["attn_slot"].isna().all()
    assert (table[table.variant == "attn_bias"]["attn_slot"] > 0).all()
    assert {"top1", "median", "attn_first_token"} <= set(table.columns)
    text = (result["dir"] / "comparison.md").read_text()
    assert "| attn_bias | 6 |" in text and "did not run" not in text
    assert list(result["losses"]["steps"]) == [6, 6]
    # the comparison is a run of the trainer study inside the root, its figures linked to the root's plotly.min.js
    assert result["dir"] == tmp_path / "exp" / "comparison" and (tmp_path / "exp" / "plotly.min.js").is_file()
    manifest = json.loads((result["dir"] / "manifest.json").read_text())
    assert manifest["study"] == "trainer" and manifest["experiment"] == "comparison"


@pytest.mark.integration  # a tiny model built in the test
def test_compare_computes_from_the_checkpoints_and_runs_what_the_experiment_wrote_and_writes_nothing(corpus, tmp_path):
    import pandas as pd

    from mech_interp.core.criterion import MassiveCriterion
    from train_gpt2_bias.config import config_from
    from train_gpt2_bias.experiment import ANALYSES, ExperimentConfig, compare, run_experiment

    root = tmp_path / "exp"
    shared = {"preset": "tiny", "corpus": [str(corpus)], "tokenizer": "byte", "data_dir": str(tmp_path / "data"),
              "val_fraction": 0.3, "progress": False, "max_steps": 4, "eval_interval": 2}
    experiment = ExperimentConfig(variants=["sink", "attn_bias"], root=str(root), text=str(corpus / "doc01.txt"),
                                  n_seqs=2, attention_windows=5, min_ratio=2.0,
                                  attention_prompt="Summer is warm. Winter is cold.")
    written = run_experiment(None, shared, experiment)["dir"]
    configs = {v: config_from(None, {**shared, "variant": v, "out": str(root / v)}) for v in experiment.variants}
    analyses = {name: {v: next(d for d in (root / "analysis" / v).iterdir() if d.name.split("__")[0] == name)
                       for v in experiment.variants} for name in ANALYSES}
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    result = compare(experiment, configs, analyses, MassiveCriterion(min_ratio=2.0))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == files
    for name, table in result.tables.items():
        pd.testing.assert_frame_equal(table, pd.read_parquet(written / f"{name}.parquet"), check_exact=True)
    assert "\n".join(result.lines) == (written / "comparison.md").read_text()
    result.files["comparison.md"](tmp_path / "comparison.md")
    assert (tmp_path / "comparison.md").read_bytes() == (written / "comparison.md").read_bytes()
    assert set(result.figures) == {"top1", "top1_over_median", "attn_first_token"}
    assert result.summary == {"losses": result.tables["losses"].to_dict("records")}
    sink = result.tables["per_layer"].query("variant == 'sink'")
    assert (sink["attn_prefix"] > 0).all() and sink["attn_slot"].isna().all()


@pytest.mark.parametrize("variant", ["default", "sink", "attn_bias"])
def test_attention_shares_are_the_pattern_averages_with_the_layout(variant):
    """The shares of the comparison against the pattern by hand, on 5 windows (batches of 4 and 1: weighted by size).
    Without the layout the slot or the sink would be read as the first token."""
    from mech_interp.core.token_layout import TokenLayout
    from train_gpt2_bias.experiment import attention_shares

    model = tiny(variant)
    with torch.no_grad():  # sharper scores than at initialisation, where every key gets about the same attention
        for block in model.blocks:
            block.attn.W_Q.mul_(40.0)
    n_prefix, n_slots = VARIANTS[variant].n_prefix_tokens, VARIANTS[variant].n_key_slots
    windows = tokens(batch=5)
    with torch.no_grad():
        _, cache = model.run_with_cache(windows)
    shares = attention_shares(model, windows, layout=TokenLayout(n_prefix, n_slots))
    assert [row["layer"] for row in shares] == [0, 1]
    for row in shares:
        pattern = cache[f"blocks.{row['layer']}.attn.hook_pattern"].double()  # [window, head, query, key]
        first = pattern[:, :, n_prefix + 1:, n_slots + n_prefix].mean().item()
        assert row["attn_first_token"] == pytest.approx(first, rel=1e-6)
        if n_slots:
            assert row["attn_slot"] == pytest.approx(pattern[..., :n_slots].sum(-1).mean().item(), rel=1e-6)
        else:
            assert math.isnan(row["attn_slot"])
        if n_prefix:
            prefix = pattern[:, :, n_prefix:, n_slots:n_slots + n_prefix].sum(-1).mean().item()
            assert row["attn_prefix"] == pytest.approx(prefix, rel=1e-6)
        else:
            assert math.isnan(row["attn_prefix"])
    if n_prefix or n_slots:  # the columns in front are not the first token: a layout without them reads another
        wrong = attention_shares(model, windows, layout=TokenLayout())
        assert all(w["attn_first_token"] != pytest.approx(r["attn_first_token"], rel=1e-2) for w, r in zip(wrong, shares))


# ---- data and bad input ----

def test_corpora_are_read_with_universal_newlines(tmp_path):
    from train_gpt2_bias import data as data_module

    text = "A first line.\nA second one.\n\nA new paragraph.\n" * 50
    made = {}
    for name, newline in (("unix", "\n"), ("dos", "\r\n"), ("mac", "\r")):
        (tmp_path / f"{name}.txt").write_bytes(text.replace("\n", newline).encode())
        made[name] = data_module.prepare_data([str(tmp_path / f"{name}.txt")], "byte", tmp_path / name, 0.3,
                                              progress=False)
    for name in ("dos", "mac"):
        for split in ("train", "val"):
            assert (made[name].split(split) == made["unix"].split(split)).all(), (name, split)
    assert made["unix"].meta["request"]["reading"] == "utf-8, universal newlines"


def test_data_errors_are_one_line(corpus, tmp_path, monkeypatch):
    from train_gpt2_bias import data as data_module

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    with pytest.raises(UsageError, match="holds no text"):
        data_module.prepare_data([str(empty)], "byte", tmp_path / "d1", 0.3, progress=False)
    made = data_module.prepare_data([str(corpus)], "byte", tmp_path / "d2", 0.3, progress=False)
    assert made.split("train").dtype == "uint16" and made.meta["val_tokens"] > 0
    with pytest.raises(UsageError, match="fewer than one window"):
        data_module.check_block_size(made, 10**7)

    class Huge:
        eos_token_id = 0

        def __len__(self):
            return 70_000

    monkeypatch.setattr(data_module, "load_tokenizer", lambda name: Huge())
    with pytest.raises(UsageError, match="more than uint16"):
        data_module.prepare_data([str(corpus)], "big", tmp_path / "d3", 0.3, progress=False)


def test_debian_corpus_tokenizes_with_gpt2_bpe():
    from train_gpt2_bias.data import _documents, debian_docs_available, load_tokenizer

    if not debian_docs_available():
        pytest.skip("the Debian corpus (python3.11-doc, perl-doc, gnu-standards) is not installed: run "
                    "scripts/install.sh as root")
    shared_data("gpt2-tokenizer")
    tokenizer = load_tokenizer("gpt2")
    assert len(tokenizer) == 50257 and tokenizer.eos_token_id == 50256
    _, text = next(iter(_documents("debian-docs")))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 100 and max(ids) < 2**16


# ---- the notebook ----

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "04_attention_bias.ipynb"
PROBE = """
import json as _json
print("PROBE " + _json.dumps({
    "summaries": summaries,
    "slot": shares["attn_bias"]["attn_slot"].tolist(),
    "default_slot": shares["default"]["attn_slot"].tolist(),
    "layers": {v: stats[v]["layer"].tolist() for v in stats},
    "pattern_shape": list(cache["blocks.0.attn.hook_pattern"].shape),
}, default=str))
"""


@pytest.mark.acceptance
def test_notebook_04_runs_on_the_tiny_preset_and_shows_what_it_claims():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    text = next(o["text"] for o in nb.cells[-1].outputs if o.get("name") == "stdout" and "PROBE " in o["text"])
    probe = json.loads(text.split("PROBE ", 1)[1])
    assert probe["pattern_shape"] == [1, 2, 8, 9]  # one slot column in front of 8 key positions
    for variant, summary in probe["summaries"].items():
        assert summary["steps"] == 40 and summary["final_val_loss"] < 5.0, (variant, summary)  # ln(257) = 5.55
    assert all(share > 0 for share in probe["slot"])
    assert all(math.isnan(share) for share in probe["default_slot"])  # no slot
    assert probe["layers"] == {"default": [0, 1], "attn_bias": [0, 1]}
    figures = sum("application/vnd.plotly.v1+json" in out.get("data", {})
                  for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)
    assert figures == 3, figures


def test_head_scores_read_the_slot_apart_from_token_0_on_a_real_slot_model():
    """The head study on an attn_bias model: key column 0 is k', reported as slot attention; the
    first-token score reads column 1 (position 0), as a computation from the pattern by hand says."""
    from mech_interp.core.criterion import MassiveCriterion
    from mech_interp.core.token_layout import TokenLayout
    from mech_interp.studies.heads.scores import head_scores

    model = tiny("attn_bias")
    layout = TokenLayout(VARIANTS["attn_bias"].n_prefix_tokens, VARIANTS["attn_bias"].n_key_slots)
    seqs = tokens()
    patterns = {}
    with torch.inference_mode(), model.hooks(fwd_hooks=[(f"blocks.{i}.attn.hook_pattern", lambda p, hook: patterns.setdefault(hook.layer(), p.clone()))
                                                        for i in range(model.cfg.n_layers)]):
        model(seqs, return_type=None)
    with torch.inference_mode():
        scores = head_scores(model, seqs, MassiveCriterion(), layout=layout)
    for layer, pattern in patterns.items():  # [batch, head, query, 1 + pos]
        assert pattern.shape[-1] == CTX + 1
        torch.testing.assert_close(scores.slot[layer], pattern[..., 0].mean((0, 2)))
        torch.testing.assert_close(scores.first[:, layer], pattern[:, :, 1:, 1].mean(-1))
