"""Heads as users name them: ``L5H1`` (``--heads``, a batch file's ``heads``), or the older ``5.1``, read the same;
checked against the model once it is known. Imports no torch.

Only ASCII digits count: ``str.isdigit`` and ``int`` also take Arabic-Indic, fullwidth and other digits
(and ``isdigit`` superscripts, which ``int`` then rejects), so ``'١.٢'`` would have run as head 1.2.
No leading zeros and no numbers: ``1.01`` or a TOML/YAML float ``1.10`` reads as 1.1, another head than
the one written.
"""

from __future__ import annotations

import re

from ...core.head_names import head_name
from ...validation.errors import UsageError

NUMBER = "(0|[1-9][0-9]*)"
HEAD_FORMS = (re.compile(f"[Ll]{NUMBER}[Hh]{NUMBER}"), re.compile(f"{NUMBER}\\.{NUMBER}"))
ACCEPTED = ("LxHy (block x, head y: 0-based decimal integers in ASCII digits 0-9 without leading zeros, e.g. L5H1; "
            "the older 5.1 is read the same)")


def parse_head(item: object) -> tuple[int, int]:
    if not isinstance(item, str):
        raise UsageError(f"head {item!r} is not allowed: expected the text {ACCEPTED} (quote it in a batch file: "
                         "a number such as 1.10 is read as 1.1)")
    match = next((m for form in HEAD_FORMS if (m := form.fullmatch(item.strip()))), None)
    if match is None:
        raise UsageError(f"head {item.strip()!r} is not allowed: expected {ACCEPTED}")
    return int(match[1]), int(match[2])


def parse_head_list(value: object) -> list[tuple[int, int]]:
    """``"L5H1,L6H1"`` or ``["L5H1", "6.1"]`` -> ``[(5, 1), (6, 1)]``, each head once."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        raise UsageError(f"--heads {value!r} is not allowed: expected {ACCEPTED}, comma-separated")
    heads: list[tuple[int, int]] = []
    for item in value:
        if isinstance(item, str) and not item.strip():
            continue  # "5.1," : an empty item between commas names nothing
        head = parse_head(item)
        if head in heads:
            raise UsageError(f"head {head_name(*head)} is named twice in --heads: give each head once")
        heads.append(head)
    if not heads:
        raise UsageError(f"no heads given: expected {ACCEPTED}, comma-separated")
    return heads


def require_in_model(layer: int, head: int, n_layers: int, n_heads: int, model: str, where: str = "") -> None:
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise UsageError(f"{where}head {head_name(layer, head)} is out of range for {model}: expected LAYER 0..{n_layers - 1} "
                         f"and HEAD 0..{n_heads - 1} (0-based)")
