"""What each run found, in a few numbers, each with its definition: the findings box at the top of a
model page, and (the headline ones) the index's line per model.

The language-model runs' numbers are the cross-model comparison's (``comparison.read_run``: read
from their tables, defined in ``comparison.DEFINITIONS``); the other studies' come from their
manifests' ``summary``, defined there by the text the runs recorded beside them. A summary may hold
anything (edited by hand, written by another version): a value of another type than the runs write
gives no finding. Every value is plain text here; the pages escape it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..core.head_names import head_name, head_names
from ..metrics.relative_change import FACTOR_FROM, change_text
from .comparison import DEFINITIONS, PERPLEXITY_CONDITIONS, TOP_SHOWN, read_run, value_text
from .discovery import Run
from .manifest_fields import number
from .page_order import placed
from .rounding import rounded

HEADS = "LxHy: head y of block x, both 0-based TransformerLens indices"
CHANGE = ("in brackets: the change against {base}, new / {base} - 1, printed as a factor (x) from "
          f"{FACTOR_FROM:g}x up")
NOT_RECORDED = "(the run recorded no definition)"


@dataclass(frozen=True)
class Finding:
    label: str
    value: str
    definition: str
    headline: bool = False  # also on the index


def _number(section: dict[str, Any], key: str, whole: bool = False) -> int | float | None:
    value = section.get(key)
    return value if number(value, whole) else None


def _records(section: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = section.get(key)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _definition(section: dict[str, Any], key: str) -> str:
    """The definition a run recorded in its summary's ``definitions``."""
    definitions = section.get("definitions")
    value = definitions.get(key) if isinstance(definitions, dict) else None
    return value if isinstance(value, str) else NOT_RECORDED


def _changed(new: Any, base: Any) -> str:
    """``new`` rounded, with its change against ``base`` where both are numbers."""
    if not number(new):
        return "?"
    return rounded(new) + (f" ({change_text(new, base)})" if number(base) else "")


def _more(items: list[str], sep: str = "; ") -> str:
    return sep.join(items[:TOP_SHOWN]) + (f" (+{len(items) - TOP_SHOWN} more)" if len(items) > TOP_SHOWN else "")


def _token(tokens: Any, position: Any) -> str:
    """`` 'token'`` at ``position`` of a summary's token list, or nothing."""
    ok = isinstance(tokens, list) and number(position, whole=True) and 0 <= position < len(tokens)
    return f" {str(tokens[position])!r}" if ok else ""


# --- the language-model study: the comparison's values of the run ---------------------------------

def _layerwise(run: Run) -> list[Finding]:
    read = read_run(run)
    if read is None:
        return []
    columns = ["first massive block", "criterion", "massive dims", "positions", "tokens", "top-1", "median",
               "top-1/median"]
    if read.values.get("first massive block") == "none":  # then how far from massive the model is
        columns.append("largest top-1/median")
    headline = ("first massive block", "massive dims", "top-1/median", "largest top-1/median")
    return [Finding(c, value_text(c, read.values[c]), DEFINITIONS[c], c in headline) for c in columns
            if c in read.values]


def _feature_view(run: Run) -> list[Finding]:
    summary = run.section("summary")
    layer, largest, median = (_number(summary, "layer", whole=True), _number(summary, "max_abs"),
                              _number(summary, "median_abs"))
    block = f"block {layer}: " if layer is not None else ""
    found = []
    entries = [f"position {r['position']}{_token(summary.get('tokens'), r['position'])} dim {r['dim']} = "
               f"{rounded(r['value'])}" for r in _records(summary, "massive")
               if number(r.get("position"), whole=True) and number(r.get("dim"), whole=True) and number(r.get("value"))]
    if entries:
        found.append(Finding("massive activations", block + _more(entries),
                             DEFINITIONS["feature view"] + ", and its value a"))
    if largest is not None:
        found.append(Finding("largest |a|", block + rounded(largest)
                             + (f" (median |a| {rounded(median)})" if median is not None else ""),
                             "max |a| and the lower median |a| over positions x dims of the prompt's hidden state at "
                             "that block", headline=True))
    return found


