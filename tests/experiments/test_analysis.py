"""experiments.analysis on synthetic run folders with known answers (no training)."""

import copy
import json
import os
import statistics

import numpy as np
import pandas as pd
import pytest
from helpers import legend, markdown_rows, suptitle
from synthetic_runs import (
    GENERATED,
    autok_summary,
    curve,
    write_autok_folder,
    write_run,
    write_transformer_autok_folders,
)

from experiments import analysis


@pytest.fixture
def sweep(tmp_path):
    """width 64: standard (3 seeds), GU k=5/20/100, adaptive, lr_l2h, lr_h2l; width 32: standard
    and GU k=5. Fields that do not change results vary inside settings."""
    root = tmp_path / "sweep"
    rec = curve()
    # standard, width 64: ID 97/98/99, OOD 50/52/54; one older result has no ood_set.
    write_run(root, "std_s0", seed=0, id_acc=97.0, ood_acc=50.0, records=rec)
    write_run(
        root, "std_s1", seed=1, id_acc=98.0, ood_acc=52.0, progress_bar=False, log_every=5,
        records=curve(1.1),
    )  # fmt: skip
    write_run(
        root, "std_s2", seed=2, id_acc=99.0, ood_acc=54.0, ood_set=None, checkpoint_every=7,
        data__cache_dir="/elsewhere", eval_every=50,
        drop=("data.ood_corruptions", "record.bn", "stabilization"),  # an older config.json
    )  # fmt: skip
    # GU k=5: ID 97/97, OOD 55/57.
    write_run(root, "k5_s0", seed=0, k=5, id_acc=97.0, ood_acc=55.0, records=rec)
    write_run(root, "k5_s1", seed=1, k=5, id_acc=97.0, ood_acc=57.0)
    # GU k=20: ID 96/97/98, OOD 60 x3; seed 2 recorded the metrics (record.* splits nothing).
    write_run(root, "k20_s0", seed=0, k=20, id_acc=96.0, ood_acc=60.0, records=rec)
    write_run(root, "k20_s1", seed=1, k=20, id_acc=97.0, ood_acc=60.0, records=curve(0.9))
    write_run(root, "k20_s2", seed=2, k=20, id_acc=98.0, ood_acc=60.0, record__every=10)
    # GU k=100: one seed.
    write_run(root, "k100_s0", seed=0, k=100, id_acc=90.0, ood_acc=70.0, records=rec)
    # Adaptive unfreezing and LR switches: far-off numbers that would show if merged.
    for seed, (i, o) in enumerate([(80.0, 10.0), (82.0, 12.0)]):
        write_run(
            root, f"adaptive_s{seed}", seed=seed, id_acc=i, ood_acc=o, record__every=10,
            unfreeze__adaptive="fisher", records=rec if seed == 0 else None,
        )  # fmt: skip
    for seed, (i, o) in enumerate([(70.0, 20.0), (72.0, 22.0)]):
        write_run(
            root, f"l2h_s{seed}", seed=seed, id_acc=i, ood_acc=o,
            optimizer__lr_switch="l2h", optimizer__lr_switch_step=300,
        )  # fmt: skip
    write_run(
        root, "h2l_s0", seed=0, id_acc=75.0, ood_acc=25.0, optimizer__lr_switch="h2l",
        optimizer__lr_switch_step=300,
    )  # fmt: skip
    # width 32: its own family, not more seeds of width 64.
    write_run(root, "w32_std_s0", seed=0, id_acc=60.0, ood_acc=30.0, model__width=32, records=rec)
    write_run(root, "w32_std_s1", seed=1, id_acc=62.0, ood_acc=30.0, model__width=32)
    write_run(root, "w32_k5_s0", seed=0, k=5, id_acc=61.0, ood_acc=33.0, model__width=32)
    # A head-only (auto-k signal) run is not a training result.
    write_run(root, "signal", seed=0, id_acc=10.0, ood_acc=None, unfreeze__head_only=True)
    return str(root)


def by_training(rows, column="training"):
    return {(r["model.width"], r[column]): r for r in rows}


