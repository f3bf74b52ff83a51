"""Grid Engine: jobs that take their options from environment variables (``qsub -v``), resubmit
themselves when they stop with exit code 99, and sweeps that submit one job per configuration.

The job scripts live in the repository's ``grid/`` folder; this package holds their logic."""
