"""experiments.paper: the grids as data, the dry run, and `analysis all` on a synthetic paper
folder with known answers (no training; the real end-to-end run is test_paper_e2e.py)."""

import copy
import os
import shutil

import pytest
from helpers import FIXTURES, legend, markdown_rows, read_text, suptitle
from synthetic_runs import (
    autok_summary,
    curve,
    write_autok_folder,
    write_run,
    write_transformer_autok_folders,
)

from experiments import analysis, paper
from experiments.paper import Study

CONFIG = "digits_tiny.py"
SPAN_FIXTURE = os.path.join(FIXTURES, "tiny_xlmr", "span")
SEEDS = (0, 1)
RECORDED = ("fisher", "avg_sharpness", "worst_sharpness", "feature_rank")


def grid() -> list[Study]:
    return [
        Study(
            "k",
            CONFIG,
            ("table1", "fig1", "fig5", "fig2", "fig10", "fig7", "table3", "fig3", "fig8"),
            seeds=SEEDS,
            k=(None, 2),
            lr_scale=(1.0, 0.1),
        ),
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
    ]


# OOD accuracy per run: (k, lr_scale) -> per seed; GU k=2 gains 4 and 6 points at lr_d.
OOD = {
    (None, 1.0): (50.0, 52.0),
    (2, 1.0): (54.0, 58.0),
    (None, 0.1): (40.0, 41.0),
    (2, 0.1): (42.0, 42.0),
}
L2H_OOD = (60.0, 62.0)


def rank_curve(scale):
    return [{"step": s, "feature_rank": scale * (10 + s)} for s in range(0, 13, 3)]


@pytest.fixture
def paper_dir(tmp_path):
    """A finished paper folder of `grid()`: every run written by hand with known numbers."""
    root = tmp_path / "paper"
    studies = grid()
    paper.write_paper_file(str(root), "synthetic", studies)
    config = paper.study_config(studies[0])
    for point in paper.sweep_points(studies[0], config):
        o = dict(point.overrides)
        k, scale, seed = o["unfreeze.k"], o["optimizer.lr_scale"], o["seed"]
        records = [
            {**m, **r}
            for m, r in zip(
                curve(1 + seed + (k or 0), n=5, every=3, metrics=RECORDED[:3]),
                rank_curve(1 + seed + (k or 0)),
                strict=True,
            )
        ]
        write_run(
            root / "k", point.name, seed=seed, k=k, id_acc=90.0 + seed, ood_acc=OOD[k, scale][seed],
            optimizer__lr_scale=scale, records=records,
            final_solution={"hessian": 10.0 * (k or 1) + seed,
                            "avg_sharpness": 0.1 * OOD[k, scale][seed]},
        )  # fmt: skip
    for point in paper.sweep_points(studies[1], config):
        seed = dict(point.overrides)["seed"]
        write_run(
            root / "lr_switch", point.name, seed=seed, id_acc=91.0, ood_acc=L2H_OOD[seed],
            optimizer__lr_switch="l2h", optimizer__lr_switch_step=6,
            records=curve(3 + seed, n=5, every=3, metrics=RECORDED[:3]),
        )  # fmt: skip
    write_autok_folder(root / "autok", autok_summary())
    lr_summary = copy.deepcopy(autok_summary())
    lr_summary["setting"].update(intervention="lr_switch", label="lr_l2h")
    write_autok_folder(root / "autok_lr", lr_summary)
    return str(root)