def _intervention(run: Run) -> list[Finding]:
    read = read_run(run)
    if read is None:
        return []
    block = read.values.get("intervention block")
    where = f"at block {block}: " if block is not None else ""
    definition = ("; ".join(f"{c}: {DEFINITIONS[c]}" for c in PERPLEXITY_CONDITIONS) + "; "
                  + CHANGE.format(base="original"))
    found = []
    for dataset, values in read.perplexity.items():
        original = values.get("original")
        shown = [f"{c} {_changed(values[c], original if c != 'original' else None)}"
                 for c in PERPLEXITY_CONDITIONS if c in values]
        found.append(Finding(f"perplexity, {dataset}", where + ", ".join(shown), definition, headline=True))
    return found


def _attention(run: Run) -> list[Finding]:
    read = read_run(run)
    share = read.values.get("sink share") if read is not None else None
    return [] if share is None else [Finding("sink share", value_text("sink share", share), DEFINITIONS["sink share"],
                                             headline=True)]


# --- the head study: its summaries -------------------------------------------------------------------

def _head_scores(run: Run) -> list[Finding]:
    summary = run.section("summary")
    found = []
    share, eps = _number(summary, "sink_head_share"), _number(summary, "sink_eps")
    if share is not None:
        found.append(Finding("sink share", rounded(share) + (f" (eps {rounded(eps)})" if eps is not None else ""),
                             _definition(summary, "sink_share")))  # the attention run's leads on the index
    top = sorted((r for r in _records(summary, "head_sets") if r.get("set") == "top" and r.get("draw", 0) == 0
                  and number(r.get("rank")) and number(r.get("layer"), True) and number(r.get("head"), True)
                  and number(r.get("score"))), key=lambda r: r["rank"])
    if top:
        rank_by = summary.get("rank_by")
        label = f"top heads by {rank_by} score" if isinstance(rank_by, str) else "top heads"
        definition = summary.get("ranked_by_definition")
        found.append(Finding(label, _more([f"{head_name(r['layer'], r['head'])} ({rounded(r['score'])})" for r in top],
                                          ", "),
                             f"{HEADS}; in brackets its score: "
                             + (definition if isinstance(definition, str) else NOT_RECORDED), headline=True))
    return found


def _head_ablation(run: Run) -> list[Finding]:
    summary = run.section("summary")
    found = []
    layers = summary.get("massive_layers")
    if isinstance(layers, list) and layers and all(number(layer, whole=True) for layer in layers):
        found.append(Finding("blocks with massive entries", f"{min(layers)}-{max(layers)}",
                             "blocks with massive entries (clean, >= half of the sequences)"))
    rows = [r for r in _records(summary, "perplexity") if isinstance(r.get("condition"), str)]
    clean = next((r.get("perplexity") for r in rows if r["condition"] == "clean"), None)
    shown = [f"{r['condition']}" + (f" ({r['heads']})" if isinstance(r.get("heads"), str) and r["heads"] else "")
             + f" {_changed(r.get('perplexity'), clean if r['condition'] != 'clean' else None)}" for r in rows]
    if shown:
        how = summary.get("how")
        found.append(Finding("perplexity, heads removed", "; ".join(shown),
                             "exp(sum of next-token NLL / predicted tokens) over the run's sequences, with each head "
                             f"set removed{f' ({how} on hook_z)' if isinstance(how, str) else ''}; "
                             + CHANGE.format(base="clean")))
    return found


def _head_cumulative(run: Run) -> list[Finding]:
    summary = run.section("summary")
    steps = [r for r in _records(summary, "steps") if number(r.get("k"), True) and isinstance(r.get("order"), str)
             and number(r.get("draw"), True)]
    definition = summary.get("definition")
    definition = definition if isinstance(definition, str) else NOT_RECORDED
    layer = _number(summary, "measured_layer", whole=True)
    found = []
    clean = {(r["order"], r["draw"]): r for r in steps if r["k"] == 0}
    last: dict[tuple, dict[str, Any]] = {}  # each order's last step: the most heads removed
    for r in steps:
        if r["k"] > last.get((r["order"], r["draw"]), {"k": 0})["k"]:
            last[(r["order"], r["draw"])] = r
    for (order, draw), r in last.items():
        base = clean.get((order, draw), {})
        label = f"{order} heads removed" if order == "top" else f"{order} heads removed (draw {draw})"
        found.append(Finding(label, f"after {r['k']}" + (f", block {layer}" if layer is not None else "") + ": massive "
                             f"value {_changed(r.get('massive_value'), base.get('massive_value'))}, perplexity "
                             f"{_changed(r.get('perplexity'), base.get('perplexity'))}",
                             f"{definition}; {CHANGE.format(base='no head removed')}"))
    return found


