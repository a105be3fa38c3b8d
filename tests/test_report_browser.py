"""The report site in a real browser: headless Chromium (the Debian ``chromium`` and
``chromium-driver`` packages, which scripts/install.sh adds) driven by Selenium opens the index
from ``file://`` with no network, follows its links to every model page and the comparison page,
checks that a figure far below the window is not loaded until scrolled to, that every plotly figure
then renders (an SVG or canvas of non-zero size in each figure's frame), that every page fits a
window 1280 and 800 pixels wide without a horizontal scroll bar, that a click on a header sorts a
table, and that the browser logged no error. A screenshot is written to the test's directory and,
when ``REPORT_SCREENSHOT`` names a path, there too."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.test_report import results_tree, site  # noqa: F401  (the same tree and site, built once per session)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-extensions", "--no-first-run", "--window-size=1400,1000",
        # WebGL (the 3D feature view) without a GPU: Chromium's software renderer, which it no longer picks alone
        "--enable-unsafe-swiftshader")
RENDER_TIMEOUT_S = 30
WIDTHS = (1280, 800)  # a laptop's window, and half a wide screen's

# Every plotly figure of the frame: drawn when it holds an SVG (2D) or a canvas (WebGL) of non-zero size.
FIGURES_DRAWN = """
const divs = Array.from(document.querySelectorAll('.plotly-graph-div'));
return divs.length > 0 && divs.every(div => Array.from(div.querySelectorAll('svg.main-svg, canvas')).some(el => {
  const box = el.getBoundingClientRect(); return box.width > 0 && box.height > 0; }));
"""


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: install the Debian package chromium (scripts/install.sh does)")
    if not os.path.exists(CHROMEDRIVER):
        pytest.skip(f"no chromedriver at {CHROMEDRIVER}: install the Debian package chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)  # no driver download
    try:
        yield driver
    finally:
        driver.quit()


def _severe(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _check_figures(driver, page: str) -> int:
    """Every figure frame of the current page rendered; returns how many there were."""
    from selenium.common.exceptions import JavascriptException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    frames = driver.find_elements(By.CSS_SELECTOR, "figure.plot iframe")
    for index in range(len(frames)):
        frame = driver.find_elements(By.CSS_SELECTOR, "figure.plot iframe")[index]
        name = frame.get_attribute("title")
        driver.execute_script("arguments[0].scrollIntoView()", frame)
        # in view, the frame gets its address (figures.js), then loads it
        WebDriverWait(driver, RENDER_TIMEOUT_S).until(lambda d: frame.get_attribute("src"),
                                                      f"{page}: figure {name} was not loaded when scrolled to")
        driver.switch_to.frame(frame)
        try:
            WebDriverWait(driver, RENDER_TIMEOUT_S, ignored_exceptions=(JavascriptException,)).until(
                lambda d: d.execute_script(FIGURES_DRAWN), f"{page}: figure {name} did not render")
        finally:
            driver.switch_to.default_content()
    return len(frames)


def _fits(driver, link: str) -> None:
    """The page at ``link`` has no horizontal scroll bar at any of ``WIDTHS`` (wide tables scroll in their box)."""
    try:
        for width in WIDTHS:
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
            driver.get(link)
            scroll, client = driver.execute_script(
                "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];")
            assert scroll <= client, f"{link} at {width} px: {scroll} px wide in a window of {client}"
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _unloaded_below(driver) -> tuple[int, int]:
    """(figure frames far below the window, those of them loaded) on the page as opened."""
    return tuple(driver.execute_script("""
        const far = Array.from(document.querySelectorAll('figure.plot iframe'))
          .filter(f => f.getBoundingClientRect().top > 2 * window.innerHeight);
        return [far.length, far.filter(f => f.getAttribute('src')).length];"""))


def test_the_site_renders_in_chromium(browser, site: Path, tmp_path: Path):  # noqa: F811
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get((site / "index.html").as_uri())
    assert "results" in driver.title
    links = {a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#models a")}
    links_by_name = {"compare": driver.find_element(By.LINK_TEXT, "Cross-model comparison").get_attribute("href")}
    links.add(links_by_name["compare"])
    assert len(links) == 4  # three model pages and the comparison
    assert not _severe(driver)

    # a click on a header sorts the table by it, numerically; a second click reverses
    header = next(th for th in driver.find_elements(By.CSS_SELECTOR, "#runs th") if th.text == "seconds")
    column = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#runs th")].index("seconds") + 1
    for descending in (False, True):
        header.click()
        cells = driver.find_elements(By.CSS_SELECTOR, f"#runs tbody td:nth-child({column})")
        values = [float(c.get_attribute("data-v")) for c in cells if c.get_attribute("data-v")]
        assert len(values) >= 8 and values == sorted(values, reverse=descending)

    # a column of numbers and text (a block, or "none"): numbers first, in numeric order, then the text
    driver.get(links_by_name["compare"])
    table = driver.find_element(By.CSS_SELECTOR, "table.sortable")
    names = [th.text for th in table.find_elements(By.CSS_SELECTOR, "th")]
    table.find_elements(By.CSS_SELECTOR, "th")[names.index("first massive block")].click()
    values = [td.get_attribute("data-v") for td in
              table.find_elements(By.CSS_SELECTOR, f"tbody td:nth-child({names.index('first massive block') + 1})")]
    numbers = [v for v in values if v and v.replace(".", "", 1).isdigit()]
    assert numbers and "none" in values and values[: len(numbers)] == sorted(numbers, key=float), values

    figures, far_away = 0, False
    for link in sorted(links):
        driver.get(link)
        assert driver.find_element(By.TAG_NAME, "h1").text, link
        far, loaded = _unloaded_below(driver)
        assert loaded == 0, f"{link}: {loaded} of the {far} figures far below the window loaded on opening"
        far_away = far_away or far > 0
        figures += _check_figures(driver, link)
        assert not _severe(driver), (link, _severe(driver))
        if "planted" in link:
            driver.get(link + "#run-planted-gpt2-tiny/layerwise")
            _check_figures(driver, link)
            driver.execute_script("document.getElementById('run-planted-gpt2-tiny/layerwise').scrollIntoView()")
            shot = tmp_path / "report.png"
            assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
            if os.environ.get("REPORT_SCREENSHOT"):
                target = Path(os.environ["REPORT_SCREENSHOT"])
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, target)
    assert figures == len(list((site / "runs").rglob("*.html")))  # every figure, the 3D feature views (WebGL) too
    assert far_away  # some page holds figures far below the window: their lazy loading was seen
    for link in sorted(links) + [(site / "index.html").as_uri()]:
        _fits(driver, link)
    assert not _severe(driver)
