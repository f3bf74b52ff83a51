"""MLproject entry points: thin click commands with MLproject-style options, no logic."""
