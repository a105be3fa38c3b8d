"""The paper's Sec. 4.3 comparison at a stated budget: train ``default`` and ``attn_bias`` alike (same preset, data,
seed and steps), then run mech_interp's layer-wise, feature-view and attention experiments on each checkpoint,
measure where attention goes, and write one comparison.

    python -m train_gpt2_bias experiment --preset cpu           # this machine, minutes
    python -m train_gpt2_bias experiment --preset gpu-10min     # one H100-class GPU, about ten minutes

Output under ``<root>`` (default ``results/train/<preset>``): ``<variant>/`` (each checkpoint and its training log),
``analysis/<variant>/...`` (the mech_interp runs, as ``mech-interp ... --model <root>/<variant>`` would write them)
and ``comparison/`` (tables as parquet + CSV, figures, ``comparison.md``, manifest).

Attention shares (measured here on ``attention_windows`` held-out windows of the model's own validation split, every
block, mean over heads and sequences, with the checkpoint's token layout): ``attn_first_token`` = mean over queries
q > 0 of the attention to the first token of the window (the project's head score for key 0); ``attn_slot`` = mean
over all queries of the attention to the k'/v' slot (attn_bias only; convention 1: key column 0); ``attn_prefix`` =
the same for the sink token (sink only).

``compare`` computes the comparison from the trained checkpoints and the analysis runs; ``run_experiment`` trains,
runs the analyses, and writes what ``compare`` returns.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mech_interp.validation.checks import require_at_least, require_type
from mech_interp.validation.errors import UsageError

from .variants import VARIANTS

if TYPE_CHECKING:
    from mech_interp.core.criterion import MassiveCriterion
    from mech_interp.core.token_layout import TokenLayout
    from mech_interp.runs.experiment import ExperimentResult

    from .config import TrainConfig


@dataclass
class ExperimentConfig:
    variants: list[str] | None = field(default=None, metadata={"help": "variants to train and compare (default "
                                                                      "default,attn_bias)"})
    root: str = field(default="", metadata={"help": "where everything goes (default results/train/<preset>)"})
    text: str = field(default="wikitext2", metadata={"help": "text of the layer-wise experiment (mech_interp --text)"})
    n_seqs: int = field(default=10, metadata={"help": "layer-wise sequences"})
    seq_len: int = field(default=0, metadata={"help": "layer-wise sequence length (0 = the model's context)"})
    attention_prompt: str = field(default="", metadata={"help": "prompt of mech_interp's attention experiment "
                                                                  "(default: the paper's, when it fits the context)"})
    attention_windows: int = field(default=8, metadata={"help": "validation windows for the attention shares"})
    min_ratio: float = field(default=100.0, metadata={"help": "massive: |a| at least this x the median (100: the "
                                                              "small-model threshold of the reference)"})

    def __post_init__(self) -> None:
        if self.variants is None:
            self.variants = ["default", "attn_bias"]
        if isinstance(self.variants, str):
            self.variants = [v.strip() for v in self.variants.split(",") if v.strip()]
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants or len(set(self.variants)) != len(self.variants):
            raise UsageError(f"--variants {','.join(self.variants)!r} is not allowed: expected distinct names from "
                             f"{', '.join(VARIANTS)}")
        require_type(self, "root", str, "a directory")
        require_type(self, "text", str, "a text name or file")
        require_type(self, "attention_prompt", str, "a text")
        require_at_least(self, 1, "n_seqs", "attention_windows")
        require_at_least(self, 0, "seq_len")
        require_type(self, "min_ratio", (int, float), "a number")
        if not (0 < self.min_ratio < math.inf):
            raise UsageError(f"--min-ratio {self.min_ratio} is not allowed: expected a positive number")


@dataclass
class ComparisonOptions:
    """The trainer study's options: the root the variants were trained under (``model``: the comparison lands in
    ``<root>/comparison``) and how they were configured (the ``--config`` file, the flags shared by every variant)."""

    model: str = field(default="", metadata={"help": "the experiment's root: <root>/<variant> checkpoints, "
                                                     "<root>/analysis runs"})
    config: str | None = field(default=None, metadata={"help": "the TOML/YAML file of TrainConfig fields"})
    train: dict[str, Any] = field(default_factory=dict, metadata={"help": "TrainConfig flags shared by every variant"})


@dataclass
class TrainedVariants:
    """The comparison's context: the variants trained under one root, the analysis runs on them, their criterion."""

    configs: dict[str, Any]  # variant -> TrainConfig, out = its checkpoint
    analyses: dict[str, dict[str, Path | None]]  # analysis -> variant -> its run directory, None where it did not run
    criterion: Any  # the analyses' MassiveCriterion


