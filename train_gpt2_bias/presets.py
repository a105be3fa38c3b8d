"""Named presets: model sizes and the training budgets that go with them (readable without building anything).

``gpt2-124m`` is upstream's configuration (12 layers, 12 heads, d_model 768, context 1024, no biases, dropout 0;
AdamW 6e-4, betas (0.9, 0.95), weight decay 0.1, clip 1.0, warmup 2000, cosine to 6e-5, 491,520 tokens per step
= 12 sequences x 1024 x 40 accumulation steps, 50k steps). On 8 GPUs run it with
``torchrun --standalone --nproc_per_node=8 -m train_gpt2_bias train --preset gpt2-124m ...`` (accumulation steps
are divided among the processes, so the tokens per step stay 491,520).

``gpu-10min`` is sized so that ``python -m train_gpt2_bias experiment --preset gpu-10min`` (both variants trained,
then analysed) fits in ten minutes of one H100, from this project's plain-PyTorch measurement on one H100 (GPT-2
124M, bf16, 16 x 1024 tokens per step, no compile: 314 k tokens/s with the causal kernel). Arithmetic: 2,600 steps x
16,384 tokens = 42.6 M tokens per variant; at 0.9 x 314 k = 283 k tokens/s (the bench target for the
TransformerLens model) that is 150 s, so 300 s for both, plus evaluation (14 evals x 2 x 20 batches of 16 x 1024
= 9.2 M tokens forward only, ~15 s per variant), start-up and tokenizing the corpus (~60 s once), and the analyses
(~30 s per checkpoint): about 7-8 minutes, leaving margin for a slower card. NOT measured: no GPU was available
while writing it.

``cpu`` trains on this project's 2-core CPU machine in a few minutes per variant (see docs/studies/training.md for the measured
time); ``tiny`` is for tests and the notebook (seconds).
"""

from __future__ import annotations

from typing import Any

# Model shapes; the vocabulary comes from the tokenizer.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-124m": {"n_layers": 12, "n_heads": 12, "d_model": 768, "n_ctx": 1024},
    "gpu-10min": {"n_layers": 12, "n_heads": 12, "d_model": 768, "n_ctx": 1024},
    "cpu": {"n_layers": 4, "n_heads": 4, "d_model": 128, "n_ctx": 64},
    "tiny": {"n_layers": 2, "n_heads": 2, "d_model": 32, "n_ctx": 32},
}

# Training settings per preset (TrainConfig field names); the optimiser's other settings are upstream's
# (TrainConfig's defaults). The small presets take a higher learning rate: they are 1000x smaller and train briefly.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-124m": {"batch_size": 12, "grad_accum": 40, "max_steps": 50_000, "warmup_steps": 2_000,
                  "lr_decay_steps": 50_000, "lr": 6e-4, "min_lr": 6e-5, "eval_interval": 1_000, "eval_batches": 200,
                  "ckpt_interval": 1_000,
                  "corpus": ["hf:Skylion007/openwebtext"]},
    "gpu-10min": {"batch_size": 16, "grad_accum": 1, "max_steps": 2_600, "warmup_steps": 260,
                  "lr_decay_steps": 2_600, "lr": 6e-4, "min_lr": 6e-5, "eval_interval": 200, "eval_batches": 20,
                  "ckpt_interval": 500},
    "cpu": {"batch_size": 8, "grad_accum": 1, "max_steps": 150, "warmup_steps": 15, "lr_decay_steps": 150,
            "lr": 2e-3, "min_lr": 2e-4, "eval_interval": 50, "eval_batches": 4, "ckpt_interval": 50},
    "tiny": {"batch_size": 4, "grad_accum": 1, "max_steps": 30, "warmup_steps": 3, "lr_decay_steps": 30,
             "lr": 3e-3, "min_lr": 3e-4, "eval_interval": 10, "eval_batches": 2, "ckpt_interval": 10},
}
