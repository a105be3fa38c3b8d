#!/usr/bin/env python3
"""Execute the tutorial notebooks in place, so that they are stored with their outputs: the documentation site renders
them from those outputs and never runs them (the notebook tests execute their own copies).

    python scripts/execute_notebooks.py [NOTEBOOK ...]      (make notebooks: all of notebooks/)

Figures are stored as PNG: the notebooks choose plotly's interactive renderer themselves, which would embed plotly.js
(~4 MB) in every notebook and needs JavaScript to be seen. A failing cell stops the run with the notebook and the cell
named, and leaves that notebook as it was stored.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import nbclient
import nbformat
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CELL_TIMEOUT_S = 900

# An IPython startup file of a throwaway IPYTHONDIR: it runs in the kernel before the first cell, so nothing of it is
# stored in the notebook. The notebooks set pio.renderers.default in their first cell, so the PNG renderer is put back
# before every cell rather than once. On a busy machine kaleido's Chromium is now and then asked for a figure before
# its page has loaded ("kaleido_scopes is not defined"): a figure gets a few tries, each in a fresh Chromium.
# tqdm.auto's warning that ipywidgets is missing (its text bars are fine) would store this machine's paths.
STARTUP = """\
import warnings

import plotly.io as _pio

warnings.filterwarnings("ignore", message="IProgress not found")
_png_once = _pio.renderers["png"].to_mimebundle


def _png_tried(fig_dict, tries=3):
    for attempt in range(tries):
        try:
            return _png_once(fig_dict)
        except Exception:
            if attempt == tries - 1:
                raise


def _png_figures(*_):
    _pio.renderers.default = "png"


_pio.renderers["png"].to_mimebundle = _png_tried
get_ipython().events.register("pre_run_cell", _png_figures)
"""


def execute(path: Path, ipython_dir: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    running = {}
    # record_timing=False: no execution timestamps in the cells' metadata, so a rerun's diff is its outputs only;
    # coalesce_streams: a progress bar is stored as its last state, not as every redraw.
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False, coalesce_streams=True,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=lambda cell, cell_index: running.update(index=cell_index, source=cell.source))
    # HTML figures only for runs that write any: a PNG export starts a Chromium per figure and lands in no notebook.
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir), "MECH_INTERP_PNG": "0"}
    try:
        client.execute(env=env)
    except CellExecutionError as err:
        first_line = running["source"].splitlines()[0] if running["source"] else ""
        sys.exit(f"{path.name}: cell {running['index']} failed ({first_line!r}):\n{err}")
    for cell in nb.cells:
        if cell.cell_type == "code":  # a progress bar that cleared itself (leave=False) is left as spaces and a "\r"
            cell.outputs = [out for out in cell.outputs if out.output_type != "stream" or out.text.strip()]
    nbformat.write(nb, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=sorted(NOTEBOOKS.glob("*.ipynb")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ipython-") as ipython_dir:
        startup = Path(ipython_dir) / "profile_default" / "startup" / "00-png-figures.py"
        startup.parent.mkdir(parents=True)
        startup.write_text(STARTUP)
        for path in args.notebooks:
            print(f"executing {path.name}", flush=True)
            execute(path.resolve(), Path(ipython_dir))
            print(f"{path.name}: {path.stat().st_size / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
