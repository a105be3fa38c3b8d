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
    def __init__(self) -> None:
        self.added: int | None = None
        self._start: int | None = None

    def __enter__(self) -> "PeakMemory":
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._start = _status_bytes("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        if self._start is not None:
            try:
                self.added = max(0, _status_bytes("VmHWM") - self._start)
            except OSError:
                self.added = None