def _attribution(run: Run) -> list[Finding]:
    summary = run.section("summary")
    entry, mlp = summary.get("entry"), _number(summary, "writing_mlp", whole=True)
    neuron = _number(summary, "top_neuron", whole=True)
    first = _number(summary, "first_massive_layer", whole=True)
    found = []
    if mlp is not None:
        at = (f" to position {entry[1]} dim {entry[2]}" if isinstance(entry, list) and len(entry) == 3
              and all(number(e, whole=True) for e in entry) else "")
        found.append(Finding("writing MLP", f"block {mlp}{at}" + (f" (massive from block {first})" if first is not None
                                                                  else "")
                             + (f", top neuron {neuron}" if neuron is not None else ""),
                             f"writer: {_definition(summary, 'writer')}; neuron write: "
                             f"{_definition(summary, 'neuron write')}"))
    closure = _number(summary, "max_abs_closure")
    if closure is not None:
        found.append(Finding("largest |closure|", rounded(closure), _definition(summary, "closure")))
    return found


def _head_3d(run: Run) -> list[Finding]:
    summary = run.section("summary")
    layer, how = _number(summary, "layer", whole=True), summary.get("how")
    heads = summary.get("heads")
    named = (head_names(heads) if isinstance(heads, list) and all(
        isinstance(h, list) and len(h) == 2 and all(number(x, True) for x in h) for h in heads) else "?")
    rows = [f"position {r['position']}" + (f" {str(r['token'])!r}" if "token" in r else "") + f" dim {r['dim']}: "
            f"{rounded(r['before'])} -> {_changed(r.get('after'), r['before'])}"
            for r in _records(summary, "massive") if number(r.get("position"), True) and number(r.get("dim"), True)
            and number(r.get("before"))]
    if not rows:
        return []
    return [Finding(f"massive entries, heads {named} removed", (f"block {layer}: " if layer is not None else "")
                    + _more(rows), f"the clean prompt's massive entries at that block's resid_post, before -> after "
                    f"removing the heads{f' ({how} on hook_z)' if isinstance(how, str) else ''} ({HEADS}); "
                    + CHANGE.format(base="before"))]


# --- the vision study: its summaries ---------------------------------------------------------------

def _vit_layerwise(run: Run) -> list[Finding]:
    summary = run.section("summary")
    first = _number(summary, "first_massive_block", whole=True)
    if first is None and not ("first_massive_block" in summary and summary["first_massive_block"] is None):
        return []  # no block recorded (null: none is massive)
    found = [Finding("first massive block", "none" if first is None else str(first),
                     DEFINITIONS["first massive block"], headline=True)]
    top1, median = summary.get("top1"), summary.get("median")
    if (first is not None and isinstance(top1, list) and isinstance(median, list)
            and 0 <= first < min(len(top1), len(median)) and number(top1[first]) and number(median[first])
            and median[first]):
        found.append(Finding("top-1/median", f"{rounded(top1[first] / median[first])} (top-1 {rounded(top1[first])}, "
                             f"median {rounded(median[first])})", f"at the first massive block: "
                             f"{_definition(summary, 'ratio_of_means_top1_median')}", headline=True))
    return found


def _vit_feature_view(run: Run) -> list[Finding]:
    summary = run.section("summary")
    block, largest, median = (_number(summary, "block", whole=True), _number(summary, "max_abs"),
                              _number(summary, "median_abs"))
    if largest is None:
        return []
    top = summary.get("top_entry")
    where = (f" at {top.get('role')} dim {top.get('dim')}" if isinstance(top, dict) and isinstance(top.get("role"), str)
             and number(top.get("dim"), whole=True) else "")
    return [Finding("largest |a|", (f"block {block}: " if block is not None else "") + rounded(largest) + where
                    + (f" (median |a| {rounded(median)})" if median is not None else ""),
                    "max |a| and the lower median |a| over tokens x dims of the image's hidden state at that block",
                    headline=True)]


