"""Figures in the site: each run's figure HTML is copied under ``runs/`` with its plotly.js
reference (a relative path into the results tree, or a CDN address) rewritten to the site's one
``plotly.min.js``, and shown in an ``<iframe>`` that loads when it comes near the window
(``LAZY_JS``); a PNG without its HTML is shown as an image."""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from urllib.parse import quote

from ..viz.writing import PLOTLY_JS, ensure_plotly_js
from .tree import ResultsTree

# the src of the <script> that loads plotly.js, whatever path or address a writer gave it
_PLOTLY_SRC = re.compile(r'(<script\b[^>]*\bsrc=")[^"]*plotly[^"/]*\.js(")', re.IGNORECASE)


def copy_plotly_js(tree: ResultsTree, site: Path) -> Path:
    """The results tree's own copy (the one its figures were written against), else the installed
    plotly package's."""
    source = tree.root / PLOTLY_JS
    if not source.is_file() or not tree.holds(source):
        return ensure_plotly_js(site)
    shutil.copyfile(source, site / PLOTLY_JS)
    return site / PLOTLY_JS


def copy_figure(source: Path, target: Path, plotly_js: Path) -> None:
    text = source.read_text(encoding="utf-8", errors="replace")
    src = quote(os.path.relpath(plotly_js, target.parent).replace(os.sep, "/"))
    text = _PLOTLY_SRC.sub(lambda m: m.group(1) + src + m.group(2), text)
    # the figure fills its frame (height 100%): the body's default margin would add a scroll bar
    text = re.sub(r"(<head[^>]*>)", r"\1<style>body { margin: 0; }</style>", text, count=1, flags=re.IGNORECASE)
    target.write_text(text, encoding="utf-8")


def link(target: Path, page: Path) -> str:
    """``target``'s address relative to ``page``, escaped for an attribute."""
    return html.escape(quote(os.path.relpath(target, page.parent).replace(os.sep, "/")))


LAZY_FILE = "figures.js"
# Every frame parses its own 3.5 MB of plotly.js and draws: a page of dozens would open in tens of
# seconds. A frame gets its address (data-src) only when it comes within LAZY_MARGIN of the window, so
# what is drawn is what is seen. Chromium's own loading="lazy" loads frames 1250 px or more away.
LAZY_MARGIN = "300px"
LAZY_JS = f"""\
document.addEventListener("DOMContentLoaded", function () {{
  var frames = document.querySelectorAll("iframe[data-src]");
  var load = function (frame) {{ frame.src = frame.getAttribute("data-src"); frame.removeAttribute("data-src"); }};
  if (!("IntersectionObserver" in window)) {{ frames.forEach(load); return; }}
  var observer = new IntersectionObserver(function (entries) {{
    entries.forEach(function (entry) {{
      if (entry.isIntersecting) {{ observer.unobserve(entry.target); load(entry.target); }}
    }});
  }}, {{rootMargin: "{LAZY_MARGIN} 0px"}});
  frames.forEach(function (frame) {{ observer.observe(frame); }});
}});
"""


def figure_html(name: str, copied: Path, page: Path, png: Path | None = None) -> str:
    href = link(copied, page)
    extra = f' · <a href="{link(png, page)}">PNG</a>' if png is not None else ""
    return (f'<figure class="plot"><figcaption>{html.escape(name)} · <a href="{href}">open alone</a>{extra}'
            f'</figcaption><iframe data-src="{href}" title="{html.escape(name)}"></iframe></figure>')


def image_html(name: str, copied: Path, page: Path) -> str:
    return (f'<figure class="image"><figcaption>{html.escape(name)}</figcaption>'
            f'<img src="{link(copied, page)}" alt="{html.escape(name)}"></figure>')
