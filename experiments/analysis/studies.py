"""The paper folder of `experiments.paper`: its studies (`Study`, recorded in paper.json), which
of their runs have finished, and `write_all`: every output of the registry whose runs have
(`python -m experiments.analysis all`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from collections.abc import Sequence

from earlyjax.metric_log import write_atomically
from experiments.analysis.registry import OUTPUTS, Source, output_paths

PAPER_FILE = "paper.json"
KINDS = ("sweep", "autok", "lottery", "basin")
BRANCHED_KINDS = ("lottery", "basin")  # studies of runs branched from one another


@dataclasses.dataclass(frozen=True)
class Study:
    """One sweep, auto-k pipeline, lottery or basin study of one config, run into
    `<out>/<name>/`.

    A sweep trains the cross product of `k` (removal steps of `intervention`; None = standard
    training), `seeds`, `lr_scale` and `lr_switch` ((direction, step) pairs), as
    `experiments.sweep`; an auto-k study runs `experiments.autok` with `seeds`, `n_random`,
    `max_random_k` and `intervention`; a lottery study (`experiments.lottery`: Frankle et al.
    2020) trains, per seed, a trunk, IMP to `levels` with rewinding to each step of `rewind`,
    each of `transforms` at `sparsity_level`, and IMP after each of `pretexts` for each of
    `pretrain_epochs`; a basin study (`experiments.basin`: Sadrtdinov et al. 2023) pre-trains
    with `pretrain_config` (or takes the `pretrained` checkpoint files) and fine-tunes, per
    seed, a local deep ensemble of `members` runs, a global one with `global_de`, and each of
    `methods` (SSE, StarSSE) at each cycle lr multiple of `cycle_lrs` and length multiple of
    `cycle_epochs`; its analysis evaluates paths at `path_points` and recomputes BatchNorm on
    `bn_examples` training examples (None: all). `needs_accelerator`: refused on a machine
    whose JAX sees only CPUs. `overrides` are dotted config fields set in every run;
    `outputs` the keys of `OUTPUTS` the study's runs feed.
    """

    name: str
    config: str
    outputs: tuple[str, ...]
    kind: str = "sweep"
    seeds: tuple[int, ...] = (0,)
    k: tuple[int | None, ...] = ()
    lr_scale: tuple[float, ...] = ()
    lr_switch: tuple[tuple[str, int], ...] = ()
    intervention: str = "gradual_unfreezing"
    n_random: int = 10
    max_random_k: int | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    rewind: tuple[int, ...] = ()
    levels: int = 0
    sparsity_level: int = 0
    transforms: tuple[str, ...] = ()
    pretexts: tuple[str, ...] = ()
    pretrain_epochs: tuple[float, ...] = ()
    members: int = 0
    methods: tuple[str, ...] = ()
    cycle_lrs: tuple[float, ...] = ()
    cycle_epochs: tuple[float, ...] = ()
    global_de: bool = False
    pretrain_config: str | None = None
    pretrained: tuple[str, ...] = ()
    path_points: int = 21
    bn_examples: int | None = None
    needs_accelerator: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"study {self.name}: kind {self.kind!r} is not one of {KINDS}")
        unknown = sorted(set(self.outputs) - set(OUTPUTS))
        if unknown:
            raise ValueError(
                f"study {self.name}: unknown outputs {unknown}; known: {list(OUTPUTS)}"
            )
        if self.kind == "autok" and (self.k or self.lr_scale or self.lr_switch):
            raise ValueError(f"study {self.name}: an auto-k study picks k itself: drop k/lr axes")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Study:
        tuples = ("outputs", "seeds", "k", "lr_scale", "rewind", "transforms", "pretexts")
        tuples += ("pretrain_epochs", "methods", "cycle_lrs", "cycle_epochs", "pretrained")
        fields = {k: tuple(v) if k in tuples else v for k, v in d.items()}
        fields["lr_switch"] = tuple(tuple(x) for x in d["lr_switch"])
        fields["overrides"] = tuple(tuple(x) for x in d["overrides"])
        return cls(**fields)


def load_module(path: str, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study_config(study: Study):
    """The study's config file (experiments/configs/ or a path) with its overrides applied."""
    from experiments.cli import apply_overrides, resolve_config_path

    config = load_module(resolve_config_path(study.config), "earlyjax_study_config").get_config()
    apply_overrides(config, study.overrides)
    return config


def sweep_points(study: Study, config) -> list:
    """The runs of a sweep study (`experiments.sweep.Point`), named as the sweep names them."""
    from experiments import sweep

    intervention = sweep.intervention_for(study.intervention, config)
    return sweep.expand_grid(study.k, study.seeds, study.lr_scale, study.lr_switch, intervention)


def study_branched_runs(study: Study, config) -> list:
    """The runs of a lottery or basin study (`experiments.branched.BranchedRun`), in the order
    they run."""
    if study.kind == "basin":
        from experiments import basin

        return basin.basin_runs(study, config)
    from earlyjax.train import task_num_train
    from experiments import lottery

    return lottery.lottery_runs(study, config, task_num_train(config))


