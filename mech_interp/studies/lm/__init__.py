"""The language-model study: the paper's four experiments on a HookedTransformer.

Importing this package declares them (configs only; each experiment's code is imported when run).
"""

from ...models.language_study import LanguageModelStudy
from ...runs.experiment import Experiment
from .configs import AttentionConfig, FeatureViewConfig, InterventionConfig, LayerwiseConfig

STUDY = LanguageModelStudy("lm", "massive-activation study", [
    Experiment("feature_view", FeatureViewConfig, "mech_interp.studies.lm.feature_view:feature_view",
               "3D view of |a| over (token, dim) at one layer, massive dims labelled (paper Fig. 1)", sites=("resid_post",),
               placements=("whole", "streamed", "spilled")),
    Experiment("layerwise", LayerwiseConfig, "mech_interp.studies.lm.layerwise:layerwise",
               "top-k and median |a| per layer, averaged over sequences (paper Fig. 2)", sites=("resid_post",),
               placements=("whole", "streamed", "spilled")),
    Experiment("intervention", InterventionConfig, "mech_interp.studies.lm.intervention:intervention",
               "perplexity with massive activations set to zero / to their mean (paper Table 3)", sites=("resid_post",),
               placements=("whole", "streamed", "spilled")),
    Experiment("attention", AttentionConfig, "mech_interp.studies.lm.attention:attention",
               "head-averaged pre-softmax logits at one layer; per-head attention to massive tokens (paper Fig. 6)", sites=("attn_scores", "pattern")),
])
