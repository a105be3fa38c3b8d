"""``train-gpt2-bias`` / ``python -m train_gpt2_bias``: train the GPT-2 variants and compare them.

    train-gpt2-bias train --preset cpu --variant attn_bias          # one model into results/train/cpu/attn_bias
    train-gpt2-bias train --config configs/train/cpu.toml --max-steps 50
    torchrun --standalone --nproc_per_node=8 -m train_gpt2_bias train --preset gpt2-124m --variant attn_bias
    train-gpt2-bias experiment --preset cpu                          # default vs attn_bias, trained then analysed
    train-gpt2-bias presets                                          # presets and variants

Every ``train`` flag is a field of ``TrainConfig`` and a key of the ``--config`` TOML/YAML file (flags win).
The same command after a kill resumes from the last checkpoint. Bad input prints one line and exits with 2
before any data is read or model built.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any

from mech_interp.errors import UsageError

PROG = "train-gpt2-bias"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message}\n")


def _kind(annotation: Any) -> tuple[type, bool]:
    """(argparse type, is_bool) of a dataclass field; lists are given comma-separated."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"list": list, "str": str, "int": int, "float": float, "bool": bool, "None": None})
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is list:
        return str, False
    return annotation, annotation is bool


def _add_fields(parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()) -> None:
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, is_bool = _kind(f.type)
        flag = "--" + f.name.replace("_", "-")
        if is_bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=f.metadata.get("help", ""))
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=f.metadata.get("help", ""),
                                metavar=f.name.upper())


def _collect(ns: argparse.Namespace, cls: type, skip: Sequence[str] = ()) -> dict[str, Any]:
    return {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(ns, f.name, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    from .config import TrainConfig
    from .experiment import ExperimentConfig

    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    train = sub.add_parser("train", help="train one variant (resumes from the checkpoint in --out)")
    train.add_argument("--config", default=None, help="a TOML or YAML file of TrainConfig fields")
    _add_fields(train, TrainConfig)
    experiment = sub.add_parser("experiment", help="train default and attn_bias alike, run the layer-wise, 3D and "
                                                   "attention experiments on each, write the comparison")
    experiment.add_argument("--config", default=None, help="a TOML or YAML file of TrainConfig fields (shared)")
    _add_fields(experiment, TrainConfig, skip=("variant", "out", "stop_after"))
    _add_fields(experiment, ExperimentConfig)
    sub.add_parser("presets", help="list the presets and variants")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as done:
        return int(done.code or 0)
    if ns.command is None:
        print(f"{PROG}: error: no command given: expected train, experiment or presets ({PROG} --help)", file=sys.stderr)
        return EXIT_USAGE
    try:
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

            config = config_from(ns.config, _collect(ns, TrainConfig))
            summary = train(config)
            if summary:
                print(f"[done] {config.out}: {summary['steps']}/{summary['max_steps']} steps, train loss "
                      f"{summary['final_train_loss']:.4f}, val loss {summary['final_val_loss']}")
        else:
            from .config import TrainConfig
            from .experiment import ExperimentConfig, run_experiment

            run_experiment(ns.config, _collect(ns, TrainConfig, skip=("variant", "out", "stop_after")),
                           ExperimentConfig(**_collect(ns, ExperimentConfig)))
    except UsageError as err:
        print(f"{PROG}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted: the same command resumes from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
