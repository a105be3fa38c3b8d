"""Benchmark: the single-head sweep, fast (restart from the cached residual, ablations stacked along the
batch) versus the naive loop (one full forward per head), on the same model and tokens, in one process.

Run from the repository root::

    .venv/bin/python bench/bench_head_sweep.py                          # smollm2-135m, the feature view's prompt
    .venv/bin/python bench/bench_head_sweep.py --n-seqs 2 --seq-len 64  # windows of the built-in text instead
    .venv/bin/python bench/bench_head_sweep.py --model random:llama-tiny --min-abs 0 --min-ratio 5 --repeats 3
    python bench/bench_head_sweep.py --device cuda --n-seqs 8 --seq-len 256

Both sweeps compute, for every head of every block, the values of the clean run's massive entries at
the measured block (default: the first with massive activations), the top-1 |a| there, and the summed
next-token NLL of every sequence (for perplexity). The script checks that the two give the same
numbers (max absolute and relative differences printed) and reports the wall time of each (fastest
of ``--repeats``, methods interleaved, the device synchronised before the clock is read) and their
ratio. Target: the fast sweep at least 3x faster than the naive loop. The ratio, taken in one
process, is the number to compare; absolute times depend on the machine's load.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt", default="Summer is warm. Winter is cold.")
    parser.add_argument("--n-seqs", type=int, default=0, help="windows of the built-in text instead of the prompt (0: prompt)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--layer", type=int, default=None, help="measured block (default: first with massive activations)")
    parser.add_argument("--how", default="zero", choices=("zero", "mean"))
    parser.add_argument("--heads-per-forward", type=int, default=0, help="0: every head of a block in one forward")
    parser.add_argument("--min-abs", type=float, default=100.0, help="massive criterion (random-init models: 0)")
    parser.add_argument("--min-ratio", type=float, default=1000.0, help="massive criterion (random-init models: 5)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import mech_interp as mi
    from mech_interp.core.criterion import MassiveCriterion
    from mech_interp.data.texts import load_text
    from mech_interp.data.tokens import encode, windows
    from mech_interp.interventions.heads import HeadMeans
    from mech_interp.models.spec import ModelSpec
    from mech_interp.studies.heads.inputs import first_massive
    from mech_interp.studies.heads.reduced_forward import probe
    from mech_interp.studies.heads.sweep import fast_sweep, naive_sweep

    model = mi.load_model(args.model, device=args.device, fast_paths=True)
    layout = ModelSpec.parse(args.model).metadata().layout  # a trainer checkpoint's prefix positions and key slots
    text = load_text("builtin").text
    if args.n_seqs:
        tokens = windows(model.tokenizer, text, args.seq_len, args.n_seqs)
        what = f"{tokens.shape[0]} windows x {tokens.shape[1]} tokens of the built-in text"
    else:
        tokens = encode(model.tokenizer, args.prompt)[None]
        what = f"the prompt {args.prompt!r} ({tokens.shape[1]} tokens)"
    criterion = MassiveCriterion(args.min_abs, args.min_ratio)
    layer = args.layer
    if layer is None:
        clean = probe(model, tokens, list(range(model.cfg.n_layers)), criterion, logits=False)
        layer = first_massive(clean, tokens.shape[0], model.cfg.model_name, criterion)
    means = None
    if args.how == "mean":
        reference = windows(model.tokenizer, text, max(args.seq_len, tokens.shape[1]), 4)
        means = HeadMeans.measure_all(model, reference.split(2), range(model.cfg.n_layers))

    def sync() -> None:
        if torch.device(model.cfg.device).type == "cuda":
            torch.cuda.synchronize()

    runs = {"naive": lambda: naive_sweep(model, tokens, layer, criterion, args.how, means),
            "fast": lambda: fast_sweep(model, tokens, layer, criterion, args.how, means, args.heads_per_forward,
                                       layout=layout)}
    best = {name: float("inf") for name in runs}
    results = {}
    fast_sweep(model, tokens, layer, criterion, args.how, means, args.heads_per_forward, layout=layout)  # warm-up
    for _ in range(args.repeats):
        for name, run in runs.items():
            sync()
            start = time.perf_counter()
            results[name] = run()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
    naive, fast = results["naive"], results["fast"]
    assert torch.equal(naive.entries, fast.entries) and naive.heads == fast.heads
    n = len(naive.heads)
    print(f"model {args.model} ({model.cfg.n_layers} blocks x {model.cfg.n_heads} heads = {n} single-head ablations, "
          f"{args.how}), {what}, measured block {layer}, {len(naive.entries)} massive entries")
    print(f"device {args.device}, {args.threads} torch thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}")
    for name in ("values", "top1", "nll"):
        a, b = getattr(naive, name), getattr(fast, name)
        diff = (a - b).abs()
        rel = (diff / a.abs().clamp(min=1e-12)).max().item() if diff.numel() else 0.0
        print(f"  same numbers: {name:<6} max |naive - fast| {diff.max().item() if diff.numel() else 0.0:.3g} "
              f"(max relative {rel:.3g})")
    print(f"  naive loop (one full forward per head): {best['naive']:8.2f} s")
    print(f"  fast sweep (restart at block l, {args.heads_per_forward or model.cfg.n_heads} heads per forward): "
          f"{best['fast']:8.2f} s")
    print(f"  speed-up: {best['naive'] / best['fast']:.2f}x (target >= 3x)")


if __name__ == "__main__":
    main()
