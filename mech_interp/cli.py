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
from .models.run_options import RunOptions
from .report.command import add_report_parser, report_main
from .validation.errors import UsageError

STUDIES = ("lm", "heads")  # the studies mech-interp serves (runs.studies.STUDIES names every study)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mech-interp", description=__doc__)
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    study = sub.add_parser("study", help="all four experiments (the main job); 'study heads': the head study's six")
    study.add_argument("which", nargs="?", choices=STUDIES, default="lm",
                       help="lm (default): the paper's four experiments; heads: head scores, ablations, attribution")
    add_fields(study, RunOptions)
    add_out(study)
    study.add_argument("--layerwise-n-seqs", type=int, default=None, help="sequences for the layer-wise statistics (default: layerwise's --n-seqs)")
    study.add_argument("--n-windows", type=int, default=None, help="perplexity windows per dataset, 0 = all (default: intervention's --n-windows)")
    study.add_argument("--datasets", default=None, help="perplexity datasets, comma-separated (default: intervention's --datasets)")
    add_engine_commands(sub, STUDIES, "configs/layers_sweep.toml")
    add_report_parser(sub)
    from .studies.lm.configs import LayerwiseConfig

    add_plan_parser(sub, LayerwiseConfig())
    return parser


def _study(ns: argparse.Namespace) -> None:
    if ns.which != "lm":
        for flag, value in (("--layerwise-n-seqs", ns.layerwise_n_seqs), ("--n-windows", ns.n_windows), ("--datasets", ns.datasets)):
            if value is not None:
                raise UsageError(f"{flag} belongs to the lm study, not to 'study {ns.which}': run the experiment alone "
                                 f"(mech-interp --help lists them) to change its parameters")
    params = {
        "layerwise": {"n_seqs": ns.layerwise_n_seqs} if ns.layerwise_n_seqs is not None else {},
        "intervention": {k: v for k, v in {
            "n_windows": ns.n_windows,
            "datasets": [d.strip() for d in ns.datasets.split(",") if d.strip()] if ns.datasets else None}.items() if v is not None},
    }
    run_default_study(ns.which, options_from(ns, ns.which), params, ns.out, ns.force, say)


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
    return run_main(build_parser(), argv, _body, "finished runs are kept; the same command resumes the rest")


if __name__ == "__main__":
    sys.exit(main())