def attention_shares(model, windows, *, layout: TokenLayout) -> list[dict[str, Any]]:
    """Per block: attention to the first token, to the key slots and to the prefix positions (see the module doc).
    ``windows``: token ids [window, pos]; ``layout``: the model's (its checkpoint's ``ModelSpec`` metadata)."""
    import torch

    from mech_interp.metrics.attention_scores import token_keys

    n_slots, n_prefix, first_token = layout.n_key_slots, layout.n_prefix_tokens, layout.first_token()
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]
    sums = {name: torch.zeros(3, dtype=torch.float64) for name in names}

    # One mean over (window, head, query) per batch: the metrics' per-head scores averaged over heads are the same
    # numbers up to float32 rounding, not the same bits, and the comparison's recorded tables are these.
    def hook(pattern, hook):  # [batch, head_index, query_pos, key_pos]
        positions = token_keys(pattern, n_slots)  # [batch, head_index, query_pos, pos]
        first = positions[:, :, first_token + 1:, first_token]  # queries after the first token -> the first token
        slot = pattern[..., :n_slots].sum(-1) if n_slots else pattern.new_zeros(1)
        prefix = positions[:, :, n_prefix:, :n_prefix].sum(-1) if n_prefix else pattern.new_zeros(1)
        sums[hook.name] += torch.tensor([first.mean().item(), slot.mean().item(), prefix.mean().item()],
                                        dtype=torch.float64) * pattern.shape[0]

    with torch.no_grad():
        for batch in windows.split(4):
            model.run_with_hooks(batch.to(model.cfg.device), return_type=None,
                                 fwd_hooks=[(name, hook) for name in names])
    rows = []
    for layer, name in enumerate(names):
        first, slot, prefix = (sums[name] / len(windows)).tolist()
        rows.append({"layer": layer, "attn_first_token": first, "attn_slot": slot if n_slots else math.nan,
                     "attn_prefix": prefix if n_prefix else math.nan})
    return rows


ANALYSES = ("layerwise", "feature_view", "attention")  # the mech_interp experiments run on every checkpoint


def variant_configs(config_file: str | None, shared: dict[str, Any], experiment: ExperimentConfig) -> dict[str, TrainConfig]:
    """The training configuration of each variant: the same file, flags and seed, each into ``<root>/<variant>``."""
    from .config import config_from

    configs = {v: config_from(config_file, {**shared, "variant": v, "out": ""}) for v in experiment.variants}
    root = experiment_root(experiment, configs[experiment.variants[0]])
    for variant, config in configs.items():
        config.out = str(root / variant)
    return configs


def experiment_root(experiment: ExperimentConfig, base: TrainConfig) -> Path:
    return Path(experiment.root or Path("results") / "train" / base.preset)


