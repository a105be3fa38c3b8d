"""sink-window: window attention with and without sinks, checked against computations that share none of its code.

- the mask by hand, on a 6-token sequence;
- the masked forward (each engine, fused path on) against HF's own attention given an explicit 4D mask built in
  Python loops;
- by construction: under W = 1 and one sink, query q sees tokens 0 and q only, so its logits are those of the
  two-token text [t0, tq] at positions (0, q), HF's forward with ``position_ids``; StreamingLLM's re-assigned
  positions (0, 1) give other logits;
- the whole experiment on a planted model whose massive tokens are known ('.', planted at block 2, dim 17), against
  HF with explicit masks and the planted entry zeroed by hand;
- one forward per condition and batch; a killed run resumes at the next condition;
- bad input refused in one line, exit 2, nothing written, before the model loads;
- SmolLM2: the massive token is position 0, so keeping the massive tokens is keeping one sink;
- ``--positions cache`` (StreamingLLM's positions within the cache): under W = 1 the sinks and the query at cache
  positions 0..S in HF; and the whole experiment against a token-by-token streaming run in plain PyTorch (a cache of
  pre-rotary keys, the middle evicted, every key rotated by its index in the cache at every step).
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import mech_interp as mi
from mech_interp.core.criterion import MassiveCriterion
from mech_interp.data.texts import load_text
from mech_interp.data.tokens import windows
from mech_interp.interventions import set_zero
from mech_interp.models.context import ModelContext
from mech_interp.models.hook_names import engine_hooks
from mech_interp.models.run_options import RunOptions
from mech_interp.studies.followups.sink_window import SinksOnly, conditions, sink_window
from mech_interp.studies.followups.sink_window_config import SinkWindowConfig
from mech_interp.studies.followups.window_mask import WindowMask, allowed_keys, window_masks
from mech_interp.validation.errors import UsageError

from .cli_runs import assert_refused, run_cli
from .conftest import PLANT_DIM, PLANT_LAYER
from .support.engines import AVAILABLE

TINY = ("random:llama-tiny", "random:gpt2-tiny")  # rotary and learned absolute positions
UNIT = ". Hello there. How are you today? Fine."  # 39 bytes: every window of 39 tokens starts with the planted '.'


def plain_mask(n_pos: int, window: int, n_sinks: int = 0, kept: tuple[int, ...] = ()) -> torch.Tensor:
    """The mask's definition, one entry at a time."""
    return torch.tensor([[k <= q and (q - k < window or k < n_sinks or k in kept) for k in range(n_pos)]
                         for q in range(n_pos)])


def hf_logits(hf_model, tokens: torch.Tensor, allowed: torch.Tensor | None = None, position_ids=None) -> torch.Tensor:
    """HF's eager attention given the mask as an explicit additive 4D mask [batch, 1, query, key]."""
    hf_model.config._attn_implementation = "eager"
    mask = None
    if allowed is not None:
        mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
        mask = mask[:, None] if mask.dim() == 3 else mask[None, None].expand(len(tokens), -1, -1, -1)
    with torch.no_grad():
        return hf_model(tokens, attention_mask=mask, position_ids=position_ids).logits