def test_analysis_all_writes_every_table_and_figure(paper_dir, tmp_path, figures, capsys):
    out = str(tmp_path / "out")
    analysis.main(["all", paper_dir, "--out", out])
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines[:-1]] == list(paper.OUTPUTS)
    transformer = ("table4", "table7", "fig4", "fig9")  # the grid paper_xlmr's outputs
    # test_lottery.py's and test_basin.py's
    lottery = tuple(n for n in paper.OUTPUTS if n.startswith(("lth_", "sse_")))
    for ln in lines[:-1]:
        fed = ln.split(":")[0] not in transformer + lottery
        assert ("not written" not in ln) if fed else ("no study of the grid feeds it" in ln), ln
    written = {ln.split(":")[0]: ln.split(": ")[1].split(", ") for ln in lines[:-1]}
    written = {name: files for name, files in written.items() if name not in transformer + lottery}
    for name in ("table1", "table2", "table3", "table3_autok", "table6"):
        assert written[name] == [f"{name}.md", f"{name}.csv", f"{name}.tex"]
    for name in ("fig2", "fig3", "fig5", "fig6", "fig7", "fig8", "fig10"):
        assert written[name] == [f"{name}.png", f"{name}.pdf"]
    assert written["fig1"] == [  # Figure 1's panels per learning rate, as the paper's (a)-(h)
        "fig1_optimizer.lr_scale=0.1.png", "fig1_optimizer.lr_scale=0.1.pdf",
        "fig1_optimizer.lr_scale=1.png", "fig1_optimizer.lr_scale=1.pdf",
    ]  # fmt: skip
    for files in written.values():
        assert all(os.path.getsize(os.path.join(out, f)) > 100 for f in files), files

    # Table 1: per learning rate, standard and GU k=2 with the paired interval.
    t1 = {
        (r["lr"], r["training"]): r
        for r in markdown_rows(read_text(os.path.join(out, "table1.md")))
    }
    assert set(t1) == {("1*lr_d", "standard"), ("1*lr_d", "GU k=2"),
                       ("0.1*lr_d", "standard"), ("0.1*lr_d", "GU k=2")}  # fmt: skip
    assert t1["1*lr_d", "GU k=2"]["OOD"] == "56.00 ± 2.83"
    assert t1["1*lr_d", "GU k=2"]["ΔOOD"] == "+5.00"
    assert t1["1*lr_d", "GU k=2"]["ΔOOD paired [95% CI]"] == "+5.00 [-7.71, +17.71]"
    assert t1["1*lr_d", "GU k=2"]["n"] == "2"

    # Table 3: constant lr_d, constant 0.1·lr_d and the switch; no GU rows.
    t3 = markdown_rows(read_text(os.path.join(out, "table3.md")))
    assert [r["schedule"] for r in t3] == ["constant lr_d", "constant 0.1·lr_d", "lr_l2h @ 6"]
    assert t3[1]["OOD"] == "40.50 ± 0.71" and t3[2]["ΔOOD"] == "+10.00"
    # Table 3's extra rows: the LR switch step from each metric, with the WR interval.
    extra = markdown_rows(read_text(os.path.join(out, "table3_autok.md")))
    assert [r["method"] for r in extra] == [
        "standard", "lr_l2h, random k", "lr_l2h, k from tr(F)", "lr_l2h, k from S_avg",
        "lr_l2h, k from S_worst",
    ]  # fmt: skip
    assert extra[2]["WR (OOD) %"] == "62.50" and extra[2]["WR 95% CI"] == "[62.5, 62.5]"
    assert "paired bootstrap over seeds" in read_text(os.path.join(out, "table3_autok.md"))
    assert [r["method"] for r in markdown_rows(read_text(os.path.join(out, "table2.md")))][1] == (
        "GU, random k"
    )
    assert "tr(F)" in read_text(os.path.join(out, "table6.md"))

    # Figures 2 and 10 split the learning rates; bands over the two seeds.
    fig2, fig10 = figures["fig2"], figures["fig10"]
    assert "1*lr_d" in suptitle(fig2) and "0.1*lr_d" in suptitle(fig10)
    assert legend(fig2.axes[0]) == ["standard (n=2)", "GU k=2 (n=2)"]
    assert len(fig2.axes[0].collections) == 2  # one std band per curve
    # Figure 7: the raw feature rank, seed mean: (1+0)*(10+s) and (1+1)*(10+s) -> 1.5*(10+s).
    ax = figures["fig7"].axes[0]
    assert ax.get_yscale() == "linear" and "feature rank" in ax.get_title()
    steps, mean = ax.lines[0].get_data()
    assert list(steps) == [0, 3, 6, 9, 12] and mean == pytest.approx(1.5 * (10 + steps))
    # Figures 3 and 8: constant lr_d and the l2h switch, the switch step marked.
    ax = figures["fig3"].axes[0]
    assert len(figures["fig3"].axes) == 1 and "S_avg" in ax.get_title()
    assert legend(ax) == ["standard (n=2)", "lr_l2h @ 6 (n=2)"]
    assert [ln.get_xdata()[0] for ln in ax.lines if ln.get_linestyle() == ":"] == [6]
    assert len(figures["fig8"].axes) == 3
    # Figure 5: Kendall's tau over the 8 runs of both learning rates, coloured by rate.
    titles = [a.get_title() for a in figures["fig5"].axes]
    assert all("n = 8" in t for t in titles)
    assert sorted(legend(figures["fig5"].axes[0])) == ["lr 0.01", "lr 0.1"]  # default_config lr
    # S_avg is 0.1 * OOD: tau = 1.
    assert "τ = 1.00" in titles[[a.get_xlabel() for a in figures["fig5"].axes].index("S_avg")]


def test_dry_run_of_a_finished_folder_has_nothing_to_do(paper_dir, capsys):
    paper.dry_run(paper.read_paper_file(paper_dir), paper_dir, step_seconds=0.1)
    rows = {ln.split()[0]: ln.split() for ln in capsys.readouterr().out.splitlines()[1:-1]}
    assert rows["k"][2:4] == ["8", "0"] and rows["lr_switch"][2:4] == ["2", "0"]
    assert rows["autok"][4] == "0" and rows["autok_lr"][4] == "0"  # autok.json: all done


