"""The TransformerLens engine's side of a study: what the language-model and head studies plug into.

A model string is parsed once per command (``ResolvedLanguageModel``: the spec, its metadata read
from the registry, config.json or the GGUF header, and the fingerprint of its local files); every
check before loading reads that, and ``open`` loads the ``HookedTransformer`` from it into a
``ModelContext`` with the model's token layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.sites import OUTSIDE_BLOCKS, Site, parse_site
from ..runs.experiment import Experiment
from ..runs.study import ResolvedRun, Study
from ..validation.errors import UsageError
from .run_options import RunOptions
from .spec import ModelMetadata, ModelSpec

LAYER_CONVENTION = "0-based TransformerLens blocks; 'layer L' is blocks.L.hook_resid_post (the paper's layer L+1)"
TEXT_FIELDS = ("text", "mean_text", "datasets")  # config fields naming texts (a name, a file, or a list of them)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
GGUF_EXPANSION = 7  # float32 bytes per byte of a ~4.5-bit quantized file
TOKENIZATION = {"special_tokens": "none added, except c4 and pg19, which keep the tokenizer's defaults as the "
                                  "paper's loader does (recorded per text in the tables)"}


@dataclass(frozen=True)
class ResolvedLanguageModel:
    spec: ModelSpec
    metadata: ModelMetadata
    files: dict[str, str] | None  # size and mtime of the local files holding it; None for named models

    @property
    def slug(self) -> str:
        return self.spec.slug

    @property
    def source(self) -> str:
        return self.spec.source


def texts_of(config: Any) -> list[str]:
    """The texts (names or files) a config reads."""
    texts = []
    for name in TEXT_FIELDS:
        value = getattr(config, name, None)
        texts += value if isinstance(value, list) else [value] if value is not None else []
    return texts


class LanguageModelStudy(Study):
    options_cls = RunOptions
    # Same values wherever and however it runs, to float tolerance (the engines: tests/test_engine_parity.py);
    # the manifest records each.
    # A streamed run's values equal HF's whole-model forward bit for bit (tests/test_streamed_pass.py).
    not_in_identity = frozenset({"device", "fast_paths", "engine", "placement", "max_memory", "device_map"})

    def resolve_model(self, options: RunOptions) -> ResolvedLanguageModel:
        spec = ModelSpec.parse(options.model)
        return ResolvedLanguageModel(spec, spec.metadata(), spec.fingerprint())

    def load_key(self, options: RunOptions) -> tuple:
        return (options.model, options.device, options.dtype, options.prepend_bos, options.fast_paths, options.engine,
                options.placement, options.max_memory, options.device_map)

    def open(self, run: ResolvedRun):
        """The model whole (``ModelContext``) or its files for a streamed pass (``StreamedContext``), as
        ``choose_placement`` decides; the decision's line is printed first."""
        from .context import ModelContext
        from .loading import load_model
        from .placement.run_placement import choose_placement

        o = run.options
        placement = choose_placement(run)
        print(placement.line, flush=True)
        if placement.name != "whole":
            from .placement.streamed_context import StreamedContext

            return StreamedContext.open(run, placement)
        model = load_model(run.model.spec, device=o.device, dtype=o.dtype, prepend_bos=o.prepend_bos,
                           fast_paths=o.fast_paths, engine=o.engine, device_map=o.device_map, max_memory=o.max_memory)
        return ModelContext(model, o, run.model.metadata.layout, placement)

    def reuse(self, context, run: ResolvedRun):
        """The loaded context when ``run`` takes the same placement (with this run's plan in it), else None: the
        placement depends on the experiment and its windows, not only on the options."""
        import dataclasses

        from .placement.run_placement import choose_placement

        if getattr(context, "placement", None) is None:
            return context  # a model passed in
        chosen = choose_placement(run)
        if chosen.name != context.placement.name:
            return None
        return dataclasses.replace(context, placement=chosen)

    def check(self, run: ResolvedRun, seen: set, check_devices: bool = True) -> None:
        """Unknown or broken models, layers, hook points or ``seq_len`` beyond the model, missing/unreadable/
        non-UTF-8/empty local texts, devices this machine lacks; each model, text and device once."""
        from ..data.texts import check_text

        spec, meta = run.model.spec, run.model.metadata
        if ("engine", run.options.engine, spec.text) not in seen:
            _check_engine(run.options.engine, spec, meta)
            seen.add(("engine", run.options.engine, spec.text))
        if spec.kind == "hub" and ("hub", spec.text) not in seen:
            from .loading import check_hub_model

            check_hub_model(spec.text)
            seen.add(("hub", spec.text))
        _check_fits(run.config, run.options.model, meta)
        for text in texts_of(run.config):
            if ("text", text) not in seen:
                check_text(text)
                seen.add(("text", text))
        device = run.options.device
        if check_devices and ("device", device) not in seen:
            if device not in ("cpu", "auto"):
                from .loading import resolve_device

                resolve_device(device)
            seen.add(("device", device))
        if check_devices and run.options.device_map is not None and ("device_map", run.options.device_map) not in seen:
            _check_device_map(run.options)
            seen.add(("device_map", run.options.device_map))
        if check_devices or run.options.max_memory is not None:  # a remote node's memory is its scheduler's
            from .placement.run_placement import choose_placement

            choose_placement(run)

    def check_loaded(self, context, run: ResolvedRun) -> None:
        """A hook point the experiment needs and this model's engine lacks; a prompt longer than the model's context."""
        from .context import ModelContext

        if isinstance(context, ModelContext):
            model = context.model
            missing = [site.name for site in map(_first_site, run.experiment.sites) if site.name not in model.hook_dict]
            if missing:
                from .engines import engine_of

                engine = engine_of(model)
                raise UsageError(f"experiment {run.experiment.name!r} needs "
                                 f"{missing[0].replace('blocks.0.', 'blocks.L.')}, which the {engine} engine does not "
                                 f"give for {model.cfg.original_architecture} ({run.options.model!r}): run it with "
                                 "another engine, or another experiment")
            tokenizer, n_ctx = model.tokenizer, model.cfg.n_ctx
        else:  # a streamed run: its hook points and its family were checked with its placement
            tokenizer, n_ctx = context.tokenizer, context.n_ctx
        prompt = getattr(run.config, "prompt", None)
        if isinstance(prompt, str) and prompt.strip() and n_ctx is not None:
            n_tokens = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) + bool(run.options.prepend_bos)
            if n_tokens > n_ctx:
                raise UsageError(f"--prompt is {n_tokens} tokens long, longer than the model's context of "
                                 f"{n_ctx} tokens: shorten it")

    def identity(self, experiment: Experiment, options: RunOptions, config: Any,
                 model: ResolvedLanguageModel) -> dict[str, Any]:
        values = {k: v for k, v in asdict(options).items() if k not in self.not_in_identity}
        values["model"] = model.source
        if model.files is not None:  # absent for named models, so their earlier runs stay done
            values["model_files"] = model.files  # a model file replaced in place makes the run stale
        return {"experiment": experiment.name, "options": values, "config": asdict(config)}

    def manifest(self, context, run: ResolvedRun) -> dict[str, Any]:
        o = run.options
        placement = getattr(context, "placement", None)
        return {"engine": context.engine(), "model": context.info(), "criterion": asdict(o.criterion),
                "placement": placement.record() if placement is not None else None,
                "tokenization": {"prepend_bos": o.prepend_bos, **TOKENIZATION},
                "layer_convention": LAYER_CONVENTION, "seed": o.seed}

    def model_lines(self) -> list[str]:
        from .registry import list_models, model_entry

        return [f"{name:<20} {e.family:<18} {e.n_layers:>3} layers  {e.description}"
                for name, e in ((name, model_entry(name)) for name in list_models())]

    def computation(self, identity: dict[str, Any]) -> dict[str, Any]:
        options = {k: v for k, v in identity.get("options", {}).items() if k not in ("model", "model_files")}
        return {**identity, "options": options}

    def context_from(self, model, run: ResolvedRun):
        from .context import ModelContext

        return ModelContext(model, run.options, run.model.metadata.layout)

    def local_inputs(self, run: ResolvedRun) -> dict[str, int | None]:
        from ..data.texts import is_local_file

        inputs: dict[str, int | None] = {}
        spec = run.model.spec
        if spec.path is not None and spec.path.is_file():
            inputs[run.options.model] = spec.path.stat().st_size
        elif spec.path is not None:  # a directory: its config and weight files, each with its size
            inputs[run.options.model] = None
            for name, size in (spec.file_sizes() or {}).items():
                inputs[str(Path(run.options.model) / name)] = size
        for text in texts_of(run.config):
            if is_local_file(text):
                inputs[text] = Path(text).expanduser().stat().st_size
        return inputs

    def weight_bytes(self, run: ResolvedRun) -> int | None:
        spec = run.model.spec
        per_param = DTYPE_BYTES[run.options.dtype]
        if spec.kind == "registered":
            from .registry import model_entry

            return model_entry(spec.text).n_params * per_param
        if spec.kind == "hub":
            return None
        on_disk = sum((spec.file_sizes() or {}).values())
        if spec.kind == "gguf":
            return on_disk * GGUF_EXPANSION * per_param // 4
        return on_disk * per_param // 4  # safetensors / checkpoints as saved, float32 at most