def test_table1_groups_by_every_differing_field(sweep):
    runs = analysis.load_runs(sweep)
    assert len(runs) == 17  # the head-only run is left out
    rows = analysis.table1(runs)
    assert [(r["model.width"], r["training"]) for r in rows] == [
        ("32", "standard"),
        ("32", "GU k=5"),
        ("64", "standard"),
        ("64", "GU k=5"),
        ("64", "GU k=20"),
        ("64", "GU k=100"),  # numeric, not "100" < "20"
        ("64", "adaptive (fisher)"),
        ("64", "lr_h2l @ 300"),
        ("64", "lr_l2h @ 300"),
    ]
    assert list(rows[0])[:6] == ["dataset", "model", "lr", "model.width", "OOD set", "training"]
    assert {r["OOD set"] for r in rows} == {GENERATED}  # the older result loads, labelled too
    got = by_training(rows)
    std = got["64", "standard"]
    assert (std["ID"], std["ID std"], std["OOD"], std["OOD std"], std["n"]) == pytest.approx(
        (98.0, 1.0, 52.0, 2.0, 3)
    )
    assert std["ΔID"] == 0 and std["ΔOOD"] == 0
    expected = {  # (ID, OOD, ΔID, ΔOOD, n)
        ("64", "GU k=5"): (97.0, 56.0, -1.0, 4.0, 2),
        ("64", "GU k=20"): (97.0, 60.0, -1.0, 8.0, 3),
        ("64", "GU k=100"): (90.0, 70.0, -8.0, 18.0, 1),
        ("64", "adaptive (fisher)"): (81.0, 11.0, -17.0, -41.0, 2),
        ("64", "lr_l2h @ 300"): (71.0, 21.0, -27.0, -31.0, 2),
        ("64", "lr_h2l @ 300"): (75.0, 25.0, -23.0, -27.0, 1),
        ("32", "standard"): (61.0, 30.0, 0.0, 0.0, 2),
        ("32", "GU k=5"): (61.0, 33.0, 0.0, 3.0, 1),
    }
    for key, want in expected.items():
        r = got[key]
        assert (r["ID"], r["OOD"], r["ΔID"], r["ΔOOD"], r["n"]) == pytest.approx(want), key
    assert got["64", "GU k=20"]["ID std"] == pytest.approx(1.0)
    assert np.isnan(got["64", "GU k=100"]["ID std"])  # one seed: no std, not ± 0
    shown = markdown_rows(analysis.to_markdown(rows))
    shown = {(r["model.width"], r["training"]): r for r in shown}
    assert (shown["64", "GU k=100"]["ID"], shown["64", "GU k=100"]["OOD"]) == ("90.00", "70.00")
    markdown = analysis.write_table(rows, os.path.join(sweep, "out"), "table1")
    shown = {(r["model.width"], r["training"]): r for r in markdown_rows(markdown)}
    assert shown["64", "standard"]["ID"] == "98.00 ± 1.00"
    assert shown["64", "GU k=100"]["ΔOOD"] == "+18.00"
    assert shown["64", "standard"]["OOD set"] == GENERATED
    assert "Student-t" in markdown.splitlines()[-1]  # the caption says how the CI is made
    csv = pd.read_csv(os.path.join(sweep, "out", "table1.csv"))
    assert csv["ID std"].iloc[2] == pytest.approx(1.0)  # the raw std, in a column of its own
    with open(os.path.join(sweep, "out", "table1.tex")) as f:
        tex = f.read()
    assert r"\caption{Table 1" in tex and r"\label{tab:table1}" in tex
    assert r"98.00 $\pm$ 1.00" in tex


def test_table1_single_setting_has_no_extra_columns(tmp_path):
    write_run(tmp_path, "a", seed=0, id_acc=90.0, ood_acc=40.0, ood_set=None)
    write_run(tmp_path, "b", seed=0, k=3, id_acc=91.0, ood_acc=41.0, ood_set=None)
    rows = analysis.table1(analysis.load_runs(str(tmp_path)))
    assert list(rows[0]) == [
        "dataset", "model", "lr", "training", "ID", "ID std", "OOD", "OOD std", "ΔID", "ΔOOD",
        "ΔOOD paired [95% CI]", "n",
    ]  # fmt: skip
    assert [r["training"] for r in rows] == ["standard", "GU k=3"]
    assert [r["ΔOOD paired [95% CI]"] for r in rows] == ["-", "+1.00 [n/a]"]


