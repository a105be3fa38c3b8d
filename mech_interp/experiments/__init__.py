"""The four language-model experiments; importing this package registers them."""

from . import attention, feature_view, intervention, layerwise  # noqa: F401
from .registry import ExperimentResult, RunOptions, get_experiment, list_experiments, register_experiment

__all__ = ["ExperimentResult", "RunOptions", "get_experiment", "list_experiments", "register_experiment"]
