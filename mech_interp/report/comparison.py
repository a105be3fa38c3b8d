"""Where massive activations appear, model by model, from the tables of the language-model runs
(``layerwise``, ``feature_view``, ``intervention``, ``attention``). A run is used when its manifest
names the experiment and its table has the columns read here, so a run of another kind (a ViT's
attention) counts only where its table says the same thing. Of several runs of one experiment on
a model, the one under the experiment's plain name (its default settings) is used, else the most
recently finished; the page links the runs it used."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .discovery import Run
from .manifest_fields import number
from .rounding import rounded

PERPLEXITY_CONDITIONS = ("original", "set_zero", "set_mean")
TOP_SHOWN = 5  # positions and tokens listed per model, most frequent first

# (experiment, table, the columns it must have)
SOURCES = {
    "layerwise": ("layerwise", {"layer", "top1", "median", "ratio_of_means_top1_median", "seq_fraction_with_massive"}),
    "feature_view": ("massive_entries", {"position", "dim"}),
    "intervention": ("perplexity", {"dataset", "original"}),
    "attention": ("sink_share", {"n_heads", "n_sink_heads", "sink_eps"}),
}
# The columns read as numbers, by table: a table holding anything else there (text in a hand-edited CSV)
# is not compared (its model page still shows it). Those read as whole numbers must be finite too; a
# layer may be missing (a hook point outside the blocks), a count too (skipped when summed).
NUMERIC = {"layerwise": {"layer", "top1", "median", "ratio_of_means_top1_median", "seq_fraction_with_massive"},
           "massive_entries": {"layer", "position", "dim", "count"},
           "perplexity": set(PERPLEXITY_CONDITIONS),
           "sink_share": {"n_heads", "n_sink_heads", "sink_eps"}}
WHOLE = {"layer", "position", "dim", "count", "n_heads", "n_sink_heads"}
MAY_BE_MISSING = {"layer", "count"}

DEFINITIONS = {
    "first massive block": "the first 0-based block L (blocks.L.hook_resid_post, the paper's layer L+1) whose hidden "
                           "state holds a massive activation in at least half of the layerwise run's sequences; "
                           "'none' when no block does",
    "criterion": "the layerwise run's criterion: an activation a is massive when |a| > min_abs and |a| >= min_ratio "
                 "x the median |a| of its hidden state",
    "layerwise data": "the layerwise run's text, sequences x tokens per sequence",
    "massive dims": "the hidden dimensions of the massive activations at the first massive block over the layerwise "
                    "run's sequences, the most frequent first",
    "positions": f"their positions in the sequence (0-based), with the number of (sequence, dim) occurrences, the "
                 f"{TOP_SHOWN} most frequent",
    "tokens": f"the tokens at those positions, with the number of occurrences, the {TOP_SHOWN} most frequent",
    "feature view": "position 'token' dim of each massive activation on the feature_view run's prompt, at its block",
    "top-1": "at the first massive block: the mean over sequences of each sequence's largest |a|",
    "median": "at the first massive block: the mean over sequences of each sequence's lower median |a|",
    "top-1/median": "at the first massive block: mean top-1 / mean median (a ratio of means)",
    "largest top-1/median": "the largest top-1/median over all blocks, and its block: how far from massive a model "
                            "without massive activations is",
    "intervention block": "the block whose hook_resid_post the intervention run overwrites",
    "original": "perplexity of the unchanged model on the intervention run's windows of that dataset: "
                "exp(sum of next-token negative log-likelihoods / number of predicted tokens)",
    "set_zero": "the same perplexity with the massive activations at the intervention block set to zero",
    "set_mean": "the same perplexity with the massive activations at the intervention block set to their mean "
                "values (the intervention run's massive_means table)",
    "sink share": "share of all heads (every block) whose mean attention to token 0, over the queries q > 0, "
                  "exceeds eps (Gu et al. 2024), on the attention run's prompt; eps as recorded",
}


@dataclass
class ModelComparison:
    model: str
    names: list[str]
    used: dict[str, Run] = field(default_factory=dict)  # experiment -> the run read
    values: dict[str, Any] = field(default_factory=dict)  # column -> value; absent: "-" on the page
    perplexity: dict[str, dict[str, float]] = field(default_factory=dict)  # dataset -> condition -> perplexity


def _load(run: Run, table: str):
    """The table, or None where it cannot be read or holds other than numbers where ``NUMERIC`` says."""
    import pandas as pd

    path = run.tables[table]
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError):
        return None  # unreadable: its model page says so
    for column in NUMERIC[table] & set(frame.columns):
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            return None
        if column in WHOLE and not (values.astype(float).map(math.isfinite)
                                    | (values.isna() & (column in MAY_BE_MISSING))).all():
            return None
    return frame


def _source(run: Run, experiment: str):
    """``run``'s table for ``experiment``, or None where the run is of another experiment or its table
    cannot be read here."""
    table, columns = SOURCES[experiment]
    if run.experiment != experiment or table not in run.tables:
        return None
    frame = _load(run, table)
    return frame if frame is not None and columns <= set(frame.columns) else None


def _pick(runs: list[Run], experiment: str):
    """(run, its table) for ``experiment``, or None."""
    found = [(run, frame) for run in runs if (frame := _source(run, experiment)) is not None]
    if not found:
        return None
    found.sort(key=lambda item: item[0].when, reverse=True)  # the latest first,
    found.sort(key=lambda item: item[0].name != experiment)  # after the one with default settings (stable sort)
    return found[0]


def _counted(frame, column: str) -> list[tuple[Any, int]]:
    weights = frame["count"] if "count" in frame.columns else None
    counts = (weights.groupby(frame[column]).sum() if weights is not None else frame[column].value_counts())
    counts = counts.sort_values(ascending=False, kind="stable")
    return [(key, int(n)) for key, n in counts.items()]


def _listing(pairs: list[tuple[Any, int]], quote: bool = False) -> str:
    shown = [f"{k!r} x{n}" if quote else f"{k} x{n}" for k, n in pairs[:TOP_SHOWN]]
    more = f" (+{len(pairs) - TOP_SHOWN} more)" if len(pairs) > TOP_SHOWN else ""
    return ", ".join(shown) + more


def value_text(column: str, value: Any) -> str:
    """A value of ``column`` as the pages show it (numbers rounded); the tuples of the columns that
    hold more than one number spelled out."""
    if column == "largest top-1/median":
        ratio, layer = value
        return f"{rounded(ratio)} (block {layer})"
    if column == "sink share":
        share, heads, eps = value
        return f"{rounded(share)} of {heads} heads (eps {', '.join(rounded(e) for e in eps)})"
    return rounded(value) if number(value) else str(value)


def _number_in(section: dict[str, Any], key: str, whole: bool = False) -> int | float | None:
    """A number a manifest section gives, or None where it gives none or something else (edited by hand)."""
    value = section.get(key)
    return value if number(value, whole) else None


def _or_unknown(value: int | float | None) -> str:
    return "?" if value is None else rounded(value)


def _layerwise(result: ModelComparison, run: Run, frame) -> None:
    options = run.section("options")
    config = run.section("config")
    result.values["criterion"] = (f"min_abs {_or_unknown(_number_in(options, 'min_abs'))}, "
                                  f"min_ratio {_or_unknown(_number_in(options, 'min_ratio'))}")
    if isinstance(config.get("text"), str):
        shape = (f"{_or_unknown(_number_in(config, 'n_seqs', whole=True))} x "
                 f"{_or_unknown(_number_in(config, 'seq_len', whole=True))}")
        result.values["layerwise data"] = f"{config['text']}, {shape}"
    if "site" in frame.columns:  # a run with extra hook points: the residual stream, as every column says
        frame = frame[frame["site"].astype(str).str.endswith("hook_resid_post")]
    frame = frame.dropna(subset=["layer"]).sort_values("layer", kind="stable")
    ratios = frame["ratio_of_means_top1_median"].dropna()
    best = frame.loc[ratios.idxmax()] if len(ratios) else None
    if best is not None:
        result.values["largest top-1/median"] = (float(best["ratio_of_means_top1_median"]), int(best["layer"]))
    massive = frame[frame["seq_fraction_with_massive"] >= 0.5]
    if massive.empty:
        result.values["first massive block"] = "none"
        return
    row = massive.iloc[0]
    layer = int(row["layer"])
    result.values.update({"first massive block": layer, "top-1": float(row["top1"]), "median": float(row["median"]),
                          "top-1/median": float(row["ratio_of_means_top1_median"])})
    if "massive_entries" not in run.tables:
        return
    entries = _load(run, "massive_entries")
    if entries is None or "layer" not in entries.columns:  # unreadable: the page shows what the summary gave
        return
    if "site" in entries.columns:
        entries = entries[entries["site"].astype(str).str.endswith("hook_resid_post")]
    entries = entries[entries["layer"] == layer]
    if "dim" in entries.columns:
        result.values["massive dims"] = ", ".join(str(d) for d, _ in _counted(entries, "dim"))
    if "position" in entries.columns:
        result.values["positions"] = _listing(_counted(entries, "position"))
    if "token" in entries.columns:
        result.values["tokens"] = _listing(_counted(entries, "token"), quote=True)


def _feature_view(result: ModelComparison, run: Run, frame) -> None:
    layer = _number_in(run.section("summary"), "layer", whole=True)
    where = [f"{int(r['position'])}{' ' + repr(str(r['token'])) if 'token' in frame.columns else ''} d{int(r['dim'])}"
             for _, r in frame.iterrows()]
    shown = ", ".join(where[:TOP_SHOWN]) + (f" (+{len(where) - TOP_SHOWN} more)" if len(where) > TOP_SHOWN else "")
    result.values["feature view"] = (f"block {layer}: " if layer is not None else "") + (shown or "none")


def _intervention(result: ModelComparison, run: Run, frame) -> None:
    layer = _number_in(run.section("summary"), "layer", whole=True)
    if layer is not None:
        result.values["intervention block"] = layer
    for _, row in frame.iterrows():
        result.perplexity[str(row["dataset"])] = {c: float(row[c]) for c in PERPLEXITY_CONDITIONS if c in frame.columns}


def _attention(result: ModelComparison, run: Run, frame) -> None:
    heads = int(frame["n_heads"].sum())
    if heads:
        eps = sorted({float(e) for e in frame["sink_eps"]})
        result.values["sink share"] = (int(frame["n_sink_heads"].sum()) / heads, heads, eps)


READERS = {"layerwise": _layerwise, "feature_view": _feature_view, "intervention": _intervention,
           "attention": _attention}


def read_run(run: Run) -> ModelComparison | None:
    """What this comparison reads from ``run`` alone (its model page's findings), or None where it
    reads nothing from it."""
    frame = _source(run, run.experiment) if run.experiment in READERS else None
    if frame is None:
        return None
    result = ModelComparison(run.model, [run.model_name] if run.model_name else [], {run.experiment: run})
    READERS[run.experiment](result, run, frame)
    return result


def compare(models: dict[str, list[Run]]) -> list[ModelComparison]:
    """One entry per model that has at least one run this comparison reads."""
    out = []
    for model, runs in models.items():
        result = ModelComparison(model, sorted({r.model_name for r in runs if r.model_name}))
        for experiment, read in READERS.items():
            picked = _pick(runs, experiment)
            if picked is not None:
                result.used[experiment] = picked[0]
                read(result, *picked)
        if result.used:
            out.append(result)
    return out
