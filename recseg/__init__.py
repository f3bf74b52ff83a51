"""recseg: MLflow-tracked experiments for semantic video segmentation with recurrent DeepLabV3+."""

__version__ = "0.1.0"
