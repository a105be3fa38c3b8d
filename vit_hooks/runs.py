"""Vision experiments by name, and running one into its own results directory with
``mech_interp.runs.output.RunWriter`` (built in ``<dir>.partial``, renamed when complete; tables as
parquet + CSV, figures as HTML (+ PNG), a JSON manifest with the configuration, versions, commit).

A run's directory is ``<out>/<model slug>/<experiment>`` plus ``__key=value`` for every setting that
differs from its default. A complete run is skipped when its manifest holds the same identity (every
option and parameter, defaults included, and the size and mtime of the local model, head and means
files), else rerun. The images are named by their folder and count, not fingerprinted. The
evaluations (Fix-Reg-Mean, massive reset) save their progress as pieces of ``<dir>.partial``; a rerun
after a kill or Ctrl-C resumes from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mech_interp.errors import UsageError
from mech_interp.runs.output import WRITE_ERRNOS, RunWriter, check_writable, is_complete, read_manifest, write_error

from . import configs
from .registry import parse_model, require_hub

UPSTREAM_SLUG = "upstream-dinov2-reg"


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type
    module: str  # vit_hooks.experiments.<module>, imported when run
    needs_model: bool = True

    @property
    def doc(self) -> str:
        return (self.config_cls.__doc__ or "").strip()

    def fn(self) -> Callable[..., Any]:
        import importlib

        return importlib.import_module(f"vit_hooks.experiments.{self.module}").run


EXPERIMENTS = {
    e.name: e
    for e in [
        Experiment("feature_view", configs.FeatureViewConfig, "feature_view"),
        Experiment("layerwise", configs.LayerwiseConfig, "layerwise"),
        Experiment("register_means", configs.RegisterMeansConfig, "register_means"),
        Experiment("upstream_means", configs.UpstreamMeansConfig, "upstream_means", needs_model=False),
        Experiment("fix_reg_mean", configs.FixRegMeanConfig, "fix_reg_mean"),
        Experiment("massive_reset", configs.MassiveResetConfig, "massive_reset"),
        Experiment("attention", configs.AttentionConfig, "attention"),
    ]
}
_NOT_IN_IDENTITY = {"device", "batch_size"}  # same numbers wherever and however batched (to float rounding)


def _safe(text: str) -> str:
    clean = "".join(c if c.isascii() and (c.isalnum() or c in "-_.,=") else "-" for c in text)
    if len(clean) <= 40 and clean == text:
        return clean
    return clean[-24:].lstrip("-.") + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def _non_defaults(obj: Any, skip: set[str]) -> list[str]:
    parts = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if f.name not in skip and value != default:
            parts.append(f"{f.name}={_safe(','.join(map(str, value)) if isinstance(value, list) else str(value))}")
    return parts


def run_dir(experiment: Experiment, options: configs.ViTOptions, config: Any, out: str | Path) -> Path:
    if not experiment.needs_model:
        return Path(out) / UPSTREAM_SLUG / "__".join([experiment.name, *_non_defaults(config, set())])
    slug = parse_model(options.model, options.img_size).slug
    parts = [experiment.name, *_non_defaults(options, _NOT_IN_IDENTITY | {"model"}), *_non_defaults(config, set())]
    return Path(out) / slug / "__".join(parts)


def check_run(experiment: Experiment, options: configs.ViTOptions, config: Any) -> None:
    """What can be refused before the model loads: the model spec, a checkpoint timm could not read, the
    images, the head file, blocks beyond the model, an unknown ``--means``."""
    if not experiment.needs_model:
        return
    from .images import open_images

    entry = parse_model(options.model, options.img_size)
    if options.device.startswith("cuda"):
        import torch

        index = int(options.device[5:] or 0) if ":" in options.device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {options.device!r} is not available here ({torch.cuda.device_count()} CUDA devices): "
                "use --device cpu"
            )
    require_hub(entry)
    if entry.kind == "file":
        from mech_interp.tensor_files import check_checkpoint

        check_checkpoint(Path(entry.path), f"a {entry.arch} state dict (timm's or the original DINOv2 layout)")
    images = open_images(options.images, options.n_images)
    n_ref = getattr(config, "n_ref", None)
    if n_ref is not None and n_ref >= len(images):
        raise UsageError(
            f"--n-ref {n_ref} leaves no image to evaluate: there are {len(images)}; pass --n-ref "
            f"between 1 and {len(images) - 1}"
        )
    if options.head:
        from .linear_head import load_linear_head

        load_linear_head(options.head, entry.d_model)
    block = getattr(config, "block", None)
    if block is not None and block >= entry.n_blocks:
        raise UsageError(
            f"--block {block} is out of range for {entry.name!r}: it has blocks 0..{entry.n_blocks - 1} (0-based)"
        )
    means = getattr(config, "means", None)
    if means is not None:
        from .register_means import UPSTREAM_FILES

        accepted = {"auto", "measure", *(f"upstream:{s}" for s in UPSTREAM_FILES)}
        if means not in accepted and not means.endswith(".pt"):
            raise UsageError(
                f"--means {means!r} is not allowed: expected auto, measure, upstream:SIZE "
                f"({', '.join(UPSTREAM_FILES)}) or a .pt file"
            )
        if means.endswith(".pt"):
            from .register_means import RegisterMeans

            RegisterMeans.load(means).check_fits(entry.n_blocks, entry.n_registers, entry.d_model)
    if getattr(config, "means_images", None):
        open_images(config.means_images)


def _fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _local_files(options: configs.ViTOptions, config: Any) -> dict[str, Any]:
    """Size and mtime of the local files a run reads (model weights, head, means): replacing one makes
    a finished run stale."""
    files = {}
    entry = parse_model(options.model, options.img_size)
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


def identity(experiment: Experiment, options: configs.ViTOptions, config: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"experiment": experiment.name, "config": asdict(config)}
    if experiment.needs_model:
        result["options"] = {k: v for k, v in asdict(options).items() if k not in _NOT_IN_IDENTITY}
        result["files"] = _local_files(options, config)
    return result


def execute(
    experiment: Experiment,
    options: configs.ViTOptions,
    config: Any,
    out: str | Path,
    session: Callable[[], Any] | None = None,
    force: bool = False,
    report: Callable[[str], None] = print,
) -> tuple[Path, Any]:
    """Run one experiment unless an identical run is complete (then ``(dir, None)``). ``session`` is a
    zero-argument loader of the shared ``Session``, called only when the run needs it."""
    check_writable(out)
    directory = run_dir(experiment, options, config, out)
    ident = identity(experiment, options, config)
    if is_complete(directory) and not force:
        manifest = read_manifest(directory)
        if manifest.get("identity") == ident:
            return directory, None
        report(f"[rerun] {directory}: its recorded configuration differs")
    try:
        writer = RunWriter(directory, out, ident)
    except OSError as err:
        raise write_error(err, Path(out)) from None
    try:
        started = time.time()
        if experiment.needs_model:
            current = session() if session is not None else _open_session(options)
            fn = experiment.fn()
            kwargs = {"pieces": writer} if "pieces" in inspect.signature(fn).parameters else {}
            result = fn(current, config, **kwargs)
            extra = {
                "model": current.model_info(),
                "images": current.images.describe(),
                "preprocessing": current.vit.preprocessing.describe(),
                "criterion": asdict(options.criterion),
                "head": options.head,
            }
        else:
            result = experiment.fn()(config)
            extra = {}
        for name, table in result.tables.items():
            writer.table(name, table)
        for name, fig in result.figures.items():
            writer.figure(name, fig)
        for name, write in result.files.items():
            write(writer.partial / name)
            writer.files.append(name)
        writer.text("summary.txt", "\n".join(result.lines) + "\n")
        writer.commit(
            {
                "experiment": experiment.name,
                "options": asdict(options),
                "config": asdict(config),
                **extra,
                "block_convention": configs.BLOCK_CONVENTION,
                "token_convention": configs.TOKEN_CONVENTION,
                "seconds": round(time.time() - started, 2),
                "summary": result.summary,
            }
        )
    except BaseException as err:
        writer.discard(keep_pieces=isinstance(err, KeyboardInterrupt))  # a kill -9 keeps them too
        if isinstance(err, OSError) and err.errno in WRITE_ERRNOS:
            raise write_error(err, Path(out)) from None
        raise
    return directory, result


def _open_session(options: configs.ViTOptions):
    from .session import Session

    return Session.open(options)


def get_experiment(name: str) -> Experiment:
    key = name.replace("-", "_")
    if key not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}: expected one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[key]
