"""The studies built on the core; importing this package registers their experiments (the paper's
first, so they lead the command list)."""

from . import lm  # noqa: F401, I001
from . import heads  # noqa: F401
