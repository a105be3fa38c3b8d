"""The documentation: the site builds with warnings as errors (mkdocs --strict: a broken link or a page left out of the
navigation fails), every link and image of the built pages resolves inside the site (anchors included), the
conventions page holds the definitions the runs print, the CLI reference is what the parsers print, every relative
link of the README names a file of the repository, the tutorial notebooks are stored with the outputs of a run without
error and are pages of the site with every stored figure, every page (the tutorials too) loads in headless Chromium
with its images and no console error, and the README's library example runs on the embedded model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from docs_hooks.notebooks import NOTEBOOKS, heading_problems, stored_problems
from tests.test_report_browser import browser  # noqa: F401  (headless Chromium, skipped without it)

ROOT = Path(__file__).resolve().parents[1]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for name in ("href", "src"):
            if values.get(name):
                self.links.append(values[name])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_site_builds_and_every_internal_link_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert {"index.html", "getting-started.html", "studies/heads.html", "running/memory.html"} <= \
        {str(p.relative_to(site)) for p in pages}
    parsed = {page: _parse(page) for page in pages}
    broken = []
    for page, content in parsed.items():
        if page.name == "404.html":
            continue  # a web server's error page, linked from the server's root; never opened from disk
        for link in content.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue  # outside the site (the paper, the theme's repository links)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or site.resolve() not in target.parents:
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html" and \
                    parts.fragment not in (parsed.get(target) or _parse(target)).ids:
                broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, "\n".join(broken)


def test_the_notebooks_are_stored_with_the_outputs_of_one_run_without_error():
    notebooks = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert len(notebooks) == 5
    problems = [f"{path.name}: {problem}" for path in notebooks for problem in stored_problems(path)]
    assert not problems, "\n".join(problems) + "\n(make notebooks stores them executed)"


def test_a_notebook_stored_unexecuted_or_with_an_error_or_a_code_heading_is_refused(tmp_path):
    """What the build's hook warns about (and the strict build fails on)."""
    import nbformat

    unexecuted = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# About `mi.run`\n```python\n# a comment, `not` a heading\n```"),
        nbformat.v4.new_code_cell("1 + 1")])
    failed = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 / 0", execution_count=1, outputs=[
        nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])])])
    for name, nb in {"unexecuted": unexecuted, "failed": failed}.items():
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    assert stored_problems(tmp_path / "unexecuted.ipynb") == ["stored unexecuted (no outputs)"]
    assert [problem.split(" (")[0] for problem in heading_problems(tmp_path / "unexecuted.ipynb")] == \
        ["cell 0: code in the heading '# About `mi.run`'"]
    assert stored_problems(tmp_path / "failed.ipynb") == ["cell 0 stored an error: ZeroDivisionError: division by zero"]


def test_every_tutorial_is_a_page_with_its_stored_figures(site):
    """Each notebook is a page of the site (which the Chromium test below opens) showing every PNG it stores."""
    import nbformat

    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        stored = sum("image/png" in output.get("data", {})
                     for cell in nbformat.read(path, as_version=4).cells for output in cell.get("outputs", []))
        page = (site / "notebooks" / path.name).with_suffix(".html").read_text(encoding="utf-8")
        assert stored and page.count('src="data:image/png;base64,') == stored, path.name


def test_the_conventions_page_holds_the_definitions_the_runs_print():
    script = ROOT / "scripts" / "conventions_page.py"
    section = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    page = ROOT / "docs" / "conventions.md"
    assert section in page.read_text(), f"{page} is stale: python {script} writes its definitions section"


def test_the_cli_reference_is_what_the_parsers_print():
    script = ROOT / "scripts" / "cli_reference.py"
    written = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    page = ROOT / "docs" / "reference" / "cli.md"
    assert written == page.read_text(), f"{page} is stale: python {script} > {page}"


def test_every_relative_link_of_the_readme_names_a_file():
    links = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    relative = [link for link in links if not urlsplit(link).scheme]
    assert relative, "the README links its pages"
    assert not [link for link in relative if not (ROOT / link.split("#")[0]).exists()]


RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```python\n(.*?)```", re.S)  # a Python block the tests execute


def _runnable(page: Path) -> list[str]:
    return RUNNABLE.findall(page.read_text(encoding="utf-8"))


def test_the_readme_library_example_runs(smollm2, tmp_path, monkeypatch):
    """The README's Python block, as written, on the embedded model (which the fixture has cached)."""
    (block,) = _runnable(ROOT / "README.md")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["L"] == 11, "SmolLM2's massive entry appears at block 11"
    assert namespace["stats"].summary.set_index("layer").loc[11, "top1"] > 10_000
    assert namespace["zeroed"] > 100 * namespace["clean"], "zeroing the entry wrecks the model"
    assert len(namespace["heads"]) == 30 * 9, "a score for every head"


DOC_BLOCKS = [pytest.param(page, i, block, id=f"{page.relative_to(ROOT)}-{i}")
              for page in sorted((ROOT / "docs").rglob("*.md")) for i, block in enumerate(_runnable(page))]


@pytest.mark.parametrize("page, index, block", DOC_BLOCKS)
def test_every_docs_block_marked_runnable_runs(page, index, block, smollm2, tmp_path, monkeypatch):
    """A Python block of the docs preceded by ``<!-- runnable -->`` runs as written, in a fresh directory (what it writes
    stays there); the other blocks are sketches that name objects they do not build."""
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{page.relative_to(ROOT)} block {index}", "exec"), {})


def test_every_page_loads_in_chromium_with_its_images_and_no_console_error(site, browser):  # noqa: F811
    """Headless Chromium (as the report's browser test drives it; skipped, saying why, without it) opens every built
    page from file://: no error in the console, and every image drawn (a non-zero natural size)."""
    from tests.test_report_browser import _severe

    broken = []
    for page in sorted(site.rglob("*.html")):
        if page.name == "404.html":
            continue
        browser.get(page.resolve().as_uri())
        browser.execute_script("return document.readyState")
        images = browser.execute_script(
            "return Array.from(document.images).map(img => [img.getAttribute('src'), img.complete && img.naturalWidth])")
        broken += [f"{page.relative_to(site)}: image {src} not drawn" for src, width in images if not width]
        broken += [f"{page.relative_to(site)}: {message}" for message in _severe(browser)]
    assert not broken, "\n".join(broken)
