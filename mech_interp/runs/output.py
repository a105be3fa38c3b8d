"""Atomic run directories: tables (parquet + CSV), figures (HTML + PNG/SVG/PDF) and a JSON manifest.

A run is built in ``<run_dir>.partial/`` and renamed to ``<run_dir>`` only once everything, the
manifest last, is written, so a directory that exists under its final name is complete. One
process at a time writes a run: it holds an ``flock`` on ``<run_dir>.partial`` from start to commit.
A ``.partial`` that no process holds and that has no pieces is what a kill left behind; the next
writer in the same model directory removes it.
Pieces saved with ``save_piece`` survive a kill inside ``.partial`` and are reused by the next
attempt at the same run; each is stored under a hash of the run's identity (the whole resolved
configuration, model included) and of its own key, so nothing another configuration or model
computed is ever taken for it. Figures reference one ``plotly.min.js`` at the root of the results
tree instead of embedding 4 MB each.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..storage.atomic_files import atomic_write_text, remove_stale
from ..storage.user_files import parse_nested
from ..validation.errors import UsageError
from .manifest import git_commit, package_versions

MANIFEST = "manifest.json"
# Out of space, read-only, no permission: the user's to fix, reported in one line.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def is_complete(run_dir: Path) -> bool:
    return (run_dir / MANIFEST).is_file()


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, or ``{}`` when it cannot be one of ours (broken, not an object, nested past any manifest
    written here): skip/resume then treats the run as stale and computes it again."""
    try:
        manifest = parse_nested(json.loads, (run_dir / MANIFEST).read_text(encoding="utf-8"), str(run_dir / MANIFEST))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, UsageError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def check_writable(out: str | Path) -> None:
    """``--out`` must be a directory we can create files in; checked before any model loads. The
    current directory itself (``""``, ``.``) is refused: results would mix with the user's files."""
    if not str(out).strip() or Path(out) == Path("."):
        raise UsageError(f"--out {str(out)!r} is not allowed: name a results directory (default: results)")
    out = Path(out)
    probe_dir = out
    while not probe_dir.exists() and not probe_dir.is_symlink():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        kind = "a file" if probe_dir.is_file() else "a broken link" if not probe_dir.exists() else "not a directory"
        raise UsageError(f"--out {str(out)!r}: {str(probe_dir)!r} is {kind}, not a directory")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(out)!r}: {str(probe_dir)!r} is not writable")


def write_error(err: OSError, where: Path) -> UsageError:
    return UsageError(f"cannot write results under {str(where)!r}: {os.strerror(err.errno) if err.errno else err}")


