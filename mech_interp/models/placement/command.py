"""The ``plan`` subcommand of ``mech-interp``: a model's memory under each placement, read without its weights."""

from __future__ import annotations

import argparse

HELP = "print the memory a layer-wise statistics pass needs, whole and streamed, without loading weights"
DESCRIPTION = """\
Read MODEL's config (registered name, local HF directory, GGUF file or hub name; never the weights), build it on
PyTorch's meta device and count its parameters per block, then print the bytes of the weights (per block and in
all), of one batch's activations, and the peak of each placement of a layer-wise statistics pass: whole (every
weight on the device) and streamed (the residual stream of every window, plus the embeddings or one block at a
time). Then says which placement a layer-wise run would take within --max-memory (or the free memory of
--device), or that none fits (exit 2)."""


def add_plan_parser(sub, defaults) -> argparse.ArgumentParser:
    """``defaults``: the layer-wise study's config, whose window sizes the plan takes unless told otherwise."""
    from ..registry import DEFAULT_MODEL

    parser = sub.add_parser("plan", help=HELP, description=DESCRIPTION)
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model to plan for (default {DEFAULT_MODEL})")
    parser.add_argument("--seq-len", type=int, default=defaults.seq_len, help="tokens per window")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="windows per forward")
    parser.add_argument("--n-seqs", type=int, default=defaults.n_seqs, help="windows in the run")
    parser.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16")
    parser.add_argument("--max-memory", default=None, help="memory the run may use, e.g. 20GiB (default: the free "
                        "memory of --device)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps: whose free memory a run "
                        "without --max-memory may use")
    return parser


def plan_main(ns: argparse.Namespace) -> None:
    from ...validation.device_names import check_device, check_dtype
    from ...validation.errors import UsageError
    from ..spec import ModelSpec
    from .memory_plan import PLACEMENTS, MemoryPlan
    from .memory_units import format_bytes, parse_bytes
    from .model_shape import model_shape
    from .run_placement import available_bytes

    check_dtype(ns.dtype)
    check_device(ns.device)
    for flag, value in (("--seq-len", ns.seq_len), ("--batch-size", ns.batch_size), ("--n-seqs", ns.n_seqs)):
        if value < 1:
            raise UsageError(f"{flag} {value} is not a positive integer: expected 1 or more")
    budget, source = (parse_bytes(ns.max_memory), f"--max-memory {ns.max_memory}") if ns.max_memory is not None \
        else available_bytes(ns.device)  # a device this machine lacks is refused here, before the config is read
    shape = model_shape(ModelSpec.parse(ns.model))
    plan = MemoryPlan(shape, ns.dtype, ns.seq_len, ns.batch_size, ns.n_seqs)
    blocks = plan.block_bytes
    print(f"{shape.name} ({shape.architecture}): {shape.n_params:,} parameters, {shape.n_layers} blocks, "
          f"d_model {shape.d_model}, d_mlp {shape.d_mlp}"
          + (f", {shape.n_experts} experts ({shape.n_experts_per_token} per token)" if shape.n_experts > 1 else ""))
    print(f"weights ({ns.dtype}): {format_bytes(plan.weight_bytes)} in all; a block "
          + (f"{format_bytes(blocks[0])}" if len(set(blocks)) == 1 else
             f"{format_bytes(min(blocks))} to {format_bytes(max(blocks))}")
          + f"; embeddings {format_bytes(plan.embed_bytes)}; final norm and head {format_bytes(plan.head_bytes)}")
    print(f"activations: {format_bytes(plan.activation_bytes)} per batch ({ns.batch_size} x {ns.seq_len} tokens); "
          f"residual stream of all {ns.n_seqs} windows {format_bytes(plan.resident_bytes)}")
    for placement in PLACEMENTS:
        print(f"peak, {placement}: {format_bytes(plan.peak(placement))}")
    print("(plus the process itself: Python, torch and transformers, ~0.5-1 GiB on the CPU)")
    if budget is not None:
        placement = plan.choose(budget)
        print(f"with {format_bytes(budget)} ({source}): a layer-wise run (--placement auto) takes the {placement} "
              "placement" + ("" if placement == "whole" else "; other experiments run whole models only"))
