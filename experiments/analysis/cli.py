"""`python -m experiments.analysis <output> FOLDER... [--out DIR]`: one output of the registry
(`registry.OUTPUTS`, those with a subcommand), or `all` of a paper folder."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import experiments.analysis as package
from experiments.analysis.registry import OUTPUTS, commands
from experiments.analysis.studies import write_all


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m experiments.analysis", description=package.__doc__.split("\n")[0]
    )
    p.add_argument("what", choices=["all", *commands()])
    p.add_argument(
        "sweep_dir",
        nargs="+",
        help="a sweep folder (table1/3, fig1/2/5), an auto-k folder (table2/6, fig4/6/9), one "
        "auto-k folder per transformer task (table4/7: SQuAD's and MNLI's) or the folder of "
        "`python -m experiments.paper` (all)",
    )
    p.add_argument("--out", help="output folder (default: <first folder>/analysis)")
    args = p.parse_args(argv)
    folders = args.sweep_dir
    several = [n for n in commands() if OUTPUTS[n].several_folders]
    if len(folders) > 1 and args.what not in several:
        p.error(f"{args.what} takes one folder; only {' and '.join(several)} take several")
    out = args.out or os.path.join(folders[0], "analysis")
    if args.what == "all":
        for line in write_all(folders[0], out):
            print(line)
        print(f"(in {out})")
        return
    for line in OUTPUTS[args.what].command(folders, out):
        print(line)
