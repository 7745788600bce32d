"""The one list of the paper's outputs: `OUTPUTS`, name -> `Output` (what it is, which runs it
draws, how it is written, and its subcommand). `python -m experiments.analysis`,
`experiments.paper` (`Study.outputs`, `write_all`) and `experiments.autok` (`write_outputs`)
all read it. Adding an output is one function in the module of its family and one entry here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from functools import partial

from experiments.analysis import (
    autok_outputs,
    basin_outputs,
    lottery_outputs,
    render,
    sweeps,
    transformer,
)
from experiments.analysis.dynamics import dynamics_figures, figure2
from experiments.analysis.runs import DYNAMICS_METRICS, load_runs
from experiments.analysis.summary import read_autok

AUTOK_FOLDERS = "autok folders"  # `Output.uses` of an output drawn from auto-k folders
LOTTERY_FOLDERS = "lottery folders"  # ... from lottery studies' folders (experiments.lottery)
BASIN_FOLDERS = "basin folders"  # ... from basin studies' folders (experiments.basin)


@dataclasses.dataclass(frozen=True)
class Source:
    """One study's folder: `name` prefixes its runs' names (`study/run`; "" for none)."""

    name: str
    path: str


@dataclasses.dataclass(frozen=True)
class Output:
    """One table or figure.

    `uses`: the sweep runs it draws, as a predicate on a run's fields (`k`, `adaptive`,
    `lr_scale`, `lr_switch`), or `AUTOK_FOLDERS` / `LOTTERY_FOLDERS` / `BASIN_FOLDERS`.
    `write(inputs, out_dir)` writes it and returns the paths written; its inputs are the runs
    `uses` selects (`load_runs` records, named `study/run`) or, for outputs drawn from
    folders, the `Source` of every folder. `command(folders, out_dir)` is
    `python -m experiments.analysis <name> FOLDER...` (None: no subcommand); it returns the
    lines printed. `several_folders`: the subcommand takes more than one folder.
    """

    description: str
    uses: Callable[[dict], bool] | str
    write: Callable[[list, str], list[str]]
    command: Callable[[list[str], str], list[str]] | None = None
    several_folders: bool = False

    @property
    def from_folders(self) -> bool:
        """Drawn from whole study folders (auto-k, lottery), not from selected sweep runs."""
        return self.uses in (AUTOK_FOLDERS, LOTTERY_FOLDERS, BASIN_FOLDERS)

    def write_from(self, sources: Sequence[Source], out_dir: str) -> list[str]:
        """Writes the output from the folders of its studies; returns the paths written."""
        if self.from_folders:
            return self.write(list(sources), out_dir)
        return self.write(sweep_runs(sources, self.uses), out_dir)


def sweep_runs(sources: Sequence[Source], used: Callable[[dict], bool]) -> list[dict]:
    """The finished runs of the sweep folders (`load_runs`), named `study/run`, that `used`
    selects."""
    runs = []
    for source in sources:
        for r in load_runs(source.path):
            r["run"] = f"{source.name}/{r['run']}" if source.name else r["run"]
            if used(r):
                runs.append(r)
    if not runs:
        raise ValueError(f"no run of {[s.name for s in sources]} is of the kind it needs")
    return runs


# --------------------------------------------------------------------------------------------
# Which runs an output draws (`Output.uses`)


def all_runs(r: dict) -> bool:
    return True


def at_lr_d(r: dict) -> bool:
    return r["lr_scale"] == 1.0


def below_lr_d(r: dict) -> bool:
    return r["lr_scale"] != 1.0


def no_gu_at_lr_d(r: dict) -> bool:
    """Constant lr_d and the LR switches: no unfreezing, the default learning rate."""
    return r["k"] is None and r["adaptive"] is None and r["lr_scale"] == 1.0


def constant_or_switch(r: dict) -> bool:
    return r["lr_switch"] is not None or (r["k"] is None and r["adaptive"] is None)


# --------------------------------------------------------------------------------------------
# Writers and subcommands shared by several outputs


def _table(name: str, rows: Callable[[list[dict]], list[dict]], runs: list, out: str):
    render.write_table(rows(runs), out, name)
    return render.table_files(name, out)


def _printed_table(name: str, rows: list[dict], out: str, caption: str | None = None):
    """A table's subcommand: writes it; prints its Markdown and where it went."""
    markdown = render.write_table(rows, out, name, caption)
    return [markdown, f"\n(written to {out}/{name}.md, .csv and .tex)"]


