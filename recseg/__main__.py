"""``python -m recseg`` runs the ``recseg`` command."""

from recseg.cli import main

if __name__ == "__main__":
    main()
