"""A tutorial notebook executed as the tests run it: a copy with a probe cell appended, which prints
``PROBE <json>`` of the notebook's own variables after every other cell ran."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def execute_with_probe(notebook: Path, probe: str, env: dict[str, str] | None = None) -> tuple[Any, dict[str, Any]]:
    """(the executed copy, the probe's values). ``env``: set in the kernel's environment for the run (the kernel
    starts as a child process and inherits it). A failing cell raises CellExecutionError with its traceback."""
    import nbclient
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(notebook.parent)}})
    before = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        client.execute()
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    text = next(o["text"] for o in nb.cells[-1].outputs if o.get("name") == "stdout" and "PROBE " in o["text"])
    return nb, json.loads(text.split("PROBE ", 1)[1])


def plotly_figures(nb: Any) -> int:
    """How many interactive figures the executed notebook shows."""
    return sum(PLOTLY_MIME in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)