# --- the follow-up study: its summaries ------------------------------------------------------------

def _super_weights(run: Run) -> list[Finding]:
    summary = run.section("summary")
    candidates = [c for c in _records(summary, "candidates") if all(number(c.get(k), True) for k in
                                                                    ("layer", "row", "col", "hf_row", "hf_col"))]
    if not candidates:
        return []
    top = candidates[0]
    found = [Finding("super weight (rank 1)", f"block {top['layer']} W_out[{top['row']}, {top['col']}] (HF "
                     f"down_proj.weight[{top['hf_row']}, {top['hf_col']}])",
                     f"candidate: {_definition(summary, 'candidate')}; ranked by |write|: "
                     f"{_definition(summary, 'write')}", headline=True)]
    edits = [e for e in _records(summary, "effects") if e.get("layer") == top["layer"] and e.get("row") == top["row"]
             and e.get("col") == top["col"] and isinstance(e.get("condition"), str)]
    clean = _number(summary, "clean_perplexity")
    shown = [f"{e['condition']} {_changed(e.get('perplexity'), clean)}" for e in edits]
    if shown and clean is not None:
        found.append(Finding("perplexity, that weight edited", f"clean {rounded(clean)}; " + "; ".join(shown),
                             f"perplexity: {_definition(summary, 'perplexity')}; zero / xS: "
                             f"{_definition(summary, 'zero / xS')}; zero, spike restored: "
                             f"{_definition(summary, 'zero, spike restored')}; " + CHANGE.format(base="clean"),
                             headline=True))
    return found


def _sink_window(run: Run) -> list[Finding]:
    summary = run.section("summary")
    full = _number(summary, "full_attention")
    rows = [r for r in _records(summary, "perplexity") if isinstance(r.get("label"), str)
            and number(r.get("window"), True)]
    if full is None or not rows:
        return []
    found = []
    for window in dict.fromkeys(r["window"] for r in rows):
        shown = [("window only" if r.get("condition") == "window" else r["label"].replace("window + ", "+"))
                 + f" {_changed(r.get('perplexity'), full)}" for r in rows if r["window"] == window]
        found.append(Finding(f"perplexity, window W = {window}", f"full attention {rounded(full)}; " + _more(shown),
                             f"perplexity: {_definition(summary, 'perplexity')}; mask: {_definition(summary, 'mask')}; "
                             + CHANGE.format(base="full attention"), headline=True))
    return found


def _emergence(run: Run) -> list[Finding]:
    summary = run.section("summary")
    first = summary.get("first_massive_layer")
    if not isinstance(first, dict) or not first:
        return []
    emerged = next(((name, layer) for name, layer in first.items() if number(layer, True)), None)
    value = (f"{emerged[0]} (block {emerged[1]})" if emerged is not None
             else f"none of the {len(first)} checkpoints")
    return [Finding("first checkpoint with a massive activation", value,
                    f"first_massive_layer: {_definition(summary, 'first_massive_layer')}", headline=True)]


# (study, experiment) -> its findings; the experiments not here show none
READERS: dict[tuple[str, str], Callable[[Run], list[Finding]]] = {
    ("lm", "layerwise"): _layerwise,
    ("lm", "feature_view"): _feature_view,
    ("lm", "intervention"): _intervention,
    ("lm", "attention"): _attention,
    ("heads", "head_scores"): _head_scores,
    ("heads", "head_ablation"): _head_ablation,
    ("heads", "head_cumulative"): _head_cumulative,
    ("heads", "attribution"): _attribution,
    ("heads", "head_3d"): _head_3d,
    ("vit", "layerwise"): _vit_layerwise,
    ("vit", "feature_view"): _vit_feature_view,
    ("followups", "super_weights"): _super_weights,
    ("followups", "sink_window"): _sink_window,
    ("followups", "emergence"): _emergence,
}


def findings(run: Run) -> list[Finding]:
    reader = READERS.get(placed(run))
    return reader(run) if reader is not None else []
