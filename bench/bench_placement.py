"""Benchmark: a streamed layer-wise pass on a device told it may hold less than the model, and a device-map split.

Run from the repository root (``bench/gpu_check.sh`` runs it on a GPU machine)::

    .venv/bin/python bench/bench_placement.py --device cuda      # random:llama-1b in bfloat16 (2.05 GiB of weights)
    .venv/bin/python bench/bench_placement.py --device cpu --model random:llama-tiny --seq-len 64

1. **Streamed under a cap.** The model is saved as safetensors; the device is capped well below its weights (on a
   GPU: ``torch.cuda.set_per_process_memory_fraction``, so an allocation past the cap fails; on the CPU the cap is
   only the planner's budget); ``streamed_layer_stats`` runs on the device, and its peak (``max_memory_allocated`` on
   a GPU, the growth of ``VmHWM`` on the CPU) is compared with the planner's streamed peak (on a GPU less the 16 MiB
   the planner keeps for the host process' first forward). Its tables are compared with a whole-model HF forward's on the
   same device, without the cap.
2. **Device map.** ``mech-interp layerwise --device-map balanced`` against the same run without a map (on one GPU, or
   on the CPU, the map is one device; on several it splits the blocks).

Targets: the streamed peak within 10% of the plan; tables within 1e-3 relative (bfloat16 kernels may differ between
the fused whole-model forward and the block-by-block one); exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository root holds tests/
from tests.support.hf_reference import hf_layer_stats  # noqa: E402


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:llama-1b", help="a registered model to save and stream")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--n-seqs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    return p.parse_args(argv)


def _whole(directory: Path, windows, batch_size: int, dtype, device):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to(device).eval()
    return hf_layer_stats(model, windows, batch_size)


def _close(a, b, what: str) -> bool:
    import numpy as np

    got, want = a.summary.select_dtypes("number").to_numpy(), b.summary.select_dtypes("number").to_numpy()
    worst = float(np.nanmax(np.abs(got - want) / (np.abs(want) + 1e-6)))
    print(f"{what}: tables within {worst:.2e} relative of the whole model's")
    return worst <= 1e-3


def main(argv=None) -> int:
    args = _args(argv)
    import torch

    import mech_interp as mi
    from mech_interp.models.placement.memory_plan import RUNTIME_BYTES, MemoryPlan
    from mech_interp.models.placement.memory_units import format_bytes
    from mech_interp.models.placement.model_shape import shape_from_config
    from mech_interp.models.placement.peak_memory import PeakMemory
    from mech_interp.models.placement.streamed_pass import streamed_layer_stats

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-placement-") as scratch:
        hf = mi.load_hf(args.model, dtype)
        hf.model.save_pretrained(scratch)
        hf.tokenizer.save_pretrained(scratch)
        plan = MemoryPlan(shape_from_config(hf.model.config, args.model), args.dtype, args.seq_len, args.batch_size,
                          args.n_seqs)
        del hf
        windows = torch.randint(0, 256, (args.n_seqs, args.seq_len), generator=torch.Generator().manual_seed(0))
        # the planner's first-forward allowance is host memory, which a GPU's allocator does not count
        predicted = plan.peak("streamed") - (RUNTIME_BYTES if device.type == "cuda" else 0)
        cap = max(2 * predicted, plan.weight_bytes // 3)  # llama-1b: a third of its weights
        print(f"### {args.model}, {args.dtype}, {args.n_seqs} x {args.seq_len} tokens, batch {args.batch_size}, "
              f"{device}: weights {format_bytes(plan.weight_bytes)}, device capped at {format_bytes(cap)}\n")
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(cap / total, device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            streamed = streamed_layer_stats(Path(scratch), windows, batch_size=args.batch_size, dtype=dtype,
                                            device=device, progress=False)
            measured = torch.cuda.max_memory_allocated(device) - before
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        else:
            memory = PeakMemory()
            streamed = streamed_layer_stats(Path(scratch), windows, batch_size=args.batch_size, dtype=dtype,
                                            device=device, progress=False, memory=memory)
            measured = memory.added
        ratio = measured / predicted
        ok &= 0.9 <= ratio <= 1.1 and measured <= cap
        print("| case | predicted peak | measured peak | measured / predicted |\n|---|---:|---:|---:|")
        print(f"| streamed under a {format_bytes(cap)} cap | {format_bytes(predicted)} | {format_bytes(measured)} | "
              f"{ratio:.2f} |\n")
        ok &= _close(streamed, _whole(Path(scratch), windows, args.batch_size, dtype, device), "streamed")

        runs = {}
        for name, extra in (("balanced", ["--device-map", "balanced"]), ("plain", ["--device", args.device])):
            out = Path(scratch) / f"out-{name}"
            done = subprocess.run([sys.executable, "-m", "mech_interp.cli", "layerwise", "--model", scratch,
                                   "--dtype", args.dtype, "--seq-len", str(args.seq_len), "--n-seqs", "2",
                                   "--placement", "whole", "--out", str(out), *extra],
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f"device map ({name}) failed: {done.stderr.strip().splitlines()[-1:]}")
                return 1
            print(done.stdout.splitlines()[0])
            runs[name] = next(out.rglob("layerwise.parquet"))
        import pandas as pd

        a, b = (pd.read_parquet(runs[n]).select_dtypes("number").to_numpy() for n in ("balanced", "plain"))
        worst = float(abs(a - b).max() / (abs(b).max() + 1e-6))
        print(f"device map balanced against one device: tables within {worst:.2e} (of the largest value)")
        ok &= worst <= 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
