"""`python -m experiments.analysis ...` (see experiments/analysis/cli.py)."""

from experiments.analysis.cli import main

if __name__ == "__main__":
    main()
