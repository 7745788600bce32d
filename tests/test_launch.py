"""launch/: the dry runs print the right commands, bad requests fail clearly, and the SLURM
script's requeue trap works. Nothing here calls gcloud, sbatch or ssh: stand-ins that record
any call come first on PATH, and every test checks that none was made.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT

RECORDED = ("gcloud", "sbatch", "scontrol", "ssh", "nvidia-smi")


@pytest.fixture
def launch(tmp_path):
    """Runs `python launch/SCRIPT.py ARGS` from the repo root with recording stand-ins on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for name in RECORDED:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\nexit 1\n')
        stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def run(script, *args):
        cmd = [sys.executable, os.path.join("launch", f"{script}.py"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)

    yield run
    assert not calls.exists(), f"a launcher ran an external command: {calls.read_text()}"


def commands(stdout):
    """The printed commands (the lines that are not comments)."""
    return [line for line in stdout.splitlines() if line and not line.startswith("#")]


# --- Cloud TPU -------------------------------------------------------------------------------

TPU = ["--name=ej", "--zone=us-central2-b"]
MAIN = ["--", "main", "--config=cifar10_rn18.py", "--workdir=runs/c10"]


@pytest.mark.parametrize(
    "accelerator, hosts",
    [
        ("v2-8", 1),
        ("v3-32", 4),
        ("v4-8", 1),
        ("v4-16", 2),
        ("v4-32", 4),
        ("v5p-8", 1),
        ("v5p-64", 8),
        ("v5litepod-8", 1),
        ("v5litepod-16", 4),
        ("v6e-256", 64),
    ],
)
def test_tpu_run_starts_on_every_worker_distributed_when_multi_host(launch, accelerator, hosts):
    proc = launch("tpu_vm", "run", *TPU, f"--accelerator_type={accelerator}", "--dry_run", *MAIN)
    assert proc.returncode == 0, proc.stderr
    assert f"{accelerator}: {hosts} host{'s' if hosts > 1 else ''}," in proc.stdout
    [cmd] = commands(proc.stdout)
    assert cmd.startswith("gcloud compute tpus tpu-vm ssh ej --worker=all ")
    assert "--zone=us-central2-b" in cmd
    assert "cd earlyjax && python3 -m experiments.main --config=cifar10_rn18.py" in cmd
    assert ("--distributed" in cmd) == (hosts > 1)


def test_tpu_create_install_fetch_delete_commands(launch):
    proc = launch(
        "tpu_vm", "create", *TPU, "--accelerator_type=v5litepod-16", "--spot", "--dry_run"
    )
    assert proc.returncode == 0, proc.stderr
    assert "v5litepod-16: 16 chips on 4 hosts" in proc.stdout
    assert commands(proc.stdout) == [
        "gcloud compute tpus tpu-vm create ej --accelerator-type=v5litepod-16 "
        "--version=v2-alpha-tpuv5-lite --spot --zone=us-central2-b"
    ]

    proc = launch("tpu_vm", "install", *TPU, "--dry_run")
    assert proc.returncode == 0, proc.stderr
    scp, ssh = commands(proc.stdout)
    assert scp.startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in scp
    assert "ssh ej --worker=all" in ssh and 'pip install -e ".[tpu]"' in ssh

    proc = launch(
        "tpu_vm",
        "install",
        *TPU,
        "--source=git",
        "--repo_url=https://example.org/ej.git",
        "--dry_run",
    )
    assert proc.returncode == 0, proc.stderr
    [ssh] = commands(proc.stdout)
    assert "git clone https://example.org/ej.git earlyjax" in ssh and "--worker=all" in ssh

    proc = launch("tpu_vm", "fetch", *TPU, "--workdir=runs/c10", "--dest=out", "--dry_run")
    assert commands(proc.stdout) == [
        "gcloud compute tpus tpu-vm scp --recurse ej:earlyjax/runs/c10 out --worker=0 "
        "--zone=us-central2-b"
    ]
    proc = launch("tpu_vm", "delete", *TPU, "--project=p", "--dry_run")
    assert commands(proc.stdout) == [
        "gcloud compute tpus tpu-vm delete ej --zone=us-central2-b --project=p"
    ]


def test_tpu_sweep_runs_its_points_one_by_one_over_every_host(launch):
    sweep = ["--", "sweep", "--config=cifar10_rn18.py", "--sweep_dir=runs/s", "--k=none,10"]
    proc = launch("tpu_vm", "run", *TPU, "--accelerator_type=v4-8", "--detach", "--dry_run", *sweep)
    assert proc.returncode == 0, proc.stderr
    [cmd] = commands(proc.stdout)
    assert "nohup python3 -m experiments.sweep" in cmd and "--distributed" not in cmd
    proc = launch("tpu_vm", "run", *TPU, "--accelerator_type=v4-32", "--dry_run", *sweep)
    assert proc.returncode == 0, proc.stderr
    [cmd] = commands(proc.stdout)
    assert "python3 -m experiments.sweep" in cmd and "--distributed" in cmd
    proc = launch(
        "tpu_vm", "run", *TPU, "--accelerator_type=v4-8", "--dry_run", *sweep, "--processes=4"
    )
    assert proc.returncode == 2 and "--processes=4" in proc.stderr


@pytest.mark.parametrize(
    "accelerator, message",
    [
        ("v9-8", "unknown TPU type 'v9-8'"),
        ("tpu", "unknown TPU type 'tpu'"),
        ("v4-12", "TPU type 'v4-12': v4-N counts TensorCores"),
        ("v5litepod-12", "TPU type 'v5litepod-12': v5litepod-N counts chips"),
    ],
)
def test_tpu_bad_type_is_refused_by_name(launch, accelerator, message):
    proc = launch("tpu_vm", "run", *TPU, f"--accelerator_type={accelerator}", "--dry_run", *MAIN)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""


def test_tpu_run_needs_a_program(launch):
    proc = launch("tpu_vm", "run", *TPU, "--accelerator_type=v4-8", "--dry_run")
    assert proc.returncode == 2 and "`run` needs `-- main ...`" in proc.stderr
    proc = launch("tpu_vm", "run", *TPU, "--accelerator_type=v4-8", "--dry_run", "--", "train")
    assert proc.returncode == 2 and "got 'train'" in proc.stderr


# --- SLURM -----------------------------------------------------------------------------------


def test_slurm_sweep_is_an_array_job_over_the_whole_grid(launch, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = launch(
        "slurm",
        "--partition=gpu",
        "--account=lab",
        "--max_parallel=2",
        f"--log_dir={tmp_path / 'logs'}",
        "--dry_run",
        "--",
        "sweep",
        "--config=quickstart.py",
        f"--sweep_dir={sweep_dir}",
        "--k=none,5",
        "--seeds=0,1,2",
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "#SBATCH --array=0-5%2\n" in out  # 2 k values x 3 seeds
    for line in ("--partition=gpu", "--account=lab", "--gres=gpu:1", "--requeue"):
        assert f"#SBATCH {line}\n" in out
    assert "#SBATCH --signal=B:USR1@120\n" in out
    assert "trap requeue USR1" in out and 'scontrol requeue "$SLURM_JOB_ID"' in out
    assert "#     5  todo  k=5_seed=2" in out
    assert (
        "python -m experiments.sweep --config=quickstart.py "
        f'--sweep_dir={sweep_dir} --k=none,5 --seeds=0,1,2 --only="$SLURM_ARRAY_TASK_ID" &'
    ) in out
    assert out.rstrip().endswith(f"sbatch {tmp_path / 'logs' / 'earlyjax.sbatch'}")
    assert not (tmp_path / "logs").exists() and not sweep_dir.exists()


def test_slurm_multi_node_run_is_distributed_with_all_gpus_per_process(launch, tmp_path):
    proc = launch("slurm", "--gpus=4", "--nodes=2", f"--log_dir={tmp_path}", "--dry_run", *MAIN)
    assert proc.returncode == 0, proc.stderr
    assert "--array" not in proc.stdout and "#SBATCH --nodes=2\n" in proc.stdout
    assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3\n" in proc.stdout
    assert (
        "srun --ntasks-per-node=1 --cpus-per-task=8 python -m experiments.main "
        "--config=cifar10_rn18.py "
        "--workdir=runs/c10 --distributed &"
    ) in proc.stdout
    proc = launch("slurm", f"--log_dir={tmp_path}", "--dry_run", *MAIN)
    assert "\npython -m experiments.main --config=cifar10_rn18.py --workdir=runs/c10 &" in (
        proc.stdout
    )
    assert "--distributed" not in proc.stdout and "srun" not in proc.stdout


def test_slurm_takes_the_grid_from_the_sweeps_plan_not_from_printed_text(tmp_path, monkeypatch):
    """sweep_grid calls experiments.sweep.plan in-process (no subprocess, no parsing of the
    dry run's output): the same points in the same order, a finished one marked done."""
    from absl import flags

    from experiments import sweep

    monkeypatch.syspath_prepend(os.path.join(ROOT, "launch"))
    import slurm
    from _common import Program

    def no_subprocess(*args, **kwargs):
        raise AssertionError("the grid came from a subprocess")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    args = ("--config=quickstart.py", f"--sweep_dir={tmp_path}", "--k=none,5", "--seeds=0,1")
    sweep_dir, points = sweep.plan(args)
    assert not flags.FLAGS.is_parsed()  # plan leaves absl's flags as it found them
    os.makedirs(tmp_path / points[2].name)
    (tmp_path / points[2].name / "results.json").write_text("{}")
    grid = slurm.sweep_grid(Program("sweep", args))
    assert sweep_dir == str(tmp_path)
    assert [(g.index, g.done, g.name) for g in grid] == [
        (0, False, "k=none_seed=0"),
        (1, False, "k=none_seed=1"),
        (2, True, "k=5_seed=0"),
        (3, False, "k=5_seed=1"),
    ]
    with pytest.raises(slurm.LaunchError, match="--lr_switch value 'x:1'"):
        slurm.sweep_grid(Program("sweep", (*args, "--lr_switch=x:1")))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nodes=2", "--", "sweep", "--sweep_dir=s"], "--nodes=2: a sweep point runs on one"),
        (["--", "sweep", "--sweep_dir=s", "--only=3"], "--only is set by the launcher"),
        (["--", "sweep", "--config=no_such.py", "--sweep_dir=s"], "config 'no_such.py' not found"),
        (["--gpus=-1", *MAIN], "--gpus=-1"),
        (["--time=1:00:00"], "give the program after '--'"),
    ],
)
def test_slurm_bad_requests_are_refused(launch, args, message):
    proc = launch("slurm", "--dry_run", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_slurm_script_requeues_on_usr1_and_waits_for_the_run(launch, tmp_path):
    """The written script, run by bash with stand-ins for python and scontrol."""
    fake = tmp_path / "fake"
    fake.mkdir()
    python = fake / "python"
    python.write_text(
        f'#!/bin/sh\necho "$@" > {fake}/args\ntouch {fake}/started\n'
        f"while [ ! -e {fake}/stop ]; do sleep 0.05; done\nexit 3\n"
    )
    scontrol = fake / "scontrol"  # as Slurm would, the requeue stops the run
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {fake}/scontrol.log\ntouch {fake}/stop\n')
    for path in (python, scontrol):
        path.chmod(0o755)
    script = tmp_path / "job.sbatch"
    proc = launch(
        "slurm", f"--python={python}", f"--log_dir={tmp_path / 'logs'}", f"--script={script}", *MAIN
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {script}" in proc.stdout and (tmp_path / "logs").is_dir()

    env = dict(os.environ, SLURM_JOB_ID="4242", PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    job = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (fake / "started").exists():
        assert job.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.02)
    job.send_signal(signal.SIGUSR1)
    out, _ = job.communicate(timeout=20)
    assert (fake / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert "requeueing job 4242" in out
    assert job.returncode == 3  # the run's own exit status, not the interrupted wait's
    assert (fake / "args").read_text().split() == [
        "-m",
        "experiments.main",
        "--config=cifar10_rn18.py",
        "--workdir=runs/c10",
    ]


FAKE_SCONTROL = """#!{python}
# Stands in for `scontrol requeue`: records the call and, as Slurm does when it requeues a
# running job, sends SIGTERM to the job's processes (the batch shell's experiments.main child).
import os, signal, sys
with open(os.path.join(os.path.dirname(__file__), "scontrol.log"), "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
shell = os.getppid()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{{pid}}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{{pid}}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        continue
    if ppid == shell and b"experiments.main" in cmdline:
        os.kill(int(pid), signal.SIGTERM)
"""


@pytest.mark.slow  # ~45 s: two real training runs (the in-process SIGTERM test is fast)
def test_slurm_requeue_resumes_a_real_run_from_its_sigterm_checkpoint(launch, tmp_path):
    """The written script runs a real `experiments.main`; USR1 before the time limit requeues
    (the stand-in scontrol then sends SIGTERM, as Slurm does); the run saves a checkpoint at the
    current step and exits 143; the requeued script resumes there and finishes, every step
    logged once, in the log and in TensorBoard."""
    from helpers import assert_tensorboard_matches_log

    from earlyjax.metric_log import read_records

    fake = tmp_path / "fake"
    fake.mkdir()
    scontrol = fake / "scontrol"
    scontrol.write_text(FAKE_SCONTROL.format(python=sys.executable))
    scontrol.chmod(0o755)
    workdir = tmp_path / "run"
    run = [
        "--",
        "main",
        "--config=quickstart.py",
        f"--workdir={workdir}",
        "--config.model.width=4",
        "--config.total_steps=300",
        "--config.checkpoint_every=1000",
        "--config.log_every=1",
        "--config.record.every=0",
        "--config.data.ood_source=none",
        "--config.progress_bar=False",
        "--config.unfreeze.k=none",
    ]
    script = tmp_path / "job.sbatch"
    args = [f"--python={sys.executable}", f"--log_dir={tmp_path / 'logs'}", f"--script={script}"]
    assert launch("slurm", *args, *run).returncode == 0
    env = dict(os.environ, SLURM_JOB_ID="77", PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    log = workdir / "metrics.jsonl"

    def logged_steps():
        return [r["step"] for r in read_records(str(log)) if r["kind"] == "train"]

    job = subprocess.Popen(["bash", str(script)], env=env, cwd=ROOT, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (log.exists() and len(logged_steps()) >= 3):
        assert job.poll() is None and time.monotonic() < deadline, "the run did not train"
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    job.communicate(timeout=120)
    assert (fake / "scontrol.log").read_text().split() == ["requeue", "77"]
    assert job.returncode == 128 + signal.SIGTERM
    stopped_at = max(logged_steps())
    assert 3 <= stopped_at < 300 and os.listdir(workdir / "checkpoints") == [str(stopped_at)]

    env["SLURM_RESTART_COUNT"] = "1"  # the requeued job: the same script again
    again = subprocess.run(["bash", str(script)], env=env, cwd=ROOT, capture_output=True)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert f"resumed from the checkpoint at step {stopped_at}" in again.stdout.decode()
    assert logged_steps() == list(range(1, 301))
    assert_tensorboard_matches_log(workdir)


# --- multi-GPU, several nodes ----------------------------------------------------------------


def test_multigpu_one_box_run_and_sweep(launch):
    proc = launch("multigpu", "--gpus=2,3", "--dry_run", *MAIN)
    assert proc.returncode == 0, proc.stderr
    assert commands(proc.stdout) == [
        "CUDA_VISIBLE_DEVICES=2,3 python -m experiments.main --config=cifar10_rn18.py "
        "--workdir=runs/c10"
    ]
    proc = launch(
        "multigpu", "--num_gpus=4", "--dry_run", "--", "sweep", "--sweep_dir=s", "--k=none,10"
    )
    assert proc.returncode == 0, proc.stderr
    assert commands(proc.stdout) == [
        "CUDA_VISIBLE_DEVICES=0,1,2,3 python -m experiments.sweep --sweep_dir=s --k=none,10 "
        "--processes=4"
    ]


def test_multigpu_nodes_get_the_jax_distributed_variables(launch):
    hosts = ["--hosts=node0,node1,node2", "--port=1234", "--remote_dir=/repo"]
    proc = launch("multigpu", *hosts, "--dry_run", *MAIN)
    assert proc.returncode == 0, proc.stderr
    lines = commands(proc.stdout)
    assert len(lines) == 3
    for rank, line in enumerate(lines):
        assert line.startswith(f"ssh node{rank} 'cd /repo && JAX_COORDINATOR_ADDRESS=node0:1234 ")
        assert f"JAX_NUM_PROCESSES=3 JAX_PROCESS_ID={rank} python -m experiments.main" in line
        assert line.endswith("--workdir=runs/c10 --distributed'")
    proc = launch("multigpu", *hosts, "--node_rank=2", "--dry_run", *MAIN)
    assert commands(proc.stdout) == [
        "JAX_COORDINATOR_ADDRESS=node0:1234 JAX_NUM_PROCESSES=3 JAX_PROCESS_ID=2 "
        "python -m experiments.main --config=cifar10_rn18.py --workdir=runs/c10 --distributed"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hosts=a,b", "--node_rank=2", *MAIN], "--node_rank=2: use 0 to 1"),
        (["--hosts=a,b", "--", "sweep", "--sweep_dir=s"], "a sweep runs on one node"),
        (["--hosts=a", *MAIN], "list two or more nodes"),
        (["--num_gpus=2", "--", "sweep", "--processes=2"], "--processes is set by the launcher"),
        (["--gpus=0,x", *MAIN], "--gpus='0,x'"),
        (["--node_rank=0", *MAIN], "--node_rank needs --hosts"),
    ],
)
def test_multigpu_bad_requests_are_refused(launch, args, message):
    proc = launch("multigpu", "--dry_run", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_multigpu_runs_the_command_and_reports_its_failure(launch):
    """Without --dry_run the printed command runs (`true` / `false` stand in for python)."""
    proc = launch("multigpu", "--gpus=0", "--python=true", *MAIN)
    assert proc.returncode == 0, proc.stderr
    assert commands(proc.stdout) == [
        "CUDA_VISIBLE_DEVICES=0 true -m experiments.main --config=cifar10_rn18.py "
        "--workdir=runs/c10"
    ]
    proc = launch("multigpu", "--python=false", *MAIN)
    assert proc.returncode == 1 and "command failed with exit code 1" in proc.stderr
    proc = launch("multigpu", "--python=no-such-python", *MAIN)
    assert proc.returncode == 1 and "cannot run 'no-such-python'" in proc.stderr
