"""``mech-interp report`` on hostile results trees and outputs, built by hand (no model runs).

A results tree may come from someone else (an archive, a shared disk): its links must never make the
report read outside it, its manifests and tables may hold anything, and its names may hold markup.
Every case runs the CLI in-process and checks what every case must hold: no traceback, nothing
written outside ``--out``, not a byte of the file outside the tree in the site, no markup of the
tree's in the site's pages. Refusals must further be one line, exit status 2, touching nothing.
"""

from __future__ import annotations

import json
import os
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from tests.cli_runs import run_cli

SECRET = "SECRET-outside-the-results-tree"
LAYERWISE = {"layer": [0, 1, 2], "top1": [1.0, 5.0, 3000.0], "median": [1.0, 1.0, 1.0],
             "ratio_of_means_top1_median": [1.0, 5.0, 3000.0], "seq_fraction_with_massive": [0.0, 0.0, 1.0]}
MARKER = ".mech-interp-report"  # what the report writes into each directory of its own


# --- the trees, built in tmp by name: results/ (the tree), outside/ (a secret the tree must not leak) --

def _run(tmp: Path, rel: str, manifest=None, tables: dict | None = None, raw: str | bytes | None = None) -> Path:
    run = tmp / "results" / rel
    run.mkdir(parents=True, exist_ok=True)
    doc = raw if raw is not None else json.dumps({"experiment": "layerwise", **(manifest or {})})
    (run / "manifest.json").write_bytes(doc if isinstance(doc, bytes) else doc.encode())
    for name, columns in (tables or {}).items():
        pd.DataFrame(columns).to_csv(run / f"{name}.csv", index=False)
    return run


def _plain(tmp: Path) -> Path:
    return _run(tmp, "m/layerwise", tables={"layerwise": LAYERWISE})


def _outside(tmp: Path, name: str, content: str | bytes = SECRET) -> Path:
    target = tmp / "outside" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return target


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _leak_file(tmp: Path, name: str, content: str | bytes = SECRET) -> None:
    _link(_plain(tmp) / name, _outside(tmp, f"secret-{name}", content))


def _leak_parquet(tmp: Path) -> None:
    secret = _outside(tmp, "s.parquet", b"")
    pd.DataFrame({"what": [SECRET]}).to_parquet(secret)
    _link(_plain(tmp) / "leak.parquet", secret)


def _leak_dir(tmp: Path, rel: str) -> None:
    """A link at ``rel`` to a directory outside holding a run (or a model directory of runs)."""
    outside = tmp / "outside" / "tree"
    run = outside / "run" if rel.count("/") == 0 else outside
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"experiment": "layerwise", "git_commit": SECRET}))
    (run / "layerwise.csv").write_text(f"layer,top1\n0,{SECRET}\n")
    _link(tmp / "results" / rel, outside)


def _leak_manifest(tmp: Path) -> None:
    _plain(tmp)
    run = tmp / "results" / "m" / "linked"
    _link(run / "manifest.json", _outside(tmp, "manifest.json", json.dumps({"experiment": SECRET})))
    (run / "t.csv").write_text(f"x\n{SECRET}\n")  # in the tree, but the run is not read: its manifest leaves it


def _leak_through_a_link_in_the_tree(tmp: Path) -> None:
    run = _plain(tmp)
    _link(run / "hop", _outside(tmp, "s.txt"))
    _link(run / "leak.txt", run / "hop")


def _links_inside(tmp: Path) -> None:
    run = _plain(tmp)
    other = _run(tmp, "m/other", {"experiment": "attention"})
    # files of a kind the report does not read: their text reaches the site only through the links
    (other / "table.dat").write_text("kept\nLINKED-TABLE\n")
    (other / "notes.dat").write_text("LINKED-NOTES")
    _link(run / "copy.csv", other / "table.dat")
    _link(run / "notes.txt", Path("../other/notes.dat"))  # relative, as a user would make it
    _link(tmp / "results" / "alias", tmp / "results" / "m")  # a directory: its runs are listed once, where they are


def _broken_links(tmp: Path) -> None:
    run = _plain(tmp)
    _link(run / "gone.csv", tmp / "nowhere.csv")
    _link(run / "loop.csv", run / "loop.csv")
    _link(tmp / "results" / "gone", tmp / "nowhere")


