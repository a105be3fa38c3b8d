"""Follow-up experiments: attention sinks, super weights, emergence. Each asks of a language model a question that a
later paper raised about massive activations, on the same engine as the paper's own experiments.

Importing this package declares its experiments (configs only; code imported when run). A new experiment is one more
entry of ``EXPERIMENTS``: an ``Experiment`` on a loaded model, or a ``series_study.SeriesExperiment`` over a checkpoint
series; ``study followups`` runs the first kind.
"""

from ...runs.experiment import Experiment
from .emergence_config import EmergenceConfig
from .series_study import FollowupsStudy, SeriesExperiment
from .sink_window_config import SinkWindowConfig
from .super_weight_config import SuperWeightsConfig

EXPERIMENTS = [
    # "post" (hook_post) is hooked too, but checked by the experiment itself: a block without a single down-projection
    # (attention only, a mixture of experts) is refused in words that say so, not as a missing hook point
    Experiment("super_weights", SuperWeightsConfig, "mech_interp.studies.followups.super_weights:super_weights",
               "super weights (Yu et al. 2024): every block's MLP down-projection spikes in one forward, the top "
               "candidates zeroed / restored / scaled", sites=("mlp_out", "resid_pre", "resid_post")),
    Experiment("sink_window", SinkWindowConfig, "mech_interp.studies.followups.sink_window:sink_window",
               "attention sinks (Xiao et al. 2024): perplexity under window attention W, alone, with the first S "
               "tokens, with the massive tokens, or with the sinks' massive entries reset", sites=("attn_scores", "resid_post")),
    SeriesExperiment("emergence", EmergenceConfig, "mech_interp.studies.followups.emergence:emergence",
                     "over a checkpoint series (--series: a trainer's --series-interval output; or --models): first "
                     "massive layer, top1/median, sink share and attention to token 0 per checkpoint, over steps"),
]

STUDY = FollowupsStudy("followups", "follow-up experiments (attention sinks, super weights, emergence)", EXPERIMENTS,
                       optional_runs=("sink_window",))  # it reads WikiText-2: skipped, saying why, where that is absent
