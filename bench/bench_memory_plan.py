"""Benchmark: the memory planner's predicted peaks against measured ones, on the CPU.

Run from the repository root::

    .venv/bin/python bench/bench_memory_plan.py                        # random:llama-1b (4.1 GiB in float32)
    .venv/bin/python bench/bench_memory_plan.py --model random:llama-tiny --n-seqs 4 --seq-len 64

The model is saved once as safetensors in a scratch directory. Each placement then runs in a fresh ``spawn``
subprocess (glibc told to return freed memory to the system, so RSS follows live bytes): after a warm-up pass
(imports, lazy initialisation) and a trim, the peak-RSS mark is reset (``/proc/self/clear_refs``), the layer-wise statistics pass runs, and the
peak RSS growth is compared with ``MemoryPlan.peak``:

  whole:    every weight read into the process' own memory (as a copy to a device would be; ``from_pretrained``
            maps the files, whose pages count only where touched), and the pass run as forward hooks on the
            decoder layers of HF's own forward, on the same windows;
  streamed: ``streamed_layer_stats`` over the same windows.

Target: each measured peak within 10% of the prediction (the process' own memory before the reset is left out of
both, and so is the planner's 16 MiB allowance for a process' first forward, which the warm-up pass has spent).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path

MIB = 2**20
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root holds tests/
from tests.support.hf_reference import hf_layer_stats  # noqa: E402


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:llama-1b", help="a registered model to save and plan for")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--n-seqs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--placements", default="streamed,whole", help="comma-separated: streamed, whole")
    return p.parse_args(argv)


def _worker(placement: str, directory: str, args: argparse.Namespace, queue) -> None:
    try:
        import ctypes
        import gc

        import torch

        from mech_interp.models.placement.peak_memory import PeakMemory
        from mech_interp.models.placement.streamed_pass import streamed_layer_stats

        torch.set_num_threads(1)
        windows = torch.randint(0, 256, (args.n_seqs, args.seq_len), generator=torch.Generator().manual_seed(0))

        def run() -> None:
            if placement == "streamed":
                streamed_layer_stats(Path(directory), windows, batch_size=args.batch_size, progress=False)
                return
            from transformers import AutoConfig, AutoModelForCausalLM

            from mech_interp.models.placement.safetensors_weights import SafetensorsWeights

            config = AutoConfig.from_pretrained(directory)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
            # every weight read into the process' own memory, as a copy to a device would be (from_pretrained maps
            # the file, whose pages count only once touched, and twice once copied)
            weights = SafetensorsWeights(Path(directory))
            weights.load(model.get_decoder(), "model.", torch.float32)
            if getattr(config, "tie_word_embeddings", False):
                model.lm_head.weight = model.get_decoder().embed_tokens.weight
            else:
                weights.load(model.lm_head, "lm_head.", torch.float32)
            model.get_decoder().rotary_emb = type(model.get_decoder().rotary_emb)(config=config)
            hf_layer_stats(model, windows, args.batch_size)

        run()  # warm-up: imports, lazy initialisation, allocator caches
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with PeakMemory() as peak:
            run()
        queue.put((placement, peak.added, None if peak.added is not None else "VmHWM cannot be reset here"))
    except BaseException as err:  # report, never hang the parent
        queue.put((placement, None, f"{type(err).__name__}: {err}"))


def main(argv=None) -> int:
    args = _args(argv)
    import mech_interp as mi
    from mech_interp.models.placement.memory_plan import RUNTIME_BYTES, MemoryPlan
    from mech_interp.models.placement.memory_units import format_bytes
    from mech_interp.models.placement.model_shape import model_shape
    from mech_interp.models.spec import ModelSpec

    plan = MemoryPlan(model_shape(ModelSpec.parse(args.model)), "float32", args.seq_len, args.batch_size, args.n_seqs)
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-memory-plan-") as scratch:
        print(f"saving {args.model} as safetensors ...", flush=True)
        mi.load_hf(args.model).model.save_pretrained(scratch)
        os.environ.update({"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"})
        print(f"### {args.model}, float32, {args.n_seqs} x {args.seq_len} tokens, batch {args.batch_size}, CPU\n")
        print("| placement | predicted peak | measured peak | measured / predicted |")
        print("|---|---:|---:|---:|")
        for placement in args.placements.split(","):
            queue = mp.get_context("spawn").Queue()
            proc = mp.get_context("spawn").Process(target=_worker, args=(placement, scratch, args, queue))
            proc.start()
            _, measured, error = queue.get()
            proc.join()
            if error:
                print(f"| {placement} | failed: {error} | | |")
                failed = True
                continue
            predicted = plan.peak(placement) - RUNTIME_BYTES  # the warm-up pass took the first-forward costs out
            ratio = measured / predicted
            failed |= not 0.9 <= ratio <= 1.1
            print(f"| {placement} | {format_bytes(predicted)} | {format_bytes(measured)} | {ratio:.2f} |", flush=True)
    print("\nmeasured peak = peak RSS growth (VmHWM after clear_refs) during the pass, after the imports; "
          "target: within 10% of the prediction")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