def _sweep_table_command(name: str, rows, folders: list[str], out: str) -> list[str]:
    return _printed_table(name, rows(load_runs(folders[0])), out)


def _autok_table_command(name: str, rows, folders: list[str], out: str) -> list[str]:
    summary = read_autok(folders[0])
    return _printed_table(name, rows(summary), out, render.autok_caption(name, summary))


def _table7_command(name: str, metrics, folders: list[str], out: str) -> list[str]:
    try:
        return _printed_table(name, transformer.table7(folders, metrics), out)
    except ValueError as e:  # a run the table needs has not finished
        raise SystemExit(f"error: {e}") from None


def _figure1_command(folders: list[str], out: str) -> list[str]:
    return sweeps.figure1(load_runs(folders[0]), out)


def _one_folder(figure, folders: list[str], out: str, **kwargs) -> list[str]:
    return figure(folders[0], out, **kwargs)


def _study_folders_command(write, folders: list[str], out: str) -> list[str]:
    """A lottery or basin output's subcommand: writes it from each folder; prints the files."""
    sources = [Source(os.path.basename(os.path.normpath(f)), f) for f in folders]
    return [f"written: {output_paths(write(sources, out), out)}"]


def _lottery(description: str, write) -> Output:
    command = partial(_study_folders_command, write)
    return Output(description, LOTTERY_FOLDERS, write, command, several_folders=True)


def _basin(description: str, write) -> Output:
    command = partial(_study_folders_command, write)
    return Output(description, BASIN_FOLDERS, write, command, several_folders=True)


def _dynamics(stem: str, metrics=DYNAMICS_METRICS, **kwargs):
    return partial(dynamics_figures, stem=stem, metrics=metrics, **kwargs)


