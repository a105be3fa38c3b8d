"""How figures are written: HTML always, beside one shared plotly.js per results tree, and PNG
when a Chromium is there for kaleido, unless ``MECH_INTERP_PNG=0`` (kaleido starts a Chromium for
each figure: seconds apiece, most of a small run's time)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import plotly.graph_objects as go

from ..scratch import atomic_write_text

PLOTLY_JS = "plotly.min.js"
PNG_ENV = "MECH_INTERP_PNG"  # "0": HTML figures only


def ensure_plotly_js(results_root: Path) -> Path:
    """One copy of plotly.js per results tree, shared by every figure in it."""
    from plotly.offline import get_plotlyjs

    target = Path(results_root) / PLOTLY_JS
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, get_plotlyjs())
    return target


def png_disabled() -> bool:
    return os.environ.get(PNG_ENV, "1").strip() == "0"


def png_export_available() -> bool:
    return not png_disabled() and any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")) or bool(
        os.environ.get("BROWSER_PATH")
    )


_warned_png = False


def write_figure(fig: go.Figure, base: Path, plotly_js_src: str) -> list[Path]:
    """``base.html`` always; ``base.png`` when a Chromium is there for kaleido (else one warning)."""
    global _warned_png
    html = base.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=plotly_js_src, full_html=True)
    written = [html]
    if png_export_available():
        png = base.with_suffix(".png")
        fig.write_image(png, width=1100, height=750, scale=1)
        written.append(png)
    elif not _warned_png and not png_disabled():
        warnings.warn("no Chromium found: figures are written as HTML only (install chromium for PNG)")
        _warned_png = True
    return written