def test_a_family_without_standard_has_no_delta_and_copies_are_refused(tmp_path):
    write_run(tmp_path, "a", seed=0, k=5, id_acc=90.0, ood_acc=40.0)
    [row] = analysis.table1(analysis.load_runs(str(tmp_path)))
    assert np.isnan(row["ΔID"]) and "n/a" in analysis.to_markdown([row])
    write_run(tmp_path, "copy", seed=0, k=5, id_acc=90.0, ood_acc=40.0, progress_bar=False)
    with pytest.raises(ValueError, match="same setting and seed"):
        analysis.table1(analysis.load_runs(str(tmp_path)))


def test_different_ood_sets_in_one_family_are_refused(tmp_path):
    write_run(tmp_path, "a", seed=0, id_acc=90.0, ood_acc=40.0)
    write_run(tmp_path, "b", seed=1, id_acc=90.0, ood_acc=40.0, ood_set="MNIST-C")
    with pytest.raises(ValueError, match="different OOD sets"):
        analysis.table1(analysis.load_runs(str(tmp_path)))


def test_table3_lr_switches_against_constant(sweep):
    for seed, ood in enumerate([40.0, 44.0]):  # constant 0.1·lr_d: a row, not a family
        write_run(sweep, f"lr01_s{seed}", seed=seed, id_acc=90.0, ood_acc=ood,
                  optimizer__lr_scale=0.1)  # fmt: skip
    rows = analysis.table3(analysis.load_runs(sweep))
    assert [(r["model.width"], r["schedule"]) for r in rows] == [
        ("64", "constant lr_d"),
        ("64", "constant 0.1·lr_d"),
        ("64", "lr_h2l @ 300"),
        ("64", "lr_l2h @ 300"),
    ]  # width 32 has no LR switch; GU and adaptive rows belong to Table 1
    assert "lr" not in rows[0]  # the scale is in the row's name
    low = rows[1]
    assert (low["OOD"], low["ΔOOD"], low["n"]) == pytest.approx((42.0, -10.0, 2))
    # paired with lr_d on seeds 0 and 1 (OOD 50, 52): differences -10, -8
    assert low["ΔOOD paired [95% CI]"].startswith("-9.00 [")
    l2h = rows[3]
    assert (l2h["ID"], l2h["ID std"], l2h["OOD"], l2h["ΔOOD"], l2h["n"]) == pytest.approx(
        (71.0, statistics.stdev([70.0, 72.0]), 21.0, -31.0, 2)
    )


def test_main_tables(sweep, tmp_path, capsys):
    analysis.main(["table3", sweep, "--out", str(tmp_path / "t")])
    assert "lr_l2h @ 300" in capsys.readouterr().out
    assert (tmp_path / "t" / "table3.md").exists()


