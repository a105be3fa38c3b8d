"""The training loop, top to bottom in the manner of nanoGPT's train.py.

One process:        python -m train_gpt2_bias train --preset cpu --variant attn_bias
Several GPUs (DDP): torchrun --standalone --nproc_per_node=8 -m train_gpt2_bias train --preset gpt2-124m ...

Under torchrun every process trains on its own batches (its sampler is seeded with seed + rank), gradients are
averaged by DDP, ``grad_accum`` is divided among the processes (so the tokens per step stay the same), and rank 0
alone evaluates, logs and writes checkpoints. The step after a resume computes the same loss as an uninterrupted
run: model, optimizer, step and every process's sampler RNG are saved and restored (the evaluation batches come
from a generator of their own, seeded afresh for every evaluation).

A run that diverges (a learning rate far too high) ends with a one-line error naming the step and the rate, and the
diverged model is not written out: a training loss that is not finite stops it at once, and before every checkpoint
and the export every weight must be finite, as must the val loss of the step (the last step's update is followed by
no training loss that would show it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mech_interp.validation.errors import UsageError

from .checkpoint import (
    STATE,
    check_out,
    export_model,
    export_series_step,
    load_state,
    restore,
    save_state,
    training_summary,
    trim_series,
)
from .config import TrainConfig
from .data import check_block_size, check_sources, data_dir_for, get_batch, load_tokenizer, prepare_data
from .model import build_model, config_dict, hooked_config

EVAL_SEED_OFFSET = 1_000_003  # evaluation batches: a generator of their own, the same at every evaluation


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warmup over steps 1..warmup_steps (lr / warmup_steps up to lr), cosine decay to min_lr at
    lr_decay_steps, then min_lr: positive and at most lr during the warmup, in [min_lr, lr] after it. A run shorter
    than its warmup ends while warming up; with lr_decay_steps <= warmup_steps the rate is min_lr right after it."""
    if config.warmup_steps and step <= config.warmup_steps:
        return config.lr * (step / config.warmup_steps)  # the fraction first: at most 1, so never above lr
    if step >= config.lr_decay_steps:
        return config.min_lr
    ratio = (step - config.warmup_steps) / max(1, config.lr_decay_steps - config.warmup_steps)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (config.lr - config.min_lr)


def _diverged(what: str, step: int, lr: float, config: TrainConfig) -> UsageError:
    return UsageError(f"training diverged: {what} step {step}, learning rate {lr:.3g} (--lr {config.lr:g}); the "
                      "model was not saved: lower --lr")


def require_finite_weights(model: torch.nn.Module, step: int, lr: float, config: TrainConfig) -> None:
    """Refuse to save a model with a weight that is not finite (the same on every process: DDP keeps them equal)."""
    bad = [name for name, param in model.named_parameters() if not bool(torch.isfinite(param).all())]
    if bad:
        raise _diverged(f"{len(bad)} weight tensor(s) hold values that are not finite (the first: {bad[0]}) after",
                        step, lr, config)


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> tuple[torch.optim.AdamW, dict]:
    """AdamW with weight decay on the trainable parameters of 2 or more dimensions (matrices, embeddings, and,
    unless ``decay_slots`` is off, the attention-bias slots k'/v' [n_heads, d_head] and the sink token
    [1, d_model], as upstream decays them); LayerNorm weights, biases and the gate bias are not decayed."""
    decay, no_decay, names = [], [], {"decayed": [], "not_decayed": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_slot = name.endswith(("k_slot", "v_slot", "W_prefix"))
        if param.dim() >= 2 and (config.decay_slots or not is_slot):
            decay.append(param)
            names["decayed"].append(name)
        else:
            no_decay.append(param)
            names["not_decayed"].append(name)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2),
                                  fused=device.type == "cuda")
    return optimizer, names


