"""``python -m vit_hooks`` is ``vit-hooks``."""

import sys

from .cli import main

sys.exit(main())