def test_figures_1_and_2_one_file_per_setting_family(sweep, tmp_path, figures):
    out = str(tmp_path / "figs")
    paths = analysis.figure1(analysis.load_runs(sweep), out)
    names = sorted(os.path.basename(p) for p in paths)
    assert names == [
        "fig1_model.width=32.pdf",
        "fig1_model.width=32.png",
        "fig1_model.width=64.pdf",
        "fig1_model.width=64.png",
    ]
    assert all(os.path.getsize(p) > 1000 for p in paths)
    x, y = figures["fig1_model.width=64"].axes[0].lines[0].get_data()
    assert list(x) == [5, 20, 100] and list(y) == pytest.approx([-1.0, -1.0, -8.0])  # ΔID

    paths = analysis.figure2(sweep, out)
    assert sorted(os.path.basename(p) for p in paths) == [
        "fig2_model.width=32.pdf",
        "fig2_model.width=32.png",
        "fig2_model.width=64.pdf",
        "fig2_model.width=64.png",
    ]
    fig = figures["fig2_model.width=64"]
    axes = fig.axes  # one panel per metric; one curve per setting: the seed mean, a std band
    assert [ax.get_title() for ax in axes] == [
        "tr(F) (normalised 0-1000)",
        "S_avg (normalised 0-1000)",
        "S_worst (normalised 0-1000)",
    ]
    assert legend(axes[0]) == [
        "standard (n=2)",  # seeds 0 and 1 recorded; seed 2 did not
        "GU k=5 (n=1)",
        "GU k=20 (n=2)",
        "GU k=100 (n=1)",
        "adaptive (fisher) (n=1)",
    ]
    assert axes[0].get_yscale() == "log"
    assert "seed mean ± std" in suptitle(fig)
    # standard's tr(F): the seeds record curve() and curve(1.1); normalised over the panel.
    raw = [np.array([r["fisher"] for r in c]) for c in (curve(), curve(1.1))]
    low, high = 0.01, raw[1].max()  # every curve starts at 0.01; curve(1.1) tops the panel
    shown = [1 + 1000 * (v - low) / (high - low) for v in raw]
    x, y = axes[0].lines[0].get_data()
    assert list(x) == list(range(0, 210, 10))
    assert y == pytest.approx(np.mean(shown, axis=0))
    band = axes[0].collections[0].get_paths()[0].vertices[:, 1]
    top = np.mean(shown, axis=0) + np.std(shown, axis=0, ddof=1)
    assert band.max() == pytest.approx(top.max())


# --------------------------------------------------------------------------------------------
# Auto-k


def test_winning_rate_compares_seed_means_and_ties_count_half():
    s = autok_summary()
    # tr(F), k=15 (OOD seed mean 56): beats k=5 (41) and k=30 (45), ties k=15 itself, loses
    # to k=25 (60).
    assert analysis.winning_rate(s, "fisher") == {
        "wins": 2,
        "ties": 1,
        "losses": 1,
        "n": 4,
        "percent": 62.5,
    }
    # S_avg, k=20 (58): beats 5, 15, 30; loses to 25.
    assert analysis.winning_rate(s, "avg_sharpness")["percent"] == 75.0
    # Equal seed means from different runs tie too.
    s["runs"]["k=20"]["ood"] = {"0": 57.0, "1": 56.0, "2": 55.0}
    wr = analysis.winning_rate(s, "avg_sharpness")
    assert (wr["wins"], wr["ties"], wr["losses"], wr["percent"]) == (2, 1, 1, 62.5)
    with pytest.raises(ValueError, match="never stabilised"):
        analysis.winning_rate(s, "worst_sharpness")


def test_a_missing_seed_is_an_error_naming_the_run():
    s = autok_summary()
    del s["runs"]["k=25"]["ood"]["2"]
    with pytest.raises(ValueError, match=r"'k=25'.*seed\(s\) \[2\]"):
        analysis.winning_rate(s, "fisher")
    with pytest.raises(ValueError, match="'k=25'"):
        analysis.table2(s)
    s = autok_summary()
    s["runs"]["standard"]["id"]["1"] = None
    with pytest.raises(ValueError, match="'standard'"):
        analysis.table2(s)


def test_table2_as_the_paper_computes_it():
    rows = analysis.table2(autok_summary())
    assert [r["method"] for r in rows] == [
        "standard",
        "GU, random k",
        "GU, k from tr(F)",
        "GU, k from S_avg",
        "GU, k from S_worst",
    ]
    std, rnd, fisher, avg, worst = rows
    assert (std["ID"], std["ID std"], std["OOD"], std["OOD std"], std["n"]) == pytest.approx(
        (98.2, 0.2, 51.0, 1.0, 3)
    )
    assert std["OOD set"] == GENERATED and std["n of"] == "seeds"
    assert rnd["k"] == "5, 15, 25, 30" and rnd["n"] == 4
    assert "each the mean over 3 seeds" in rnd["n of"]
    assert rnd["ID"] == pytest.approx(np.mean([97.0, 97.5, 96.0, 95.0]))
    assert rnd["ID std"] == pytest.approx(np.std([97.0, 97.5, 96.0, 95.0], ddof=1))
    assert rnd["OOD"] == pytest.approx(50.5)
    assert rnd["OOD std"] == pytest.approx(np.std([41.0, 56.0, 60.0, 45.0], ddof=1))
    assert fisher["k"] == "15" and fisher["WR (OOD) %"] == 62.5 and fisher["W/T/L"] == "2/1/1"
    assert (fisher["ID"], fisher["OOD"], fisher["OOD std"], fisher["n"]) == pytest.approx(
        (97.5, 56.0, 1.0, 3)
    )
    assert avg["k"] == "20" and avg["WR (OOD) %"] == 75.0
    assert avg["ID"] == pytest.approx(97.2) and avg["ID std"] == pytest.approx(0.2)
    assert worst["k"] == "none (never stabilised)" and worst["ID"] is None and worst["n"] == 0
    markdown = analysis.to_markdown(rows)
    assert "| 98.20 ± 0.20 |" in markdown and "62.50" in markdown


