"""One process of the multi-host test (tests/test_multihost.py): a tiny run in a shared workdir.

    python tests/multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR

Each process has the CPU devices XLA_FLAGS gives it; with NUM_PROCESSES > 1 they form one
JAX cluster through `jax.distributed.initialize` (gloo collectives on CPU), as the hosts of a
TPU pod slice or a multi-node GPU job do. The model is ResNet-18 with GELU for ReLU
(`helpers.smooth_resnet`), so that the runs the test compares differ by rounding alone.
"""

import sys

import jax


def tiny_data():
    from earlyjax.data.base import Dataset, Split
    from earlyjax.data.digits import load_digits_splits

    train, test = load_digits_splits()
    train, test = (
        Split(train.images[:256], train.labels[:256]),
        Split(test.images[:96], test.labels[:96]),
    )
    return Dataset("digits", 10, train, test, {})


def worker_config():
    """`helpers.tiny_config` for 6 steps, checkpointing and recording every 3."""
    from helpers import tiny_config

    from earlyjax.config import default_config

    c = tiny_config()
    c.eval_batch_size = 32
    c.total_steps = 6  # mid-schedule on purpose (allow_late_release)
    c.checkpoint_every = 3
    c.optimizer.weight_decay = default_config().optimizer.weight_decay
    c.record.every = 3
    c.record.until = 6
    c.record.set_size = 64
    c.record.batch_size = 16
    c.record.metrics = ("fisher",)
    return c


def main(coordinator: str, num_processes: int, process_id: int, workdir: str) -> None:
    from helpers import smooth_resnet

    smooth_resnet()
    if num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)
    from earlyjax.train import train_and_evaluate

    train_and_evaluate(worker_config(), workdir, dataset=tiny_data())
    print(f"process {jax.process_index()} of {jax.process_count()}: {jax.device_count()} devices")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
