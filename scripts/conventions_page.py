#!/usr/bin/env python3
"""Print the definitions section of docs/conventions.md from the constants the runs print them from: the block
convention, the massive criterion, the token layout and every metric's definition, study by study.
tests/test_docs.py checks that the page holds what this prints, so the page and the code's printed definitions agree.

    python scripts/conventions_page.py
"""

from __future__ import annotations

import importlib
import inspect

# (section, module, constant): a string, or a dict of name -> definition
SOURCES = [
    ("Blocks and layers", "mech_interp.models.language_study", "LAYER_CONVENTION"),
    ("Heads", "mech_interp.core.head_names", None),
    ("The massive criterion", "mech_interp.core.criterion", "MassiveCriterion"),
    ("Token layout: prefix positions and key slots", "mech_interp.core.token_layout", None),
    ("Layer-wise statistics (`layerwise`, `vit-hooks layerwise`)", "mech_interp.core.layer_stats",
     "SUMMARY_DEFINITIONS"),
    ("Attention (`attention`)", "mech_interp.studies.lm.attention", "DEFINITIONS"),
    ("Head scores (`head-scores`)", "mech_interp.studies.heads.scores", "DEFINITIONS"),
    ("Head ablation (`head-ablation`)", "mech_interp.studies.heads.ablation", "CHANGE_DEFINITION"),
    ("Single-head sweep (`head-sweep`)", "mech_interp.studies.heads.single_heads", "DEFINITIONS"),
    ("Cumulative removal (`head-cumulative`)", "mech_interp.studies.heads.cumulative", "DEFINITION"),
    ("Attribution (`attribution`)", "mech_interp.studies.heads.attribution", "DEFINITIONS"),
    ("Super weights (`super-weights`)", "mech_interp.studies.followups.super_weights", "DEFINITIONS"),
    ("Emergence over training (`emergence`)", "mech_interp.studies.followups.emergence", "DEFINITIONS"),
    ("Window attention and sinks (`sink-window`)", "mech_interp.studies.followups.sink_window", "DEFINITIONS"),
    ("Confidence intervals", "mech_interp.metrics.bootstrap", "CI_DEFINITION"),
    ("Changes: percentages and factors", "mech_interp.metrics.relative_change", "DEFINITION"),
    ("Numbers on the report's pages", "mech_interp.report.rounding", "DEFINITION"),
    ("The report's comparison page", "mech_interp.report.comparison", "DEFINITIONS"),
    ("Vision: token roles (`vit-hooks layerwise`)", "vit_hooks.experiments.layerwise", "ROLE_DEFINITIONS"),
    ("Vision: attention to token sets (`vit-hooks attention`)", "vit_hooks.experiments.attention", "DEFINITION"),
    ("Vision: Fix-Reg-Mean evaluation", "vit_hooks.evaluation", "DEFINITIONS"),
]


def _text(value) -> str:
    """One line; brackets escaped, so that Markdown reads z[l][pos, h] as text, not as a link reference."""
    return " ".join(inspect.cleandoc(value).split()).replace("[", "\\[")


def section() -> str:
    lines = []
    for title, module_name, name in SOURCES:
        module = importlib.import_module(module_name)
        value = getattr(module, name) if name else module
        lines += [f"### {title}", "", f"*From `{module_name}{'.' + name if name else ''}`.*", ""]
        if isinstance(value, dict):
            lines += [f"- **{key}**: {_text(text)}" for key, text in value.items()]
        elif isinstance(value, str):
            lines.append(_text(value))
        else:  # a class or module: its docstring is the definition, paragraphs and lists as written
            lines.append(inspect.cleandoc(value.__doc__))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(section(), end="")
