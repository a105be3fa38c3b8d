"""``mech-interp report``: a static site of a results tree, built from tiny runs made here once.

The tree holds the four language-model experiments on ``planted:gpt2-tiny`` (a massive activation
planted at block 2, dim 17), three on ``random:llama-tiny`` (no massive activation: its intervention
cannot run), a run of another writer (a training run: a manifest without ``experiment`` or
``finished_at``, a CSV-only table, a PNG-only figure) and a ``.partial`` run that must never be read.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
import pytest

from mech_interp.models.run_options import RunOptions
from mech_interp.report.discovery import find_runs
from mech_interp.report.model_page import model_page_path, run_anchor
from mech_interp.report.rounding import rounded
from mech_interp.report.tables import MAX_ROWS
from mech_interp.report.tree import ResultsTree
from mech_interp.runs.runner import Contexts, execute
from mech_interp.runs.spec import RunSpec
from tests.cli_runs import assert_refused, files_under, run_cli

FAST = {"n_seqs": 2, "seq_len": 64}
RUNS = {
    "planted:gpt2-tiny": [("layerwise", {}), ("layerwise", FAST), ("feature_view", {}), ("attention", {}),
                          ("intervention", {"layer": 2, "datasets": ["builtin"], "n_windows": 2, "seq_len": 64,
                                           "n_mean_seqs": 4})],
    "random:llama-tiny": [("layerwise", FAST), ("feature_view", {}), ("attention", {})],
}
FOREIGN = "train/tiny/default"


def _png() -> bytes:
    """A 1x1 grey PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


_BUILT: list[Path] = []  # the tree, once per session also when test_report_browser.py imports the fixture


@pytest.fixture(scope="session")
def results_tree(tmp_path_factory) -> Path:
    if not _BUILT:
        _BUILT.append(_build(tmp_path_factory.mktemp("report") / "results"))
    return _BUILT[0]


def _build(root: Path) -> Path:
    # no PNG (seconds a figure): conftest sets MECH_INTERP_PNG=0 for every test
    for model, runs in RUNS.items():
        options = RunOptions(model=model, device="cpu")
        loaded = Contexts()
        for experiment, params in runs:
            execute(RunSpec(experiment, options, params), root, loaded)
    foreign = root / FOREIGN
    foreign.mkdir(parents=True)
    pd.DataFrame({"step": [1, 2, 3], "train_loss": [10.8, 9.1, 8.0]}).to_csv(foreign / "log.csv", index=False)
    (foreign / "loss_curve.png").write_bytes(_png())
    (foreign / "manifest.json").write_text(json.dumps({
        "summary": {"steps": 3}, "config": {"variant": "default", "preset": "tiny"},
        "packages": {"torch": "9.9.9-test"}, "git_commit": "feedc0de"}))
    partial = root / "planted-gpt2-tiny" / "layerwise__n_seqs=99.partial"
    partial.mkdir()
    (partial / "manifest.json").write_text(json.dumps({"experiment": "layerwise", "git_commit": "PARTIAL"}))
    (partial / "layerwise.csv").write_text("layer,top1\n0,1\n")
    return root


@pytest.fixture(scope="session")
def site(results_tree: Path) -> Path:
    from mech_interp import cli

    code = cli.main(["report", str(results_tree)])
    assert code == 0
    return results_tree / "report"


