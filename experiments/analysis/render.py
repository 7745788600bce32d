"""Rendering: tables as Markdown, CSV and LaTeX with their captions; figures saved as PNG and
PDF with their titles and file names."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence

import numpy as np

from earlyjax.metric_log import naming_the_file
from experiments.analysis.runs import ABSENT, SHOWN_ELSEWHERE, fmt_value, ood_set
from experiments.analysis.stats import mean_ci

# --------------------------------------------------------------------------------------------
# Writing tables


def _cell(row: dict, col: str) -> str:
    """A table cell as shown: 'X' with its 'X std' as 'mean ± std', Δ columns signed, NaN as
    'n/a' (e.g. no baseline), None as '-' (not applicable)."""
    v = row.get(col)
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        text = f"{v:+.2f}" if col.startswith("Δ") else f"{v:.2f}"
        std = row.get(col + " std")
        if isinstance(std, float) and not math.isnan(std):
            text += f" ± {std:.2f}"
        return text
    return str(v)


def display_frame(rows: list[dict]):
    """The rows as a pandas DataFrame of display strings (`_cell`), 'X std' folded into 'X'.
    The columns are those of every row, in first-seen order (rows of several studies may
    differ: an 'OOD set' only some name)."""
    import pandas as pd

    cols = [c for c in dict.fromkeys(c for r in rows for c in r) if not c.endswith(" std")]
    return pd.DataFrame([[_cell(r, c) for c in cols] for r in rows], columns=cols)


def to_markdown(rows: list[dict]) -> str:
    """A Markdown (pipe) table of `display_frame`."""
    if not rows:
        return "(no rows)"
    return display_frame(rows).to_markdown(index=False, tablefmt="pipe", disable_numparse=True)


# Unicode in our headers and cells, as LaTeX math (after pandas' LaTeX escaping).
_LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "τ": r"$\tau$",
    "λ": r"$\lambda$",
    "·": r"$\cdot$",
    "ε": r"$\varepsilon$",
}


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_text(text: str) -> str:
    """Plain text (a caption) as LaTeX."""
    return _symbols("".join(_LATEX_SPECIAL.get(c, c) for c in text))


def _symbols(tex: str) -> str:
    for char, math_ in _LATEX_SYMBOLS.items():
        tex = tex.replace(char, math_)
    return tex


def to_latex(rows: list[dict], caption: str, label: str) -> str:
    """A LaTeX table (booktabs rules) of `display_frame`, with its caption and label."""
    styler = display_frame(rows).style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    tex = styler.to_latex(caption="@CAPTION@", label=f"tab:{label}", hrules=True, position="t")
    return _symbols(tex).replace("@CAPTION@", _latex_text(caption))


def write_table(rows: list[dict], out_dir: str, name: str, caption: str | None = None) -> str:
    """Writes `name`.md (the table, then its caption), `name`.csv (the raw values: means and
    stds in columns of their own) and `name`.tex to out_dir; returns the Markdown."""
    import pandas as pd

    if not rows:
        raise ValueError(f"table {name} has no rows")
    caption = caption or CAPTIONS.get(name, name)
    os.makedirs(out_dir, exist_ok=True)
    columns = list(dict.fromkeys(c for r in rows for c in r))
    stem = os.path.join(out_dir, name)
    with naming_the_file(stem + ".csv"):
        pd.DataFrame(rows, columns=columns).to_csv(stem + ".csv", index=False)
    markdown = to_markdown(rows) + f"\n\n{caption}"
    with naming_the_file(stem + ".md"), open(stem + ".md", "w") as f:
        f.write(markdown + "\n")
    with naming_the_file(stem + ".tex"), open(stem + ".tex", "w") as f:
        f.write(to_latex(rows, caption, name))
    return markdown


def table_files(name: str, out_dir: str) -> list[str]:
    """The files `write_table` writes for table `name`."""
    return [os.path.join(out_dir, f"{name}.{ext}") for ext in ("md", "csv", "tex")]


_SEEDS_NOTE = "ID and OOD accuracy (%): mean ± sample std (ddof 1) over the n seeds of the row."
_PAIRED_NOTE = (
    "ΔOOD paired: the mean over the seeds both rows ran of the per-seed OOD difference from the "
    "{base} row, with its 95% Student-t interval (n-1 degrees of freedom; n/a with one pair)."
)
_WR_NOTE = (
    "WR: per setting, the share of the random k whose seed-mean OOD accuracy the metric's k "
    "beats, a tie counting one half (the paper's Table 2 may pool settings); its 95% interval "
    "is a paired bootstrap over seeds (2000 resamples of the seeds with replacement, the same "
    "resample for every run; percentile interval; n/a with one seed). The random k are held "
    "fixed: the interval is the spread over seeds, not over which k were drawn."
)
CAPTIONS = {
    "table1": "Table 1: standard training vs gradual unfreezing (GU k: unfreezing interval k) "
    "and other early-period interventions, per setting. "
    + _SEEDS_NOTE
    + " ΔID, ΔOOD: difference of seed means from the setting's standard row. "
    + _PAIRED_NOTE.format(base="standard"),
    "table2": "Table 2: k picked by Algorithm 2 from each metric vs random k. "
    + _SEEDS_NOTE
    + " The random-k row: mean ± std over the random k of each k's seed mean. "
    + _WR_NOTE
    + " "
    + _PAIRED_NOTE.format(base="standard"),
    "table3": "Table 3: learning-rate switches in the early period (lr_l2h @ k: 0.1·lr from "
    "step 0, lr from step k; lr_h2l @ k: the reverse) against constant learning rates. Each "
    "switch step run is a row (the paper reports one row per direction, its k from a random "
    "search). "
    + _SEEDS_NOTE
    + " ΔID, ΔOOD: difference of seed means from the constant lr_d row. "
    + _PAIRED_NOTE.format(base="constant lr_d"),
    "table3_autok": "Table 3, §7.1's last paragraph: the LR switch step k picked by Algorithm 2 "
    "from each metric (on runs that keep the first learning rate throughout) vs random switch "
    "steps. "
    + _SEEDS_NOTE
    + " "
    + _WR_NOTE
    + " "
    + _PAIRED_NOTE.format(base="standard (constant lr_d)"),
    "table6": "Table 6: the k Algorithm 2 picked per metric on the seed mean of the signal runs' "
    "curves (the k each seed's own curve gives, for information).",
    "table7": "Table 7: cross-lingual transfer of standard training and GU with each metric's "
    "k, per training task. En: the English test set; X-ling: the mean over the other "
    "languages of a set (XQuAD: 10, MLQA: 6, XNLI: 14). F1 and EM (%) with SQuAD v1.1's answer "
    "normalisation for XQuAD and MLQA's per-language one for MLQA; accuracy (%) for XNLI. Each "
    "cell: mean ± sample std (ddof 1) over the seeds (n). WR: per task, the share of its random "
    "k whose seed-mean OOD score (XNLI: cross-lingual accuracy; SQuAD: the mean F1 over the "
    "XQuAD and MLQA languages other than English) the metric's k beats, a tie counting one "
    "half; 'WR %' is their mean over the tasks where the metric picked a k, as the paper "
    "averages per training data set. MLQA's English is shown too; the paper reports only its "
    "cross-lingual mean.",
}
CAPTIONS["table4"] = (
    "Table 4: Table 7's rows of standard training and of GU with tr(F)'s k. "
    + CAPTIONS["table7"].split(" per training task. ", 1)[1]
)
# An auto-k summary of the QA task compares F1 where the image tasks compare accuracy.
QA_NOTE = (
    " For the QA task (SQuAD) ID and OOD are F1 (%), not accuracy: XQuAD's English, and the "
    "mean over the non-English XQuAD and MLQA sets."
)


def autok_caption(name: str, summary: dict) -> str:
    """`CAPTIONS[name]` for an auto-k table of `summary`, saying when its scores are F1."""
    qa = summary.get("setting", {}).get("task") == "qa"
    return CAPTIONS[name] + (QA_NOTE if qa else "")


# --------------------------------------------------------------------------------------------
# Figures


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: str) -> list[str]:
    """Saves `fig` as `stem`.png and `stem`.pdf; returns their paths."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        with naming_the_file(f"{stem}.{ext}"):
            fig.savefig(f"{stem}.{ext}", dpi=150)
        paths.append(f"{stem}.{ext}")
    return paths


