"""Training utilities: losses for 2-class (background/person) segmentation."""