def write_paper_file(out: str, grid: str, studies: Sequence[Study]) -> None:
    """`out/paper.json`: the grid, for `analysis all`. A folder keeps one grid (its name and
    studies); a different one is refused, as `experiments.sweep` refuses a different sweep."""
    path = os.path.join(out, PAPER_FILE)
    content = json.loads(json.dumps({"grid": grid, "studies": [s.to_json() for s in studies]}))
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != content:
                raise SystemExit(
                    f"{out} holds a different grid ({path}); use a fresh --out, or rerun the "
                    "command that made it"
                )
        return
    os.makedirs(out, exist_ok=True)
    write_atomically(path, json.dumps(content, indent=2).encode())


def read_paper_file(out: str) -> list[Study]:
    path = os.path.join(out, PAPER_FILE)
    if not os.path.exists(path):
        raise SystemExit(
            f"{path} not found: `analysis all` reads the grid that `python -m experiments.paper "
            f"--out={out}` writes there"
        )
    try:
        with open(path) as f:
            return [Study.from_json(s) for s in json.load(f)["studies"]]
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(
            f"{path} is not a grid this version reads ({type(e).__name__}: {e}); rerun "
            f"`python -m experiments.paper --out={out}` with its grid to rewrite it"
        ) from None


def finished_runs(study: Study, out: str, names: Sequence[str]) -> set[str]:
    """Which of `names` (the study's runs, as `study_runs` names them) have finished. An
    auto-k study's runs past its signal runs count once its autok.json exists."""
    from earlyjax.train import RESULTS_FILE

    folder = os.path.join(out, study.name)
    if study.kind == "autok":
        if os.path.exists(os.path.join(folder, "autok.json")):
            return set(names)
        names = [f"seed={s}/signal" for s in study.seeds]
    # a sweep's, lottery or basin study's run is finished when its results are written
    return {n for n in names if os.path.exists(os.path.join(folder, n, RESULTS_FILE))}


def missing_runs(study: Study, out: str, used=None) -> list[str]:
    """The runs of `study` under `out` that have not finished ([] when all have), of those
    `used` selects (a predicate on a run's `k`, `adaptive`, `lr_scale`, `lr_switch`; None:
    all). A sweep's runs are known from the grid; an auto-k study's only once its signal runs
    have picked the k, so until its autok.json exists it is named as a whole."""
    from experiments.cli import apply_overrides

    config = study_config(study)
    if study.kind == "autok":
        if os.path.exists(os.path.join(out, study.name, "autok.json")):
            return []
        return [f"{study.name}/ (the auto-k pipeline has not finished: no autok.json)"]
    if study.kind in BRANCHED_KINDS:
        names = [run.name for run in study_branched_runs(study, config)]
        done = finished_runs(study, out, names)
        return [f"{study.name}/{n}" for n in names if n not in done]
    points = sweep_points(study, config)
    done = finished_runs(study, out, [p.name for p in points])
    missing = []
    for point in points:
        run = config.copy_and_resolve_references()
        apply_overrides(run, point.overrides)
        fields = {
            "k": run.unfreeze.k,
            "adaptive": run.unfreeze.adaptive,
            "lr_scale": run.optimizer.lr_scale,
            "lr_switch": run.optimizer.lr_switch,
        }
        if point.name not in done and (used is None or used(fields)):
            missing.append(f"{study.name}/{point.name}")
    return missing


# --------------------------------------------------------------------------------------------
# Every table and figure (`python -m experiments.analysis all DIR`)


def write_all(paper_dir: str, out_dir: str, studies: Sequence[Study] | None = None) -> list[str]:
    """Writes every output in `OUTPUTS` whose studies (`studies`, else those of
    `paper_dir/paper.json`) have finished the runs it uses (`Output.uses`), to out_dir; returns
    one line per output: the files written, or why not (the missing runs, by name; no study in
    the grid feeds it; an error)."""
    studies = read_paper_file(paper_dir) if studies is None else studies
    return [_write_one(name, studies, paper_dir, out_dir) for name in OUTPUTS]


def _write_one(name: str, studies: Sequence[Study], paper_dir: str, out_dir: str) -> str:
    """`write_all`'s line of output `name`."""
    output = OUTPUTS[name]
    feeding = [s for s in studies if name in s.outputs]
    if not feeding:
        return f"{name}: not written: no study of the grid feeds it ({output.description})"
    used = None if output.from_folders else output.uses
    try:
        missing = [run for s in feeding for run in missing_runs(s, paper_dir, used)]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            return (
                f"{name}: not written: {len(missing)} runs missing: "
                f"{', '.join(missing[:5])}{more} "
                f"(python -m experiments.paper --out={paper_dir})"
            )
        sources = [Source(s.name, os.path.join(paper_dir, s.name)) for s in feeding]
        paths = output.write_from(sources, out_dir)
    except (ValueError, OSError, SystemExit) as e:
        return f"{name}: not written: {e}"
    return f"{name}: " + output_paths(paths, out_dir)