def scored_nll(logits: torch.Tensor, tokens: torch.Tensor, first_query: int) -> tuple[float, int]:
    """Sum of -log p(token q+1) over queries q >= first_query, and how many."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    total, count = 0.0, 0
    for row in range(tokens.shape[0]):
        for q in range(first_query, tokens.shape[1] - 1):
            total -= log_probs[row, q, tokens[row, q + 1]].item()
            count += 1
    return total, count


def test_the_mask_by_hand():
    expected = torch.tensor([  # W = 2, S = 1, and key 3 kept in the second row of the batch
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 0, 0, 1, 1, 0],
        [1, 0, 0, 0, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(allowed_keys(6, 2, 1)[0], expected)
    kept = torch.tensor([[False] * 6, [False, False, False, True, False, False]])
    both = allowed_keys(6, 2, 1, kept)
    assert torch.equal(both[0], expected)
    with_kept = expected.clone()
    with_kept[5, 3] = True  # query 5 now also sees key 3; queries before it cannot (causal)
    assert torch.equal(both[1], with_kept)
    assert torch.equal(allowed_keys(6, 6)[0], torch.ones(6, 6, dtype=torch.bool).tril())
    # a learned prefix position and a key slot in front of the text: the model's own mask holds there
    scores = torch.zeros(1, 2, 7, 8)
    masked = WindowMask(0, allowed_keys(6, 2, 1)).forward(scores)
    assert torch.all(masked[..., :1, :] == 0) and torch.all(masked[..., :, :2] == 0)
    assert torch.equal(masked[0, 0, 1:, 2:] == 0, expected)


@pytest.mark.parametrize("engine", AVAILABLE)
@pytest.mark.parametrize("name", TINY)
def test_the_masked_forward_is_hf_with_an_explicit_4d_mask(name, engine):
    model = mi.load_model(name, device="cpu", engine=engine, fast_paths=True)  # the fused path must step aside
    hf = mi.load_hf(name).model
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (2, 24))
    allowed = torch.stack([plain_mask(24, 5, 2), plain_mask(24, 5, 2, kept=(9, 13))])
    kept = torch.zeros(2, 24, dtype=torch.bool)
    kept[1, [9, 13]] = True
    with torch.inference_mode():
        full = model(tokens, return_type="logits")
        with engine_hooks(model, [m.as_hook() for m in window_masks(model.cfg.n_layers, allowed_keys(24, 5, 2, kept))]):
            masked = model(tokens, return_type="logits")
    torch.testing.assert_close(masked, hf_logits(hf, tokens, allowed), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(masked[:, 5:], full[:, 5:], atol=1e-3)  # the mask acted where it drops keys
    torch.testing.assert_close(masked[:, :5], full[:, :5], rtol=1e-4, atol=1e-4)  # and nowhere else


@pytest.mark.parametrize("name", TINY)
def test_one_token_window_and_one_sink_is_the_two_token_text_at_its_own_positions(name):
    """Query q sees keys 0 and q; so does every earlier layer's state it reads (key 0 sees itself only). Its logits
    are therefore the last ones of the text [t0, tq] placed at positions (0, q): original positions. StreamingLLM's
    cache would place it at (0, 1)."""
    model = mi.load_model(name, device="cpu", fast_paths=True)
    hf = mi.load_hf(name).model
    torch.manual_seed(1)
    tokens = torch.randint(0, 256, (1, 12))
    with torch.inference_mode(), engine_hooks(model, [m.as_hook() for m in window_masks(model.cfg.n_layers,
                                                                                          allowed_keys(12, 1, 1))]):
        masked = model(tokens, return_type="logits")
    for q in (5, 11):
        pair = tokens[:, [0, q]]
        original = hf_logits(hf, pair, position_ids=torch.tensor([[0, q]]))[0, 1]
        reassigned = hf_logits(hf, pair, position_ids=torch.tensor([[0, 1]]))[0, 1]
        torch.testing.assert_close(masked[0, q], original, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(masked[0, q], reassigned, atol=1e-3)


def test_sinks_only_resets_the_sinks_alone():
    acts = torch.randn(2, 5, 8) * 0.1
    acts[:, 0, 3] = 500.0  # a sink's massive entry
    acts[:, 2, 6] = -400.0  # a massive entry after the sinks
    reset = SinksOnly(set_zero(1, MassiveCriterion()), n_sinks=1)
    out = reset(acts)
    expected = acts.clone()
    expected[:, 0, 3] = 0.0
    assert torch.equal(out, expected)
    assert reset.counts["replaced"] == 2


def _context(name: str, model=None) -> ModelContext:
    model = model or mi.load_model(name, device="cpu", fast_paths=True)
    return ModelContext(model, RunOptions(model=name, device="cpu"))


def test_the_experiment_on_a_planted_model_is_hf_with_explicit_masks(tmp_path):
    """'.' is massive at block 2 by construction, and starts every sequence: (d) keeps the '.' positions, (e)
    set_zero removes the sink's planted entry, and set_mean writes back the value position 0 always has (the same
    token, causal), so it changes nothing."""
    text = tmp_path / "dots.txt"
    text.write_text(UNIT * 12, encoding="utf-8")
    config = SinkWindowConfig(text=str(text), n_seqs=2, seq_len=len(UNIT), windows=[3, 8], sinks=[2],
                              mean_text=str(text), n_mean_seqs=3, batch_size=2)
    context = _context("planted:gpt2-tiny")
    result = sink_window(context, config)
    table = by_condition(result.tables["perplexity"])
    assert result.summary["layer"] == PLANT_LAYER
    hf = mi.load_hf("planted:gpt2-tiny")
    seqs = windows(hf.tokenizer, load_text(str(text)).text, len(UNIT), 2)
    dot = hf.tokenizer.convert_tokens_to_ids(".")
    dots = tuple((seqs[0] == dot).nonzero().flatten().tolist())
    assert dots[0] == 0 and len(dots) > 2
    kept = result.tables["massive_tokens"][["seq", "position"]].values.tolist()
    assert kept == [[i, p] for i in range(2) for p in dots]

    def zero_the_sink(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[:, 0, PLANT_DIM] = 0.0  # position 0's planted entry, the only massive entry among the sinks

    n = len(UNIT)
    expected = {("full", None, 0): hf_logits(hf.model, seqs)}
    for w in config.windows:
        expected["window", w, 0] = hf_logits(hf.model, seqs, plain_mask(n, w))
        expected["massive", w, 0] = hf_logits(hf.model, seqs, plain_mask(n, w, kept=dots))
        for s in config.sinks:
            expected["sinks", w, s] = expected["sinks_set_mean", w, s] = hf_logits(hf.model, seqs, plain_mask(n, w, s))
            handle = hf.model.transformer.h[PLANT_LAYER].register_forward_hook(zero_the_sink)
            try:
                expected["sinks_set_zero", w, s] = hf_logits(hf.model, seqs, plain_mask(n, w, s))
            finally:
                handle.remove()
    assert len(table) == len(expected) == 1 + 2 * (2 + 3)
    for (condition, w, s), logits in expected.items():
        nll, count = scored_nll(logits, seqs, first_query=8)
        row = table[condition, w, s]
        assert row["n_tokens"] == count == 2 * (n - 1 - 8)
        assert row["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4), (condition, w, s)
        if condition.startswith("sinks_"):
            assert row["sink_massive_entries"] == 2  # one per sequence: position 0's dim 17
    assert table["sinks_set_zero", 3, 2]["perplexity"] != pytest.approx(table["sinks", 3, 2]["perplexity"], rel=1e-3)
    assert any("perplexity: exp(sum of next-token NLL" in line for line in result.lines)
    assert any("positions (text): --positions text: token t keeps position t" in line for line in result.lines)
    assert not any("positions (cache)" in line for line in result.lines)


def by_condition(table) -> dict[tuple, dict]:
    """(condition, W or None, S) -> its row."""
    return {(r["condition"], None if pd.isna(r["window"]) else int(r["window"]), int(r["sinks"])): r
            for r in table.to_dict("records")}


class Pieces:
    """What the run writer keeps of a piece (a JSON round trip), in memory; ``kill_after`` saves, a kill."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.saved: dict[str, object] = {}
        self.kill_after = kill_after

    def load_piece(self, key):
        return self.saved.get(json.dumps(key, sort_keys=True))

    def save_piece(self, key, value):
        self.saved[json.dumps(key, sort_keys=True)] = json.loads(json.dumps(value))
        if self.kill_after is not None and len(self.saved) >= self.kill_after:
            raise KeyboardInterrupt


