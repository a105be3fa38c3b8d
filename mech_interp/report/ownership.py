"""The directories the report may replace or delete: only those it made itself. Each site it builds
(and so each ``<site>.partial`` it builds in, and each ``<site>.old`` it moves a previous site to)
holds a marker file; a directory without one, a file or a link there is the user's and is never
touched. An empty directory holds nothing to lose (``--out`` made beforehand with mkdir)."""

from __future__ import annotations

from pathlib import Path

SITE_MARKER = ".mech-interp-report"  # written into every site, so that a site is never read as results either


def mark(directory: Path) -> None:
    (directory / SITE_MARKER).write_text("written by mech-interp report; replaced by the next report\n")


def is_ours(path: Path) -> bool:
    """Whether the report may delete or replace ``path``: absent, an empty directory or one it marked;
    never a link (deleting through it would reach the target, replacing it would lose the link)."""
    if path.is_symlink():
        return False
    if not path.exists():
        return True
    return path.is_dir() and ((path / SITE_MARKER).is_file() or not any(path.iterdir()))
