"""What of the results tree the report reads: nothing outside it, and no name the pages cannot show.

A tree may come from someone else (an archive, a shared disk), and a link in it to ``/etc/hostname``
or ``~/.ssh`` would otherwise be copied into the site and shown on its pages. Every path read is
checked with its links resolved; one that leaves the tree is skipped, as is a name that is not UTF-8
(an HTML page cannot hold it), and remembered, to be named once in a warning. Links that stay
inside the tree are read like the files they point to."""

from __future__ import annotations

import os
from pathlib import Path

LEAVES = "is a link leaving the results tree"
NOT_UTF8 = "has a name that is not UTF-8"


class ResultsTree:
    def __init__(self, root: Path):
        self.root = Path(os.path.abspath(root))  # as the user named it: where runs are said to be
        self._real = Path(os.path.realpath(self.root))  # where they are: the boundary
        self.skipped: dict[Path, str] = {}  # path not read -> why, in the order met

    def named(self, path: Path) -> bool:
        """Whether ``path``'s name is UTF-8; one that is not is remembered in ``skipped``."""
        try:
            path.name.encode("utf-8")
        except UnicodeEncodeError:  # the bytes of a name that is not UTF-8, as Python keeps them
            self.skipped.setdefault(path, NOT_UTF8)
            return False
        return True

    def holds(self, path: Path) -> bool:
        """Whether ``path``, every link on the way resolved, is inside the tree; one that is not is
        remembered in ``skipped``."""
        real = Path(os.path.realpath(path))
        if real == self._real or self._real in real.parents:
            return True
        self.skipped.setdefault(path, LEAVES)
        return False