def _first_site(component: str) -> Site:
    """The component in block 0, or outside the blocks: where every model has it if it has it at all."""
    return Site(None if component in OUTSIDE_BLOCKS else 0, component)


def _check_engine(engine: str, spec: ModelSpec, meta: ModelMetadata) -> None:
    """The engine is installed (or auto) and loads the model's family; hub families are known only once loaded."""
    from .architectures import check_hf_architecture
    from .engines import HOOKED_TRANSFORMER, resolve_engine

    resolved = resolve_engine(engine)
    if spec.kind in ("registered", "hf_dir", "gguf") and meta.family is not None:
        check_hf_architecture(meta.family, f"model {spec.text!r}", resolved)
    if spec.kind == "checkpoint":
        from .checkpoint_bridge import check_bridge_checkpoint

        if resolved != HOOKED_TRANSFORMER:
            check_bridge_checkpoint(spec)


def _check_device_map(options: RunOptions) -> None:
    """The map reads, names devices this machine has, and suits the engine and the model, before loading."""
    from .engines import HOOKED_TRANSFORMER, resolve_engine
    from .placement.device_map import parse_device_map

    if options.device != "auto":
        raise UsageError(f"--device {options.device} and --device-map {options.device_map} both say where the model "
                         "goes: give one")
    if options.placement in ("streamed", "spilled"):
        raise UsageError(f"--device-map {options.device_map} splits a whole model; a {options.placement} run holds one "
                         "block at a time on --device: drop one of them")
    split = parse_device_map(options.device_map)
    engine = resolve_engine(options.engine)
    split.n_devices(engine)  # refuses a map the engine cannot follow
    if options.max_memory is not None and (engine == HOOKED_TRANSFORMER or split.modules is not None):
        raise UsageError(f"--max-memory {options.max_memory} with --device-map caps each device of a named map on the "
                         "transformer_bridge engine: a map file places every module itself, and the hooked_transformer "
                         "engine splits evenly; drop --max-memory")


def _check_fits(config: Any, model: str, meta: ModelMetadata) -> None:
    layer = getattr(config, "layer", None)
    n = meta.n_layers
    if layer is not None and n is not None and not 0 <= layer < n:
        raise UsageError(f"layer {layer} out of range for {model!r}: it has blocks 0..{n - 1} (0-based)")
    for hook in getattr(config, "hooks", None) or []:
        try:
            block = parse_site(hook).block
        except ValueError:
            continue  # not a hook point: refused against the loaded model's hook_dict, with the names it has
        if block is not None and n is not None and block >= n:
            raise UsageError(f"hook point {hook!r} is out of range for {model!r}: it has blocks 0..{n - 1} (0-based)")
    seq_len = getattr(config, "seq_len", None)
    if seq_len is not None and meta.n_ctx is not None and seq_len > meta.n_ctx:
        raise UsageError(f"--seq-len {seq_len} is longer than the model's context of {meta.n_ctx} tokens ({model!r})")
