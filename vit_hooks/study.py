"""The vision study on the shared engine: its experiments, and the timm side of a study (``ViTStudy``).

A model string is parsed once per command into its registry entry (``registry.parse_model``: shape,
registers, provenance, without building it); the checks before loading read that entry, ``open``
builds the ``Session`` (model with hooks, images, linear head) from it. A run's identity is every
option and parameter (defaults included) and the size and mtime of the local model, head and means
files. The images are named by their folder and count, not fingerprinted. The evaluations
(Fix-Reg-Mean, massive reset) save their progress as pieces; a rerun after a kill resumes from them.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from mech_interp.runs.experiment import Experiment
from mech_interp.runs.study import ResolvedRun, Study
from mech_interp.validation.errors import UsageError

from . import configs
from .registry import ModelEntry, parse_model, require_hub

UPSTREAM_SLUG = "upstream-dinov2-reg"  # the results directory of the upstream files, which no model of ours made


class ViTStudy(Study):
    options_cls = configs.ViTOptions
    layer_field = "block"
    not_in_identity = frozenset({"device", "batch_size"})  # same numbers wherever and however batched (to float rounding)

    def resolve_model(self, options: configs.ViTOptions) -> ModelEntry:
        return parse_model(options.model, options.img_size)

    def model_key(self, options: configs.ViTOptions) -> tuple:
        return (options.model, options.img_size)

    def model_free_slug(self, experiment: Experiment) -> str:
        return UPSTREAM_SLUG

    def load_key(self, options: configs.ViTOptions) -> tuple:
        return tuple(asdict(options).values())

    def open(self, run: ResolvedRun):
        from .session import Session

        return Session.open(run.options, run.model)

    def check(self, run: ResolvedRun, seen: set, check_devices: bool = True) -> None:
        """The model (a checkpoint timm could not read, a hub model without the hub), the images, the head file,
        blocks beyond the model, an unknown ``--means``, the device."""
        if not run.experiment.needs_model:
            return
        from .images import open_images

        entry, options, config = run.model, run.options, run.config
        if check_devices and options.device != "cpu" and ("device", options.device) not in seen:
            from mech_interp.models.loading import resolve_device

            resolve_device(options.device)
            seen.add(("device", options.device))
        require_hub(entry)
        if entry.kind == "file" and ("checkpoint", entry.path) not in seen:
            from mech_interp.storage.tensor_files import check_checkpoint

            check_checkpoint(Path(entry.path), f"a {entry.arch} state dict (timm's or the original DINOv2 layout)")
            seen.add(("checkpoint", entry.path))
        images = open_images(options.images, options.n_images)
        n_ref = getattr(config, "n_ref", None)
        if n_ref is not None and n_ref >= len(images):
            raise UsageError(f"--n-ref {n_ref} leaves no image to evaluate: there are {len(images)}; pass --n-ref "
                             f"between 1 and {len(images) - 1}")
        if options.head and ("head", options.head, entry.d_model) not in seen:
            from .linear_head import load_linear_head

            load_linear_head(options.head, entry.d_model)
            seen.add(("head", options.head, entry.d_model))
        block = getattr(config, "block", None)
        if block is not None and block >= entry.n_blocks:
            raise UsageError(f"--block {block} is out of range for {entry.name!r}: it has blocks "
                             f"0..{entry.n_blocks - 1} (0-based)")
        means = getattr(config, "means", None)
        if means is not None:
            from .register_means import UPSTREAM_FILES

            accepted = {"auto", "measure", *(f"upstream:{s}" for s in UPSTREAM_FILES)}
            if means not in accepted and not means.endswith(".pt"):
                raise UsageError(f"--means {means!r} is not allowed: expected auto, measure, upstream:SIZE "
                                 f"({', '.join(UPSTREAM_FILES)}) or a .pt file")
            if means.endswith(".pt"):
                from .register_means import RegisterMeans

                RegisterMeans.load(means).check_fits(entry.n_blocks, entry.n_registers, entry.d_model)
        if getattr(config, "means_images", None):
            open_images(config.means_images)

    def identity(self, experiment: Experiment, options: configs.ViTOptions, config: Any,
                 model: ModelEntry | None) -> dict[str, Any]:
        result: dict[str, Any] = {"experiment": experiment.name, "config": asdict(config)}
        if experiment.needs_model:
            result["options"] = {k: v for k, v in asdict(options).items() if k not in self.not_in_identity}
            result["files"] = _local_files(options, config, model)
        return result

    def manifest(self, context, run: ResolvedRun) -> dict[str, Any]:
        conventions = {"block_convention": configs.BLOCK_CONVENTION, "token_convention": configs.TOKEN_CONVENTION}
        if context is None:
            return conventions
        o = run.options
        return {"engine": {"name": "timm", "timm": version("timm")}, "model": context.model_info(),
                "images": context.images.describe(),
                "preprocessing": context.vit.preprocessing.describe(), "criterion": asdict(o.criterion),
                "head": o.head, **conventions}

    def model_lines(self) -> list[str]:
        from .registry import list_models

        return [f"{name:<38} {e.n_blocks:>3} blocks  d {e.d_model:<5} {e.n_registers} registers  {e.img_size} px  "
                f"{e.description}" for name, e in ((name, parse_model(name)) for name in list_models())]

    def computation(self, identity: dict[str, Any]) -> dict[str, Any]:
        files = {name: {"size": f["size"]} if isinstance(f, dict) else f for name, f in identity.get("files", {}).items()}
        return {**identity, "files": files} if "files" in identity else identity

    def local_inputs(self, run: ResolvedRun) -> dict[str, int | None]:
        if not run.experiment.needs_model:
            return {}
        from .images import open_images

        inputs: dict[str, int | None] = {}
        entry, options = run.model, run.options
        if entry.kind == "file":
            inputs[entry.path] = Path(entry.path).stat().st_size
        if options.head:
            inputs[options.head] = Path(options.head).expanduser().stat().st_size
        means = getattr(run.config, "means", None)
        if means and means.endswith(".pt"):
            inputs[means] = Path(means).expanduser().stat().st_size
        for folder in (options.images, getattr(run.config, "means_images", None)):
            if folder:
                images = open_images(folder, options.n_images if folder == options.images else None)
                inputs[str(images.root)] = None
        return inputs

    def weight_bytes(self, run: ResolvedRun) -> int | None:
        if not run.experiment.needs_model:
            return 0
        e = run.model
        # a ViT block holds 12 d^2 parameters (attention 4 d^2, MLP 8 d^2), float32
        return 12 * e.n_blocks * e.d_model**2 * 4


def _fingerprint(path: Path) -> dict[str, Any] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # missing: the run's check refuses it before anything runs
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _local_files(options: configs.ViTOptions, config: Any, entry: ModelEntry) -> dict[str, Any]:
    """Size and mtime of the local files a run reads (model weights, head, means): replacing one makes
    a finished run stale."""
    files = {}
    if entry.kind == "embedded":
        from .embedded_onnx import embedded_onnx_path

        files["model"] = _fingerprint(embedded_onnx_path())
    elif entry.kind == "file":
        files["model"] = _fingerprint(Path(entry.path))
    if options.head:
        files["head"] = _fingerprint(Path(options.head).expanduser())
    means = getattr(config, "means", None)
    if means and means.endswith(".pt"):
        files["means"] = _fingerprint(Path(means).expanduser())
    return files


def _experiment(name: str, config_cls: type, needs_model: bool = True) -> Experiment:
    """A vision experiment: its function is ``run`` in ``vit_hooks.experiments.<name>``, its help its config's doc."""
    return Experiment(name, config_cls, f"vit_hooks.experiments.{name}:run", config_cls.__doc__.strip(), needs_model)


STUDY = ViTStudy("vit", "vision study", [
    _experiment("feature_view", configs.FeatureViewConfig),
    _experiment("layerwise", configs.LayerwiseConfig),
    _experiment("register_means", configs.RegisterMeansConfig),
    _experiment("upstream_means", configs.UpstreamMeansConfig, needs_model=False),
    _experiment("fix_reg_mean", configs.FixRegMeanConfig),
    _experiment("massive_reset", configs.MassiveResetConfig),
    _experiment("attention", configs.AttentionConfig),
], default_runs=("feature_view", "layerwise", "upstream_means", "register_means", "fix_reg_mean", "massive_reset",
                 "attention"), optional_runs=("upstream_means",))
