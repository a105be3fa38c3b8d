"""How figures are written: HTML always, beside one shared plotly.js per results tree, and PNG
when a Chromium is there for kaleido, unless ``MECH_INTERP_PNG=0`` (kaleido starts a Chromium for
each figure: seconds apiece, most of a small run's time)."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from ..storage.atomic_files import atomic_write_text
from ..validation.errors import reason

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


@dataclass(frozen=True)
class WrittenFigure:
    """What ``write_figure`` wrote, and why the PNG is missing when its export failed (to record in a manifest)."""

    paths: list[Path]
    png_error: str | None = None


def write_figure(fig: go.Figure, base: Path, plotly_js_src: str) -> WrittenFigure:
    """``base.html`` always; ``base.png`` when a Chromium is there for kaleido (else one warning). A failed PNG
    export (kaleido's Chromium crashing, a broken browser install) is a warning and a ``png_error``, never an
    exception: the run's tables and HTML figures were computed and must not be lost for a static image."""
    global _warned_png
    html = base.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=plotly_js_src, full_html=True)
    if png_export_available():
        png = base.with_suffix(".png")
        try:
            fig.write_image(png, width=1100, height=750, scale=1)
        except Exception as err:  # kaleido raises whatever its browser bridge raised (ReferenceError, RuntimeError, ...)
            png.unlink(missing_ok=True)
            why = reason(err, 300)
            warnings.warn(f"{png.name} was not written ({why}); {html.name} was", stacklevel=2)
            return WrittenFigure([html], why)
        return WrittenFigure([html, png])
    if not _warned_png and not png_disabled():
        warnings.warn("no Chromium found: figures are written as HTML only (install chromium for PNG)")
        _warned_png = True
    return WrittenFigure([html])
