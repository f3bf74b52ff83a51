"""Workflows that chain recseg commands as a user would type them: the demo and the thesis."""
