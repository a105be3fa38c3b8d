"""Training throughput of the TransformerLens variants against a plain PyTorch GPT of the same size and variant.

Same process, same batches, same optimizer (AdamW), same precision; methods interleaved step by step so that load
on a shared machine hits both alike; tokens/s from the fastest of the repeats (wall time of forward + backward +
optimizer step). Before timing, the TransformerLens model's loss is checked equal to the plain model's on the same
weights. The plain GPT's attention-bias slot runs both ways: upstream's boolean mask and the leading-position
causal kernel the TransformerLens class uses.

    .venv/bin/python bench/bench_train.py                        # CPU: the cpu preset's shape, batch 8 x 128
    .venv/bin/python bench/bench_train.py --device cuda --preset gpt2-124m --batch-size 16   # one GPU, bf16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import train_gpt2_bias  # noqa: F401  (mech_interp's torchvision shim before transformer_lens loads)
from train_gpt2_bias.model import build_model, config_dict, hooked_config
from train_gpt2_bias.presets import MODEL_PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository root holds tests/
from tests.support.plain_gpt import from_hooked  # noqa: E402


def step_fn(model, optimizer, x, y, autocast):
    def step() -> float:
        with autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # a host sync, as the trainer's log does

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=sorted(MODEL_PRESETS))
    parser.add_argument("--variants", default="default,attn_bias,sink,gated")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method (after 2 warm-up steps)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--vocab", type=int, default=50257)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bf16 = device.type == "cuda"

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)

    shape = MODEL_PRESETS[args.preset]
    n_ctx = shape["n_ctx"]
    generator = torch.Generator().manual_seed(0)
    print(f"preset {args.preset} ({shape['n_layers']}L/{shape['n_heads']}H/{shape['d_model']}, vocab {args.vocab}), "
          f"batch {args.batch_size} x {n_ctx}, {device}{' bf16 autocast' if bf16 else ' float32'}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; tokens/s = batch tokens / fastest step")
    print(f"{'variant':<10} {'TL tok/s':>10} {'plain tok/s':>12} {'TL/plain':>9} {'plain(mask) tok/s':>18} {'TL/mask':>8} "
          f"{'logit diff':>10}")
    for variant in args.variants.split(","):
        cfg = hooked_config({**shape, "variant": variant}, args.vocab)
        tl = build_model(config_dict(cfg, variant, False), seed=0).to(device)
        methods = {"tl": tl, "plain": from_hooked(tl, "leading_position")}
        if variant == "attn_bias":
            methods["mask"] = from_hooked(tl, "mask")
        x = torch.randint(args.vocab, (args.batch_size, n_ctx), generator=generator).to(device)
        y = torch.randint(args.vocab, (args.batch_size, n_ctx), generator=generator).to(device)
        with torch.no_grad(), autocast():
            diff = (tl(x).float() - methods["plain"](x).float()).abs().max().item()
        steps = {}
        for name, model in methods.items():
            params = [p for p in model.parameters() if p.requires_grad]
            steps[name] = step_fn(model, torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda"), x, y, autocast)
        best = {name: float("inf") for name in methods}
        for i in range(args.steps + 2):
            for name, step in steps.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 2:
                    best[name] = min(best[name], time.perf_counter() - t0)
        tokens = args.batch_size * n_ctx
        rate = {name: tokens / t for name, t in best.items()}
        mask = f"{rate['mask']:>18,.0f} {rate['tl'] / rate['mask']:>8.2f}" if "mask" in rate else f"{'-':>18} {'-':>8}"
        print(f"{variant:<10} {rate['tl']:>10,.0f} {rate['plain']:>12,.0f} {rate['tl'] / rate['plain']:>9.2f} {mask} "
              f"{diff:>10.1e}", flush=True)


if __name__ == "__main__":
    main()
