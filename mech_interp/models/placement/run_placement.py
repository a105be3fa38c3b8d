"""Which placement a language-model run takes, decided before any weight is read, and the line it prints.

``--placement whole`` loads every weight onto the device; ``streamed`` holds one block's weights at a time
(``streamed_pass``; the experiments that declare it, on the families and files it reads); ``spilled`` streams with
the residual streams on disk between blocks (the layer-wise pass); ``auto`` (the default) takes the first of them
whose planned peak fits the budget and that the experiment runs. The
budget is ``--max-memory``, else the device's free memory (``MemAvailable`` on the CPU, ``cudaMemGetInfo`` on a
GPU). A model whose weights (estimated from the registry or the files' sizes) take under a quarter of the budget is
placed whole without building the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...validation.errors import UsageError
from .memory_plan import PLACEMENTS, RUNTIME_BYTES
from .memory_units import format_bytes, parse_bytes

PLACEMENT_CHOICES = ("auto", "whole", "streamed", "spilled")
STREAMED = ("streamed", "spilled")  # one block's weights at a time; spilled: the residual streams on disk


@dataclass(frozen=True)
class Placement:
    name: str  # "whole" | "streamed"
    line: str  # what the run prints before loading
    plan: Any = None  # the MemoryPlan, when it was needed
    budget: int | None = None  # bytes the run may use, when known
    budget_source: str = ""  # "--max-memory 2GiB" | "available on cpu"

    def record(self) -> dict[str, Any]:
        """The manifest's account of the choice."""
        return {"placement": self.name, "budget_bytes": self.budget, "budget_source": self.budget_source,
                **({"predicted_peak_bytes": self.plan.peak(self.name)} if self.plan is not None else {})}


def check_placement_name(placement: str) -> None:
    if placement not in PLACEMENT_CHOICES:
        raise UsageError(f"--placement {placement!r} is not a placement: expected one of {', '.join(PLACEMENT_CHOICES)}")


def available_bytes(device: str) -> tuple[int | None, str]:
    """Free memory of the device a run would use, and where that figure comes from."""
    from ..loading import resolve_device

    torch_device = resolve_device(device)
    if torch_device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(torch_device)
        return free, f"free on {torch_device}"
    if torch_device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available on the cpu (MemAvailable)"
        except OSError:
            pass
    return None, ""


def choose_placement(run) -> Placement:
    """The placement of ``run`` (a resolved language-model run), or a one-line refusal: a placement the experiment,
    the model's family or its files do not allow, or one that does not fit ``--max-memory``."""
    o = run.options
    explicit = o.max_memory is not None
    budget, source = (parse_bytes(o.max_memory), f"--max-memory {o.max_memory}") if explicit else \
        available_bytes(o.device)
    if o.placement in STREAMED:
        _check_streamable(run, o.placement)
    if o.device_map is not None:  # split over devices, whole; the planner's one-device peaks do not apply
        from .device_map import parse_device_map

        if o.placement in STREAMED:
            raise UsageError(f"--device-map {o.device_map} splits a whole model; a {o.placement} run holds one block "
                             "at a time on --device: drop one of them")

        devices = ", ".join(parse_device_map(o.device_map).devices)
        return Placement("whole", f"[placement] whole, split by --device-map {o.device_map} over {devices}", None,
                         budget, source)
    if o.placement == "whole" and not explicit:
        return Placement("whole", "[placement] whole: every weight on the device (--placement whole)", None,
                         budget, source)
    weights = run.study.weight_bytes(run)
    # weight_bytes is estimated from file sizes (a half-precision file run in float32 is twice its size): a margin
    if o.placement == "auto" and budget is not None and weights is not None and \
            RUNTIME_BYTES + 4 * weights <= budget:
        return Placement("whole", f"[placement] whole: weights ~{format_bytes(weights)}, {format_bytes(budget)} "
                                  f"{source}", None, budget, source)
    if run.model.spec.kind in ("hub", "checkpoint") and o.placement not in STREAMED:
        # no HF config to plan from before loading (a hub name offline, a checkpoint's own format)
        return Placement("whole", f"[placement] whole: {run.model.spec.kind} models are not planned before loading",
                         None, budget, source)
    plan = memory_plan(run)
    if o.placement != "auto" or budget is None:
        name = o.placement if o.placement != "auto" else "whole"
        if budget is not None and plan.peak(name) > budget:
            lighter = [p for p in PLACEMENTS[PLACEMENTS.index(name) + 1:] if plan.peak(p) <= budget]
            if not lighter:
                raise plan.too_small(budget)
            hint = f", or --placement {lighter[0]}" if not _streamable(run, lighter[0], refuse=False) else ""
            raise UsageError(f"{run.options.model} needs {format_bytes(plan.peak(name))} {name} (planned for "
                             f"{plan.n_windows} windows of {plan.seq_len} tokens, {o.dtype}), more than "
                             f"{source}: allow more memory, run fewer or shorter windows{hint}")
        return Placement(name, _line(name, plan, budget, source), plan, budget, source)
    fitting = [name for name in PLACEMENTS if plan.peak(name) <= budget]
    if not fitting:
        raise plan.too_small(budget)
    if fitting[0] == "whole":
        return Placement("whole", _line("whole", plan, budget, source), plan, budget, source)
    whys = [_streamable(run, name, refuse=False) for name in fitting]
    for name, why in zip(fitting, whys):
        if not why:
            return Placement(name, _line(name, plan, budget, source), plan, budget, source)
    raise UsageError(f"{run.options.model} needs {format_bytes(plan.peak('whole'))} whole, more than "
                     f"{format_bytes(budget)} {source}, and cannot be {fitting[0]} ({whys[0]}): allow more memory, "
                     "or force it with --placement whole")