def _fifo_manifest(tmp: Path) -> None:
    _plain(tmp)
    run = tmp / "results" / "m" / "fifo"
    run.mkdir()
    os.mkfifo(run / "manifest.json")
    os.mkfifo(run / "t.csv")


def _not_utf8(tmp: Path) -> None:
    run = os.fsencode(_plain(tmp))
    os.mkdir(run + b"-caf\xe9")
    with open(run + b"-caf\xe9/manifest.json", "w") as f:
        f.write(json.dumps({"experiment": "layerwise"}))
    with open(run + b"/caf\xe9.txt", "w") as f:
        f.write("a name in Latin-1")


def _site(directory: Path, files: dict[str, str] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("an earlier report\n")
    for name, text in (files or {}).items():
        (directory / name).write_text(text)


def _users(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "notes.txt").write_text("the user's, to keep")


def _tables(tmp: Path, experiment: str, tables: dict, manifest: dict | None = None) -> None:
    _plain(tmp)
    _run(tmp, f"n/{experiment}", {"experiment": experiment, **(manifest or {})}, tables)


def _deep(levels: int) -> str:
    """A manifest ``levels`` deep (its config a list of lists) whose innermost value is ``leaf-<levels>``."""
    return '{"experiment": "layerwise", "config": ' + "[" * (levels - 1) + f'"leaf-{levels}"' + "]" * (levels - 1) + "}"


def _bad_manifest(tmp: Path, manifest=None, raw=None) -> None:
    _plain(tmp)
    _run(tmp, "n/odd", manifest, {"layerwise": LAYERWISE}, raw)


def _injected(tmp: Path) -> None:
    run = _run(tmp, '" onmouseover="alert(1)/<img src=x onerror=alert(2)>', {
        "experiment": '"><script>alert(3)</script>', "git_commit": '"><script>alert(4)</script>',
        "model": {"name": "<script>alert(5)</script>"}, "model_source": "<b onclick=alert(6)>",
        "config": {"text": '" onmouseover="alert(7)', "<i onclick=x>": "<script>alert(8)</script>" * 5},
        "options": {"min_abs": '"><script>alert(9)</script>'},
        "packages": {"<script>torch": '" onmouseover="alert(10)'}}, {
        "layerwise": LAYERWISE, 'x" onmouseover="y': {'" onmouseover="z': ["<script>alert(11)</script>"]}})
    (run / "summary.txt").write_text("</pre><script>alert(12)</script>")
    (run / "a'><script>alert(13)<.html").write_text("<html><head></head><body>figure</body></html>")
    _run(tmp, "<svg onload=alert(14)>/feature_view", {"experiment": "feature_view", "summary": {"layer": "<script>"}},
         {"massive_entries": {"position": [0], "dim": [3], "token": ["<script>alert(15)</script>"]}})


def _injected_summaries(tmp: Path) -> None:
    """Markup in the summaries the findings read: every value and definition they show."""
    _run(tmp, "m/head_scores", {"study": "heads", "experiment": "head_scores", "summary": {
        "sink_head_share": 0.5, "sink_eps": 0.3, "definitions": {"sink_share": "<script>alert(30)</script>"},
        "rank_by": "<img src=x onerror=alert(31)>", "ranked_by_definition": '" onmouseover="alert(32)',
        "head_sets": [{"set": "top", "draw": 0, "rank": 0, "layer": 1, "head": 2, "score": 0.9}]}})
    _run(tmp, "m/feature_view", {"experiment": "feature_view", "summary": {
        "layer": 1, "max_abs": 5.0, "tokens": ["<script>alert(33)</script>"],
        "massive": [{"position": 0, "dim": 1, "value": 5.0}]}})
    _run(tmp, "m/head_ablation", {"study": "heads", "experiment": "head_ablation", "summary": {
        "how": "<b onclick=alert(34)>", "perplexity": [{"condition": "</td><script>alert(35)</script>",
                                                        "heads": "<i>", "perplexity": 2.0}]}})


def _table_shown(run: str, table: str) -> tuple[str, str]:
    """The rows of ``run``'s table on its model page (its name alone is there even when it cannot be read)."""
    return "page", f'id="run-{run}-table-{table}"'


def _left_out(problem: str) -> tuple[str, str]:
    """The note on the run's page naming the one manifest field left out."""
    return "page", f"manifest fields left out, of the wrong type: {problem}"


NO_WARNING = ("not warning", "not read")  # every warning says what was not read (checked on every case)
N_NOT_COMPARED = ("not compare", "models/n.html")  # n's runs give compare.html no row, nor a link to them

# (id, setup(tmp) -> None, extra args with {tmp}, expected: a check or a list of checks (where, substring))
# where: "warning": stderr; "page": the text of the site's model pages of m (and n); "compare": compare.html;
# "not <where>": the substring must not be there.
REPORTED = [
    ("link-txt-out-of-tree", lambda t: _leak_file(t, "leak.txt"), [], ("warning", "m/layerwise/leak.txt")),
    ("link-csv-out-of-tree", lambda t: _leak_file(t, "leak.csv", f"x\n{SECRET}\n"), [],
     ("warning", "m/layerwise/leak.csv' is a link leaving the results tree")),
    ("link-md-to-etc", lambda t: _link(_plain(t) / "leak.md", Path("/etc/hostname")), [], ("warning", "leak.md")),
    ("link-parquet-out-of-tree", _leak_parquet, [], ("warning", "leak.parquet")),
    ("link-figure-out-of-tree", lambda t: _leak_file(t, "leak.html", f"<html>{SECRET}</html>"), [],
     ("warning", "leak.html")),
    ("link-png-out-of-tree", lambda t: _leak_file(t, "leak.png", SECRET.encode()), [], ("warning", "leak.png")),
    ("link-listed-on-its-page", lambda t: _leak_file(t, "leak.txt"), [],
     ("page", "not read, links leaving the results tree: leak.txt")),
    ("link-manifest-out-of-tree", _leak_manifest, [], ("warning", "m/linked/manifest.json' is a link leaving")),
    ("link-run-dir-out-of-tree", lambda t: (_plain(t), _leak_dir(t, "m/elsewhere")), [],
     ("warning", "m/elsewhere' is a link")),
    ("link-model-dir-out-of-tree", lambda t: (_plain(t), _leak_dir(t, "model")), [],
     ("warning", "results/model' is a link")),
    ("link-plotly-out-of-tree", lambda t: (_plain(t), _link(t / "results" / "plotly.min.js", _outside(t, "p.js"))),
     [], ("warning", "results/plotly.min.js' is a link leaving")),
    ("link-chain-leaving-the-tree", _leak_through_a_link_in_the_tree, [], ("warning", "leak.txt")),
    ("links-inside-the-tree-are-read", _links_inside, [],
     [("page", "LINKED-TABLE"), ("page", "LINKED-NOTES"), NO_WARNING, ("not page", "not read")]),
    ("broken-and-looping-links", _broken_links, [],
     [_table_shown("m/layerwise", "layerwise"), ("not page", "gone"), ("not page", "loop.csv")]),
    ("fifo-manifest-and-table", _fifo_manifest, [], [_table_shown("m/layerwise", "layerwise"), ("not page", "fifo")]),
    ("names-not-utf8", _not_utf8, [], ("warning", "m/layerwise-caf\\udce9' has a name that is not UTF-8")),
    # manifests of the wrong shape: the run is listed, the field left out and named on its page
    ("finished-at-a-number", lambda t: _bad_manifest(t, {"finished_at": 5}), [],
     _left_out("finished_at is 5, not an ISO 8601 time")),
    ("finished-at-an-object", lambda t: _bad_manifest(t, {"finished_at": {"a": 1}}), [],
     _left_out('finished_at is {"a": 1}, not an ISO 8601 time')),
    ("finished-at-not-a-time", lambda t: _bad_manifest(t, {"finished_at": "zzz"}), [],
     [_left_out('finished_at is "zzz", not an ISO 8601 time'), ("not page", "finished zzz")]),
    ("experiment-a-list", lambda t: _bad_manifest(t, {"experiment": ["layerwise"]}), [],
     _left_out('experiment is ["layerwise"], not text')),
    ("experiment-a-number", lambda t: _bad_manifest(t, {"experiment": 7}), [], _left_out("experiment is 7, not text")),
    ("git-commit-a-list", lambda t: _bad_manifest(t, {"git_commit": [1, 2]}), [],
     _left_out("git_commit is [1, 2], not text")),
    ("seconds-text", lambda t: _bad_manifest(t, {"seconds": "abc"}), [],
     [_left_out('seconds is "abc", not a number'), ("not page", "abc s")]),
    ("seconds-a-boolean", lambda t: _bad_manifest(t, {"seconds": True}), [],
     _left_out("seconds is true, not a number")),
    ("model-a-list", lambda t: _bad_manifest(t, {"model": [1]}), [], _left_out("model is [1], not an object")),
    ("model-name-an-object", lambda t: _bad_manifest(t, {"model": {"name": {"x": 1}}}), [],
     _left_out('model.name is {"x": 1}, not text')),
    ("model-source-a-number", lambda t: _bad_manifest(t, {"model_source": 5}), [],
     _left_out("model_source is 5, not text")),
    ("config-a-list", lambda t: _bad_manifest(t, {"config": [1, 2]}), [], _left_out("config is [1, 2], not an object")),
    ("options-text", lambda t: _bad_manifest(t, {"options": "x"}), [], _left_out('options is "x", not an object')),
    ("summary-a-number", lambda t: _bad_manifest(t, {"summary": 3}), [], _left_out("summary is 3, not an object")),
    ("packages-a-list", lambda t: _bad_manifest(t, {"packages": ["torch"]}), [],
     _left_out('packages is ["torch"], not an object')),
    ("manifest-a-list", lambda t: _bad_manifest(t, raw="[1, 2]"), [], ("page", "not a JSON object")),
    ("manifest-null", lambda t: _bad_manifest(t, raw="null"), [], ("page", "not a JSON object")),
    ("manifest-empty", lambda t: _bad_manifest(t, raw=""), [], ("page", "could not be read")),
    ("manifest-not-utf8", lambda t: _bad_manifest(t, raw=b'{"experiment": "caf\xe9"}'), [], ("page", "not UTF-8")),
    ("manifest-100000-lists-deep", lambda t: _bad_manifest(t, raw="[" * 100000 + "]" * 100000), [],
     ("page", "deeper than 32 levels")),
    ("manifest-100000-objects-deep", lambda t: _bad_manifest(t, raw='{"a":' * 100000 + "1" + "}" * 100000), [],
     ("page", "deeper than 32 levels")),
    ("manifest-40-levels-deep", lambda t: _bad_manifest(t, raw=_deep(40)), [], ("page", "deeper than 32 levels")),
    ("manifest-30-levels-deep-is-read", lambda t: _bad_manifest(t, raw=_deep(30)), [], ("page", '"leaf-30"')),
    # values the comparison reads: of the wrong type, a "?" there (the manifest shows what it holds)
    ("config-n-seqs-text", lambda t: _bad_manifest(t, {"config": {"n_seqs": "abc", "seq_len": 8, "text": "tx"}}), [],
     ("compare", "tx, ? x 8")),
    ("options-min-abs-text", lambda t: _bad_manifest(t, {"options": {"min_abs": "big", "min_ratio": 1000}}), [],
     ("compare", "min_abs ?, min_ratio 1000")),
    ("summary-layer-text", lambda t: _tables(t, "feature_view", {"massive_entries": {"position": [0], "dim": [3]}},
                                            {"summary": {"layer": "two"}}), [], ("compare", '">0 d3<')),
    # tables the comparison reads, holding text or nothing where it reads numbers: not compared, still shown
    ("layerwise-table-text", lambda t: _tables(t, "layerwise", {"layerwise": {
        **LAYERWISE, "top1": ["aa-text", "b", "c"]}}), [], [("page", "aa-text"), N_NOT_COMPARED]),
    ("layerwise-ratio-all-missing", lambda t: _tables(t, "layerwise", {"layerwise": {
        **LAYERWISE, "ratio_of_means_top1_median": [None] * 3}}), [],
     [("compare", '<td data-v="3000.0">3000</td><td data-v="1.0">1</td><td data-v=""></td><td data-v="">-</td>'),
      _table_shown("n/layerwise", "layerwise")]),
    ("feature-view-position-missing", lambda t: _tables(t, "feature_view", {"massive_entries": {
        "position": [None, 1.0], "dim": [3, 4]}}), [],
     [_table_shown("n/feature_view", "massive_entries"), N_NOT_COMPARED]),
    ("feature-view-position-infinite", lambda t: _tables(t, "feature_view", {"massive_entries": {
        "position": [float("inf")], "dim": [3]}}), [],
     [_table_shown("n/feature_view", "massive_entries"), ("page", ">inf<"), N_NOT_COMPARED]),
    ("attention-heads-text", lambda t: _tables(t, "attention", {"sink_share": {
        "n_heads": ["x"], "n_sink_heads": [1], "sink_eps": [0.3]}}), [],
     [_table_shown("n/attention", "sink_share"), N_NOT_COMPARED]),
    ("intervention-perplexity-text", lambda t: _tables(t, "intervention", {"perplexity": {
        "dataset": ["d"], "original": ["high"]}}), [],
     [_table_shown("n/intervention", "perplexity"), ("not compare", "d: original"), N_NOT_COMPARED]),
    ("massive-entries-count-text", lambda t: (_tables(t, "layerwise", {"layerwise": LAYERWISE}), _run(
        t, "n/layerwise", {"experiment": "layerwise"}, {"massive_entries": {
            "layer": [2], "position": [0], "dim": [5], "count": ["many"]}})), [],
     # n's row from its layerwise table alone: no massive dims, positions or tokens from its massive_entries
     [("page", ">many<"), ("compare", '"models/n.html">n</a></td><td data-v="2">2</td><td data-v="min_abs ?, '
                                      'min_ratio ?">min_abs ?, min_ratio ?</td>' + '<td data-v="">-</td>' * 5)]),
    # markup in every name and value the pages show: escaped (checked on every case below)
    ("markup-in-names-and-values", _injected, [], ("page", "<script>alert(5)</script>")),
    ("markup-in-summaries", _injected_summaries, [],  # shown as text in the findings (checked: no markup of theirs)
     [("page", "<script>alert(30)</script>"), ("page", "top heads by <img src=x onerror=alert(31)> score"),
      ("page", "\'<script>alert(33)</script>\'"), ("page", "</td><script>alert(35)</script> (<i>) 2")]),
    # directories of the report's own beside --out may go
    ("earlier-site-old-replaced", lambda t: (_plain(t), _site(t / "site.old", {"x.html": "old"})), [], NO_WARNING),
    ("empty-out-used", lambda t: (_plain(t), (t / "site").mkdir()), [], NO_WARNING),
]


# (id, setup(tmp) -> None, extra args with {tmp}, expected substring of the one error line)
REFUSED = [
    ("old-is-the-users", lambda t: (_plain(t), _users(t / "site.old")), [],
     "'{tmp}/site.old' exists and is not a site the report moved aside"),
    ("old-is-the-users-beside-a-site", lambda t: (_plain(t), _site(t / "site"), _users(t / "site.old")), [],
     "site.old' exists and is not"),
    ("old-is-a-file", lambda t: (_plain(t), (t / "site.old").write_text("mine")), [], "site.old' exists and is not"),
    ("old-is-a-link-to-a-site", lambda t: (_plain(t), _site(t / "theirs"), _link(t / "site.old", t / "theirs")), [],
     "site.old' exists and is not"),
    ("out-is-the-users", lambda t: (_plain(t), _users(t / "site")), [],
     "--out '{tmp}/site' holds files that are not an earlier report"),
    ("out-is-a-link-to-a-site", lambda t: (_plain(t), _site(t / "theirs"), _link(t / "site", t / "theirs")), [],
     "--out '{tmp}/site' is a link"),
    ("partial-is-the-users", lambda t: (_plain(t), _users(t / "site.partial")), [],
     "'{tmp}/site.partial' exists and is not an interrupted report"),
    ("partial-is-a-link-to-a-site", lambda t: (_plain(t), _site(t / "theirs"), _link(t / "site.partial", t / "theirs")),
     [], "site.partial' exists and is not an interrupted report"),
    ("partial-is-a-file", lambda t: (_plain(t), (t / "site.partial").write_text("mine")), [],
     "site.partial' exists and is not an interrupted report"),
    ("out-path-not-utf8", _plain, ["--out", "{tmp}/s\udce9te"], "--out '{tmp}/s\\udce9te' is not UTF-8"),
    ("only-run-is-linked-out", lambda t: _leak_dir(t, "model"), [],
     "holds no run manifests (not read: '{tmp}/results/model' is a link leaving the results tree)"),
]


class _Markup(HTMLParser):
    """What a page's markup does: its scripts and its event-handler attributes."""

    def __init__(self, text: str):
        super().__init__()
        self.scripts: list[str | None] = []
        self.handlers: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))
        self.handlers += [f"<{tag} {name}=...>" for name, _ in attrs if name.startswith("on")]


