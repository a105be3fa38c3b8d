"""The head study: who reads the massive activation (head scores, sinks), who writes it (direct
attribution down to neurons and weights), and what removing heads does (ablation on ``hook_z``).

Importing this package declares its experiments (configs only; code imported when run).
"""

from ...models.language_study import LanguageModelStudy
from ...runs.experiment import Experiment
from .configs import (
    AttributionConfig,
    HeadAblationConfig,
    HeadBeforeAfterConfig,
    HeadCumulativeConfig,
    HeadScoresConfig,
    HeadSweepConfig,
)

STUDY = LanguageModelStudy("heads", "massive-activation head study", [
    Experiment("head_scores", HeadScoresConfig, "mech_interp.studies.heads.reading:head_scores_experiment",
               "per-head attention to the massive tokens with bootstrap CIs, sink share, top/bottom/random head sets", sites=("resid_pre", "pattern"),
               placements=("whole", "streamed", "spilled")),
    Experiment("head_ablation", HeadAblationConfig, "mech_interp.studies.heads.ablation:head_ablation",
               "top-k vs bottom-k vs random-k heads removed (hook_z): change of every massive entry per block, perplexity",
               sites=("z", "resid_post", "resid_pre", "pattern"), placements=("whole", "streamed", "spilled")),
    Experiment("head_sweep", HeadSweepConfig, "mech_interp.studies.heads.single_heads:head_sweep",
               "every head removed alone: change of the massive entry and of perplexity, (block x head) heatmaps", sites=("z", "resid_post")),
    Experiment("head_cumulative", HeadCumulativeConfig, "mech_interp.studies.heads.cumulative:head_cumulative",
               "the 1..K highest-scoring (or random) heads removed one more at a time: massive value and perplexity",
               sites=("z", "resid_post", "resid_pre", "pattern"), placements=("whole", "streamed", "spilled")),
    Experiment("attribution", AttributionConfig, "mech_interp.studies.heads.attribution:attribution",
               "direct writes of embeddings, heads and MLPs to each massive entry, down to neurons and weights", sites=("embed", "z", "mlp_out", "resid_post", "post")),
    Experiment("head_3d", HeadBeforeAfterConfig, "mech_interp.studies.heads.before_after:head_before_after",
               "3D |a| at one block before/after removing a head set, side by side, with the difference",
               sites=("z", "resid_post", "resid_pre", "pattern"), placements=("whole", "streamed", "spilled")),
])