def test_missing_runs_are_named_and_the_rest_is_written(paper_dir, tmp_path, capsys):
    os.remove(os.path.join(paper_dir, "k", "k=2_seed=1_lrs=0.1", "results.json"))
    os.remove(os.path.join(paper_dir, "autok_lr", "autok.json"))
    lines = {ln.split(":")[0]: ln for ln in paper.write_all(paper_dir, str(tmp_path / "out"))}
    assert "1 runs missing: k/k=2_seed=1_lrs=0.1" in lines["table1"]
    assert "k/k=2_seed=1_lrs=0.1" in lines["fig10"]  # GU at 0.1·lr_d: Figure 10 draws it
    assert lines["fig3"] == "fig3: fig3.png, fig3.pdf"  # Figure 3 does not: lr_d, no GU
    assert "autok_lr/ (the auto-k pipeline has not finished" in lines["table3_autok"]
    assert "not written" not in lines["table2"] and lines["fig6"] == "fig6: fig6.png, fig6.pdf"


def test_an_output_no_study_feeds_is_named(tmp_path):
    paper.write_paper_file(str(tmp_path), "one", [grid()[1]])
    lines = {ln.split(":")[0]: ln for ln in paper.write_all(str(tmp_path), str(tmp_path / "o"))}
    assert "no study of the grid feeds it" in lines["table2"]
    assert "2 runs missing: lr_switch/lr=l2h@6_seed=0" in lines["table3"]


def test_a_paper_folder_keeps_its_grid(tmp_path):
    paper.write_paper_file(str(tmp_path), "a", grid())
    paper.write_paper_file(str(tmp_path), "a", grid())  # the same grid again: fine
    with pytest.raises(SystemExit, match="holds a different grid"):
        paper.write_paper_file(str(tmp_path), "a", grid()[:2])
    assert [s.name for s in paper.read_paper_file(str(tmp_path))] == [s.name for s in grid()]


def test_a_study_refuses_unknown_outputs_and_kinds():
    with pytest.raises(ValueError, match="unknown outputs \\['fig99'\\]"):
        Study("x", CONFIG, ("fig99",))
    with pytest.raises(ValueError, match="kind 'grid'"):
        Study("x", CONFIG, (), kind="grid")
    with pytest.raises(ValueError, match="picks k itself"):
        Study("x", CONFIG, (), kind="autok", k=(5,))


def test_the_paper_grid_as_the_paper_ran_it(monkeypatch):
    studies = {s.name: s for s in paper.load_grid("paper")}
    monkeypatch.setenv("XLMR_DIR", "/data/xlmr")
    transformer = paper.load_grid("paper_xlmr")
    lottery = paper.load_grid("lottery")  # Frankle et al. 2020
    basin = paper.load_grid("basin")  # Sadrtdinov et al. 2023
    feeds = {o for s in [*studies.values(), *transformer, *lottery, *basin] for o in s.outputs}
    assert feeds == set(paper.OUTPUTS)  # every output has its runs, in one of the grids
    mnist = studies["mnist_rn18/k"]
    assert mnist.seeds == (0, 1, 2, 3, 4, 5) and studies["cifar10_rn18/k"].seeds == (0, 1, 2, 3)
    # Figure 1's k: 1 up to the largest k whose 5 releases end inside 10 epochs of 469 steps.
    ks = mnist.k[1:]
    assert mnist.k[0] is None and ks[0] == 1 and len(ks) == 10 and ks[-1] * 5 < 4690
    assert ks[-1] == 937
    assert studies["cifar10_vgg11/dynamics"].k == (None, 250, 5000)
    assert studies["cifar10_rn18/lr_switch_dynamics"].lr_switch == (("l2h", 200),)
    config = paper.study_config(studies["cifar10_rn18/dynamics"])
    assert (config.record.every, config.record.until) == (10, 2000)
    assert "feature_rank" in config.record.metrics
    runs = paper.study_runs(mnist, paper.study_config(mnist), 60_000)
    assert len(runs) == 11 * 2 * 6 and {steps for _, steps in runs} == {4690}


def test_dry_run_counts_runs_and_device_hours(tmp_path, capsys):
    paper.main(["--grid=digits", f"--out={tmp_path}", "--dry_run", "--step_seconds=0.5"])
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[1:-1]}
    assert rows["k"][1:] == ["sweep", "12", "12", "720", "0.500", "0.10"]  # 12 runs x 60 steps
    assert rows["autok"][2] == "<=" and rows["autok"][3] == "14"  # 2 x (signal, std, 2+3 k)
    assert "total: at most 44 runs (44 to do)" in out and "given (--step_seconds)" in out
    assert "training steps only" in out


