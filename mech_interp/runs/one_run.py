"""``mi.run``: one experiment of any study from Python, with the checks, the seed and the placement of a command-line
run, returning its ``ExperimentResult`` (tables, figures, summary, printed lines)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..validation.errors import UsageError
from .experiment import ExperimentResult
from .spec import RunSpec, resolve
from .studies import find_experiment


def run(experiment: str, model: Any = None, *, study: str | None = None, out: str | Path | None = None,
        **settings: Any) -> ExperimentResult:
    """Run ``experiment`` (``mech-interp --help`` lists them) and return what it computed.

    ``model``: a model spec (a registered name, a local HF directory, a GGUF file, a hub name) or a model already
    loaded (``mi.load_model``); ``None``: the study's default. ``settings``: the experiment's parameters and the study's
    options, by their command-line names with underscores (``n_seqs=4``, ``device="cpu"``, ``placement="streamed"``).
    ``study``: the study whose experiment it is, where names repeat (``"vit"``: ``vit-hooks``', ``"trainer"``:
    ``train-gpt2-bias experiment``'s); default: ``mech-interp``'s. ``out``: a results directory to write the run into, as the command line does (tables, figures, manifest; an earlier
    run of the same configuration there is replaced); without it nothing is written.

    ```python
    >>> import mech_interp as mi
    >>> result = mi.run("layerwise", "random:llama-tiny", n_seqs=2, seq_len=32, device="cpu")
    >>> result.tables["layerwise"]["layer"].tolist()
    [0, 1, 2, 3]

    ```
    """
    import torch

    from .runner import Contexts, execute

    owner, found = find_experiment(experiment, (study,) if study else None)
    option_names = {f.name for f in dataclasses.fields(owner.options_cls)}
    params = {k: v for k, v in settings.items() if k in found.parameters}
    options = {k: v for k, v in settings.items() if k not in params and k in option_names}
    unknown = sorted(set(settings) - set(params) - set(options))
    if unknown:
        raise UsageError(f"unknown setting {unknown[0]!r} for experiment {found.name!r}: accepted "
                         f"{', '.join(sorted(found.parameters | option_names))}")
    loaded = None
    if isinstance(model, str):
        options["model"] = model
    elif model is not None:
        loaded = model
    resolved = resolve(RunSpec(found.name, owner.options_cls(**options), params, study=owner.name))
    if out is not None:
        _, result = execute(resolved, out, force=True, model=loaded)
        return result
    context = None
    if found.needs_model:
        context = resolved.study.context_from(loaded, resolved) if loaded is not None else Contexts().get(resolved)
        resolved.study.check_loaded(context, resolved)
    torch.manual_seed(getattr(resolved.options, "seed", 0))
    return found.run(context, resolved.config)
