"""``train-gpt2-bias`` / ``python -m train_gpt2_bias``: train the GPT-2 variants and compare them.

    train-gpt2-bias train --preset cpu --variant attn_bias          # one model into results/train/cpu/attn_bias
    train-gpt2-bias train --config configs/train/cpu.toml --max-steps 50
    torchrun --standalone --nproc_per_node=8 -m train_gpt2_bias train --preset gpt2-124m --variant attn_bias
    train-gpt2-bias experiment --preset cpu                          # default vs attn_bias, trained then analysed
    train-gpt2-bias presets                                          # presets and variants

Every ``train`` flag is a field of ``TrainConfig`` and a key of the ``--config`` TOML/YAML file (flags win).
The same command after a kill resumes from the last checkpoint. Bad input prints one line and exits with 2
before any data is read or model built; so does a training loss that stops being finite. An ``experiment`` whose
analyses failed (``[failed]`` lines) writes the comparison without them and exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mech_interp.command_line.exits import OneLineParser, run_main
from mech_interp.command_line.flags import add_fields, collect
from mech_interp.command_line.study_commands import add_figure_format

PROG = "train-gpt2-bias"
EXIT_FAILED = 1  # an experiment ran, but some of its analyses failed


def build_parser() -> argparse.ArgumentParser:
    from .config import TrainConfig
    from .experiment import ExperimentConfig

    parser = OneLineParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    train = sub.add_parser("train", help="train one variant (resumes from the checkpoint in --out)")
    train.add_argument("--config", default=None, help="a TOML or YAML file of TrainConfig fields")
    add_fields(train, TrainConfig)
    add_figure_format(train)
    experiment = sub.add_parser("experiment", help="train default and attn_bias alike, run the layer-wise, 3D and "
                                                   "attention experiments on each, write the comparison")
    experiment.add_argument("--config", default=None, help="a TOML or YAML file of TrainConfig fields (shared)")
    add_fields(experiment, TrainConfig, skip=("variant", "out", "stop_after"))
    add_fields(experiment, ExperimentConfig)
    add_figure_format(experiment)
    sub.add_parser("presets", help="list the presets and variants")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), argv, _body, "the same command resumes from the last checkpoint")


def _body(ns: argparse.Namespace) -> int | None:
    if ns.command != "presets":  # before the model code is imported: on TransformerLens 4 it cannot be
        from .engine_requirement import require_hooked_transformer

        require_hooked_transformer()
    if ns.command == "presets":
        from .presets import MODEL_PRESETS, TRAIN_PRESETS
        from .variants import VARIANTS

        for name, shape in MODEL_PRESETS.items():
            budget = TRAIN_PRESETS[name]
            tokens = budget["batch_size"] * shape["n_ctx"] * budget["grad_accum"]
            print(f"{name:<10} {shape['n_layers']}L/{shape['n_heads']}H/{shape['d_model']}, context {shape['n_ctx']}, "
                  f"{budget['max_steps']} steps x {tokens} tokens")
        for variant in VARIANTS.values():
            print(f"variant {variant.name:<10} {variant.doc}")
    elif ns.command == "train":
        from .config import TrainConfig, config_from
        from .train import train

        config = config_from(ns.config, collect(ns, TrainConfig))
        summary = train(config)
        if summary:
            print(f"[done] {config.out}: {summary['steps']}/{summary['max_steps']} steps, train loss "
                  f"{summary['final_train_loss']:.4f}, val loss {summary['final_val_loss']}")
    else:
        from .config import TrainConfig
        from .experiment import ExperimentConfig, run_experiment

        result = run_experiment(ns.config, collect(ns, TrainConfig, skip=("variant", "out", "stop_after")),
                                ExperimentConfig(**collect(ns, ExperimentConfig)))
        if result["failed"]:
            print(f"{PROG}: error: {len(result['failed'])} analysis run(s) failed ({', '.join(result['failed'])}; "
                  "see [failed] above): the comparison says which did not run; the same command runs them "
                  "again", file=sys.stderr)
            return EXIT_FAILED
    return None