def analysis_specs(configs: dict[str, TrainConfig], experiment: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """``[variant][analysis]``: the mech_interp runs on each checkpoint, as `mech-interp <analysis> --model <dir>`."""
    from mech_interp.models.run_options import RunOptions
    from mech_interp.runs.spec import RunSpec

    base = configs[experiment.variants[0]]
    params = {"layerwise": {"text": experiment.text, "n_seqs": experiment.n_seqs, "seq_len": experiment.seq_len or base.n_ctx},
              "feature_view": {},
              "attention": {"prompt": experiment.attention_prompt} if experiment.attention_prompt else {}}
    return {v: {name: RunSpec(name, RunOptions(model=c.out, device=c.device, min_ratio=float(experiment.min_ratio),
                                               seed=c.seed), params[name], study="lm") for name in ANALYSES}
            for v, c in configs.items()}


def run_experiment(config_file: str | None, shared: dict[str, Any], experiment: ExperimentConfig) -> dict[str, Any]:
    """Train every variant, run the analyses on each checkpoint, then the comparison: all three on the one engine
    (the comparison is the ``trainer`` study's experiment, ``train_gpt2_bias.study``)."""
    from mech_interp.runs.output import check_writable
    from mech_interp.runs.runner import Contexts, check_runs, execute
    from mech_interp.runs.spec import RunSpec, resolve

    from .train import train

    # ---- every configuration checked before anything runs ----
    configs = variant_configs(config_file, shared, experiment)
    base = configs[experiment.variants[0]]
    root = experiment_root(experiment, base)
    check_writable(root)
    from mech_interp.data.texts import check_text

    from .checkpoint import check_out
    from .data import check_sources

    check_text(experiment.text)  # the analyses' text, before hours of training
    check_sources(base.corpus)
    for config in configs.values():
        check_out(Path(config.out))  # each before the first trains
    comparison = resolve(RunSpec("comparison", ComparisonOptions(model=str(root), config=config_file, train=shared),
                                 asdict(experiment), study="trainer"))
    started = time.time()

    # ---- 1. train each variant alike (a finished checkpoint is resumed at its last step: nothing to do) ----
    for variant, config in configs.items():
        summary = train(config)
        print(f"[trained] {config.out}: {summary['steps']} steps, val loss {summary['final_val_loss']:.4f}", flush=True)

    # ---- 2. the mech_interp experiments on each checkpoint ----
    failed = []
    contexts = Contexts()  # each checkpoint loaded once for its three analyses
    for variant, specs in analysis_specs(configs, experiment).items():
        models: dict = {}  # the checkpoint parsed once for its three runs
        runs = {name: resolve(spec, models) for name, spec in specs.items()}
        check_runs(list(runs.values()))
        for name, run in runs.items():
            try:
                run_dir, _ = execute(run, root / "analysis", contexts, force=False, report=print)
            except Exception as err:  # reported and recorded: the comparison says which analysis did not run
                print(f"[failed] {name} on {variant}: {type(err).__name__}: {err}", flush=True)
                failed.append(f"{name} on {variant}")
                continue
            print(f"[done] {run_dir}", flush=True)

    # ---- 3. the comparison, one run of the trainer study (always recomputed: an analysis may have run since) ----
    run_dir, result = execute(comparison, root, force=True, report=print)
    print("\n".join(result.lines))
    print(f"-> {run_dir} (this command: {(time.time() - started) / 60:.1f} min)")
    return {"comparison": result.tables["per_layer"], "losses": result.tables["losses"], "dir": run_dir,
            "failed": failed}


def comparison(context: TrainedVariants, config: ExperimentConfig) -> ExperimentResult:
    """The trainer study's experiment: ``compare`` on the variants the context holds."""
    return compare(config, context.configs, context.analyses, context.criterion)


def compare(experiment: ExperimentConfig, configs: dict[str, TrainConfig], analyses: dict[str, dict[str, Path | None]],
            criterion: MassiveCriterion) -> ExperimentResult:
    """The comparison of the trained variants, from their checkpoints (``configs[v].out``: the training summary, the
    layout, the weights for the attention shares on held-out windows of the checkpoint's own data) and the analysis
    runs (``analyses[experiment][variant]``: its run directory, None where it failed; ``ANALYSES`` name them).
    Tables ``per_layer`` and ``losses``, figures, the summary of the manifest, the lines of ``comparison.md`` and its
    writer (``files``); writes nothing itself."""
    import pandas as pd
    import torch

    from mech_interp.models.loading import load_model
    from mech_interp.models.spec import ModelSpec
    from mech_interp.runs.experiment import ExperimentResult

    from .checkpoint import training_summary
    from .data import data_dir_for, get_batch, prepare_data
    from .figures import comparison_lines

    rows, summaries = [], {}
    for variant, config in configs.items():
        summaries[variant] = training_summary(Path(config.out))
        layout = ModelSpec.parse(config.out).metadata().layout
        model = load_model(config.out, device="cpu" if config.device == "cpu" else "auto")
        data_dir = Path(config.data_dir) if config.data_dir else data_dir_for(
            config.corpus, config.tokenizer, config.val_fraction, config.max_corpus_tokens)
        val = prepare_data(config.corpus, config.tokenizer, data_dir, config.val_fraction, config.max_corpus_tokens,
                           progress=False).split("val")
        windows, _ = get_batch(val, experiment.attention_windows, config.n_ctx,
                               torch.Generator().manual_seed(config.seed + 7))
        shares = {r["layer"]: r for r in attention_shares(model, windows, layout=layout)}
        layerwise = analyses["layerwise"].get(variant)
        table = pd.read_parquet(layerwise / "layerwise.parquet") if layerwise else None
        tops = pd.read_parquet(layerwise / "top_entries.parquet") if layerwise else None
        for layer in range(model.cfg.n_layers):
            row = {"variant": variant, "layer": layer, **{k: v for k, v in shares[layer].items() if k != "layer"}}
            if table is not None:
                lw = table[table["layer"] == layer].iloc[0]
                top1 = tops[(tops["layer"] == layer) & (tops["rank"] == 1)]
                row.update({"top1": float(lw["top1"]), "median": float(lw["median"]),
                            "top1_over_median": float(lw["ratio_of_means_top1_median"]),
                            "top1_at_first_position": float((top1["position"] == layout.first_token()).mean())})
            rows.append(row)
        del model
    comparison = pd.DataFrame(rows)
    # train_seconds: recorded with each training run (absent from runs of the previous version, None after resuming
    # one of its states: unknown), so a rerun that trains nothing reports the training's time, not its own
    losses = pd.DataFrame([{"variant": v, "steps": s["steps"], "tokens": s["tokens"], "final_train_loss": s["final_train_loss"],
                            "final_val_loss": s["final_val_loss"], "train_tokens_per_second": s["train_tokens_per_second"],
                            "train_seconds": s.get("train_seconds")}
                           for v, s in summaries.items()])

    base = configs[experiment.variants[0]]
    title = f"{base.preset}: {' vs '.join(experiment.variants)}"
    figures = {}
    if "top1" in comparison:
        figures["top1"] = comparison_lines(comparison, "top1", f"{title}: top-1 |a| per block", "top-1 |a|")
        figures["top1_over_median"] = comparison_lines(comparison, "top1_over_median", f"{title}: top-1 / median |a|",
                                                       "ratio", log_y=True)
    figures["attn_first_token"] = comparison_lines(comparison, "attn_first_token",
                                                   f"{title}: attention to the first token", "attention")
    text = comparison_text(base, experiment, criterion, comparison, losses, analyses)
    return ExperimentResult(tables={"per_layer": comparison, "losses": losses}, figures=figures,
                            summary={"losses": losses.to_dict("records")}, lines=text.split("\n"),
                            files={"comparison.md": lambda path: path.write_text(text, encoding="utf-8")})


def comparison_text(base: TrainConfig, experiment: ExperimentConfig, criterion: MassiveCriterion, comparison, losses,
                    analyses: dict[str, dict[str, Path | None]]) -> str:
    tokens_per_step = base.batch_size * base.n_ctx * base.grad_accum
    lines = [f"# {' vs '.join(experiment.variants)}, preset {base.preset}",
             "",
             f"Same data, seed ({base.seed}) and budget for each: {base.max_steps} steps x {tokens_per_step} tokens "
             f"({base.n_layers}L/{base.n_heads}H/{base.d_model}, context {base.n_ctx}, lr {base.lr} -> {base.min_lr}); "
             f"corpus {', '.join(base.corpus)}.",
             "",
             "| variant | steps | tokens | final train loss | val loss | train tokens/s | training wall time |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    records = losses.to_dict("records")
    for r in records:
        minutes = "unknown" if _missing(r["train_seconds"]) else f"{r['train_seconds'] / 60:.1f} min"
        lines.append(f"| {r['variant']} | {r['steps']} | {r['tokens']:,} | {r['final_train_loss']:.4f} | "
                     f"{r['final_val_loss']:.4f} | {r['train_tokens_per_second']:,.0f} | {minutes} |")
    unknown = any(_missing(r["train_seconds"]) for r in records)
    lines += ["", "val loss: mean next-token cross-entropy (nats) over fixed random batches of the held-out split. "
              "Training wall time: of the training loop (steps, evaluations, checkpoints), recorded with each "
              "training run (`train_seconds` in its manifest), summed over the processes that trained it" + (
                  "; unknown: not recorded (resumed from a state without timing, which the previous version of the "
                  "trainer wrote, or trained by that version)." if unknown else "."), "",
              f"Per block (0-based; resid_post), layer-wise over {experiment.n_seqs} windows of `{experiment.text}`: "
              "top-1 and lower-median |a| (mean over sequences), top1/median = ratio of those means, `first` = share of "
              "sequences whose top-1 entry is at the first token; attention over "
              f"{experiment.attention_windows} held-out windows, mean over heads: `a(first)` = to the first token from "
              "the queries after it, `a(slot)` = to the k'/v' slot from all queries.", "",
              "| variant | block | top-1 | median | top1/median | first | a(first) | a(slot) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in comparison.to_dict("records"):
        cells = [_cell(r, key, fmt) for key, fmt in (("top1", ".2f"), ("median", ".3f"), ("top1_over_median", ".1f"),
                                                     ("top1_at_first_position", ".2f"), ("attn_first_token", ".3f"),
                                                     ("attn_slot", ".3f"))]
        lines.append(f"| {r['variant']} | {r['layer']} | " + " | ".join(cells) + " |")
    failed = [f"{name} on {v}" for name in ANALYSES for v, d in analyses[name].items() if d is None]
    # The table holds means over sequences: the criterion's bounds on the mean top-1 and on the ratio of the means.
    massive = comparison.iloc[:0] if "top1" not in comparison else comparison[
        (comparison["top1"] > criterion.min_abs) & (comparison["top1_over_median"] >= criterion.min_ratio)]
    lines += ["", f"Massive activations (|a| > {criterion.min_abs:g} and >= "
              f"{criterion.min_ratio:g} x the median): " + (
                  ", ".join(f"{r['variant']} block {r['layer']}" for r in massive.to_dict("records")) or "none in any "
                  "variant at this budget"),
              "", "Runs of the mech_interp experiments: under `analysis/`" + (
                  f"; did not run: {', '.join(failed)}" if failed else "."), ""]
    return "\n".join(lines)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key, math.nan)
    return "-" if _missing(value) else format(value, fmt)