def test_table6_lists_the_picked_k_and_each_seeds_k():
    rows = analysis.table6(autok_summary())
    assert [(r["metric"], r["k"], r["k per seed"], r["reason"]) for r in rows] == [
        ("tr(F)", "15", "0: 15, 1: 20, 2: 20", "-"),
        ("S_avg", "20", "0: 20, 1: 20, 2: 25", "-"),
        ("S_worst", "none", "0: none, 1: 30, 2: none", "never stabilised"),
    ]
    # Settings with other seeds share the column; a column only some rows have is kept.
    two_seeds = copy.deepcopy(autok_summary())
    two_seeds["seeds"] = [0, 1]
    del two_seeds["setting"]["ood_set"]
    shown = markdown_rows(analysis.to_markdown(analysis.table6(two_seeds) + rows))
    assert shown[0]["k per seed"] == "0: 15, 1: 20" and shown[0]["OOD set"] == "-"
    assert shown[3]["k per seed"] == "0: 15, 1: 20, 2: 20" and shown[3]["OOD set"] == GENERATED


def test_the_winning_rate_interval_is_a_paired_bootstrap_over_seeds():
    acc = lambda *v: {str(s): x for s, x in enumerate(v)}  # noqa: E731
    summary = {
        "seeds": [0, 1],
        "random_k": [5, 10],
        "picked": {"fisher": {"k": 15}},
        "metric_runs": {"fisher": "k=15"},
        "runs": {
            "k=15": {"k": 15, "id": acc(0, 0), "ood": acc(60.0, 40.0)},
            "k=5": {"k": 5, "id": acc(0, 0), "ood": acc(50.0, 50.0)},
            "k=10": {"k": 10, "id": acc(0, 0), "ood": acc(30.0, 45.0)},
        },
    }
    assert analysis.winning_rate(summary, "fisher")["percent"] == 75.0  # a tie and a win
    # Resampling seeds (0, 0): 60 beats 50 and 30 -> 100; (1, 1): 40 loses to both -> 0;
    # (0, 1) or (1, 0): 50 ties 50 and beats 37.5 -> 75. Unpaired draws would give others.
    rates = analysis.winning_rate_bootstrap(summary, "fisher")
    values, counts = np.unique(rates, return_counts=True)
    assert list(values) == [0.0, 75.0, 100.0]
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.04)
    assert analysis.winning_rate_interval(summary, "fisher") == (0.0, 100.0)
    one_seed = {**summary, "seeds": [0]}
    assert analysis.winning_rate_interval(one_seed, "fisher") is None


def test_latex_escapes_cells_headers_and_caption():
    rows = [{"training": "adaptive (fisher, ε=0.05)", "x_y %": "a&b", "ΔOOD": 1.5, "n": 2}]
    tex = analysis.to_latex(rows, "100% of runs_x ± 1", "t")
    assert r"\caption{100\% of runs\_x $\pm$ 1}" in tex
    assert r"x\_y \% & $\Delta$OOD" in tex
    assert r"adaptive (fisher, $\varepsilon$=0.05) & a\&b & +1.50 & 2 \\" in tex


@pytest.fixture
def autok_dir(tmp_path):
    return write_autok_folder(tmp_path / "autok", autok_summary())