def lm_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over every position of the windows (targets = inputs shifted by one)."""
    logits = model(x, return_type="logits")  # [batch, pos, d_vocab]: token positions only (a sink is dropped)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, config: TrainConfig, device: torch.device, autocast) -> float:
    generator = torch.Generator().manual_seed(config.seed + EVAL_SEED_OFFSET)
    model.eval()
    losses = []
    for _ in range(config.eval_batches):
        x, y = get_batch(data, config.batch_size, config.n_ctx, generator)
        with autocast():
            losses.append(lm_loss(model, x.to(device), y.to(device)).item())
    model.train()
    return sum(losses) / len(losses)


def _device(config: TrainConfig, local_rank: int | None) -> torch.device:
    from mech_interp.models.loading import resolve_device

    if local_rank is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    return resolve_device(config.device)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.variant`` into ``config.out``; returns the run's summary (losses, tokens, time)."""
    out = Path(config.out)
    # ---- before any process group, data or model: the output, the sources, the state to resume ----
    check_out(out)
    check_sources(config.corpus)
    state = load_state(out, config.identity()) if config.resume else None
    # ---- processes: one, or one per GPU under torchrun ----
    ddp = "RANK" in os.environ
    if ddp:
        import torch.distributed as dist

        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if config.grad_accum % world:
            raise UsageError(f"--grad-accum {config.grad_accum} is not a multiple of the {world} processes")
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
    else:
        rank, world, local_rank = 0, 1, None
    master = rank == 0
    device = _device(config, local_rank)
    grad_accum = config.grad_accum // world
    use_bf16 = config.precision == "bfloat16" or (config.precision == "auto" and device.type == "cuda")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()

    tokens_per_step = config.batch_size * config.n_ctx * config.grad_accum

    # ---- data: tokenized once (rank 0), memory-mapped by everyone ----
    data_dir = Path(config.data_dir) if config.data_dir else data_dir_for(
        config.corpus, config.tokenizer, config.val_fraction, config.max_corpus_tokens)
    if master:
        data = prepare_data(config.corpus, config.tokenizer, data_dir, config.val_fraction, config.max_corpus_tokens,
                            progress=config.progress)
    if ddp:
        dist.barrier()
        if not master:
            data = prepare_data(config.corpus, config.tokenizer, data_dir, config.val_fraction,
                                config.max_corpus_tokens, progress=False)
    check_block_size(data, config.n_ctx)
    tokenizer = load_tokenizer(config.tokenizer)
    train_data, val_data = data.split("train"), data.split("val")

    # ---- model and optimizer ----
    cfg = hooked_config(config.model_shape, data.meta["request"]["vocab_size"])
    model_config = config_dict(cfg, config.variant, config.bias)
    model = build_model(model_config, seed=config.seed).to(device)
    model.train()
    optimizer, decay_names = make_optimizer(model, config, device)
    batch_rng = torch.Generator().manual_seed(config.seed + 1 + rank)

    # ---- resume ----
    start_step, log, seconds_before = 0, [], 0.0
    if state is not None:
        restore(out, state, model, optimizer, batch_rng, rank, world)
        # a state of the previous version did not record the time: its part, so the total, is unknown (None)
        start_step, log, seconds_before = state["step"], state["log"], state.get("train_seconds")
    elif master and (out / STATE).exists():
        (out / STATE).unlink()  # --no-resume: the old state must not be resumed by a later run
    if start_step >= config.max_steps and (out / "manifest.json").is_file() and (out / "hooked_config.json").is_file():
        if master:
            print(f"{out} is trained ({start_step} steps): nothing to do", flush=True)
        if ddp:
            dist.destroy_process_group()
        return training_summary(out)  # files untouched: analyses stay valid
    if master:
        trim_series(out, start_step)  # the steps after the resumed one are computed (and exported) again
    train_model = torch.compile(model) if config.compile else model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(train_model, device_ids=[local_rank] if device.type == "cuda" else None)

    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if master:
        print(f"train {config.variant} ({config.preset}): {n_params / 1e6:.2f} M trainable parameters, "
              f"{tokens_per_step} tokens per step ({config.batch_size} x {config.n_ctx} x {config.grad_accum}), "
              f"{config.max_steps} steps, {device}{' bf16 autocast' if use_bf16 else ' float32'}, {world} process(es); "
              f"data {data.meta['train_tokens']} train / {data.meta['val_tokens']} val tokens"
              + (f"; resuming after step {start_step}" if start_step else ""), flush=True)

    def save(step: int) -> None:
        rngs = [batch_rng.get_state()]
        if ddp:
            rngs = [None] * world
            dist.all_gather_object(rngs, batch_rng.get_state())
        if master:
            timing = {} if seconds_before is None else {"train_seconds": seconds_before + time.time() - started}
            save_state(out, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                             "batch_rng": rngs, "log": log, "identity": config.identity(),
                             "model_config": model_config, **timing})

    # ---- the loop ----
    from tqdm.auto import tqdm

    bar = tqdm(total=config.max_steps, initial=start_step, desc=f"{config.variant}", unit="step",
               disable=not (master and config.progress))
    started = time.time()
    last = start_step
    for step in range(start_step + 1, config.max_steps + 1):
        t0 = time.time()
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(grad_accum):
            x, y = get_batch(train_data, config.batch_size, config.n_ctx, batch_rng)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if ddp:  # all-reduce the gradients on the last micro-batch only (as nanoGPT; no_sync() does the same)
                train_model.require_backward_grad_sync = micro == grad_accum - 1
            with autocast():
                loss = lm_loss(train_model, x, y)
            (loss / grad_accum).backward()
            loss_sum += loss.detach()
        trainable = [p for p in model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip if config.grad_clip > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_loss = loss_sum / grad_accum
        if ddp:
            dist.all_reduce(train_loss, op=dist.ReduceOp.AVG)
        row = {"step": step, "tokens": step * tokens_per_step, "lr": lr, "train_loss": train_loss.item(),
               "grad_norm": grad_norm.item(), "val_loss": math.nan, "seconds": time.time() - t0}
        if not math.isfinite(row["train_loss"]):  # the same on every process (averaged above)
            bar.close()
            raise _diverged(f"the loss is {row['train_loss']} at", step, lr, config)
        if master and (step % config.eval_interval == 0 or step == config.max_steps):
            row["val_loss"] = evaluate(model, val_data, config, device, autocast)
            if not math.isfinite(row["val_loss"]):  # rank 0 alone evaluates; torchrun stops the others when it exits
                bar.close()
                raise _diverged(f"the val loss is {row['val_loss']} after", step, lr, config)
        if master:
            log.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", lr=f"{lr:.2e}",
                            **({"val": f"{row['val_loss']:.3f}"} if not math.isnan(row["val_loss"]) else {}))
        last = step
        # The series step before the state: a kill between them leaves a state whose steps are all exported (a
        # resume trims the ones after its state and exports them again).
        if config.series_interval and (step % config.series_interval == 0 or step == config.max_steps):
            require_finite_weights(model, step, lr, config)
            if master:
                export_series_step(out, step, model, model_config, tokenizer, row)
        if step % config.ckpt_interval == 0 or step == config.max_steps or step == config.stop_after:
            require_finite_weights(model, step, lr, config)
            save(step)
        if step == config.stop_after:
            break
    bar.close()

    # ---- outputs: the model as mech_interp loads it, the log, the loss curve, a manifest ----
    summary = {}
    if master:
        # again for a run that trains no step: its state may come from the previous version, which saved a divergence
        require_finite_weights(model, last, learning_rate(last, config), config)
        export_model(out, model, model_config, tokenizer)
        summary = write_outputs(out, config, log, data.meta, decay_names, n_params, device, use_bf16, world,
                                time.time() - started,
                                None if seconds_before is None else seconds_before + time.time() - started, last)
    if ddp:
        dist.barrier()
        # DDP's reducer holds the process group: freed with this frame, after destroy_process_group, it left one
        # rank in ~8 waiting forever (py-spy: idle in the frame cleanup once the other rank had exited). Freed here,
        # while both ranks still hold the group, it cannot.
        del train_model
        dist.destroy_process_group()
    return summary