def _counted(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda module, args: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_one_forward_per_condition_and_batch_and_a_killed_run_resumes(tmp_path):
    model = mi.load_model("planted:gpt2-tiny", device="cpu", fast_paths=True)
    calls = _counted(model)
    text = tmp_path / "dots.txt"
    text.write_text(UNIT * 12, encoding="utf-8")
    config = SinkWindowConfig(text=str(text), n_seqs=3, seq_len=len(UNIT), windows=[4], sinks=[1],
                              mean_text=str(text), n_mean_seqs=2, batch_size=2)
    n_conditions = len(conditions(config, massive=True))
    assert n_conditions == 1 + 1 * (2 + 1 * 3)
    clean = sink_window(_context("planted:gpt2-tiny", model), config).tables["perplexity"]
    mean_pass, per_condition = 1, 2  # 2 mean sequences in one batch; 3 sequences in batches of 2
    assert calls[0] == mean_pass + n_conditions * per_condition
    pieces = Pieces(kill_after=2)
    with pytest.raises(KeyboardInterrupt):
        sink_window(_context("planted:gpt2-tiny", model), config, pieces)
    pieces.kill_after, calls[0] = None, 0
    resumed = sink_window(_context("planted:gpt2-tiny", model), config, pieces).tables["perplexity"]
    assert calls[0] == mean_pass + (n_conditions - 2) * per_condition
    assert resumed.equals(clean)


@pytest.mark.parametrize("params, needle", [
    ({"windows": [600]}, "--windows 600 is too large for --seq-len 512: every W must be at most seq_len - 2 = 510"),
    ({"windows": [32, 128], "sinks": [64]}, "--sinks 64 is larger than --windows 32"),
    ({"windows": [0]}, "--windows 0 is not allowed: expected integers >= 1"),
    ({"windows": []}, "--windows [] is not allowed"),
    ({"sinks": []}, "--sinks [] is not allowed"),
    ({"sinks": [0]}, "--sinks 0 is not allowed"),
    ({"resets": []}, "--resets [] is not allowed"),
    ({"windows": ["8", "x"]}, "--windows 'x' is not allowed"),
    ({"windows": [8, 8]}, "--windows names 8 twice"),
    ({"resets": ["set_one"]}, "unknown reset type 'set_one'"),
    ({"seq_len": 2}, "--seq-len 2 is not allowed"),
    ({"positions": "rope"}, "--positions 'rope' is not allowed: expected one of text, cache"),
])
def test_bad_values_are_refused_before_anything_loads(params, needle):
    with pytest.raises(UsageError, match=None) as err:
        SinkWindowConfig(**params)
    assert needle in str(err.value)


@pytest.mark.parametrize("args, needle, loads", [
    (["--windows", "600"], "--windows 600 is too large for --seq-len 64", False),
    (["--windows", "8", "--sinks", "1,16"], "--sinks 16 is larger than --windows 8", False),
    (["--windows", "0"], "--windows 0 is not allowed: expected integers >= 1", False),
    (["--windows", ","], "--windows [] is not allowed", False),
    (["--seq-len", "600"], "--seq-len 600 is longer than the model's context of 512 tokens", False),
    (["--layer", "9"], "layer 9 out of range", False),
    (["--text", "{tmp}/short.txt"], "has 5 tokens, fewer than one window of --seq-len 64", True),
    (["--positions", "cache"], "--positions cache needs a HookedTransformer with rotary positions", True),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, monkeypatch, args, needle, loads):
    if not loads:
        from mech_interp.models.language_study import LanguageModelStudy

        monkeypatch.setattr(LanguageModelStudy, "open", lambda self, run: pytest.fail("the model was loaded"))
    (tmp_path / "short.txt").write_text("short", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    before = set(tmp_path.rglob("*"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, stdout, stderr = run_cli(["sink-window", "--model", "random:gpt2-tiny", "--device", "cpu", "--seq-len", "64",
                                    "--windows", "8,16", "--text", "builtin", *args, "--out", out], capsys)
    assert_refused(code, stderr, needle, out)
    assert set(tmp_path.rglob("*")) == before
    assert "[done]" not in stdout


def test_the_command_writes_its_table_figure_and_definitions(tmp_path, capsys):
    out, text = tmp_path / "results", tmp_path / "dots.txt"
    text.write_text(UNIT * 4, encoding="utf-8")
    code, stdout, stderr = run_cli(["sink-window", "--model", "planted:gpt2-tiny", "--device", "cpu", "--text", text,
                                    "--mean-text", text, "--n-seqs", "1", "--seq-len", len(UNIT), "--windows", "4,16",
                                    "--sinks", "1", "--n-mean-seqs", "2", "--out", out], capsys)
    assert code == 0, stderr
    (manifest,) = out.rglob("manifest.json")
    run = manifest.parent
    assert {"perplexity.csv", "massive_tokens.csv", "perplexity.html"} <= {p.name for p in run.iterdir()}
    summary = json.loads(manifest.read_text())["summary"]
    assert summary["layer"] == PLANT_LAYER and summary["n_scored_tokens"] == len(UNIT) - 1 - 16
    assert "(b) window W: the last W tokens" in stdout and "perplexity, full attention (a):" in stdout


def test_smollm2_keeps_position_0_as_its_massive_token(smollm2):
    """SmolLM2's one massive token is position 0 (dim 507 from block 11): keeping the massive tokens is keeping one
    sink, and both hold perplexity near full attention while the window alone loses it."""
    _, model = smollm2
    config = SinkWindowConfig(text="builtin", n_seqs=1, seq_len=64, windows=[16], sinks=[1], resets=["set_zero"],
                              n_mean_seqs=1)
    result = sink_window(ModelContext(model, RunOptions(device="cpu")), config)
    table = result.tables["perplexity"].set_index("condition")["perplexity"]
    assert result.summary["layer"] == 11
    assert result.tables["massive_tokens"]["position"].tolist() == [0]
    assert table["massive"] == pytest.approx(table["sinks"], rel=1e-5)
    assert table["window"] > 10 * table["sinks"]  # printed here: 16683 against 52.6 (full attention 42.6)
    assert table["sinks_set_zero"] > 10 * table["sinks"]


# --- StreamingLLM's positions within the cache ---------------------------------------------------------------------

CACHE_ENGINE = pytest.mark.skipif("hooked_transformer" not in AVAILABLE,
                                  reason="--positions cache runs on the HookedTransformer (TransformerLens 3.x)")


@CACHE_ENGINE
@pytest.mark.parametrize("family", ["llama", "qwen3", "olmo2"])  # plain; per-head q/k norm; q/k norm over heads
@pytest.mark.parametrize("n_sinks", [1, 2])
def test_cache_positions_under_a_one_token_window_are_the_sinks_and_the_query_at_0_to_s(n_sinks, family, tmp_path):
    """With W = 1, query q sees the S sinks and itself, and each sink only the sinks before it: its logits are the
    last ones of the text [t0 .. t(S-1), tq] at positions 0..S, HF's forward with those position_ids, where the
    text's positions (0..S-1, q) give other logits."""
    from mech_interp.studies.followups.cache_positions import cache_score_hooks

    from .test_architectures import save_tiny

    hf = save_tiny(family, tmp_path / family)
    model = mi.load_model(str(tmp_path / family), device="cpu", engine="hooked_transformer", fast_paths=True)
    hf.config._attn_implementation = "eager"
    torch.manual_seed(1)
    tokens = torch.randint(0, 256, (1, 12))
    allowed = allowed_keys(12, 1, n_sinks)
    hooks = cache_score_hooks(model, allowed, 1) + [m.as_hook() for m in window_masks(model.cfg.n_layers, allowed)]
    with torch.inference_mode(), engine_hooks(model, hooks):
        streamed = model(tokens, return_type="logits")
    for q in (n_sinks + 1, 7, 11):
        context = tokens[:, [*range(n_sinks), q]]
        with torch.no_grad():
            in_cache = hf(context, position_ids=torch.arange(n_sinks + 1)[None]).logits[0, -1]
            in_text = hf(context, position_ids=torch.tensor([[*range(n_sinks), q]])).logits[0, -1]
        torch.testing.assert_close(streamed[0, q], in_cache, rtol=1e-4, atol=5e-5)
        assert not torch.allclose(streamed[0, q], in_text, atol=1e-4)


def streaming_nll(hf_model, tokens: torch.Tensor, window: int, n_sinks: int) -> list[float]:
    """StreamingLLM run token by token in plain PyTorch on an HF LLaMA: each layer caches every token's pre-rotary
    key and value when that token is the query; step t keeps the first ``n_sinks`` tokens and the last ``window``
    (t included), rotates the kept keys by their index in that cache and the query by its own (the last), and
    attends. -log p(token t+1) for every t."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    inner, cfg = hf_model.model, hf_model.config
    n_heads, n_kv, d_head = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    cache = [{} for _ in inner.layers]  # layer -> token index -> (k, v), each [n_kv, d_head], before rotary
    losses = []
    with torch.no_grad():
        for t in range(tokens.shape[0] - 1):
            kept = sorted(set(range(min(n_sinks, t + 1))) | set(range(max(0, t - window + 1), t + 1)))
            h = inner.embed_tokens(tokens[t:t + 1])[None]  # [1, 1, d_model]
            for layer, block in enumerate(inner.layers):
                x = block.input_layernorm(h)
                attn = block.self_attn
                q = attn.q_proj(x).view(1, 1, n_heads, d_head).transpose(1, 2)
                cache[layer][t] = (attn.k_proj(x).view(n_kv, d_head), attn.v_proj(x).view(n_kv, d_head))
                k = torch.stack([cache[layer][j][0] for j in kept], 1)[None]  # [1, n_kv, kept, d_head]
                v = torch.stack([cache[layer][j][1] for j in kept], 1)[None]
                cos, sin = inner.rotary_emb(v, torch.arange(len(kept))[None])
                q_rot, _ = apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])  # the query: the cache's last index
                _, k_rot = apply_rotary_pos_emb(k, k, cos, sin)
                k_rot, v = (z.repeat_interleave(n_heads // n_kv, dim=1) for z in (k_rot, v))
                weights = torch.softmax(q_rot @ k_rot.transpose(-1, -2) / d_head ** 0.5, dim=-1)
                z = (weights @ v).transpose(1, 2).reshape(1, 1, n_heads * d_head)
                h = h + attn.o_proj(z)
                h = h + block.mlp(block.post_attention_layernorm(h))
            logits = hf_model.lm_head(inner.norm(h))[0, 0].double()
            losses.append(-torch.log_softmax(logits, -1)[tokens[t + 1]].item())
    return losses


@CACHE_ENGINE
def test_cache_positions_equal_a_token_by_token_streaming_run(tmp_path):
    """The experiment under --positions cache against streaming_nll, every (W, S): the sums of the scored tokens'
    NLL agree to 2e-5 (float32 rounding: ~1e-6 here), while the text's positions are off by 1e-3 and more wherever
    a sink lies outside the window (a random model attends nearly uniformly, so the positions move little)."""
    text = tmp_path / "text.txt"
    text.write_text(load_text("builtin").text[:4000], encoding="utf-8")
    config = SinkWindowConfig(text=str(text), n_seqs=2, seq_len=20, windows=[3, 6], sinks=[1, 2],
                              mean_text=str(text), n_mean_seqs=1, batch_size=2, positions="cache")
    context = _context("random:llama-tiny", mi.load_model("random:llama-tiny", device="cpu",
                                                          engine="hooked_transformer", fast_paths=True))
    result = sink_window(context, config)
    in_cache = by_condition(result.tables["perplexity"])
    in_text = by_condition(sink_window(context, SinkWindowConfig(**{**config.__dict__, "positions": "text"}))
                           .tables["perplexity"])
    assert result.summary["layer"] is None and result.summary["positions"] == "cache"  # random: (d), (e) not run
    assert any(line.startswith("  positions (cache): --positions cache") for line in result.lines)
    hf = mi.load_hf("random:llama-tiny")
    seqs = windows(hf.tokenizer, load_text(str(text)).text, 20, 2)
    first = config.windows[-1]
    for w in config.windows:
        for s in (0, *config.sinks):
            losses = [streaming_nll(hf.model, seq, w, s)[first:] for seq in seqs]
            key = ("sinks" if s else "window", w, s)
            expected = sum(map(sum, losses))
            assert in_cache[key]["n_tokens"] == sum(map(len, losses))
            assert in_cache[key]["nll_sum"] == pytest.approx(expected, abs=2e-5), key
            if s:
                assert abs(in_text[key]["nll_sum"] - expected) > 5e-4, key
            else:  # no kept key outside the window: the cache's positions are the text's
                assert in_text[key]["nll_sum"] == pytest.approx(expected, abs=2e-5), key


@pytest.mark.skipif("transformer_bridge" not in AVAILABLE, reason="needs the bridge engine")
def test_cache_positions_on_the_bridge_are_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "results"
    code, _, stderr = run_cli(["sink-window", "--model", "random:llama-tiny", "--engine", "transformer_bridge",
                               "--device", "cpu", "--text", "builtin", "--seq-len", "24", "--windows", "4",
                               "--sinks", "1", "--positions", "cache", "--out", out], capsys)
    assert_refused(code, stderr, "--positions cache needs a HookedTransformer with rotary positions", out)