def memory_plan(run):
    from ..spec import ModelSpec
    from .memory_plan import MemoryPlan
    from .model_shape import model_shape

    spec: ModelSpec = run.model.spec
    c = run.config
    return MemoryPlan(model_shape(spec), run.options.dtype, getattr(c, "seq_len", None) or 512,
                      getattr(c, "batch_size", None) or 1, _windows_in_flight(c), with_head=hasattr(c, "resets"),
                      with_pattern="pattern" in run.experiment.sites)


def _windows_in_flight(config) -> int:
    """The windows whose residual streams a streamed pass holds at once: the layer-wise sequences; or the
    intervention's means pass, then each dataset's windows once per condition (``--n-windows 0``, every window of a
    text, is counted as the means pass: its length is known only once the text is read); a config's own count
    (``streamed_windows``: the head ablation's clean windows and their copies); else one prompt."""
    if hasattr(config, "streamed_windows"):
        return config.streamed_windows
    if hasattr(config, "n_seqs"):
        return config.n_seqs
    if hasattr(config, "n_mean_seqs"):
        return max(config.n_mean_seqs, (config.n_windows or 0) * (1 + len(config.resets)))
    return 1


def _line(name: str, plan, budget: int | None, source: str) -> str:
    fits = f" of {format_bytes(budget)} {source}" if budget is not None else ""
    others = "; ".join(f"{other} {format_bytes(plan.peak(other))}" for other in PLACEMENTS if other != name)
    return (f"[placement] {name}: planned peak {format_bytes(plan.peak(name))}{fits} (weights "
            f"{format_bytes(plan.weight_bytes)}; {others}; mech-interp plan explains)")


def _streamable(run, placement: str, refuse: bool = True) -> str:
    """Why ``run`` cannot take ``placement`` ("" when it can); raised as a refusal with ``refuse``."""
    try:
        _check_streamable(run, placement)
    except UsageError as err:
        if refuse:
            raise
        return str(err).split(": ", 1)[0]
    return ""


def _check_streamable(run, placement: str) -> None:
    from .weight_source import STREAMABLE, WeightSource

    experiment, spec = run.experiment, run.model.spec
    if placement not in experiment.placements:
        takers = [e.name for e in run.study.experiments.values() if placement in e.placements]
        raise UsageError(f"experiment {experiment.name!r} does not run {placement}: --placement {placement} is for "
                         f"{', '.join(takers) or 'no experiment of this study'}")
    family = spec.metadata().family
    if family is not None and family not in STREAMABLE:
        raise UsageError(f"{family} cannot be streamed yet ({run.options.model!r}): expected one of "
                         f"{', '.join(sorted(STREAMABLE))}, or --placement whole")
    hooks = getattr(run.config, "hooks", None) or []
    other = [h for h in hooks if not _is_resid_post(h)]
    if other:
        raise UsageError(f"hook point {other[0]!r} is not recorded by a streamed pass: it records "
                         "blocks.L.hook_resid_post; drop --hooks, or use --placement whole")
    WeightSource.of(spec)


def _is_resid_post(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 3 and parts[0] == "blocks" and parts[1].isdigit() and parts[2] == "hook_resid_post"