def write_outputs(out: Path, config: TrainConfig, log: list[dict], data_meta: dict, decay_names: dict, n_params: int,
                  device: torch.device, use_bf16: bool, world: int, seconds: float, train_seconds: float | None,
                  last_step: int) -> dict[str, Any]:
    import pandas as pd

    from mech_interp.runs.manifest import git_commit, package_versions
    from mech_interp.viz.writing import ensure_plotly_js, write_figure

    from .engine_requirement import trainer_engine
    from .figures import loss_curve

    table = pd.DataFrame(log, columns=["step", "tokens", "lr", "train_loss", "grad_norm", "val_loss", "seconds"])
    table.to_csv(out / "log.csv", index=False)
    (out / "log.json").write_text(json.dumps(log, indent=1))
    fig = loss_curve(table, f"{config.variant} ({config.preset}): loss")
    figure = write_figure(fig, out / "loss_curve", os.path.relpath(ensure_plotly_js(out), out))
    val = table.dropna(subset=["val_loss"])
    summary = {
        "variant": config.variant, "preset": config.preset, "steps": last_step, "max_steps": config.max_steps,
        "complete": last_step >= config.max_steps,
        "tokens": int(table["tokens"].iloc[-1]) if len(table) else 0,
        "final_train_loss": float(table["train_loss"].iloc[-1]) if len(table) else None,
        "final_val_loss": float(val["val_loss"].iloc[-1]) if len(val) else None,
        "val_loss_definition": f"mean next-token cross-entropy (nats) over {config.eval_batches} fixed random batches "
                               f"of {config.batch_size} x {config.n_ctx} val tokens",
        "trainable_parameters": n_params,
        "seconds_this_process": round(seconds, 1),
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "train_seconds_definition": "wall time of the training loop (steps, evaluations, checkpoints), summed over "
                                    "the processes that trained this run (one that was killed: up to its last "
                                    "checkpoint); null when unknown: resumed from a state without timing (written "
                                    "by the previous version, or by a run that resumed one)",
        "train_tokens_per_second": round(config.batch_size * config.n_ctx * config.grad_accum
                                         / float(table["seconds"].median()), 1) if len(table) else None,
        "tokens_per_second_definition": "tokens per step / median wall time of a training step (no evaluation)",
    }
    manifest = {
        "summary": summary, "config": asdict(config), "data": data_meta, "weight_decay": decay_names,
        "device": str(device), "precision": "bfloat16 autocast" if use_bf16 else "float32", "processes": world,
        "seed": config.seed, "engine": trainer_engine(), "packages": package_versions(), "git_commit": git_commit(),
        "files": ["hooked_config.json", "model.safetensors", "tokenizer/", "ckpt.pt", "log.csv", "log.json",
                  "loss_curve.html", *(["series/"] if config.series_interval else [])],
        **({"missing_figures": figure.missing} if figure.missing else {}),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    return summary