def suptitle(fig, text: str) -> None:
    """The figure's title, wrapped to its width (an OOD set's name can be long)."""
    import textwrap

    fig.suptitle(textwrap.fill(text, width=int(fig.get_figwidth() * 13)), fontsize=9)


def figure_stem(prefix: str, names: list[str], values: dict, n_families: int) -> str:
    """'fig1' for a single family, else 'fig1_<field>=<value>_...' over the differing fields."""
    if n_families == 1:
        return prefix
    parts = [f"{n}={fmt_value(None if values[n] is ABSENT else values[n])}" for n in names]
    return prefix + "_" + re.sub(r"[^A-Za-z0-9._=,+-]+", "-", "_".join(parts)).strip("-")


def family_title(runs: Sequence[dict], names: list[str], values: dict) -> str:
    r = runs[0]
    parts = [r["dataset"], r["model"], f"{r['lr_scale']:g}*lr_d"]
    parts += [f"{n}={fmt_value(values[n])}" for n in names if n not in SHOWN_ELSEWHERE]
    if ood_set(runs):
        parts.append(f"OOD: {ood_set(runs)}")
    return " / ".join(parts)


def band(ax, x, groups, label, **style):
    """A line of means with its 95% band over seeds."""
    stats = [mean_ci(g) for g in groups]
    mean = np.array([s[0] for s in stats])
    half = np.nan_to_num(np.array([s[1] for s in stats]))
    (line,) = ax.plot(x, mean, marker="o", markersize=3, label=label, **style)
    ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2)


def save_figure_and_close(plt, fig, out_dir: str, stem: str) -> list[str]:
    fig.tight_layout()
    paths = save_figure(fig, os.path.join(out_dir, stem))
    plt.close(fig)
    return paths
