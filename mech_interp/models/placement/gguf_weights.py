"""The tensors of a GGUF file, dequantized one module at a time into its parameters.

Each tensor is read at its offset (no memory map, as for safetensors), dequantized by the ``gguf`` package and
turned into HF's layout by transformers' own tensor processor for the family (Llama's query and key rows are
stored permuted for llama.cpp's rotary): the same functions, in the same order, as transformers' whole-file load,
so every parameter equals the whole-model conversion's bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...validation.errors import UsageError, reason


class GGUFWeights:
    def __init__(self, path: Path, architecture: str, model: torch.nn.Module) -> None:
        """``architecture``: the GGUF's own name ("llama"); ``model``: the HF model built on ``meta``, whose
        parameter names the GGUF tensors are mapped to."""
        from gguf import GGUFReader
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

        self.path = Path(path)
        config = model.config
        # What transformers' processors read of the GGUF's config: the head counts that undo llama.cpp's permutation.
        self._processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config={
            "num_attention_heads": config.num_attention_heads,
            "num_key_value_heads": getattr(config, "num_key_value_heads", config.num_attention_heads)})
        self._mapping = get_gguf_hf_weights_map(model, self._processor)
        to_gguf = {hf: gguf for gguf, hf in self._mapping.items()}
        try:
            reader = GGUFReader(self.path)  # only its tensor table is read; the data below with plain reads
            tensors = {t.name: (t.tensor_type, tuple(t.data.shape), t.data.dtype, int(t.data_offset), int(t.n_bytes))
                       for t in reader.tensors}
            del reader
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read the tensors of GGUF file {str(self.path)!r} ({reason(err, 160)}): "
                             "download it again") from None
        self._where = {hf: tensors[name] for hf, name in to_gguf.items() if name in tensors}
        self._gguf_name = to_gguf

    def identity(self) -> list:
        stat = self.path.stat()
        return [(self.path.name, stat.st_size, stat.st_mtime_ns)]

    def load(self, module: torch.nn.Module, prefix: str, dtype: torch.dtype, device: torch.device | str = "cpu"
             ) -> list[str]:
        """Materialise ``module`` (built on ``meta``) on ``device`` from the GGUF tensors of ``prefix + name`` (its
        parameters); returns the names read."""
        module.to_empty(device=torch.device(device))
        with torch.no_grad(), self.path.open("rb") as f:
            for name, param in module.named_parameters():
                full = prefix + name
                if full not in self._where:
                    raise UsageError(f"GGUF file {str(self.path)!r} holds no tensor for {full!r}: expected a file "
                                     "converted from the whole model")
                kind, shape, stored, offset, nbytes = self._where[full]
                if int(np.prod(shape)) * np.dtype(stored).itemsize != nbytes:
                    raise UsageError(f"GGUF file {str(self.path)!r}: tensor {full!r} has {nbytes} bytes for its "
                                     f"shape {list(shape)}: download it again")
                if self._read_rows(f, full, param, kind, shape, stored, offset, nbytes):
                    continue
                values = self._convert(self._raw(f, full, offset, nbytes, stored, shape), kind, full)
                if values.shape != tuple(param.shape):
                    raise UsageError(f"GGUF file {str(self.path)!r}: tensor {full!r} is {list(values.shape)}: "
                                     f"expected {list(param.shape)}")
                param.copy_(torch.from_numpy(values))
        return [name for name, _ in module.named_parameters()]

    def _raw(self, f, full: str, offset: int, nbytes: int, stored, shape) -> np.ndarray:
        f.seek(offset)
        raw = bytearray(nbytes)  # writable, so torch.from_numpy takes what dequantizing an F32 tensor returns
        if f.readinto(raw) != nbytes:
            raise UsageError(f"GGUF file {str(self.path)!r} is truncated: tensor {full!r} ends past its end")
        return np.frombuffer(raw, dtype=stored).reshape(shape)

    def _convert(self, data: np.ndarray, kind, full: str) -> np.ndarray:
        from gguf import dequantize

        values = dequantize(data, kind)
        return self._processor.process(weights=values, name=self._gguf_name[full], tensor_key_mapping=self._mapping,
                                       parsed_parameters={}).weights.astype(np.float32, copy=False)

    def _read_rows(self, f, full, param, kind, shape, stored, offset, nbytes) -> bool:
        """Reads a matrix the family's processor leaves as it is in slices of rows (~16 MiB of float32 each), so
        that no full-size float32 copy of an embedding matrix exists beside the parameter; False (nothing read)
        when the processor changes this tensor (Llama's query and key rows), which is then converted whole."""
        if len(shape) < 2 or tuple(param.shape)[0] != shape[0]:
            return False
        row_bytes = nbytes // shape[0]
        step = max(1, (16 * 2**20) // max(1, param[0].numel() * 4))
        for first in range(0, shape[0], step):
            rows = min(step, shape[0] - first)
            chunk = self._raw(f, full, offset + first * row_bytes, rows * row_bytes, stored, (rows, *shape[1:]))
            from gguf import dequantize

            values = dequantize(chunk, kind)
            processed = self._processor.process(weights=values, name=self._gguf_name[full],
                                                tensor_key_mapping=self._mapping, parsed_parameters={}).weights
            if processed is not values:
                return False  # the first slice: nothing written yet
            if values.shape != tuple(param[first:first + rows].shape):
                raise UsageError(f"GGUF file {str(self.path)!r}: tensor {full!r} rows are {list(values.shape[1:])}: "
                                 f"expected {list(param.shape[1:])}")
            param[first:first + rows].copy_(torch.from_numpy(values.astype(np.float32, copy=False)))
        return True