class RunWriter:
    """Collects one run's outputs in ``<run_dir>.partial`` and publishes them with ``commit``."""

    def __init__(self, run_dir: Path, results_root: str | Path, identity: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.results_root = Path(results_root)
        self.partial = self.run_dir.with_name(self.run_dir.name + ".partial")
        self.identity = identity
        self.files: list[str] = []
        self.missing_figures: dict[str, str] = {}  # static figure file -> why its export failed (its HTML is there)
        self._lock = self._acquire_lock()
        from ..viz.writing import PLOTLY_JS

        remove_stale(self.results_root / PLOTLY_JS)  # the scratch copy of a writer that was killed
        self._remove_dead_partials()

    def _acquire_lock(self) -> int:
        for _ in range(5):
            self.partial.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.partial, os.O_RDONLY)
            except FileNotFoundError:
                continue  # removed as dead by another writer between mkdir and open: make it again
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(f"another process is writing {self.run_dir}: wait for it, or pass another --out") from None
            try:
                if os.stat(self.partial).st_ino == os.fstat(fd).st_ino:
                    return fd  # still the directory we locked
            except FileNotFoundError:
                pass
            os.close(fd)
        raise UsageError(f"cannot lock {self.partial}: it keeps being removed by another process")

    def _remove_dead_partials(self) -> None:
        """Remove the ``.partial`` directories beside this one that a killed process left with nothing
        to resume (no pieces) and nobody holds: they would otherwise stay forever unless the same
        run were asked for again."""
        for other in self.run_dir.parent.glob("*.partial"):
            if other == self.partial or not other.is_dir() or (other / "pieces").is_dir():
                continue
            try:
                fd = os.open(other, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process is writing it
            else:
                shutil.rmtree(other, ignore_errors=True)
            finally:
                os.close(fd)

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _dir(self) -> Path:
        self.partial.mkdir(parents=True, exist_ok=True)
        return self.partial

    def _piece_path(self, key: dict[str, Any]) -> Path:
        text = json.dumps({"identity": self.identity, "key": key}, sort_keys=True, default=str)
        return self.partial / "pieces" / (hashlib.sha256(text.encode()).hexdigest()[:32] + ".json")

    def load_piece(self, key: dict[str, Any]) -> Any | None:
        path = self._piece_path(key)
        try:
            saved = parse_nested(json.loads, path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, UsageError):
            return None  # absent, cut short by a kill, or not one of ours: recompute
        if not isinstance(saved, dict):
            return None
        same = saved.get("identity") == json.loads(json.dumps(self.identity, default=str))
        return saved.get("value") if same and saved.get("key") == json.loads(json.dumps(key, default=str)) else None

    def piece_dir(self, key: dict[str, Any]) -> Path:
        """A directory for a piece kept in files of its own (a streamed pass' tensors), under the same hash of the
        run's identity and ``key``: what a kill leaves there is resumed by the next attempt at the same run."""
        path = self._piece_path(key).with_suffix("")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_piece(self, key: dict[str, Any], value: Any) -> None:
        path = self._piece_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"identity": self.identity, "key": key, "value": value}, default=str))

    def table(self, name: str, df) -> None:
        base = self._dir() / name
        df.to_parquet(base.with_suffix(".parquet"), index=False)
        df.to_csv(base.with_suffix(".csv"), index=False)
        self.files += [f"{name}.parquet", f"{name}.csv"]

    def text(self, name: str, text: str) -> None:
        (self._dir() / name).write_text(text, encoding="utf-8")
        self.files.append(name)

    def figure(self, name: str, fig) -> None:
        from ..viz.writing import ensure_plotly_js, write_figure

        js = ensure_plotly_js(self.results_root)
        written = write_figure(fig, self._dir() / name, os.path.relpath(js, self.run_dir))
        self.files += [p.name for p in written.paths]
        self.missing_figures.update(written.missing)

    def commit(self, manifest: dict[str, Any]) -> Path:
        manifest = {
            "command": sys.argv,  # unless the manifest names the command that asked for the run (a Ray task's driver)
            **manifest,
            "identity": self.identity,
            "files": sorted(self.files),
            **({"missing_figures": self.missing_figures} if self.missing_figures else {}),
            "packages": package_versions(),
            "git_commit": git_commit(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        shutil.rmtree(self._dir() / "pieces", ignore_errors=True)
        atomic_write_text(self._dir() / MANIFEST, json.dumps(manifest, indent=2, default=str))
        return self._publish()

    def publish_files(self, files: dict[str, bytes]) -> Path:
        """Publish a complete run computed elsewhere (the files of a Ray task's scratch run directory),
        its manifest written last, as ``commit`` publishes one computed here."""
        for name in files:
            if Path(name).is_absolute() or ".." in Path(name).parts or not name:
                raise ValueError(f"run file name {name!r} is not inside the run directory")
        for child in self._dir().iterdir():  # what an earlier attempt left here (pieces, files) is not this run's
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        for name, data in sorted(files.items(), key=lambda item: item[0] == MANIFEST):
            path = self._dir() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if MANIFEST not in files:
            raise ValueError("a run without its manifest is not complete")
        return self._publish()

    def _publish(self) -> Path:
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)  # a rerun (--force, or a changed configuration) replaces the old result
        os.replace(self.partial, self.run_dir)
        self._release()
        return self.run_dir

    def discard(self, keep_pieces: bool = False) -> None:
        """Remove what this attempt wrote; ``keep_pieces`` leaves resumable pieces for the next."""
        if keep_pieces and (self.partial / "pieces").is_dir():
            for child in self.partial.iterdir():
                if child.name != "pieces":
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.partial, ignore_errors=True)
        self._release()
        for parent in (self.run_dir.parent, self.results_root):  # no empty model directory left behind
            try:
                parent.rmdir()
            except OSError:
                pass
            if parent == self.results_root:
                break
