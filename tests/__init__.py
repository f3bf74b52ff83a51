"""recseg test suite."""
