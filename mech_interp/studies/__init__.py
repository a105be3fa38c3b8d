"""The studies built on the core; importing this package registers their experiments."""

from . import lm  # noqa: F401
