"""The recurrent DeepLabV3+ model family."""

from recseg.models.deeplab import ModelOptions, ModelSpec, RecurrentDeepLab, count_parameters
from recseg.models.registry import (
    build_model,
    model_names,
    model_spec,
    readable_name,
    rebuild_model,
)
from recseg.models.state import detach_state, reset_state, select_state, stack_states, state_to

__all__ = [
    "ModelOptions",
    "ModelSpec",
    "RecurrentDeepLab",
    "build_model",
    "count_parameters",
    "detach_state",
    "model_names",
    "model_spec",
    "readable_name",
    "rebuild_model",
    "reset_state",
    "select_state",
    "stack_states",
    "state_to",
]
