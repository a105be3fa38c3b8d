"""The head study: who reads the massive activation (head scores, sinks), who writes it (direct
attribution down to neurons and weights), and what removing heads does (ablation on ``hook_z``).

Importing this package registers its experiments (configs only; code imported when run).
"""

from ...runs.experiments import register_experiment
from .configs import (
    AttributionConfig,
    HeadAblationConfig,
    HeadBeforeAfterConfig,
    HeadCumulativeConfig,
    HeadScoresConfig,
    HeadSweepConfig,
)

STUDY = ("head_scores", "head_ablation", "head_sweep", "head_cumulative", "attribution", "head_3d")

register_experiment("head_scores", HeadScoresConfig, "mech_interp.studies.heads.reading:head_scores_experiment",
                    "per-head attention to the massive tokens with bootstrap CIs, sink share, top/bottom/random head sets")
register_experiment("head_ablation", HeadAblationConfig, "mech_interp.studies.heads.ablation:head_ablation",
                    "top-k vs bottom-k vs random-k heads removed (hook_z): change of every massive entry per block, perplexity")
register_experiment("head_sweep", HeadSweepConfig, "mech_interp.studies.heads.single_heads:head_sweep",
                    "every head removed alone: change of the massive entry and of perplexity, (block x head) heatmaps")
register_experiment("head_cumulative", HeadCumulativeConfig, "mech_interp.studies.heads.cumulative:head_cumulative",
                    "the 1..K highest-scoring (or random) heads removed one more at a time: massive value and perplexity")
register_experiment("attribution", AttributionConfig, "mech_interp.studies.heads.writers:attribution",
                    "direct writes of embeddings, heads and MLPs to each massive entry, down to neurons and weights")
register_experiment("head_3d", HeadBeforeAfterConfig, "mech_interp.studies.heads.before_after:head_before_after",
                    "3D |a| at one block before/after removing a head set, side by side, with the difference")
