"""One writer per workdir: an exclusive `flock` on `workdir/.lock`, held for the whole run.

The lock file holds the holder's pid and host. `flock` locks belong to the open file, so the
kernel releases them when the holder exits in any way (even `kill -9` or a crash): a lock file
left behind is never stale. A second process on the same workdir gets `WorkdirBusy` at once,
naming the holder. (On network filesystems without `flock` support, the lock may not be shared
between hosts.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator

from earlyjax.config import ConfigError

LOCK_FILE = ".lock"


class WorkdirBusy(ConfigError):
    """Another process is running in this workdir; the message names it."""


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
    """Holds the workdir's lock (creating the workdir) or raises `WorkdirBusy` at once."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise WorkdirBusy(
                f"{workdir} is in use by another run ({holder or 'holder unknown'}); wait for it "
                f"to finish or stop it, or use another --workdir (lock: {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