def test_only_names_unknown_studies(tmp_path):
    with pytest.raises(SystemExit, match="not studies of grid digits"):
        paper.main(["--grid=digits", f"--out={tmp_path}", "--only=k,nope", "--dry_run"])
    with pytest.raises(SystemExit, match="grid 'nope' not found"):
        paper.main(["--grid=nope", f"--out={tmp_path}", "--dry_run"])


def test_dry_run_measures_the_step_of_an_lr_switch_study(tmp_path, capsys):
    paper.main(["--grid=digits", f"--out={tmp_path}", "--only=autok_lr", "--dry_run"])
    out = capsys.readouterr().out
    row = out.splitlines()[1].split()
    assert row[0] == "autok_lr" and float(row[-2]) > 0  # seconds per step, measured
    assert "measured on cpu" in out


def test_broken_grids_and_paper_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_grid(:\n")
    with pytest.raises(SystemExit, match=f"grid {bad}: SyntaxError"):
        paper.load_grid(str(bad))
    bad.write_text("from experiments.paper import Study\ndef get_grid():\n"
                   "    return [Study('x', 'digits_tiny.py', ('fig99',))]\n")  # fmt: skip
    with pytest.raises(SystemExit, match="ValueError: study x: unknown outputs"):
        paper.load_grid(str(bad))
    with pytest.raises(SystemExit, match="paper.json not found: `analysis all` reads the grid"):
        paper.write_all(str(tmp_path), str(tmp_path / "o"))
    (tmp_path / "paper.json").write_text('{"grid": "x", "studies": [{"name": "x"}]}')
    with pytest.raises(SystemExit, match="is not a grid this version reads"):
        paper.write_all(str(tmp_path), str(tmp_path / "o"))


def test_the_transformer_grid_needs_its_checkpoint_and_writes_tables_4_and_7(
    tmp_path, monkeypatch, figures
):
    monkeypatch.delenv("XLMR_DIR", raising=False)
    with pytest.raises(SystemExit, match="set XLMR_DIR to a downloaded XLM-R folder"):
        paper.load_grid("paper_xlmr")
    monkeypatch.setenv("XLMR_DIR", str(tmp_path / "xlmr"))
    studies = paper.load_grid("paper_xlmr")
    assert [s.name for s in studies] == ["mnli_xlmr/autok", "squad_xlmr/autok"]
    assert all(s.seeds == (0, 1, 2, 3) and s.kind == "autok" for s in studies)  # §4
    config = paper.study_config(studies[1])
    assert config.model.checkpoint == str(tmp_path / "xlmr") and config.batch_size == 32
    root = tmp_path / "paper"
    paper.write_paper_file(str(root), "paper_xlmr", studies)
    write_transformer_autok_folders(root / "squad_xlmr" / "autok", root / "mnli_xlmr" / "autok")
    lines = {ln.split(":")[0]: ln for ln in paper.write_all(str(root), str(root / "analysis"))}
    for output in ("table4", "table7", "table6", "fig6", "fig4", "fig9"):
        assert "not written" not in lines[output], lines[output]
    assert "no study of the grid feeds it" in lines["table1"]
    assert "| XQuAD F1 X-ling" in read_text(root / "analysis" / "table7.md")
    assert [ax.get_title() for ax in figures["fig4"].axes][2].startswith("|S_worst|")


def test_dry_run_times_a_transformer_step_on_random_tokens_of_its_shape(tmp_path):
    from earlyjax.tasks import QuestionAnswering
    from experiments.configs.squad_xlmr import get_config

    checkpoint = tmp_path / "xlmr"  # only its config.json is read: no weights, no data
    checkpoint.mkdir()
    shutil.copy(os.path.join(SPAN_FIXTURE, "config.json"), checkpoint)
    c = get_config()
    c.model.checkpoint, c.data.max_length = str(checkpoint), 32
    task = QuestionAnswering.random_like(c, 40)
    assert task.model.config.hidden_size == 32 and task.model.head_type == "span"
    assert task.train["input_ids"].shape == (40, 32) and set(task.train) == {
        "input_ids", "attention_mask", "start", "end"}  # fmt: skip
    assert int(task.train["input_ids"].max()) < task.model.config.vocab_size
    assert task.blocks == ("layers_0",) and task.checkpoint is None  # random weights


@pytest.mark.slow  # ~7 s: compiles an XLM-R train step
def test_dry_run_times_a_transformer_step_without_its_data():
    from experiments.configs.quickstart_qa import get_config

    c = get_config()  # random tokens of the config's shape: no data is read
    c.model.width, c.model.layers, c.batch_size = 16, 2, 8
    assert paper.measure_step_seconds(c, steps=1) > 0
