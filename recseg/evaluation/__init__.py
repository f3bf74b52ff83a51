"""Evaluation utilities: split-level segmentation and temporal-consistency metrics."""
