"""The paper's tables and figures from a sweep folder (see experiments/sweep.py), an auto-k
folder (see experiments/autok.py), or all of them from the folder of experiments/paper.py.

    python -m experiments.analysis all runs/paper             # every table and figure
    python -m experiments.analysis table1 runs/mnist_k        # standard vs GU, mean ± std
    python -m experiments.analysis table3 runs/c10_lr         # LR switch (l2h / h2l)
    python -m experiments.analysis fig1 runs/mnist_k          # ΔID and ΔOOD vs k, log x
    python -m experiments.analysis fig2 runs/mnist_k          # recorded metrics, seed mean ± std
    python -m experiments.analysis table2 runs/mnist_autok    # auto-k per metric, winning rate
    python -m experiments.analysis table6 runs/mnist_autok    # the k each metric picked
    python -m experiments.analysis fig6 runs/mnist_autok      # signal curves, picked k marked
    python -m experiments.analysis fig5 runs/c10_lr           # final solution vs OOD, Kendall τ

Every output is an entry of ONE registry, `registry.OUTPUTS` (name -> `Output`: its
description, the runs it draws, its writer and its subcommand), which this command line,
`experiments.paper` and `experiments.autok` read. The modules, by job: `runs` (finished sweep
runs, their pandas DataFrame and their grouping), `summary` (auto-k folders' autok.json),
`stats`, `render` (tables and figures to files), one module per family of outputs (`sweeps`,
`dynamics`, `autok_outputs`, `transformer`), `studies` (the paper folder: its studies, missing
runs, `write_all`), `registry` and `cli`.

Outputs go to `<folder>/analysis/` (or --out): tables as Markdown (printed too; the caption
says how each statistic is computed), CSV (raw means and stds) and LaTeX, figures as PNG and
PDF. Only finished runs (with results.json) count; every cell averaged over
seeds is the mean ± sample std (ddof=1), with the number of values in `n`.

How runs are grouped (Tables 1 and 3, Figures 1 and 2). Each run's saved config.json is
flattened (`earlyjax.config.flatten`) and compared field by field; the dataset named in
results.json counts as a field too. A **setting** is the set of runs equal in every field except
the seed and the fields that do not change a run's results:

* `earlyjax.config.RESUMABLE_CHANGES` (checkpointing, progress bar, eval batch size, cache dir),
  `log_every`, `eval_every` (evaluating during training does not touch the training state),
  where the data lives (`data.data_dir`, `data.ood_dir`) and `unfreeze.allow_late_release` (it
  only permits a schedule; a finished run trained the same with or without it);
* `record.*` (recording the early-period metrics reads the state and never changes it) and
  `stabilization.*` (Algorithm 2's τ/ε, used by auto-k's head-only signal runs), except for
  adaptive-unfreezing runs, whose schedule Algorithm 2 decides from the recorded metric: there
  these fields are part of the setting;
* the step of an LR switch without `optimizer.lr_switch`.

A field missing from an older config.json takes its `default_config` value. Runs of one setting
differ only in the seed; two runs of one setting with the same seed are an error (the number of
seeds n would be wrong). A **setting family** is the set of settings equal in every field but
the intervention (`unfreeze.k`, `unfreeze.adaptive`, `unfreeze.head_only`,
`optimizer.lr_switch` and its step, and, for adaptive runs, `record.*` and `stabilization.*`).
In a family the
**baseline** ("standard") is the setting with no intervention at all: k = None, no adaptive
unfreezing, no LR switch, not head-only. Every other setting of the family (GU at each k,
adaptive unfreezing, LR switches) is a row of its own, with Δ against that baseline; nothing is
ever averaged into it. Fields that differ between families (model width, total_steps,
freeze_bn_stats, ...) become columns of the tables and name the figure files.

The OOD set a run was evaluated on (results.json's `ood_set`, e.g. "MNIST-C-style (generated)")
follows from its config, so it does not split groups; it is shown in an "OOD set" column (and
figure titles) whenever a results.json names it, so a generated set is labelled as generated.
Older results without it load ("-"); runs of one family naming different OOD sets are an error.
"""

from experiments.analysis.autok_outputs import figure6, table2, table6
from experiments.analysis.cli import main
from experiments.analysis.dynamics import dynamics_figures, figure2
from experiments.analysis.registry import AUTOK_FOLDERS, OUTPUTS, Output, Source
from experiments.analysis.render import (
    CAPTIONS,
    autok_caption,
    display_frame,
    to_latex,
    to_markdown,
    write_table,
)
from experiments.analysis.runs import (
    DYNAMICS_METRICS,
    METRIC_TITLES,
    differing,
    families,
    is_standard,
    load_runs,
    recorded_curves,
    result_fields,
    runs_frame,
    settings_of,
    training_label,
)
from experiments.analysis.stats import (
    mean_std,
    normalize_0_1000,
    paired_difference_ci,
    seed_band,
    winning_rate,
    winning_rate_bootstrap,
    winning_rate_interval,
)
from experiments.analysis.studies import Study, missing_runs, read_paper_file, write_all
from experiments.analysis.summary import (
    AUTOK_VERSION,
    intervention_label,
    metric_run,
    read_autok,
    run_for_k,
    seed_mean,
    seed_values,
)
from experiments.analysis.sweeps import (
    figure1,
    figure5,
    final_solution_correlations,
    table1,
    table3,
)
from experiments.analysis.transformer import figure4, language_scores, table7

__all__ = [
    "AUTOK_FOLDERS",
    "AUTOK_VERSION",
    "CAPTIONS",
    "DYNAMICS_METRICS",
    "METRIC_TITLES",
    "OUTPUTS",
    "Output",
    "Source",
    "Study",
    "autok_caption",
    "differing",
    "display_frame",
    "dynamics_figures",
    "families",
    "figure1",
    "figure2",
    "figure4",
    "figure5",
    "figure6",
    "final_solution_correlations",
    "intervention_label",
    "is_standard",
    "language_scores",
    "load_runs",
    "main",
    "mean_std",
    "metric_run",
    "missing_runs",
    "normalize_0_1000",
    "paired_difference_ci",
    "read_autok",
    "read_paper_file",
    "recorded_curves",
    "result_fields",
    "run_for_k",
    "runs_frame",
    "seed_band",
    "seed_mean",
    "seed_values",
    "settings_of",
    "table1",
    "table2",
    "table3",
    "table6",
    "table7",
    "to_latex",
    "to_markdown",
    "training_label",
    "winning_rate",
    "winning_rate_bootstrap",
    "winning_rate_interval",
    "write_all",
    "write_table",
]
