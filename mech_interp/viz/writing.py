"""How figures are written: HTML always, beside one shared plotly.js per results tree, and the static formats asked
for (``--figure-format``, default PNG) when a Chromium is there for kaleido. Each figure is styled for print
(``viz.print_style``) first, so the HTML and every static copy look alike.

The static formats live in the environment (``MECH_INTERP_FIGURE_FORMAT``; the flag sets it) so that every process
a command starts writes the same ones: Ray tasks get the driver's ``MECH_INTERP_*`` variables, and the trainer's
analyses run in the same process. ``MECH_INTERP_PNG=0`` drops PNG whatever was asked (kaleido starts a Chromium for
each figure and format: seconds apiece, most of a small run's time; the tests set it)."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go

from ..storage.atomic_files import atomic_write_text
from ..validation.errors import UsageError, reason
from .print_style import print_style

PLOTLY_JS = "plotly.min.js"
PNG_ENV = "MECH_INTERP_PNG"  # "0": no PNG
FORMAT_ENV = "MECH_INTERP_FIGURE_FORMAT"
STATIC_FORMATS = ("png", "svg", "pdf")
DEFAULT_FORMATS = "png"
# 1100 x 750 CSS pixels; PNG at scale 3 is 3300 px wide: 300 dpi across 11 inches. SVG and PDF are vector.
WIDTH, HEIGHT, PNG_SCALE = 1100, 750, 3
ACCEPTED = "a comma-separated list of png, svg, pdf (HTML is always written), or none"


def parse_formats(value: str) -> tuple[str, ...]:
    """``"svg,pdf"`` -> ``("svg", "pdf")``; ``"none"`` -> ``()``. Anything else is refused in one line."""
    items = [v.strip().lower() for v in str(value).split(",") if v.strip()]
    if items == ["none"]:
        return ()
    bad = [v for v in items if v not in STATIC_FORMATS]
    if bad or not items:
        shown = bad[0] if bad else value
        raise UsageError(f"--figure-format {shown!r} is not allowed: expected {ACCEPTED}")
    return tuple(dict.fromkeys(items))


def set_formats(value: str | None) -> None:
    """What ``--figure-format`` does: checked now, before anything is read or written, then kept for every figure of
    this command and the processes it starts."""
    if value is not None:
        os.environ[FORMAT_ENV] = ",".join(parse_formats(value)) or "none"


def static_formats() -> tuple[str, ...]:
    formats = parse_formats(os.environ.get(FORMAT_ENV, DEFAULT_FORMATS))
    return tuple(f for f in formats if f != "png" or not png_disabled())


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


def browser_available() -> bool:
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")) or bool(
        os.environ.get("BROWSER_PATH"))


def png_export_available() -> bool:
    return not png_disabled() and browser_available()


_warned_browser = False
_server_started = False


def _export(fig: go.Figure, path: Path, fmt: str) -> None:
    """Through one kaleido Chromium for the whole process (started on first use): a Chromium per figure costs seconds,
    a figure in a running one a fraction of a second. Tried twice: kaleido's page sometimes answers before its
    scripts are defined (``ReferenceError: kaleido_scopes is not defined``), and the next call then succeeds."""
    global _server_started
    if not _server_started:
        import atexit

        import kaleido

        kaleido.start_sync_server(silence_warnings=True)
        atexit.register(kaleido.stop_sync_server, silence_warnings=True)
        _server_started = True
    for attempt in (1, 2):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")  # plotly's, for a server
                fig.write_image(path, format=fmt, width=WIDTH, height=HEIGHT, scale=PNG_SCALE if fmt == "png" else 1)
            return
        except Exception:
            if attempt == 2:
                raise


@dataclass(frozen=True)
class WrittenFigure:
    """What ``write_figure`` wrote, and why each static file that failed to export is missing (for the manifest)."""

    paths: list[Path]
    missing: dict[str, str] = field(default_factory=dict)  # file name -> why


def write_figure(fig: go.Figure, base: Path, plotly_js_src: str) -> WrittenFigure:
    """``base.html`` always; ``base.<format>`` for each static format when a Chromium is there for kaleido (else one
    warning). A failed export (kaleido's Chromium crashing, a broken browser install) is a warning and an entry of
    ``missing``, never an exception: the run's tables and HTML figure were computed and must not be lost for a
    static image."""
    global _warned_browser
    fig = print_style(fig)
    html = base.with_suffix(".html")
    fig.write_html(html, include_plotlyjs=plotly_js_src, full_html=True, config={"responsive": True})
    written, missing = [html], {}
    wanted = static_formats()
    formats = [f for f in wanted if (png_export_available() if f == "png" else browser_available())]
    if len(formats) < len(wanted) and not browser_available() and not _warned_browser:
        warnings.warn(f"no Chromium found: figures are written as HTML only, not {', '.join(wanted)} "
                      "(install chromium for static figures)")
        _warned_browser = True
    for fmt in formats:
        path = base.with_suffix(f".{fmt}")
        try:
            _export(fig, path, fmt)
        except Exception as err:  # kaleido raises whatever its browser bridge raised (ReferenceError, RuntimeError, ...)
            path.unlink(missing_ok=True)
            missing[path.name] = reason(err, 300)
            warnings.warn(f"{path.name} was not written ({missing[path.name]}); {html.name} was", stacklevel=2)
            continue
        written.append(path)
    return WrittenFigure(written, missing)
