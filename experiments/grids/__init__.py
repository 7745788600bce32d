"""Grids of experiments.paper: each file's `get_grid()` lists the studies (experiments.paper.Study)
of one reproduction."""
