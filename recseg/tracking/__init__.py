"""Tracking: everything recseg writes to MLflow (runs, params, metrics, artifacts, inputs)."""