class _Page(HTMLParser):
    """Links, ids, and each ``<table id>``'s header and body rows (cell texts) of one page."""

    def __init__(self, path: Path):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tables: dict[str, dict[str, list]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_head = False
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src", "data-src"):  # data-src: a figure frame's, set when it comes into view
            if attrs.get(key):
                self.links.append(attrs[key])
        if tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = {"head": [], "rows": []}
        elif tag == "thead":
            self._in_head = True
        elif tag == "tbody":
            self._in_head = False
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self.tables[self._table]["head" if self._in_head else "rows"].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _table(page: _Page, table_id: str) -> list[dict[str, str]]:
    table = page.tables[table_id]
    return [dict(zip(table["head"][0], row)) for row in table["rows"]]


def test_index_lists_every_model_and_run_with_its_provenance(site: Path, results_tree: Path):
    page = _Page(site / "index.html")
    models = {row["model directory"]: row for row in _table(page, "models")}
    assert set(models) == {"planted-gpt2-tiny", "random-llama-tiny", "train/tiny"}
    assert models["planted-gpt2-tiny"]["runs"] == "5" and models["random-llama-tiny"]["runs"] == "3"
    runs = {(row["model"], row["run"]): row for row in _table(page, "runs")}
    expected = {(r.model, r.name): r for r in find_runs(ResultsTree(results_tree), skip=site)}
    assert set(runs) == set(expected) and len(runs) == 9
    for key, run in expected.items():
        row = runs[key]
        assert row["commit"].startswith((run.manifest["git_commit"] or "-")[:12])  # None outside a git checkout
        assert f"torch {run.manifest['packages']['torch']}" in row["versions"]
        engine = run.manifest.get("engine")  # hooked_transformer, timm, ...; the hand-written manifest names none
        assert row["engine"].startswith(engine["name"] + " (") if engine else row["engine"] == "-"
        assert row["finished"] == run.manifest.get("finished_at", row["finished"])
    layerwise = runs[("planted-gpt2-tiny", "layerwise__n_seqs=2__seq_len=64")]
    assert "n_seqs=2" in layerwise["config"] and "seq_len=64" in layerwise["config"]
    assert "min_ratio=1000.0" in layerwise["options"] and layerwise["experiment"] == "layerwise"
    foreign = runs[("train/tiny", "default")]
    assert foreign["experiment"] == "default" and foreign["finished"].endswith("(file time)")
    assert "variant=default" in foreign["config"]
    assert "PARTIAL" not in (site / "index.html").read_text()  # the .partial run is never read


def test_model_pages_hold_every_table_and_figure(site: Path, results_tree: Path):
    runs = find_runs(ResultsTree(results_tree), skip=site)
    for model in {r.model for r in runs}:
        page = _Page(model_page_path(site, model))
        text = model_page_path(site, model).read_text()
        assert "manifest fields left out" not in text and "not read, links" not in text  # every writer's types fit
        for run in (r for r in runs if r.model == model):
            anchor = run_anchor(run)
            assert anchor in page.ids
            for table, path in run.tables.items():
                data = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
                shown = page.tables[f"{anchor}-table-{table}"]
                assert shown["head"][0] == [str(c) for c in data.columns]
                assert len(shown["rows"]) == min(len(data), MAX_ROWS), (run.rel, table)
                csv = site / "runs" / run.rel / f"{table}.csv"
                assert len(pd.read_csv(csv)) == len(data)  # the whole table, also past the cap
            for figure in run.figures:
                assert any(link.endswith(f"/{figure}.html") and run.name in unquote(link) for link in page.links)
    capped = _Page(site / "models" / "planted-gpt2-tiny.html")
    logits = pd.read_parquet(results_tree / "planted-gpt2-tiny" / "attention" / "attention_logits.parquet")
    assert len(logits) > MAX_ROWS  # the cap is exercised
    text = (site / "models" / "planted-gpt2-tiny.html").read_text()
    assert f"the first {MAX_ROWS} of {len(logits)} rows" in text
    assert len(capped.tables["run-planted-gpt2-tiny/attention-table-attention_logits"]["rows"]) == MAX_ROWS
    foreign = _Page(site / "models" / "train__tiny.html")
    assert any(link.endswith("runs/train/tiny/default/loss_curve.png") for link in foreign.links)  # PNG-only figure
    assert len(foreign.tables["run-train/tiny/default-table-log"]["rows"]) == 3


def test_comparison_page_compares_both_models(site: Path, results_tree: Path):
    page = _Page(site / "compare.html")
    rows = _table(page, "comparison")
    planted = next(row for row in rows if row["model"].startswith("planted-gpt2-tiny"))
    llama = next(row for row in rows if row["model"].startswith("random-llama-tiny"))
    assert len(rows) == 2  # the training run has no table this page reads
    assert planted["first massive block"] == "2" and planted["massive dims"] == "17"
    assert "'.'" in planted["tokens"] and planted["feature view"].startswith("block 2: ")
    layerwise = pd.read_parquet(results_tree / "planted-gpt2-tiny" / "layerwise" / "layerwise.parquet")
    at2 = layerwise[layerwise["layer"] == 2].iloc[0]
    assert planted["top-1"] == rounded(at2["top1"])  # the default-settings run, not FAST
    assert planted["top-1/median"] == rounded(at2["ratio_of_means_top1_median"])
    ppl = pd.read_parquet(next((results_tree / "planted-gpt2-tiny").glob("intervention*")) / "perplexity.parquet")
    text = (site / "compare.html").read_text()
    for condition in ("original", "set_zero", "set_mean"):
        assert planted[f"builtin: {condition}"] == rounded(ppl[condition].iloc[0])
        assert f'data-v="{float(ppl[condition].iloc[0])!r}"' in text  # sorted by every digit
        assert llama[f"builtin: {condition}"] == "-"  # no intervention run on this model
    assert llama["first massive block"] == "none" and llama["massive dims"] == "-" and llama["top-1"] == "-"
    assert llama["largest top-1/median"].endswith(")") and planted["sink share"].endswith("(eps 0.3)")
    shares = pd.read_parquet(results_tree / "random-llama-tiny" / "attention" / "sink_share.parquet")
    assert llama["sink share"].startswith(f"{rounded(shares['n_sink_heads'].sum() / shares['n_heads'].sum())} of "
                                          f"{shares['n_heads'].sum()} heads")
    assert "layerwise" in planted["runs read"].split(", ")
    for header in page.tables["comparison"]["head"][0][1:]:
        assert f"<dt>{header.split(': ')[-1]}</dt>" in text or header == "runs read", header  # every metric defined


def _findings(page: _Page) -> dict[tuple[str, str], tuple[str, str]]:
    """(run, finding) -> (value, definition) of a page's findings box (a run's name spans its rows)."""
    found, run = {}, ""
    for row in page.tables["findings-table"]["rows"]:
        if len(row) == 4:
            run, row = row[0], row[1:]
        found[(run, row[0])] = (row[1], row[2])
    return found


def test_a_model_page_shows_its_runs_in_the_papers_order(site: Path, results_tree: Path):
    text = (site / "models" / "planted-gpt2-tiny.html").read_text()
    shown = re.findall(r'<section class="run" id="run-planted-gpt2-tiny/([^"]+)"', text)
    experiments = [json.loads((results_tree / "planted-gpt2-tiny" / name / "manifest.json").read_text())["experiment"]
                   for name in shown]
    # written layerwise, layerwise (FAST), feature_view, attention, intervention; by name attention would lead
    assert experiments == ["layerwise", "layerwise", "feature_view", "intervention", "attention"]
    assert shown[0] == "layerwise"  # of one experiment, the default settings first
    models = {row["model directory"]: row for row in _table(_Page(site / "index.html"), "models")}
    assert models["planted-gpt2-tiny"]["experiments"] == "layerwise, feature_view, intervention, attention"


def test_a_model_page_opens_with_its_findings_each_defined(site: Path, results_tree: Path):
    from mech_interp.metrics.relative_change import change_text
    from mech_interp.report.comparison import DEFINITIONS

    path = site / "models" / "planted-gpt2-tiny.html"
    text = path.read_text()
    assert text.index('id="findings"') < text.index('<section class="run"')  # at the top
    found = _findings(_Page(path))
    tree = results_tree / "planted-gpt2-tiny"
    layerwise = pd.read_parquet(tree / "layerwise" / "layerwise.parquet").set_index("layer").loc[2]
    assert found[("layerwise", "first massive block")] == ("2", DEFINITIONS["first massive block"])
    assert found[("layerwise", "massive dims")] == ("17", DEFINITIONS["massive dims"])
    assert found[("layerwise", "top-1/median")] == (rounded(layerwise["ratio_of_means_top1_median"]),
                                                    DEFINITIONS["top-1/median"])
    view = json.loads((tree / "feature_view" / "manifest.json").read_text())["summary"]
    assert found[("feature_view", "largest |a|")][0] == (f"block 2: {rounded(view['max_abs'])} "
                                                         f"(median |a| {rounded(view['median_abs'])})")
    intervention = next(tree.glob("intervention*"))
    ppl = pd.read_parquet(intervention / "perplexity.parquet").iloc[0]
    value, definition = found[(intervention.name, "perplexity, builtin")]
    assert value == (f"at block 2: original {rounded(ppl['original'])}, set_zero {rounded(ppl['set_zero'])} "
                     f"({change_text(ppl['set_zero'], ppl['original'])}), set_mean {rounded(ppl['set_mean'])} "
                     f"({change_text(ppl['set_mean'], ppl['original'])})")
    assert DEFINITIONS["set_zero"] in definition and "as a factor (x) from 10x up" in definition
    assert found[("attention", "sink share")][1] == DEFINITIONS["sink share"]
    llama = _findings(_Page(site / "models" / "random-llama-tiny.html"))
    assert llama[("layerwise__n_seqs=2__seq_len=64", "first massive block")][0] == "none"
    assert llama[("layerwise__n_seqs=2__seq_len=64", "largest top-1/median")][0].endswith(")")
    assert 'id="findings"' not in (site / "models" / "train__tiny.html").read_text()  # nothing it knows to read
    models = {row["model directory"]: row for row in _table(_Page(site / "index.html"), "models")}
    assert "first massive block: 2" in models["planted-gpt2-tiny"]["findings"]
    assert "first massive block: none" in models["random-llama-tiny"]["findings"]
    assert models["train/tiny"]["findings"] == "-"


def test_tables_show_rounded_numbers_and_sort_by_every_digit(site: Path, results_tree: Path):
    data = pd.read_parquet(results_tree / "planted-gpt2-tiny" / "layerwise" / "layerwise.parquet")
    text = (site / "models" / "planted-gpt2-tiny.html").read_text()
    shown = _Page(site / "models" / "planted-gpt2-tiny.html").tables["run-planted-gpt2-tiny/layerwise-table-layerwise"]
    column = shown["head"][0].index("top1")
    assert [row[column] for row in shown["rows"]] == [rounded(v) for v in data["top1"]]
    assert all(f'data-v="{float(v)!r}">{rounded(v)}</td>' in text for v in data["top1"])
    assert any(len(rounded(v)) < len(repr(float(v))) for v in data["top1"])  # the rounding is exercised


def test_every_link_resolves_offline(site: Path):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    for page_path in pages:
        page = _Page(page_path)
        for address in page.links:
            parts = urlsplit(address)
            assert not parts.scheme and not parts.netloc, f"{page_path}: {address} needs the network"
            if not parts.path:
                assert parts.fragment in page.ids, f"{page_path}: #{parts.fragment}"
                continue
            target = (page_path.parent / unquote(parts.path)).resolve()
            assert target.is_file(), f"{page_path}: {address}"
            assert site.resolve() in target.parents, f"{page_path}: {address} leaves the site"
            if parts.fragment:
                assert parts.fragment in _Page(target).ids, f"{page_path}: {address}"
    figure = (site / "runs" / "planted-gpt2-tiny" / "layerwise" / "layerwise.html").read_text()
    assert '<script charset="utf-8" src="../../../plotly.min.js">' in figure
    assert (site / "plotly.min.js").stat().st_size > 1_000_000


def test_a_rerun_replaces_the_site_and_never_reads_it(site: Path, results_tree: Path, capsys):
    stale = site / "models" / "gone.html"
    stale.write_text("from an earlier report")
    code, out, err = run_cli(["report", results_tree], capsys)
    assert code == 0, err
    assert "9 runs of 3 models (2 compared)" in out  # the site under the results tree is not a run
    assert not stale.exists() and (site / "index.html").is_file()
    assert not list(results_tree.glob("report.partial"))


@pytest.mark.parametrize("case", ["missing", "file", "empty", "only_partial"])
def test_a_bad_results_directory_is_refused(case: str, tmp_path: Path, capsys):
    results = tmp_path / "results"
    needle = {"missing": "does not exist", "file": "is not a directory", "empty": "holds no run manifests",
              "only_partial": "holds no run manifests"}[case]
    if case == "file":
        results.write_text("not a tree")
    elif case in ("empty", "only_partial"):
        results.mkdir()
    if case == "only_partial":
        (results / "m" / "layerwise.partial").mkdir(parents=True)
        (results / "m" / "layerwise.partial" / "manifest.json").write_text("{}")
    before = files_under(tmp_path)
    code, _, err = run_cli(["report", results, "--out", tmp_path / "site"], capsys)
    assert_refused(code, err, needle, tmp_path / "site")
    assert str(results) in err and "manifest.json" in err  # names it and what is expected
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("case", ["under_a_file", "foreign_files", "is_results", "a_file"])
def test_an_unwritable_out_is_refused(case: str, results_tree: Path, tmp_path: Path, capsys):
    out = {"under_a_file": tmp_path / "file" / "site", "foreign_files": tmp_path / "mine",
           "is_results": results_tree, "a_file": tmp_path / "file"}[case]
    needle = {"under_a_file": "not a writable directory", "foreign_files": "not an earlier report",
              "is_results": "holds the results directory", "a_file": "is not a directory"}[case]
    (tmp_path / "file").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = {p: p.stat().st_mtime_ns for p in files_under(tmp_path) + files_under(results_tree)}
    code, _, err = run_cli(["report", results_tree, "--out", out], capsys)
    errors = [line for line in err.splitlines() if line.startswith("mech-interp: error:")]
    assert code == 2 and len(errors) == 1 and needle in errors[0] and "Traceback" not in err, err
    assert {p: p.stat().st_mtime_ns for p in files_under(tmp_path) + files_under(results_tree)} == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_help_names_the_default_site(capsys):
    code, out, _ = run_cli(["report", "--help"], capsys)
    assert code == 0 and "RESULTS_DIR/report" in " ".join(out.split())


def test_a_foreign_partial_beside_out_is_refused_and_kept(results_tree: Path, tmp_path: Path, capsys):
    mine = tmp_path / "site.partial"
    mine.mkdir()
    (mine / "data.txt").write_text("precious")
    code, _, err = run_cli(["report", results_tree, "--out", tmp_path / "site"], capsys)
    assert_refused(code, err, "site.partial' exists and is not an interrupted report", tmp_path / "site")
    assert (mine / "data.txt").read_text() == "precious"
    code, _, err = run_cli(["report", results_tree, "--out", ""], capsys)
    assert code == 2 and "--out '' is not allowed" in err and "Traceback" not in err


def test_an_interrupted_swap_keeps_the_previous_site(results_tree: Path, tmp_path: Path, monkeypatch):
    import os

    from mech_interp.report import site as site_module

    out = tmp_path / "site"
    site_module.build_site(results_tree, out)
    before = (out / "index.html").read_text()
    replace = os.replace

    def interrupted(src, dst):
        if str(src).endswith(".partial"):
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(site_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        site_module.build_site(results_tree, out)
    assert (out / "index.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no .partial, no .old


def test_odd_model_names_get_pages_of_their_own(tmp_path: Path, monkeypatch, capsys):
    results = tmp_path / "results"
    for model in ("mod a", "mod_a", "x<y&z"):
        run = results / model / "run=1,b"
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"experiment": "layerwise", "model_source": 5}))
        pd.DataFrame({"v": [1.0, float("inf"), float("nan")]}).to_parquet(run / "t.parquet")
    monkeypatch.chdir(results)
    code, stdout, err = run_cli(["report", ".", "--out", tmp_path / "site"], capsys)
    assert code == 0, err
    pages = sorted(p.name for p in (tmp_path / "site" / "models").iterdir())
    assert len(pages) == 3 and all(not name.startswith(".") for name in pages), pages
    index = _Page(tmp_path / "site" / "index.html")
    assert len({link.split("#")[0] for link in index.links if link.startswith("models/")}) == 3
    text = (tmp_path / "site" / "models" / next(p for p in pages if p.startswith("x"))).read_text()
    assert "x&lt;y&amp;z" in text and "x<y&z" not in text
    assert 'data-v="Infinity"' in text  # what JavaScript's Number() sorts as a number
