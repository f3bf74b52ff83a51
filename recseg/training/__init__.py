"""Training, the engine: config and shared options, setup, trainer, losses, optimisers,
checkpoints, the LR range test and ``describe``; the MLflow-tracked job is
``recseg.tracking.train_job`` (docs/architecture.md)."""