def test_figure6_and_figure2_on_an_autok_folder(autok_dir, tmp_path, figures):
    out = str(tmp_path / "figs")
    paths = analysis.figure6(autok_dir, out)
    assert [os.path.basename(p) for p in paths] == ["fig6.png", "fig6.pdf"]
    assert all(os.path.getsize(p) > 1000 for p in paths)
    axes = figures["fig6"].axes
    assert len(axes) == 3  # tr(F), S_avg, S_worst
    assert legend(axes[0]) == ["seed 0", "seed 1", "seed 2", "seed mean", "k = 15 (seed mean)"]
    assert "S_worst" in axes[2].get_title() and "k = " not in " ".join(legend(axes[2]))
    seed_mean = [ln for ln in axes[0].lines if ln.get_label() == "seed mean"][0]
    assert len(seed_mean.get_xdata()) == 18  # the steps all seeds recorded

    paths = analysis.figure2(autok_dir, out)
    assert [os.path.basename(p) for p in paths] == ["fig2.png", "fig2.pdf"]  # one setting
    panels = figures["fig2"].axes  # metrics
    assert legend(panels[2]) == ["standard (n=3)", "GU k=15 (n=3)", "GU k=20 (n=3)"]

    # Table 1 on the same folder: the random k runs (no recording) share the setting.
    rows = analysis.table1(analysis.load_runs(autok_dir))
    assert [r["training"] for r in rows] == [
        "standard", "GU k=5", "GU k=15", "GU k=20", "GU k=25", "GU k=30",
    ]  # fmt: skip
    assert all(r["n"] == 3 for r in rows)


