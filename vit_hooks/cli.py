"""``vit-hooks``: the vision study from the command line (also ``python -m vit_hooks``).

    vit-hooks study                       # every experiment on the embedded DINOv2 ViT-S, the sample images
    vit-hooks layerwise --model random:vit-tiny-reg4 --n-images 8
    vit-hooks fix-reg-mean --model vit_base_patch14_reg4_dinov2.lvd142m --img-size 224 \\
        --images /data/imagenet/val --head dinov2_vitb14_reg4_linear_head.pth
    vit-hooks batch configs/vit/sweep.toml   # models x experiments from a TOML/YAML file; finished runs skipped
    vit-hooks batch configs/vit/sweep.toml --backend ray   # each run a Ray task, as mech-interp batch
    vit-hooks parity                      # the embedded ViT's timm conversion against its ONNX graph
    vit-hooks models                      # registered models: shape, registers, what they are

Blocks are 0-based timm blocks: ``--block L`` is ``blocks.L`` (output ``blocks.L.hook_resid_post``).
Bad input prints one line ``vit-hooks: error: ...`` and exits with 2, before the model loads and
before anything is written. Ctrl-C prints one line and exits with 130.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from mech_interp.command_line.exits import OneLineParser, run_main
from mech_interp.command_line.flags import add_fields
from mech_interp.command_line.study_commands import (
    add_engine_commands,
    add_out,
    is_engine_command,
    options_from,
    run_default_study,
    run_engine_command,
    say,
)
from mech_interp.validation.errors import UsageError

STUDIES = ("vit",)


def build_parser() -> argparse.ArgumentParser:
    from .configs import ViTOptions

    parser = OneLineParser(prog="vit-hooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    study = sub.add_parser("study", help="every experiment on one model (default: the embedded ViT)")
    add_fields(study, ViTOptions)
    add_out(study)
    add_engine_commands(sub, STUDIES, "configs/vit/sweep.toml")
    parity = sub.add_parser("parity", help="embedded ViT: timm hooks against the ONNX graph's tensors (onnxruntime)")
    parity.add_argument("--images", default="samples", help="image folder (default: the sample images)")
    parity.add_argument("--n-images", type=int, default=2, help="images compared (default: 2)")
    parity.add_argument("--atol", type=float, default=1e-4, help="largest |difference| accepted (default: 1e-4)")
    return parser


def _parity(ns: argparse.Namespace) -> int:
    from .hooks import HookedViT
    from .images import open_images
    from .loading import load_vit
    from .registry import DEFAULT_MODEL

    if not ns.n_images or ns.n_images < 1:
        raise UsageError(f"--n-images {ns.n_images} is not allowed: expected an integer >= 1")
    images = open_images(ns.images, ns.n_images)
    vit = load_vit(DEFAULT_MODEL)
    import torch

    batch = torch.stack([images.load(i, vit.preprocessing.eval) for i in range(len(images))])
    from .parity import embedded_parity

    table = embedded_parity(HookedViT(vit.model, vit.entry.img_size), batch)
    worst = table.sort_values("max_abs_diff", ascending=False).iloc[0]
    print(f"timm conversion vs ONNX graph (onnxruntime), {len(images)} images, {len(table)} tensors:")
    for r in table.itertuples():
        print(f"  {r.hook:<28} max |diff| {r.max_abs_diff:.2e}  (max |onnx| {r.max_abs_onnx:.3g})")
    ok = worst.max_abs_diff <= ns.atol
    print(f"{'PASS' if ok else 'FAIL'}: largest difference {worst.max_abs_diff:.2e} at {worst.hook} (atol {ns.atol:g})")
    return 0 if ok else 1


def _body(ns: argparse.Namespace) -> int | None:
    if is_engine_command(ns):
        return run_engine_command(ns, STUDIES, say)
    if ns.command == "study":
        run_default_study("vit", options_from(ns, "vit"), {}, ns.out, ns.force, say)
    else:
        return _parity(ns)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(build_parser(), argv, _body, "finished runs are kept; the same command runs the rest")