def _snapshot(tmp: Path) -> dict[str, bytes | str]:
    """Every path under ``tmp``: a file's bytes, a link's target, a directory's kind."""
    state: dict[str, bytes | str] = {}
    for here, dirs, files in os.walk(tmp):
        for name in dirs + files:
            path = Path(here) / name
            state[str(path.relative_to(tmp))] = (
                f"-> {os.readlink(path)}" if path.is_symlink() else "dir" if path.is_dir()
                else "fifo" if not path.is_file() else path.read_bytes())
    return state


def _report(tmp: Path, setup, args: list[str], capsys, monkeypatch) -> tuple[int, str, str, dict, dict]:
    setup(tmp)
    monkeypatch.chdir(tmp)
    before = _snapshot(tmp)
    code, stdout, stderr = run_cli(["report", tmp / "results", "--out", tmp / "site",
                                    *(a.replace("{tmp}", str(tmp)) for a in args)], capsys)
    assert "Traceback" not in stderr, stderr
    return code, stdout, stderr, before, _snapshot(tmp)


@pytest.mark.unit
@pytest.mark.parametrize("case_id, setup, args, expected", REPORTED, ids=[c[0] for c in REPORTED])
def test_a_hostile_tree_is_reported_without_leaving_it(tmp_path, capsys, monkeypatch, case_id, setup, args, expected):
    code, stdout, stderr, before, after = _report(tmp_path, setup, args, capsys, monkeypatch)
    assert code == 0, stderr
    # the site and an earlier one moved aside (.old, the report's own in these cases) may change, nothing else
    def outside(state: dict) -> dict:
        return {k: v for k, v in state.items() if k.split("/")[0] not in ("site", "site.old")}

    assert outside(after) == outside(before), "the report changed files outside --out"
    site = tmp_path / "site"
    files = [p for p in site.rglob("*")]
    assert (site / "index.html").is_file() and not any(p.is_symlink() for p in files)
    assert not any(SECRET.encode() in p.read_bytes() for p in files if p.is_file()), "a file outside the tree leaked"
    assert not any(p.name.startswith("leak.") for p in files), "a link leaving the tree was copied"
    warnings = [line for line in stderr.splitlines() if line]
    assert all(line.startswith("mech-interp: warning: not read: ") for line in warnings), stderr
    assert len(warnings) == len(set(warnings)), "a skipped path was named twice"
    pages = [site / "index.html", site / "compare.html", *sorted((site / "models").glob("*.html"))]
    for page in pages:
        markup = _Markup(page.read_text(encoding="utf-8"))
        assert not markup.handlers, (page.name, markup.handlers)
        assert all(src is not None and src.endswith(("sort.js", "figures.js")) for src in markup.scripts), \
            (page.name, markup.scripts)  # the site's own
    shown = {"warning": stderr, "compare": unescape((site / "compare.html").read_text(encoding="utf-8")),
             "page": "".join(unescape(p.read_text(encoding="utf-8")) for p in pages if p.parent.name == "models")}
    for where, needle in expected if isinstance(expected, list) else [expected]:
        text = shown[where.removeprefix("not ")]
        assert (needle not in text) if where.startswith("not ") else (needle in text), (where, needle, text)
    assert not list(tmp_path.glob("site.*")), "a .partial or .old was left beside the site"


@pytest.mark.unit
@pytest.mark.parametrize("case_id, setup, args, needle", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_directory_not_the_reports_is_refused_and_kept(tmp_path, capsys, monkeypatch, case_id, setup, args, needle):
    code, stdout, stderr, before, after = _report(tmp_path, setup, args, capsys, monkeypatch)
    assert code == 2 and stderr.count("\n") == 1 and stderr.startswith("mech-interp: error: "), stderr
    assert needle.replace("{tmp}", str(tmp_path)) in stderr, stderr
    assert after == before, "a refused report changed files"
