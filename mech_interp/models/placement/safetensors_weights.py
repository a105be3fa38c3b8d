"""The tensors of an HF directory's safetensors files, read one module at a time straight into its parameters."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...validation.errors import UsageError


class SafetensorsWeights:
    """Plain reads at each tensor's offset, no memory map: a mapped file's pages count in the process' memory while it
    is open, which doubled a block's footprint while it loaded. A tensor stored in another dtype, or bound for
    another device, goes through one host buffer of its own size."""

    _DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
    _MAX_HEADER = 100 * 2**20

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.files = sorted(self.directory.glob("*.safetensors"))
        if not self.files:
            raise UsageError(f"{str(directory)!r} holds no .safetensors file: a streamed pass reads safetensors or "
                             "GGUF (save the model with save_pretrained, or load it whole)")
        self._where: dict[str, tuple[Path, torch.dtype, tuple[int, ...], int, int]] = {}
        for file in self.files:
            self._where.update(self._header(file))

    def _header(self, file: Path) -> dict[str, tuple[Path, torch.dtype, tuple[int, ...], int, int]]:
        try:
            with file.open("rb") as f:
                size = int.from_bytes(f.read(8), "little")
                if not 0 < size <= self._MAX_HEADER:
                    raise ValueError(f"a header of {size} bytes")
                header = json.loads(f.read(size))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise UsageError(f"{str(file)!r} is not a readable safetensors file ({err})") from None
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info.get("dtype") not in self._DTYPES:
                raise UsageError(f"{str(file)!r}: tensor {name!r} is {info.get('dtype')}: expected one of "
                                 f"{', '.join(self._DTYPES)}")
            begin, end = info["data_offsets"]
            tensors[name] = (file, self._DTYPES[info["dtype"]], tuple(info["shape"]), 8 + size + begin, end - begin)
        return tensors

    def identity(self) -> list:
        """What a saved state must match: the files' names, sizes and modification times."""
        return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self.files]

    def load(self, module: torch.nn.Module, prefix: str, dtype: torch.dtype, device: torch.device | str = "cpu"
             ) -> list[str]:
        """Materialise ``module`` (built on ``meta``) on ``device`` from the tensors named ``prefix + name``: every
        parameter, and the buffers the files hold (persistent ones, such as Apertus' activation constants). Returns
        the names read."""
        device = torch.device(device)
        module.to_empty(device=device)
        stored_buffers = [(name, b) for name, b in module.named_buffers() if prefix + name in self._where]
        with torch.no_grad():
            for name, param in [*module.named_parameters(), *stored_buffers]:
                full = prefix + name
                if full not in self._where:
                    raise UsageError(f"the weights hold no tensor {full!r}: expected the files of a model saved by "
                                     "save_pretrained")
                file, stored, shape, offset, nbytes = self._where[full]
                if shape != tuple(param.shape) or nbytes != param.numel() * stored.itemsize:
                    raise UsageError(f"{str(file)!r}: tensor {full!r} is {list(shape)} ({nbytes} bytes): expected "
                                     f"{list(param.shape)} of {stored}")
                direct = stored == dtype and device.type == "cpu"
                target = param if direct else torch.empty(shape, dtype=stored)
                with file.open("rb") as f:
                    f.seek(offset)
                    if f.readinto(memoryview(target.reshape(-1).view(torch.uint8).numpy()).cast("B")) != nbytes:
                        raise UsageError(f"{str(file)!r} is truncated: tensor {full!r} ends past the end of the file")
                if not direct:
                    param.copy_(target)
        return [name for name, _ in [*module.named_parameters(), *stored_buffers]]
