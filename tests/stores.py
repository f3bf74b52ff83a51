"""Small real clip stores for tests: :mod:`recseg.data.tiny_store` (the benchmarks use it too)."""

from recseg.data.tiny_store import (
    as_v1,
    background_images,
    make_store,
    moving_clip,
    moving_layers,
)

__all__ = ["as_v1", "background_images", "make_store", "moving_clip", "moving_layers"]
