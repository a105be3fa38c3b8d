#!/usr/bin/env python3
"""Print the docs' memory table (docs/running/memory.md): for the paper's models and the embedded ones, parameters, weights and the
planner's peak per placement of a layer-wise statistics pass, and what fits a GPU of 24, 80 and 141 GB. Computed
by the planner (``mech_interp.models.placement``) from the models' published config.json shape fields, committed in
tests/data/model_configs/ (no weights); tests/test_memory_plan.py checks that docs/running/memory.md holds what this prints.

    python scripts/memory_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from mech_interp.models.placement.memory_plan import MemoryPlan
from mech_interp.models.placement.memory_units import format_bytes
from mech_interp.models.placement.model_shape import shape_from_config

CONFIGS = Path(__file__).resolve().parent.parent / "tests" / "data" / "model_configs"
ORDER = ["gpt2", "smollm2-135m", "tinyllama-1.1b", "phi-2", "falcon-7b", "mpt-7b", "llama-2-7b", "llama-2-13b",
         "mixtral-8x7b", "llama-2-70b"]
# Cards as sold (RTX 3090/4090, A100/H100 80GB, H200), less ~1 GiB for the CUDA context and kernels.
GPUS = {"24 GB": 24 * 2**30, "80 GB": 80 * 2**30, "141 GB": 141 * 10**9}
CONTEXT = 2**30
DTYPE, SEQ_LEN, BATCH, N_SEQS = "bfloat16", 512, 1, 10  # the layer-wise study's defaults, in bf16 as on a GPU


def config(name: str):
    from transformers import AutoConfig

    fields = {k: v for k, v in json.loads((CONFIGS / f"{name}.json").read_text()).items() if not k.startswith("_")}
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def fits(plan: MemoryPlan, budget: int) -> str:
    for placement in ("whole", "streamed"):
        if plan.peak(placement) <= budget:
            return placement
    return "no"


def main() -> None:
    print(f"| model | parameters | weights ({DTYPE}) | largest block | peak, whole | peak, streamed | "
          + " | ".join(GPUS) + " |")
    print("|---|---:|---:|---:|---:|---:|" + "---|" * len(GPUS))
    for name in ORDER:
        shape = shape_from_config(config(name), name)
        plan = MemoryPlan(shape, DTYPE, SEQ_LEN, BATCH, N_SEQS)
        print(f"| {name} | {shape.n_params / 1e9:.2f} B | {format_bytes(plan.weight_bytes)} | "
              f"{format_bytes(max(plan.block_bytes))} | {format_bytes(plan.peak('whole'))} | "
              f"{format_bytes(plan.peak('streamed'))} | "
              + " | ".join(fits(plan, size - CONTEXT) for size in GPUS.values()) + " |")


if __name__ == "__main__":
    main()
