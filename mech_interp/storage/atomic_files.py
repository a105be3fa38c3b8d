"""Scratch files and directories that a kill cannot leave behind for long.

Anything written in place first goes to ``<target>.<pid>.tmp`` beside its target and is renamed
over it when complete. A SIGKILL can still leave the scratch behind; the next writer of the same
target removes every scratch whose process is gone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def scratch_path(target: Path) -> Path:
    remove_stale(target)
    return target.with_name(f"{target.name}.{os.getpid()}.tmp")


def remove_stale(target: Path) -> None:
    if not target.parent.is_dir():
        return
    for leftover in target.parent.glob(f"{target.name}.*.tmp"):
        pid = leftover.name[len(target.name) + 1: -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    tmp = scratch_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
