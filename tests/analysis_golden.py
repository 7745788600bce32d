"""The golden record of `python -m experiments.analysis`: a synthetic paper folder that feeds
every output of the registry, and what the analysis writes and prints from it.

`tests/fixtures/make_analysis_golden.py` writes the record to
`tests/fixtures/analysis_golden/`; `tests/experiments/test_analysis_golden.py` runs the analysis
again and compares: every table file byte for byte, every figure's data (per axes: title, labels,
scales, each line's label and data, each collection's paths and offsets, texts, legend), and the
printed lines (the output folder written as <OUT>, the input folder as <DIR>).
"""

import contextlib
import copy
import io
import json
import os

import numpy as np
from synthetic_runs import (
    autok_summary,
    curve,
    write_autok_folder,
    write_run,
    write_transformer_autok_folders,
)

GOLDEN_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "analysis_golden")
CONFIG = "digits_tiny.py"
SEEDS = (0, 1)
RECORDED = ("fisher", "avg_sharpness", "worst_sharpness", "feature_rank")
OOD = {
    (None, 1.0): (50.0, 52.0),
    (2, 1.0): (54.0, 58.0),
    (None, 0.1): (40.0, 41.0),
    (2, 0.1): (42.0, 42.0),
}
L2H_OOD = (60.0, 62.0)
IMAGE_OUTPUTS = ("table1", "fig1", "fig5", "fig2", "fig10", "fig7", "table3", "fig3", "fig8")


def _grid():
    from experiments.paper import Study

    return [
        Study("k", CONFIG, IMAGE_OUTPUTS, seeds=SEEDS, k=(None, 2), lr_scale=(1.0, 0.1)),
        Study(
            "lr_switch", CONFIG, ("table3", "fig3", "fig8"), seeds=SEEDS, lr_switch=(("l2h", 6),)
        ),  # fmt: skip
        Study("autok", CONFIG, ("table2", "table6", "fig6"), kind="autok", seeds=(0, 1, 2)),
        Study(
            "autok_lr",
            CONFIG,
            ("table3_autok",),
            kind="autok",
            seeds=(0, 1, 2),
            intervention="lr_switch",
            overrides=(("optimizer.lr_switch", "l2h"),),
        ),
        Study("mnli", CONFIG, ("table4", "table7", "fig4"), kind="autok", seeds=(0, 1, 2)),
        Study("squad", CONFIG, ("table4", "table7", "fig9"), kind="autok", seeds=(0, 1, 2)),
    ]


def _records(seed, k):
    rank = [{"step": s, "feature_rank": (1 + seed + (k or 0)) * (10 + s)} for s in range(0, 13, 3)]
    metrics = curve(1 + seed + (k or 0), n=5, every=3, metrics=RECORDED[:3])
    return [{**m, **r} for m, r in zip(metrics, rank, strict=True)]


def build_paper_folder(root) -> str:
    """A finished paper folder (paper.json and every run, fixed numbers) feeding every output."""
    from experiments import paper

    root = str(root)
    studies = _grid()
    paper.write_paper_file(root, "golden", studies)
    config = paper.study_config(studies[0])
    for point in paper.sweep_points(studies[0], config):
        o = dict(point.overrides)
        k, scale, seed = o["unfreeze.k"], o["optimizer.lr_scale"], o["seed"]
        write_run(
            os.path.join(root, "k"), point.name, seed=seed, k=k, id_acc=90.0 + seed + (k or 0) / 4,
            ood_acc=OOD[k, scale][seed], optimizer__lr_scale=scale, records=_records(seed, k),
            final_solution={"hessian": 10.0 * (k or 1) + seed + scale,
                            "avg_sharpness": 0.1 * OOD[k, scale][seed] - seed / 7},
        )  # fmt: skip
    for point in paper.sweep_points(studies[1], config):
        seed = dict(point.overrides)["seed"]
        write_run(
            os.path.join(root, "lr_switch"), point.name, seed=seed, id_acc=91.0 + seed / 3,
            ood_acc=L2H_OOD[seed], optimizer__lr_switch="l2h", optimizer__lr_switch_step=6,
            records=curve(3 + seed, n=5, every=3, metrics=RECORDED[:3]),
        )  # fmt: skip
    write_autok_folder(os.path.join(root, "autok"), autok_summary())
    lr_summary = copy.deepcopy(autok_summary())
    lr_summary["setting"].update(intervention="lr_switch", label="lr_l2h")
    write_autok_folder(os.path.join(root, "autok_lr"), lr_summary)
    write_transformer_autok_folders(os.path.join(root, "squad"), os.path.join(root, "mnli"))
    return root


