"""``mech-interp``: the language-model study from the command line.

    mech-interp study                      # all four experiments on the embedded default model
    mech-interp study heads                # the head study: who reads, writes and removes the massive activation
    mech-interp layerwise --model random:gpt2-tiny --n-seqs 4
    mech-interp batch runs.toml            # many runs, resumable
    mech-interp batch runs.toml --backend ray [--address auto]   # each run a Ray task
    mech-interp report results             # a static HTML site of everything under results/
    mech-interp plan --model M             # memory of a statistics pass, whole and streamed, without weights

Layers are 0-based TransformerLens blocks: ``--layer L`` means ``blocks.L.hook_resid_post``.
Bad input prints one line to stderr and exits with status 2, before anything is written; every run
of a study or batch is checked before the first starts. Ctrl-C prints one line and exits with 130,
keeping finished runs and resumable pieces.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .command_line.exits import OneLineParser, run_main
from .command_line.flags import add_fields
from .command_line.study_commands import (
    add_engine_commands,
    add_out,
    is_engine_command,
    options_from,
    run_default_study,
    run_engine_command,
    say,
)
from .models.placement.command import add_plan_parser, plan_main
from .report.command import add_report_parser, report_main
from .runs.studies import get_study

STUDIES = ("lm", "heads", "followups")  # the studies mech-interp serves (runs.studies.STUDIES names every study)
STUDY_HELP = {
    "lm": "the paper's four experiments (layer-wise statistics, 3D feature view, intervention, attention)",
    "heads": "the head study's experiments: which heads read, write and remove the massive activation",
    "followups": "follow-up experiments of later papers: super weights (Yu et al. 2024)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mech-interp", description=__doc__)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    study = sub.add_parser("study", help="the main job: 'study' or 'study lm' runs the paper's four experiments; "
                                         "'study heads' the head study's six",
                           description="Run a study's default experiments on one model, then print their summaries. "
                                       "'mech-interp study' alone is 'mech-interp study lm'; each study's --help lists "
                                       "its own options.")
    which = study.add_subparsers(dest="which", parser_class=OneLineParser, metavar="{" + ",".join(STUDIES) + "}")
    for name in STUDIES:
        add_study_parser(which, name)
    add_engine_commands(sub, STUDIES, "configs/layers_sweep.toml")
    add_report_parser(sub)
    from .studies.lm.configs import LayerwiseConfig

    add_plan_parser(sub, LayerwiseConfig())
    return parser


def add_study_parser(which, name: str) -> None:
    """``study NAME``: the shared run options, ``--out``, and the lm study's three parameters of its experiments."""
    spec = get_study(name)
    p = which.add_parser(name, help=STUDY_HELP[name], description=f"mech-interp study {name}: {STUDY_HELP[name]}")
    add_fields(p, spec.options_cls)
    add_out(p)
    if name == "lm":
        p.add_argument("--layerwise-n-seqs", type=int, default=None, help="sequences for the layer-wise statistics (default: layerwise's --n-seqs)")
        p.add_argument("--n-windows", type=int, default=None, help="perplexity windows per dataset, 0 = all (default: intervention's --n-windows)")
        p.add_argument("--datasets", default=None, help="perplexity datasets, comma-separated (default: intervention's --datasets)")


def _study(ns: argparse.Namespace) -> None:
    params = {}
    if ns.which == "lm":
        params = {
            "layerwise": {"n_seqs": ns.layerwise_n_seqs} if ns.layerwise_n_seqs is not None else {},
            "intervention": {k: v for k, v in {
                "n_windows": ns.n_windows,
                "datasets": [d.strip() for d in ns.datasets.split(",") if d.strip()] if ns.datasets else None}.items()
                if v is not None},
        }
    run_default_study(ns.which, options_from(ns, ns.which), params, ns.out, ns.force, say)


def with_default_study(argv: Sequence[str]) -> list[str]:
    """``study [flags]`` is ``study lm [flags]``: the lm study is the main job, and ``study --help`` still lists both."""
    argv = list(argv)
    if argv[:1] == ["study"] and (len(argv) == 1 or argv[1] not in (*STUDIES, "-h", "--help")):
        argv.insert(1, "lm")
    return argv


def _body(ns: argparse.Namespace) -> int | None:
    if is_engine_command(ns):
        return run_engine_command(ns, STUDIES, say)
    if ns.command == "study":
        _study(ns)
    elif ns.command == "plan":
        plan_main(ns)
    else:
        report_main(ns)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = with_default_study(sys.argv[1:] if argv is None else argv)
    return run_main(build_parser(), argv, _body, "finished runs are kept; the same command resumes the rest")


if __name__ == "__main__":
    sys.exit(main())
