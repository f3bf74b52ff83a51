"""Evaluation, pure: split-level segmentation and temporal-consistency metrics, the evaluate loop,
latency, report tables and figures. Scoring a logged model (``recseg evaluate``) and the report
run live in ``recseg.tracking`` (docs/architecture.md)."""