# Single subcommands, whose printed lines are recorded too (relative to the paper folder).
SUBCOMMANDS = (
    ("table1", "k"),
    ("table3", "lr_switch"),
    ("fig1", "k"),
    ("fig2", "k"),
    ("fig5", "k"),
    ("table2", "autok"),
    ("table6", "autok"),
    ("fig6", "autok"),
    ("fig4", "mnli"),
    ("fig9", "squad"),
    ("table4", "squad", "mnli"),
    ("table7", "squad", "mnli"),
)


def _round(x):
    if isinstance(x, list | tuple | np.ndarray):
        return [_round(v) for v in np.asarray(x, dtype=object).tolist()]
    if isinstance(x, float | np.floating):
        x = float(x)
        return x if not np.isfinite(x) else float(f"{x:.10g}")
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ma.core.MaskedConstant):
        return None
    return x


def _array(a):
    a = np.ma.filled(np.ma.asarray(a, dtype=float), np.nan)
    return _round(a.tolist())


def _axes_data(ax) -> dict:
    legend = ax.get_legend()
    return {
        "title": ax.get_title(),
        "xlabel": ax.get_xlabel(),
        "ylabel": ax.get_ylabel(),
        "xscale": ax.get_xscale(),
        "yscale": ax.get_yscale(),
        "lines": [
            {
                "label": line.get_label(),
                "x": _array(line.get_xdata()),
                "y": _array(line.get_ydata()),
                "color": str(line.get_color()),
                "linestyle": str(line.get_linestyle()),
                "marker": str(line.get_marker()),
            }
            for line in ax.get_lines()
        ],
        "collections": [
            {
                "type": type(c).__name__,
                "label": c.get_label(),
                "paths": [_array(p.vertices) for p in c.get_paths()],
                "offsets": _array(c.get_offsets()),
            }
            for c in ax.collections
        ],
        "texts": [t.get_text() for t in ax.texts],
        "legend": [t.get_text() for t in legend.get_texts()] if legend else None,
    }


@contextlib.contextmanager
def capture_figures():
    """{file stem: figure data} of every figure saved inside the block (matplotlib's
    Figure.savefig wrapped: one record per stem, the PNG and PDF being one figure)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    captured = {}
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        stem = os.path.splitext(os.path.basename(str(fname)))[0]
        suptitle = fig._suptitle.get_text() if fig._suptitle else None
        captured[stem] = {"suptitle": suptitle, "axes": [_axes_data(ax) for ax in fig.axes]}
        return original(fig, fname, *args, **kwargs)

    Figure.savefig = savefig
    try:
        yield captured
    finally:
        Figure.savefig = original


def _printed(argv, paper_dir, out) -> list[str]:
    from experiments import analysis

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        analysis.main(argv)
    text = buffer.getvalue().replace(out, "<OUT>").replace(paper_dir, "<DIR>")
    return text.splitlines()


def run_analysis(tmp) -> dict:
    """Builds the folder under `tmp` and runs `analysis all` and every subcommand on it:
    {"tables": {file: text}, "figures": {stem: data}, "printed": {command: lines}}."""
    paper_dir = build_paper_folder(os.path.join(str(tmp), "paper"))
    out = os.path.join(str(tmp), "out")
    printed = {}
    with capture_figures() as figures:
        printed["all"] = _printed(["all", paper_dir, "--out", out], paper_dir, out)
    tables = {}
    for name in sorted(os.listdir(out)):
        if name.endswith((".md", ".csv", ".tex")):
            with open(os.path.join(out, name), encoding="utf-8") as f:
                tables[name] = f.read()
    for what, *folders in SUBCOMMANDS:
        sub_out = os.path.join(str(tmp), "sub", what)
        argv = [what, *(os.path.join(paper_dir, f) for f in folders), "--out", sub_out]
        with capture_figures():
            printed[what] = _printed(argv, paper_dir, sub_out)
    return {"tables": tables, "figures": figures, "printed": printed}


def write_golden(record: dict, golden_dir: str = GOLDEN_DIR) -> None:
    os.makedirs(os.path.join(golden_dir, "tables"), exist_ok=True)
    for name, text in record["tables"].items():
        with open(os.path.join(golden_dir, "tables", name), "w", encoding="utf-8") as f:
            f.write(text)
    for key in ("figures", "printed"):
        with open(os.path.join(golden_dir, key + ".json"), "w", encoding="utf-8") as f:
            json.dump(record[key], f, indent=1, ensure_ascii=False, sort_keys=True)
            f.write("\n")


def read_golden(golden_dir: str = GOLDEN_DIR) -> dict:
    tables = {}
    for name in sorted(os.listdir(os.path.join(golden_dir, "tables"))):
        with open(os.path.join(golden_dir, "tables", name), encoding="utf-8") as f:
            tables[name] = f.read()
    record = {"tables": tables}
    for key in ("figures", "printed"):
        with open(os.path.join(golden_dir, key + ".json"), encoding="utf-8") as f:
            record[key] = json.load(f)
    return record
