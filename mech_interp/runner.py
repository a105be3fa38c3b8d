"""Run one experiment on one model into its own results directory, skipping finished runs.

A run's directory is ``<out>/<model>/<experiment>`` followed by ``__key=value`` for every
parameter or option that differs from its default, so reruns with other settings never
overwrite each other and a finished run is recognised by its manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from transformer_lens import HookedTransformer

from .errors import UsageError
from .experiments import ExperimentResult, RunOptions, get_experiment
from .loading import load_model, model_slug, model_source
from .run_output import MANIFEST, RunWriter, is_complete

LAYER_CONVENTION = "0-based TransformerLens blocks; 'layer L' is blocks.L.hook_resid_post (the paper's layer L+1)"
_NOT_IN_NAME = {"model", "device"}  # device does not change results; the model names the parent directory


@dataclass
class RunSpec:
    experiment: str
    options: RunOptions = field(default_factory=RunOptions)
    params: dict[str, Any] = field(default_factory=dict)

    def config(self):
        return get_experiment(self.experiment).make_config(self.params)

    def name(self) -> str:
        config = self.config()
        parts = [self.experiment]
        for obj in (self.options, config):
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                if f.name not in _NOT_IN_NAME and value != default:
                    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
                    parts.append(f"{f.name}={_safe(text)}")
        return "__".join(parts)

    def run_dir(self, out: Path) -> Path:
        return Path(out) / model_slug(self.options.model) / self.name()


def _safe(text: str) -> str:
    clean = "".join(c if c.isalnum() or c in "-_.,=" else "-" for c in text)
    if len(clean) <= 40:
        return clean
    return clean[:32] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]  # stable across processes: resume finds it


def model_for(options: RunOptions) -> HookedTransformer:
    return load_model(options.model, device=options.device, dtype=options.dtype, prepend_bos=options.prepend_bos)


def model_info(model: HookedTransformer) -> dict[str, Any]:
    cfg = model.cfg
    return {"name": cfg.model_name, "source": getattr(cfg, "source", cfg.model_name), "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads, "d_model": cfg.d_model, "d_vocab": cfg.d_vocab,
            "architecture": cfg.original_architecture, "n_params": sum(p.numel() for p in model.parameters()),
            "dtype": str(cfg.dtype), "device": str(cfg.device)}


def execute(
    spec: RunSpec,
    out: Path,
    model: HookedTransformer | Callable[[], HookedTransformer] | None = None,
    force: bool = False,
) -> tuple[Path, ExperimentResult | None]:
    """Run ``spec`` unless its directory is complete (then return ``(dir, None)``).

    ``model`` may be a loaded model or a zero-argument loader, so batch runs share one model and
    skipped runs never load one. Bad input raises ``UsageError`` before anything is written.
    """
    experiment = get_experiment(spec.experiment)
    config = spec.config()
    run_dir = spec.run_dir(out)
    source = model_source(spec.options.model)
    if is_complete(run_dir) and not force:
        # Directories are named after a model's base name: two checkpoints called "ckpt" share one.
        done_source = json.loads((run_dir / MANIFEST).read_text()).get("model_source", source)
        if done_source != source:
            raise UsageError(f"{run_dir} holds a run of {done_source!r}, not {source!r}: pass another --out, "
                             "or --force to replace it")
        return run_dir, None
    if model is None:
        model = model_for(spec.options)
    elif callable(model) and not isinstance(model, torch.nn.Module):
        model = model()
    writer = RunWriter(run_dir, out, source)
    torch.manual_seed(spec.options.seed)
    started = time.time()
    kwargs = {"pieces": writer} if "pieces" in inspect.signature(experiment.fn).parameters else {}
    try:
        result = experiment.fn(model, spec.options, config, **kwargs)
        for name, table in result.tables.items():
            writer.table(name, table)
        for name, fig in result.figures.items():
            writer.figure(name, fig)
        writer.text("summary.txt", "\n".join(result.lines) + "\n")
        writer.commit({
            "experiment": spec.experiment,
            "model_source": source,
            "options": asdict(spec.options),
            "config": asdict(config),
            "model": model_info(model),
            "criterion": asdict(spec.options.criterion),
            "tokenization": {"prepend_bos": spec.options.prepend_bos, "other_special_tokens": False},
            "layer_convention": LAYER_CONVENTION,
            "seed": spec.options.seed,
            "seconds": round(time.time() - started, 2),
            "summary": result.summary,
        })
    except BaseException as err:
        # A kill or Ctrl-C keeps resumable pieces; any other failure leaves nothing behind.
        if not isinstance(err, KeyboardInterrupt):
            writer.discard()
        raise
    return run_dir, result
