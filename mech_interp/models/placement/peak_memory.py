"""The most memory a stretch of code added to the process, measured by Linux itself.

On entry the kernel's high-water mark of the process' resident memory (``VmHWM``) is reset (``clear_refs``) and
the resident memory (``VmRSS``) noted; on exit the peak added is ``VmHWM - VmRSS at entry``. It counts what the
code touched, whoever allocated it (torch, numpy, the tokenizer, file pages mapped in). ``None`` where
``/proc/self/clear_refs`` cannot be written (not Linux, or not allowed)."""

from __future__ import annotations

from pathlib import Path


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


class PeakMemory:
    """``PeakMemory()`` measures the process' resident memory; ``PeakMemory("cuda:0")`` the device's allocated memory
    instead (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``), which is what a plan on a GPU
    describes."""

    def __init__(self, device=None) -> None:
        self.added: int | None = None
        self._start: int | None = None
        self.device = device if device is None or str(device).startswith("cuda") else None
        self.source = "device memory the pass allocated: max_memory_allocated" if self.device is not None else \
            "resident memory the pass added: Linux VmHWM"

    def __enter__(self) -> "PeakMemory":
        if self.device is not None:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._start = _status_bytes("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        if self._start is None:
            return
        if self.device is not None:
            import torch

            self.added = max(0, torch.cuda.max_memory_allocated(self.device) - self._start)
            return
        try:
            self.added = max(0, _status_bytes("VmHWM") - self._start)
        except OSError:
            self.added = None
