"""The ``report`` subcommand of ``mech-interp``: its arguments and what it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .tables import MAX_ROWS

HELP = "write a static HTML site of a results tree (index, one page per model, cross-model comparison)"
DESCRIPTION = f"""\
Write a static HTML site of RESULTS_DIR, read from its runs' manifests (mech-interp, vit-hooks and
train-gpt2-bias runs alike; .partial runs are skipped): index.html lists the models with their headline
findings and every run (configuration, package versions, git commit, when), models/<model>.html opens with
the findings of a model's runs, each defined, then shows every table (sortable, the first {MAX_ROWS} rows;
the CSV holds all) and figure of its runs in the paper's order, compare.html compares where massive
activations appear. Numbers are shown to 4 significant digits; the CSV files keep every digit. It works
offline from file://: the site holds its own plotly.min.js and copies of the runs' manifests, summaries,
CSV tables and figures. An earlier site at --out is replaced; a
directory of the user's at --out, or beside it at --out.partial or --out.old, is refused, never replaced.
Nothing outside RESULTS_DIR is read: a link leaving it is skipped, with a warning naming it."""


def add_report_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("report", help=HELP, description=DESCRIPTION)
    parser.add_argument("results", type=Path, metavar="RESULTS_DIR", help="results tree to report (e.g. results)")
    parser.add_argument("--out", default=None,
                        help="directory for the site (default: RESULTS_DIR/report, skipped when reading the runs); "
                             "must be new, empty or an earlier site")
    return parser


def report_main(ns: argparse.Namespace) -> None:
    from .site import build_site

    site = build_site(ns.results, ns.out)
    for path, why in site.skipped.items():
        print(f"mech-interp: warning: not read: {str(path)!r} {why}", file=sys.stderr)

    def count(n: int, what: str) -> str:
        return f"{n} {what}{'s' if n != 1 else ''}"

    print(f"report of {count(len(site.runs), 'run')} of {count(len(site.models), 'model')} ({site.compared} compared) "
          f"-> {site.out / 'index.html'}")
