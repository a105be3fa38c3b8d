"""The site's front page: the models with their headline findings, then every run with what its
manifest records (experiment, configuration, package versions, git commit, when it finished)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .discovery import Run
from .figures import link
from .findings import Finding
from .findings_box import headlines
from .model_page import model_page_path, run_anchor
from .page import render
from .rounding import rounded
from .tables import Cell, sortable_table

MAIN_PACKAGES = ("torch", "transformer-lens", "transformers")


def _pairs(values: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """``key=value`` for each entry of a manifest section; long values cut, in full on hover."""
    out = []
    for key, value in values.items():
        if key in skip or value == "not installed":
            continue
        text = str(value)
        short = text if len(text) <= 48 else text[:45] + "..."
        out.append(f'<span title="{html.escape(text)}">{html.escape(str(key))}={html.escape(short)}</span>')
    return ", ".join(out)


def _versions(run: Run) -> str:
    """The packages that compute the numbers, the others on hover."""
    packages = run.section("packages")
    if not packages:
        return "-"
    pairs = [f"{k} {v}" for k, v in packages.items() if v != "not installed"]
    main = [p for p in pairs if p.split(" ")[0] in MAIN_PACKAGES] or pairs[:3]
    rest = f" (+{len(pairs) - len(main)})" if len(pairs) > len(main) else ""
    return f'<span title="{html.escape(", ".join(pairs))}">{html.escape(", ".join(main))}{rest}</span>'


def _engine(run: Run) -> str:
    """The engine that computed the run (older manifests name none)."""
    engine = run.section("engine")
    if not engine:
        return "-"
    versions = ", ".join(f"{k} {v}" for k, v in engine.items() if k not in ("name", "model_class"))
    return html.escape(f"{engine.get('name', '?')} ({versions})" if versions else str(engine.get("name", "?")))


def _short(commit: str) -> str:
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def write_index(site: Path, results: Path, models: dict[str, list[Run]], found: dict[str, list[Finding]]) -> Path:
    """``models``: each model's runs in the order shown; ``found``: each run's findings, by its path."""
    page = site / "index.html"
    model_rows = []
    for model, runs in models.items():
        href = link(model_page_path(site, model), page)
        names = ", ".join(sorted({r.model_name for r in runs if r.model_name})) or "-"
        experiments = ", ".join(dict.fromkeys(r.experiment for r in runs))
        model_rows.append([Cell(f'<a href="{href}">{html.escape(model)}</a>', model), Cell(html.escape(names), names),
                           Cell(str(len(runs)), str(len(runs))), Cell(*headlines(runs, found)),
                           Cell(html.escape(experiments), experiments)])
    run_rows = []
    for model, runs in models.items():
        for run in runs:
            href = link(model_page_path(site, model), page) + "#" + run_anchor(run)
            run_rows.append([
                Cell(html.escape(model), model),
                Cell(f'<a href="{href}">{html.escape(run.name)}</a>', run.name),
                Cell(html.escape(run.experiment), run.experiment),
                Cell(_pairs(run.section("options"), skip=("model",)) or "-", ""),
                Cell(_pairs(run.section("config")) or "-", ""),
                Cell(_engine(run), str(run.section("engine").get("name", ""))),
                Cell(_versions(run), ""),
                Cell(f'<code title="{html.escape(run.commit)}">{html.escape(_short(run.commit))}</code>', run.commit),
                Cell(html.escape(run.when), run.when),
                Cell("-", "") if run.seconds is None else Cell(rounded(run.seconds), repr(run.seconds)),
            ])
    n_runs = sum(len(r) for r in models.values())
    body = (f'<p class="note">Results tree <code>{html.escape(str(results))}</code>: {n_runs} runs of {len(models)} '
            f'models, read from their manifests (runs in progress, <code>.partial</code>, are not shown). '
            f'<a href="compare.html">Cross-model comparison</a>.</p>\n'
            "<h2>Models</h2>\n<p class=\"note\">A model is a directory of runs; findings: the headline numbers of "
            "its runs (hover one for its definition; all of them, defined, at the top of the model's page); "
            "click a header to sort.</p>\n"
            + '<div class="wide">'
            + sortable_table(["model directory", "model (manifest)", "runs", "findings", "experiments"], model_rows,
                             "models")
            + "</div>"
            + "\n<h2>Runs</h2>\n<p class=\"note\">options and config: the run's settings as its manifest records them "
              "(hover a cut value for all of it); engine: what ran the model (hooked_transformer or transformer_bridge "
              "with its TransformerLens version, timm); versions: the packages it ran with (hover for all); commit: the "
              "project's git commit (+dirty: uncommitted changes; hover for all of it); finished: the manifest's "
              "time, or its file's (UTC); seconds: the experiment's wall time.</p>\n"
            + '<div class="wide">'
            + sortable_table(["model", "run", "experiment", "options", "config", "engine", "versions", "commit",
                              "finished", "seconds"], run_rows, "runs")
            + "</div>")
    render(page, site, "Massive activations: results", body)
    return page
