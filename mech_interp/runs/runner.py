"""Run one experiment on one model into its own results directory, skipping finished runs.

``check_runs`` checks every run of a study or batch before the first one starts, with nothing but
the registry, config.json or the GGUF header (models, layers, context lengths), the local text files
and the devices; ``execute`` checks what needs the loaded model (prompt lengths) before the
experiment computes anything.
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import UsageError
from .experiments import ExperimentResult, get_experiment
from .options import RunOptions
from .output import WRITE_ERRNOS, RunWriter, check_writable, is_complete, read_manifest, write_error
from .spec import RunSpec

LAYER_CONVENTION = "0-based TransformerLens blocks; 'layer L' is blocks.L.hook_resid_post (the paper's layer L+1)"


def model_for(options: RunOptions):
    from ..models.loading import load_model

    return load_model(options.model, device=options.device, dtype=options.dtype, prepend_bos=options.prepend_bos,
                      fast_paths=options.fast_paths)


def load_key(options: RunOptions) -> tuple:
    """What decides the loaded model: runs with equal keys can share one."""
    return (options.model, options.device, options.dtype, options.prepend_bos, options.fast_paths)


TEXT_FIELDS = ("text", "mean_text", "datasets")  # config fields naming texts (a name, a file, or a list of them)


def check_runs(specs: Sequence[RunSpec], check_devices: bool = True) -> None:
    """Refuse, before anything runs or is written, any run that would fail on its input: unknown or
    broken models, layers or ``seq_len`` beyond the model, missing/unreadable/non-UTF-8/empty local
    texts, devices this machine lacks (``check_devices=False`` where the runs go to other machines,
    whose devices the scheduler checks). Each model, text and device is checked once."""
    from ..data.texts import check_text

    metadata: dict[str, Any] = {}
    texts: set[str] = set()
    devices: set[str] = set()
    for spec in specs:
        try:
            config = spec.config()
            model = spec.options.model
            if model not in metadata:
                model_spec = spec.model_spec()
                if model_spec.kind == "hub":
                    from ..models.loading import check_hub_model

                    check_hub_model(model_spec.text)
                metadata[model] = model_spec.metadata()
            _check_fits(config, model, metadata[model])
            for name in TEXT_FIELDS:
                value = getattr(config, name, None)
                for text in (value if isinstance(value, list) else [value] if value is not None else []):
                    if text not in texts:
                        check_text(text)
                        texts.add(text)
            if check_devices and spec.options.device not in devices:
                if spec.options.device not in ("cpu", "auto"):
                    from ..models.loading import resolve_device

                    resolve_device(spec.options.device)
                devices.add(spec.options.device)
        except UsageError as err:
            if spec.origin:
                raise UsageError(f"{spec.origin}: {err}") from None
            raise


def _check_fits(config: Any, model: str, meta) -> None:
    layer = getattr(config, "layer", None)
    n = meta.n_layers
    if layer is not None and n is not None and not 0 <= layer < n:
        raise UsageError(f"layer {layer} out of range for {model!r}: it has blocks 0..{n - 1} (0-based)")
    for hook in getattr(config, "hooks", None) or []:
        block = re.match(r"blocks\.(\d+)\.", hook)
        if block and n is not None and int(block.group(1)) >= n:
            raise UsageError(f"hook point {hook!r} is out of range for {model!r}: it has blocks 0..{n - 1} (0-based)")
    seq_len = getattr(config, "seq_len", None)
    if seq_len is not None and meta.n_ctx is not None and seq_len > meta.n_ctx:
        raise UsageError(f"--seq-len {seq_len} is longer than the model's context of {meta.n_ctx} tokens ({model!r})")


def _check_loaded(model, spec: RunSpec, config: Any) -> None:
    """What only the loaded model can tell: a prompt longer than its context."""
    prompt = getattr(config, "prompt", None)
    if isinstance(prompt, str) and prompt.strip():
        n_tokens = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"]) + bool(spec.options.prepend_bos)
        if n_tokens > model.cfg.n_ctx:
            raise UsageError(f"--prompt is {n_tokens} tokens long, longer than the model's context of "
                             f"{model.cfg.n_ctx} tokens: shorten it")


def model_info(model) -> dict[str, Any]:
    cfg = model.cfg
    return {"name": cfg.model_name, "source": getattr(cfg, "source", cfg.model_name), "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads, "d_model": cfg.d_model, "d_vocab": cfg.d_vocab,
            "architecture": cfg.original_architecture, "n_params": sum(p.numel() for p in model.parameters()),
            "dtype": str(cfg.dtype), "device": str(cfg.device)}


def run_state(spec: RunSpec, out: str | Path) -> tuple[str, str]:
    """(``done`` | ``stale`` | ``new``, why): whether a complete run with this identity exists.
    A complete run of another model under the same directory name is refused."""
    run_dir = spec.run_dir(out)
    if not is_complete(run_dir):
        return "new", ""
    manifest = read_manifest(run_dir)
    identity = spec.identity()
    recorded = manifest.get("identity") if isinstance(manifest.get("identity"), dict) else {}
    recorded_options = recorded.get("options") if isinstance(recorded.get("options"), dict) else {}
    done_source = recorded_options.get("model", manifest.get("model_source"))
    if done_source is not None and done_source != identity["options"]["model"]:
        raise UsageError(f"{run_dir} holds a run of {done_source!r}, not {identity['options']['model']!r}: "
                         "pass another --out, or --force to replace it")
    if manifest.get("identity") == identity:
        return "done", ""
    return "stale", identity_difference(recorded, identity)


def identity_difference(old: dict, new: dict) -> str:
    for part in ("experiment", "options", "config"):
        a, b = old.get(part), new.get(part)
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    return f"{part}.{key} was {a.get(key)!r}, now {b.get(key)!r}"
        elif a != b:
            return f"{part} was {a!r}, now {b!r}"
    return "recorded by an older version without its configuration"


def execute(
    spec: RunSpec,
    out: str | Path,
    model: Any | Callable[[], Any] | None = None,
    force: bool = False,
    report: Callable[[str], None] | None = None,
    provenance: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> tuple[Path, ExperimentResult | None]:
    """Run ``spec`` unless an identical run is complete (then return ``(dir, None)``).

    ``model`` may be a loaded model or a zero-argument loader, so batch runs share one model and
    skipped runs never load one. Bad input raises ``UsageError`` before anything is written. A
    complete run whose recorded configuration differs (a default changed since) is rerun, and
    ``report`` is told why: ``[rerun] <dir>: <what changed>``. ``provenance`` adds to the manifest
    (a Ray task records its driver's command line and its node); ``identity`` replaces the one
    computed here (a Ray task records the driver's, which its skip/resume reads).
    """
    import torch

    experiment = get_experiment(spec.experiment)
    config = spec.config()
    run_dir = spec.run_dir(out)
    check_writable(out)
    state, why = run_state(spec, out) if not force else ("new", "")
    if state == "done":
        return run_dir, None
    if state == "stale" and report is not None:
        report(f"[rerun] {run_dir}: {why}")
    try:
        writer = RunWriter(run_dir, out, identity or spec.identity())
    except OSError as err:  # the run directory cannot be made there (read-only, /proc, full, ...): the user's to fix
        raise write_error(err, Path(out)) from None
    try:
        if model is None:
            model = model_for(spec.options)
        elif callable(model) and not isinstance(model, torch.nn.Module):
            model = model()
        _check_loaded(model, spec, config)
        torch.manual_seed(spec.options.seed)
        started = time.time()
        kwargs = {"pieces": writer} if "pieces" in inspect.signature(experiment.fn).parameters else {}
        result = experiment.fn(model, spec.options, config, **kwargs)
        for name, table in result.tables.items():
            writer.table(name, table)
        for name, fig in result.figures.items():
            writer.figure(name, fig)
        writer.text("summary.txt", "\n".join(result.lines) + "\n")
        writer.commit({
            "experiment": spec.experiment,
            "model_source": spec.model_spec().source,
            "options": asdict(spec.options),
            "config": asdict(config),
            "model": model_info(model),
            "criterion": asdict(spec.options.criterion),
            "tokenization": {"prepend_bos": spec.options.prepend_bos,
                             "special_tokens": "none added, except c4 and pg19, which keep the tokenizer's defaults as "
                                               "the paper's loader does (recorded per text in the tables)"},
            "layer_convention": LAYER_CONVENTION,
            "seed": spec.options.seed,
            "seconds": round(time.time() - started, 2),
            "summary": result.summary,
            **(provenance or {}),
        })
    except BaseException as err:
        # A kill or Ctrl-C keeps resumable pieces; any other failure leaves nothing behind.
        writer.discard(keep_pieces=isinstance(err, KeyboardInterrupt))
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            raise write_error(err, Path(out)) from None
        raise
    return run_dir, result
