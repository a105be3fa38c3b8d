"""What one run asks a scheduler for (CPUs, GPUs, memory), known before any weights load.

A run on ``cuda``/``cuda:N`` needs one GPU (on a Ray worker it runs on the GPU Ray assigned, its
``cuda:0``); every other device none (``auto`` then means the CPU on a Ray worker: a task uses a GPU
only when it reserved one, here or in the batch file). Memory is a
reservation, not a limit: three copies of the weights in the run's dtype (the Hugging Face model,
the TransformerLens model built from it, transient conversion buffers) plus 1 GiB for activations,
tokenizer and interpreter. The weights' size comes from the study (``Study.weight_bytes``: a
registry's parameter count, or the size of a local model's weight files); a hub model's is unknown
until it loads, so it reserves only the 1 GiB unless a config says more. A batch file's
``[ray.resources]`` table overrides any of the three per model (or ``"*"``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..validation.errors import UsageError
from .study import ResolvedRun

GIB = 1 << 30
BASE_MEMORY = GIB
WEIGHT_COPIES = 3
FIELDS = {"num_cpus": "CPUs", "num_gpus": "GPUs", "memory_gb": "GiB of memory"}
RAY_STEP = 1e-4  # Ray refuses fractions of a CPU or GPU finer than this


@dataclass(frozen=True)
class RunResources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int = BASE_MEMORY  # bytes

    def ray_options(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "memory": self.memory}

    def describe(self) -> str:
        return f"{self.num_cpus:g} CPU, {self.num_gpus:g} GPU, {self.memory / GIB:.1f} GiB"


def estimate(run: ResolvedRun) -> RunResources:
    weights = run.study.weight_bytes(run)
    gpus = 1.0 if run.options.device.startswith("cuda") else 0.0
    return RunResources(num_gpus=gpus, memory=BASE_MEMORY + WEIGHT_COPIES * (weights or 0))


def parse_overrides(table: Any, models: set[str], where: str) -> dict[str, dict[str, float]]:
    """``[ray.resources]``: ``{model or "*": {num_cpus, num_gpus, memory_gb}}``, checked."""
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table of models, each {{num_cpus, num_gpus, memory_gb}}")
    out = {}
    for model, values in table.items():
        if model != "*" and model not in models:
            raise UsageError(f"{where}: {model!r} is not a model of any run (models: {', '.join(sorted(models))}, or \"*\")")
        if not isinstance(values, dict) or not values:
            raise UsageError(f"{where}.{model!r} must be a table with some of {', '.join(FIELDS)}")
        for key, value in values.items():
            if key not in FIELDS:
                raise UsageError(f"{where}.{model!r}: unknown key {key!r} (accepted: {', '.join(FIELDS)})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e6:
                raise UsageError(f"{where}.{model!r}.{key} = {value!r}: expected a number >= 0 ({FIELDS[key]})")
            if key != "memory_gb" and 0 < value < RAY_STEP:
                raise UsageError(f"{where}.{model!r}.{key} = {value!r}: Ray counts {FIELDS[key]} in steps of {RAY_STEP}")
        out[model] = {k: float(v) for k, v in values.items()}
    return out


def resources_for(run: ResolvedRun, overrides: dict[str, dict[str, float]]) -> RunResources:
    needs = estimate(run)
    for key in ("*", run.options.model):
        values = overrides.get(key, {})
        if "num_cpus" in values:
            needs = replace(needs, num_cpus=values["num_cpus"])
        if "num_gpus" in values:
            needs = replace(needs, num_gpus=values["num_gpus"])
        if "memory_gb" in values:
            needs = replace(needs, memory=int(values["memory_gb"] * GIB))
    return needs
