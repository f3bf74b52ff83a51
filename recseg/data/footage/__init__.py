"""Synthetic green screen footage: deterministic H.264 videos of people-like figures with true
masks, plus background photos, so the whole pipeline runs with no download."""

from recseg.data.footage.config import FootageConfig
from recseg.data.footage.generate import make_footage

__all__ = ["FootageConfig", "make_footage"]