def test_main_reads_autok_json(autok_dir, tmp_path, capsys):
    out = str(tmp_path / "a")
    analysis.main(["table2", autok_dir, "--out", out])
    analysis.main(["table6", autok_dir, "--out", out])
    analysis.main(["fig6", autok_dir, "--out", out])
    printed = capsys.readouterr().out
    assert "GU, k from tr(F)" in printed and "0: 15, 1: 20, 2: 20" in printed
    for name in ("table2.md", "table2.csv", "table6.md", "table6.csv", "fig6.png", "fig6.pdf"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name


def test_an_old_autok_json_is_refused(autok_dir):
    path = os.path.join(autok_dir, "autok.json")
    with open(path) as f:
        s = json.load(f)
    old = copy.deepcopy(s)
    del old["version"]
    with open(path, "w") as f:
        json.dump(old, f)
    with pytest.raises(SystemExit, match="schema version"):
        analysis.read_autok(autok_dir)


def test_paired_difference_ci_is_a_student_t_interval_over_seeds():
    from experiments.analysis import paired_difference_ci

    # differences 1, 2, 3: mean 2, std 1, t(0.975, 2) = 4.3027 -> half width 2.4842
    assert paired_difference_ci([11.0, 12.0, 13.0], [10.0, 10.0, 10.0]) == "+2.00 [-0.48, +4.48]"
    assert paired_difference_ci([5.0], [4.0]) == "+1.00 [n/a]"


def test_figure5_correlates_the_final_solution_with_ood_by_kendall_tau(tmp_path, figures):
    """Six runs over two learning rates: S_avg falls as OOD rises (τ = -1), λ_max has one
    discordant pair; the panels show each point, coloured by learning rate, and τ with p."""
    from scipy.stats import kendalltau

    ood = [40.0, 45.0, 50.0, 55.0, 60.0, 65.0]
    s_avg = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    hessian = [10.0, 12.0, 11.0, 13.0, 14.0, 15.0]
    for i, (o, s, h) in enumerate(zip(ood, s_avg, hessian, strict=True)):
        write_run(
            tmp_path / "sweep",
            f"run{i}",
            seed=i % 3,
            id_acc=90.0,
            ood_acc=o,
            optimizer__lr_scale=1.0 if i < 3 else 0.1,
            final_solution={"avg_sharpness": s, "hessian": h},
        )
    runs = analysis.load_runs(str(tmp_path / "sweep"))
    got = analysis.final_solution_correlations(runs)
    assert got["avg_sharpness"]["tau"] == pytest.approx(-1.0)
    want = kendalltau(hessian, ood)
    assert (got["hessian"]["tau"], got["hessian"]["p"]) == pytest.approx(tuple(want))
    assert got["hessian"]["n"] == 6
    assert sorted(set(got["hessian"]["lr"])) == pytest.approx([0.01, 0.1])

    paths = analysis.figure5(runs, str(tmp_path / "out"))
    assert sorted(os.path.basename(p) for p in paths) == ["fig5.pdf", "fig5.png"]
    fig = figures["fig5"]
    by_label = {ax.get_xlabel(): ax for ax in fig.axes}
    ax = by_label["S_avg"]
    assert ax.get_ylabel() == "OOD accuracy (%)"
    assert ax.get_title().startswith("Kendall τ = -1.00 (p = ")
    assert legend(ax) == ["lr 0.01", "lr 0.1"]
    points = sorted(tuple(xy) for c in ax.collections for xy in c.get_offsets())
    assert points == sorted(zip(s_avg, ood, strict=True))
    assert "λ_max of the loss Hessian" in by_label
    assert suptitle(fig) == f"digits / resnet18 / OOD: {GENERATED}"


def test_table7_puts_each_task_per_language_beside_the_other(tmp_path):
    qa_dir, nli_dir, nli = write_transformer_autok_folders(tmp_path / "qa", tmp_path / "nli")
    rows = {r["method"]: r for r in analysis.table7([qa_dir, nli_dir])}
    assert list(rows) == ["standard", "GU, k from tr(F)", "GU, k from S_avg", "GU, k from S_worst"]
    std, fisher = rows["standard"], rows["GU, k from tr(F)"]
    assert std["XNLI Acc En"] == pytest.approx(98.2) and std["XNLI Acc En std"] == pytest.approx(
        0.2
    )
    assert std["XNLI Acc X-ling"] == pytest.approx(51.0)
    assert std["XQuAD F1 En"] == pytest.approx(81.0)  # seeds 0, 1, 2
    assert std["XQuAD F1 X-ling"] == pytest.approx(61.0)  # de and zh, not en
    assert fisher["XQuAD F1 X-ling"] == pytest.approx(64.0)  # k = 15
    assert fisher["XQuAD EM X-ling"] == pytest.approx(54.0)
    assert fisher["MLQA F1 X-ling"] == pytest.approx(44.0)
    assert fisher["k (squad)"] == "15" and fisher["n (mnli)"] == 3
    wr = analysis.winning_rate(nli, "fisher")["percent"]
    assert fisher["WR (mnli) %"] == fisher["WR (squad) %"] == wr and fisher["WR %"] == wr
    s_worst = rows["GU, k from S_worst"]  # picked no k: no scores, no winning rate
    assert s_worst["k (mnli)"] == "-" and s_worst["XNLI Acc En"] is None
    assert s_worst["WR %"] is None
    table4 = analysis.table7([qa_dir, nli_dir], metrics=("fisher",))
    assert [r["method"] for r in table4] == ["standard", "GU, k from tr(F)"]


def test_table4_and_figure4_from_the_command_line(tmp_path, capsys):
    qa_dir, nli_dir, _ = write_transformer_autok_folders(tmp_path / "qa", tmp_path / "nli")
    out = str(tmp_path / "out")
    analysis.main(["table4", qa_dir, nli_dir, "--out", out])
    assert "| XQuAD F1 En" in capsys.readouterr().out
    for ext in ("md", "csv", "tex"):
        assert os.path.getsize(os.path.join(out, f"table4.{ext}")) > 0
    with pytest.raises(SystemExit):
        analysis.main(["table2", qa_dir, nli_dir])  # one folder only
    # Figure 4 draws |S_worst| (the paper's XLM-R values are negative) on a log axis.
    for path in glob_records(nli_dir):
        negate_worst_sharpness(path)
    analysis.main(["fig4", nli_dir, "--out", out])
    assert os.path.getsize(os.path.join(out, "fig4.png")) > 0


def glob_records(root):
    import glob

    return glob.glob(os.path.join(root, "seed=*", "*", "metrics.jsonl"))


def negate_worst_sharpness(path):
    with open(path) as f:
        lines = [json.loads(line) for line in f]
    for r in lines:
        if "worst_sharpness" in r:
            r["worst_sharpness"] = -r["worst_sharpness"]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