OUTPUTS: dict[str, Output] = {
    "table1": Output(
        "Table 1: standard vs GU at each k, lr_d and 0.1·lr_d (sweeps)",
        all_runs,
        partial(_table, "table1", sweeps.table1),
        partial(_sweep_table_command, "table1", sweeps.table1),
    ),
    "fig1": Output(
        "Figure 1: ΔID and ΔOOD vs k, log x (sweeps)", all_runs, sweeps.figure1, _figure1_command
    ),
    "fig2": Output(
        "Figure 2: tr(F), S_avg, S_worst over the early period, lr_d (recorded sweeps)",
        at_lr_d,
        _dynamics("fig2"),
        partial(_one_folder, figure2),
    ),
    "fig10": Output(
        "Figure 10: Figure 2 at 0.1·lr_d (recorded sweeps)", below_lr_d, _dynamics("fig10")
    ),
    "fig7": Output(
        "Figure 7: feature rank before the head over the early period (recorded sweeps)",
        at_lr_d,
        _dynamics("fig7", ("feature_rank",), normalise=False),
    ),
    "fig5": Output(
        "Figure 5: final-solution λ_max, S_avg, S_worst, feature λ_max vs OOD (sweeps)",
        all_runs,
        sweeps.figure5,
        sweeps.figure5_command,
    ),
    "table3": Output(
        "Table 3: LR switches vs constant lr_d and 0.1·lr_d (sweeps)",
        constant_or_switch,
        partial(_table, "table3", sweeps.table3),
        partial(_sweep_table_command, "table3", sweeps.table3),
    ),
    "fig3": Output(
        "Figure 3: S_avg through an LR switch (recorded sweeps)",
        no_gu_at_lr_d,
        _dynamics("fig3", ("avg_sharpness",), mark_switch=True),
    ),
    "fig8": Output(
        "Figure 8: tr(F), S_avg, S_worst through an LR switch (recorded sweeps)",
        no_gu_at_lr_d,
        _dynamics("fig8", mark_switch=True),
    ),
    "table2": Output(
        "Table 2: GU with each metric's k vs random k, winning rate (auto-k)",
        AUTOK_FOLDERS,
        partial(autok_outputs.write_tables, "table2", autok_outputs.table2),
        partial(_autok_table_command, "table2", autok_outputs.table2),
    ),
    "table6": Output(
        "Table 6: the k each metric picked (auto-k)",
        AUTOK_FOLDERS,
        partial(autok_outputs.write_tables, "table6", autok_outputs.table6),
        partial(_autok_table_command, "table6", autok_outputs.table6),
    ),
    "fig6": Output(
        "Figure 6: the signal curves and the picked k (auto-k)",
        AUTOK_FOLDERS,
        autok_outputs.write_figure6,
        partial(_one_folder, autok_outputs.figure6),
    ),
    "table3_autok": Output(
        "Table 3's extra rows (§7.1): the LR switch step from each metric (auto-k)",
        AUTOK_FOLDERS,
        partial(autok_outputs.write_tables, "table3_autok", autok_outputs.table2),
    ),
    "table4": Output(
        "Table 4: XLM-R, standard vs GU with tr(F)'s k, per language (auto-k, nli + qa)",
        AUTOK_FOLDERS,
        partial(transformer.write_table7, "table4", ("fisher",)),
        partial(_table7_command, "table4", ("fisher",)),
        several_folders=True,
    ),
    "table7": Output(
        "Table 7: Table 4 with every metric's k (auto-k, nli + qa)",
        AUTOK_FOLDERS,
        partial(transformer.write_table7, "table7", None),
        partial(_table7_command, "table7", None),
        several_folders=True,
    ),
    "fig4": Output(
        "Figure 4: XLM-R's tr(F), S_avg, |S_worst| on MNLI (auto-k, nli)",
        AUTOK_FOLDERS,
        partial(transformer.write_figure4, stem="fig4"),
        partial(_one_folder, transformer.figure4, stem="fig4"),
    ),
    "fig9": Output(
        "Figure 9: Figure 4 on SQuAD (auto-k, qa)",
        AUTOK_FOLDERS,
        partial(transformer.write_figure4, stem="fig9"),
        partial(_one_folder, transformer.figure4, stem="fig9"),
    ),
    "lth_imp": _lottery(
        "Frankle et al. 2020: IMP with rewinding, ID and OOD accuracy vs weights remaining "
        "per rewinding step (lottery)",
        lottery_outputs.write_imp,
    ),
    "lth_rewind": _lottery(
        "Frankle et al. 2020: accuracy at a fixed sparsity vs the rewinding step (lottery)",
        lottery_outputs.write_rewind,
    ),
    "lth_perturb": _lottery(
        "Frankle et al. 2020: each weight transform at step k, accuracy vs k (lottery)",
        lottery_outputs.write_perturb,
    ),
    "lth_pretext": _lottery(
        "Frankle et al. 2020: IMP after pre-training on random labels, rotation or blur, "
        "accuracy vs pre-training epochs (lottery)",
        lottery_outputs.write_pretext,
    ),
    "lth_telemetry": _lottery(
        "Frankle et al. 2020's weight telemetry beside tr(F), S_avg, S_worst over the early "
        "phase (lottery)",
        lottery_outputs.write_telemetry,
    ),
    "sse_cycles": _basin(
        "Sadrtdinov et al. 2023: ensemble and single-model accuracy (ID, OOD) vs the cycle lr "
        "and length for SSE and StarSSE, local and global DE as lines (basin)",
        basin_outputs.write_cycles,
    ),
    "sse_size": _basin(
        "Sadrtdinov et al. 2023: accuracy vs ensemble size for each method (basin)",
        basin_outputs.write_size,
    ),
    "sse_barrier": _basin(
        "Sadrtdinov et al. 2023: barrier from the first fine-tuned model to each later model "
        "vs the cycle lr (basin)",
        basin_outputs.write_barrier,
    ),
    "sse_soups": _basin(
        "Sadrtdinov et al. 2023: uniform weight soups of each ensemble's members vs the "
        "ensemble (basin)",
        basin_outputs.write_soups,
    ),
    "sse_early": _basin(
        "tr(F), S_avg, S_worst at the start of each SSE/StarSSE cycle vs its barrier (basin)",
        basin_outputs.write_early,
    ),
}


def commands() -> list[str]:
    """The outputs with a subcommand: tables, then figures, each by number, then the other
    papers' outputs by name."""
    named = [n for n, o in OUTPUTS.items() if o.command is not None]

    def order(name: str) -> tuple:
        number = name.strip("tablefig")
        if name.startswith(("table", "fig")) and number.isdigit():
            return (name.startswith("fig"), int(number), name)
        return (2, 0, name)

    return sorted(named, key=order)


def output_paths(paths: Sequence[str], out_dir: str) -> str:
    return ", ".join(os.path.relpath(p, out_dir) for p in paths)
