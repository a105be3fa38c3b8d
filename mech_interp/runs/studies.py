"""The studies the engine knows, by name: an explicit table of modules, each imported when used.

The engine never imports a study at module level (every study imports the engine), so there is no
circle between them. A new study adds one line here: its name and the module whose ``STUDY``
attribute is its ``runs.study.Study``. ``mech-interp`` runs ``DEFAULT_STUDIES``; ``vit-hooks`` the
``vit`` study; ``train-gpt2-bias experiment`` the ``trainer`` study.
"""

from __future__ import annotations

import importlib

from ..validation.errors import UsageError
from .experiment import Experiment
from .study import Study

STUDIES = {
    "lm": "mech_interp.studies.lm",
    "heads": "mech_interp.studies.heads",
    "followups": "mech_interp.studies.followups",
    "vit": "vit_hooks.study",
    "trainer": "train_gpt2_bias.study",
}
DEFAULT_STUDIES = ("lm", "heads", "followups")  # mech-interp's: the paper's experiments first, so they lead the command list


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise UsageError(f"unknown study {name!r}: expected one of {', '.join(STUDIES)}")
    return importlib.import_module(STUDIES[name]).STUDY


def find_experiment(name: str, studies: tuple[str, ...] | None = None) -> tuple[Study, Experiment]:
    """The study and experiment called ``name`` among ``studies`` (default: mech-interp's)."""
    names = studies or DEFAULT_STUDIES
    for study in map(get_study, names):
        if name.replace("-", "_") in study.experiments:
            return study, study.experiments[name.replace("-", "_")]
    known = [e for s in names for e in get_study(s).experiments]
    raise UsageError(f"unknown experiment {name!r}: expected one of {', '.join(known)}")
