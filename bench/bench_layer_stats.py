"""Benchmark: streaming per-layer statistics versus a bare forward and versus ``run_with_cache``.

Run from the repository root::

    .venv/bin/python bench/bench_layer_stats.py                  # smollm2-135m, 4 x 512 tokens, 1 thread
    .venv/bin/python bench/bench_layer_stats.py --threads 2 --repeats 5
    .venv/bin/python bench/bench_layer_stats.py --skip-memory    # timings only
    .venv-tl4/bin/python bench/bench_layer_stats.py --engine transformer_bridge   # TransformerLens 4's bridge
    python bench/bench_layer_stats.py --device cuda --batch-size 8 --n-seqs 8
    python bench/bench_layer_stats.py --device cuda --dtype bfloat16 --model random:llama-1b \
        --seq-len 2048 --batch-size 4 --n-seqs 4                # the 1B-class case (TinyLlama shape)

Over the same token windows it compares

  (a) floor: the bare Hugging Face base model, ``hf.model.model(ids, use_cache=False)``, no
      hooks, no lm_head (``use_cache=False`` so that no KV cache is built: the lowest floor);
  (b) ``collect_layer_stats(model, batches)`` over every ``blocks.L.hook_resid_post``, with the
      fused attention path that ``load_model(..., fast_paths=True)`` turns on (the CLI's default),
      on the engine of ``--engine`` (auto: the installed TransformerLens' own);
  (c) ``model.run_with_cache(..., names_filter=resid_post, return_type=None)`` followed by the
      same statistics (top-3 |a|, median |a| per layer and sequence) computed from the cache;
  (d) a bare forward of the engine's model (HookedTransformer or TransformerBridge),
      ``model(tokens, return_type=None)``, to split the engine's own overhead (d/a) from the
      statistics' overhead (b/d);
  (e) (b) with fused attention disabled, to show what the fused path buys.

Time: seconds per sequence; each batch goes through every method in turn, ``--repeats`` times,
and the fastest repeat per (batch, method) is kept (wall time, the device synchronised before the
clock is read; process CPU time is printed too, being less sensitive to other processes on the
machine). Each timed (b)/(e) call covers one batch, so it includes ``collect_layer_stats``'
per-call set-up and ``result()`` (~15 ms).
Memory on the CPU: each method runs in a fresh ``spawn`` subprocess; after one warm-up pass the
peak-RSS mark is reset (``/proc/self/clear_refs``), and the reported number is peak RSS during one
pass over all windows minus the RSS right before it. The children run with a fixed glibc mmap
threshold so that freed tensors go back to the OS and RSS follows live tensor bytes. On a GPU:
``torch.cuda.max_memory_allocated`` during one pass minus the allocation before it, in process.

Targets: the statistics pass (b) within 1.10x of the bare HF forward (a) on the CPU and on a GPU,
the bare TL forward (d) within 1.05x of it on a GPU, and the memory of (b) not growing with
n_layers x tokens x d_model (the size of a full resid cache, printed for scale).
The script also checks that (b) and (c) give identical per-layer top-1 and median |a|.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import multiprocessing as mp
import os
import platform
import resource
import sys
import time

METHODS = {
    "a": "HF base forward, no hooks (floor)",
    "b": "collect_layer_stats (fused attn)",
    "c": "run_with_cache + stats from cache",
    "d": "engine's forward, no hooks",
    "e": "collect_layer_stats (fused attn off)",
}
MIB = 1024 * 1024


def parse_args(argv=None) -> argparse.Namespace:
    from mech_interp.models.engines import ENGINE_CHOICES  # imports neither torch nor TransformerLens

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="registered name (random:llama-1b for a 1B-class model), "
                   "local HF directory or .gguf file")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--n-seqs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward (the experiments' default is 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--methods", default="abcde", help="subset of abcde to run")
    p.add_argument("--engine", default="auto", choices=ENGINE_CHOICES,
                   help="the model engine (auto: 3.x hooked_transformer, 4.x transformer_bridge)")
    p.add_argument("--skip-memory", action="store_true", help="timings only (no subprocesses)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- setup


class Context:
    """Models and token batches that one process needs for a set of methods."""

    def __init__(self, args: argparse.Namespace, methods: str):
        import torch

        torch.set_num_threads(args.threads)
        import mech_interp as mi  # first: makes torchvision importable for transformer_lens
        from mech_interp.data.texts import load_text
        from mech_interp.data.tokens import windows

        self.device = torch.device(args.device)
        dtype = getattr(torch, args.dtype)
        self.hf = mi.load_hf(args.model, dtype)
        self.hf.model.eval().to(self.device)
        self.model = (mi.load_model(args.model, device=args.device, dtype=args.dtype, fast_paths=True,
                                    engine=args.engine)
                      if set(methods) - {"a"} else None)
        if "a" not in methods:
            self.hf = type("TokOnly", (), {"tokenizer": self.hf.tokenizer})()  # drop the HF weights
            gc.collect()
        tokens = windows(self.hf.tokenizer, load_text("builtin").text, args.seq_len, args.n_seqs)
        if tokens.shape[0] < args.n_seqs:  # the same windows again: the timing needs sizes, not new text
            print(f"note: builtin text holds {tokens.shape[0]} windows of {args.seq_len} tokens; repeating them", file=sys.stderr)
            tokens = tokens.repeat(-(-args.n_seqs // tokens.shape[0]), 1)[: args.n_seqs]
        self.tokens = tokens
        self.batches = [b.to(self.device) for b in tokens.split(args.batch_size)]
        self.n_seqs = tokens.shape[0]

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def run_a(ctx: Context, batches):
    import torch

    with torch.inference_mode():
        for ids in batches:
            ctx.hf.model.model(ids, use_cache=False)


def run_b(ctx: Context, batches):
    from mech_interp.metrics.layer_stats import collect_layer_stats

    return collect_layer_stats(ctx.model, batches, progress=False)


def run_c(ctx: Context, batches, k: int = 3):
    """Cache every resid_post, then top-k |a| and median |a| per (layer, sequence); returns the
    per-layer means over sequences, [n_layers, k + 1] (top1..topk, median)."""
    import torch

    from mech_interp.models.hook_names import resid_post

    n_layers = ctx.model.cfg.n_layers
    sums = torch.zeros(n_layers, k + 1, dtype=torch.float64, device=ctx.device)
    count = 0
    with torch.inference_mode():
        for tokens in batches:
            _, cache = ctx.model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"), return_type=None)
            for layer in range(n_layers):
                mag = cache[resid_post(layer)].flatten(1).abs().float()
                row = torch.cat([mag.topk(k, dim=1).values, mag.median(dim=1).values[:, None]], dim=1)
                sums[layer] += row.double().sum(0)
            count += tokens.shape[0]
            del cache
    return (sums / count).cpu()


def run_d(ctx: Context, batches):
    import torch

    with torch.inference_mode():
        for tokens in batches:
            ctx.model(tokens, return_type=None)


def run_e(ctx: Context, batches):
    from mech_interp.models.engines import HOOKED_TRANSFORMER, engine_of

    if engine_of(ctx.model) == HOOKED_TRANSFORMER:
        from mech_interp.models.fused_attention import disable_fused_attention as disable
        from mech_interp.models.fused_attention import enable_fused_attention as enable
    else:
        from mech_interp.models.bridge_attention import disable_bridge_fast_path as disable
        from mech_interp.models.bridge_attention import enable_bridge_fast_path as enable
    disable(ctx.model)
    try:
        return run_b(ctx, batches)
    finally:
        enable(ctx.model)


RUNNERS = {"a": run_a, "b": run_b, "c": run_c, "d": run_d, "e": run_e}


# --------------------------------------------------------------------------- memory (subprocess)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _memory_worker(method: str, args: argparse.Namespace, queue) -> None:
    try:
        ctx = Context(args, method)
        run = RUNNERS[method]
        run(ctx, ctx.batches)  # warm-up: lazy initialisation, first-touch of weights, allocator caches
        _trim()
        before = _rss_bytes()
        reset = _reset_peak_rss()
        run(ctx, ctx.batches)
        if reset and _status_kib("VmHWM") is not None:
            peak, how = _status_kib("VmHWM") * 1024, "VmHWM after clear_refs"
        else:  # ru_maxrss then still holds the loading peak: an upper bound at best
            peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
        queue.put((method, peak - before, before, how, None))
    except BaseException as err:  # report, never hang the parent
        queue.put((method, None, None, None, f"{type(err).__name__}: {err}"))


def measure_memory(args: argparse.Namespace, methods: str) -> dict[str, tuple[int, int, str]]:
    env_keys = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072", "OMP_NUM_THREADS": str(args.threads)}
    saved = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)  # read by the children at start-up only
    spawn = mp.get_context("spawn")
    out = {}
    try:
        for method in methods:
            queue = spawn.Queue()
            proc = spawn.Process(target=_memory_worker, args=(method, args, queue))
            proc.start()
            name, growth, before, how, error = queue.get()
            proc.join()
            if error:
                raise RuntimeError(f"memory run of ({method}) failed: {error}")
            out[name] = (growth, before, how)
            print(f"  memory ({method}) {METHODS[method]:<38} peak growth {growth / MIB:8.1f} MiB "
                  f"(RSS before {before / MIB:.0f} MiB, {how})", flush=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


def measure_device_memory(ctx: Context, methods: str) -> dict[str, tuple[int, int, str]]:
    """Peak CUDA allocation during one pass over all batches, minus the allocation before it."""
    import torch

    out = {}
    for method in methods:
        gc.collect()
        torch.cuda.empty_cache()
        ctx.sync()
        before = torch.cuda.memory_allocated(ctx.device)
        torch.cuda.reset_peak_memory_stats(ctx.device)
        RUNNERS[method](ctx, ctx.batches)
        ctx.sync()
        growth = torch.cuda.max_memory_allocated(ctx.device) - before
        out[method] = (growth, before, "torch.cuda.max_memory_allocated")
        print(f"  memory ({method}) {METHODS[method]:<38} peak growth {growth / MIB:8.1f} MiB "
              f"(allocated before {before / MIB:.0f} MiB)", flush=True)
    return out


# --------------------------------------------------------------------------- main


def machine_info(args) -> list[str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    gpu = []
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(args.device))
        gpu = [f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB; CUDA {torch.version.cuda}"]
    return gpu + [
        f"CPU: {cpu}; os.cpu_count()={os.cpu_count()}, usable cores={affinity}, load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"torch {torch.__version__}, torch threads={torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
        f"python {platform.python_version()}",
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    methods = "".join(m for m in "abcde" if m in args.methods)
    import torch

    print(f"loading {args.model} ...", flush=True)
    t0 = time.perf_counter()
    ctx = Context(args, methods)
    print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    cfg = ctx.model.cfg if ctx.model is not None else ctx.hf.model.config
    n_layers = getattr(cfg, "n_layers", None) or cfg.num_hidden_layers
    d_model = getattr(cfg, "d_model", None) or cfg.hidden_size
    n_tokens = ctx.tokens.numel()
    per_forward = n_layers * min(args.batch_size, ctx.n_seqs) * args.seq_len * d_model * 4
    everything = n_layers * n_tokens * d_model * 4
    info = machine_info(args)
    print(*info, sep="\n")
    engine = ""
    if ctx.model is not None:
        from mech_interp.models.engines import engine_of, engine_record

        record = engine_record(engine_of(ctx.model))
        engine = f"; engine {record['name']} ({record['model_class']}, TransformerLens {record['transformer_lens']})"
    print(f"model {args.model}: n_layers={n_layers}, d_model={d_model}; tokens {tuple(ctx.tokens.shape)}, "
          f"batch size {args.batch_size} ({len(ctx.batches)} forwards per pass){engine}")

    # ---- time. The warm-up is one full pass per method over all windows (its results feed the
    # correctness check). Then, per repeat, every window goes through every method in turn, so a
    # concurrent load hits the methods alike; per window and method the fastest repeat is kept.
    results: dict[str, object] = {m: RUNNERS[m](ctx, ctx.batches) for m in methods}
    n_b = len(ctx.batches)
    wall = {m: [[float("inf")] * n_b for _ in range(args.repeats)] for m in methods}
    cpu = {m: [[float("inf")] * n_b for _ in range(args.repeats)] for m in methods}
    for r in range(args.repeats):
        for i, batch in enumerate(ctx.batches):
            for m in methods:
                gc.collect()
                ctx.sync()
                w0, c0 = time.perf_counter(), time.process_time()
                RUNNERS[m](ctx, [batch])
                ctx.sync()
                wall[m][r][i], cpu[m][r][i] = time.perf_counter() - w0, time.process_time() - c0
        print(f"repeat {r + 1}/{args.repeats} (wall s/seq): "
              + "  ".join(f"({m}) {sum(wall[m][r]) / ctx.n_seqs:.3f}" for m in methods), flush=True)

    def best_of(t):  # per window: min over repeats; then summed and divided by the sequences
        return {m: sum(min(t[m][r][i] for r in range(args.repeats)) for i in range(n_b)) / ctx.n_seqs for m in methods}

    best, best_cpu = best_of(wall), best_of(cpu)

    # ---- correctness: (b) and (c) must agree on the per-layer statistics
    if "b" in results and "c" in results:
        summary = results["b"].summary.sort_values("layer")
        top1_b = torch.tensor(summary["top1"].to_numpy(), dtype=torch.float64)
        med_b = torch.tensor(summary["median"].to_numpy(), dtype=torch.float64)
        top1_c, med_c = results["c"][:, 0], results["c"][:, -1]
        rel_top = ((top1_b - top1_c).abs() / top1_c.abs().clamp_min(1e-12)).max().item()
        rel_med = ((med_b - med_c).abs() / med_c.abs().clamp_min(1e-12)).max().item()
        # On a HookedTransformer: the same forward and order statistics, so anything but equality is a bug in the
        # streaming path. A bridge's run_with_cache asks HF for the attentions, so (c) takes its explicit attention
        # and (b) the fused kernel: equal to float32 rounding, not bit for bit.
        from mech_interp.models.engines import HOOKED_TRANSFORMER, engine_of

        tolerance = 0.0 if engine_of(ctx.model) == HOOKED_TRANSFORMER else 1e-5
        assert rel_top <= tolerance and rel_med <= tolerance, \
            f"(b) and (c) differ: top-1 |a| by {rel_top:.3g}, median |a| by {rel_med:.3g} (relative)"
        print(f"check: (b) vs (c) per-layer top-1 |a| max rel diff {rel_top:.2e}, median |a| {rel_med:.2e}  OK")
    if "e" in results and "b" in results:
        diff = (results["b"].summary["top1"] - results["e"].summary["top1"]).abs().max()
        print(f"check: fused vs unfused top-1 |a| max abs diff {diff:.3g}")

    # ---- memory
    if args.skip_memory:
        memory = {}
    elif ctx.device.type == "cuda":
        memory = measure_device_memory(ctx, methods)
    else:
        memory = measure_memory(args, methods)

    # ---- report
    floor_t = best.get("a")
    floor_m = memory.get("a", (None,))[0]

    def ratio(x, base):
        return f"{x / base:.2f}" if x is not None and base else "-"

    lines = [
        "| method | s/seq | x floor | peak MB | x floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in methods:
        growth = memory.get(m, (None,))[0]
        mb = f"{growth / MIB:.1f}" if growth is not None else "-"
        lines.append(f"| ({m}) {METHODS[m]} | {best[m]:.3f} | {ratio(best[m], floor_t)} | {mb} | {ratio(growth, floor_m)} |")
    print()
    print(f"### {args.model}, {args.device}, {args.dtype}, {ctx.n_seqs} x {args.seq_len} tokens, batch {args.batch_size}, "
          f"wall time, min of {args.repeats} repeats per window, {torch.get_num_threads()} torch thread(s){engine}")
    print()
    print(*lines, sep="\n")
    print()
    print(f"Full resid cache (n_layers x tokens x d_model x 4 B): {per_forward / MIB:.1f} MiB per forward "
          f"({n_layers} x {min(args.batch_size, ctx.n_seqs) * args.seq_len} x {d_model}), "
          f"{everything / MIB:.1f} MiB for all {n_tokens} tokens.")
    print("CPU time of this process (less sensitive to other processes on the machine; with 1 thread "
          "it should equal wall time on an idle machine): "
          + ", ".join(f"({m}) {best_cpu[m]:.3f} s/seq = {ratio(best_cpu[m], best_cpu.get('a'))}x" for m in methods))
    print("peak MB = " + ("peak CUDA allocation growth (MiB) during one pass over all windows, in process."
                          if ctx.device.type == "cuda" else
                          "peak RSS growth (MiB) during one pass over all windows, fresh subprocess per method, after a warm-up pass."))
    for line in info:
        print(f"{line}  ")
    for label, t in (("wall", best), ("cpu", best_cpu)):
        parts = []
        if {"a", "d"} <= set(methods):
            parts.append(f"TL forward / HF (d/a) {t['d'] / t['a']:.3f}")
        if {"b", "d"} <= set(methods):
            parts.append(f"stats pass / bare TL (b/d) {t['b'] / t['d']:.3f}")
        if {"a", "b"} <= set(methods):
            parts.append(f"stats pass / HF (b/a) {t['b'] / t['a']:.3f} (target <= 1.10)")
        if {"b", "e"} <= set(methods):
            parts.append(f"unfused / fused (e/b) {t['e'] / t['b']:.3f}")
        if {"b", "c"} <= set(methods):
            parts.append(f"run_with_cache / streaming (c/b) {t['c'] / t['b']:.3f}")
        if parts:
            print(f"breakdown ({label}): " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
