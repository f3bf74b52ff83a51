"""recseg benchmark suite: ``python -m benchmarks`` (see README.md\x27s performance section)."""
