"""The residual stream of every batch of a streamed pass, between two blocks: in memory, or spilled to disk.

In memory, a block's output replaces its input batch by batch. Spilled, each batch's stream is a file of the
current generation (``g<N>/<batch>.pt``, read back with ``weights_only=True``); a block writes its outputs as the next
generation, which ``commit`` makes current once every batch is written, and ``prune`` removes the older ones once the
pass' state names the new one. Only the batch being run is in memory, at the price of writing and reading every
stream once per block.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ...storage.tensor_files import load_tensors


class ResidualStreams:
    def __init__(self, n_batches: int, spill_dir: Path | None = None, device: torch.device | str = "cpu",
                 generation: int = 0) -> None:
        self.n_batches, self.device = n_batches, torch.device(device)
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.generation = generation
        self._tensors: list[torch.Tensor | None] = [None] * n_batches  # in memory only

    @property
    def spilled(self) -> bool:
        return self.spill_dir is not None

    def _file(self, generation: int, j: int) -> Path:
        return self.spill_dir / f"g{generation}" / f"{j}.pt"

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, j: int) -> torch.Tensor:
        if not self.spilled:
            return self._tensors[j]
        return load_tensors(self._file(self.generation, j), "a spilled residual stream",
                            "a stream this pass wrote").to(self.device)

    def __setitem__(self, j: int, value: torch.Tensor) -> None:
        if not self.spilled:
            self._tensors[j] = value
            return
        path = self._file(self.generation + 1, j)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(value.detach().clone(), path)  # a view would save its whole base

    def commit(self) -> None:
        """The streams written since the last commit become current (spilled: the next generation)."""
        if self.spilled:
            self.generation += 1

    def prune(self) -> None:
        """Remove the spilled generations older than the current one."""
        if self.spilled:
            for old in self.spill_dir.glob("g*"):
                if old.name != f"g{self.generation}":
                    shutil.rmtree(old, ignore_errors=True)

    def fork(self, spill_dir: Path | None = None) -> "ResidualStreams":
        """The current streams, for a branch to go on from on its own: the same tensors in memory (a block's output
        replaces a batch, never changes it), or, spilled, the current generation's files linked into ``spill_dir``
        (written once, never rewritten: each side writes its own next generation)."""
        other = ResidualStreams(self.n_batches, spill_dir if self.spilled else None, self.device, self.generation)
        if not self.spilled:
            other._tensors = list(self._tensors)
            return other
        for j in range(self.n_batches):
            source, target = self._file(self.generation, j), other._file(self.generation, j)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            try:
                os.link(source, target)
            except OSError:  # a file system without hard links
                shutil.copyfile(source, target)
        return other

    def remove(self) -> None:
        """Let go of the streams (spilled: remove their files)."""
        self._tensors = [None] * self.n_batches
        if self.spilled:
            shutil.rmtree(self.spill_dir, ignore_errors=True)

    def tensors(self) -> list[torch.Tensor]:
        return [self[j] for j in range(self.n_batches)]

    def state(self) -> dict:
        """What a saved pass state holds of the streams: the tensors, or the spilled generation."""
        return {"generation": self.generation} if self.spilled else {"hidden": list(self._tensors)}

    def restore(self, state: dict) -> bool:
        """Take the streams of a saved state; False when it does not describe streams kept this way."""
        if self.spilled:
            generation = state.get("generation")
            if not isinstance(generation, int) or not all(self._file(generation, j).is_file()
                                                          for j in range(self.n_batches)):
                return False
            self.generation = generation
            return True
        hidden = state.get("hidden")
        if not isinstance(hidden, list) or len(hidden) != self.n_batches:
            return False
        self._tensors = [h.to(self.device) for h in hidden]
        return True
