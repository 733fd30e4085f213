"""One writer per folder: the lock every training run takes on its run folder, and `prepare` on its data folder.

    FOLDER/.lock    flock(2)ed by the writer; holds a record of it while held:
                    {"host": ..., "pid": ..., "started": process start (epoch s), "since": ..., "command": ...}

The lock is `fcntl.flock` on FOLDER/.lock, not a lock file made with O_CREAT|O_EXCL: the kernel drops a flock when
its holder dies in any way (kill -9, power cut, OOM), so a dead run never blocks the next one, and no guess from a
pid is needed, which pid reuse would fool. The record is what the lock cannot tell: who holds it, for the refusal
("in use by pid 4242 on host gpu1, `minigpt pretrain ...`, since 10:31"), and a guard for filesystems whose locks
do not reach other hosts (NFS without a lock manager): a record left by *another host* is respected even when the
flock is free, since this host cannot check that process; it names the file to delete if that run is gone. A record
from this host with the flock free is a dead holder's, taken over at once. Released by truncating the record and
closing (the file stays, so there is never a window in which two openers lock different files).

Under torchrun only rank 0 locks (`run_lock`): the other ranks never write into the run folder.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from .common import MinigptError, console

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def _process_started() -> float:
    """This process's start time (epoch seconds): from /proc on Linux, else when this module was imported."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()


def describe(record: dict[str, Any]) -> str:
    """'pid 4242 on host gpu1 (`minigpt pretrain ...`, since 2024-05-01 10:31)' from a lock record."""
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.get("since", 0)))
    command = f"`{record['command']}`, " if record.get("command") else ""
    return f"pid {record.get('pid', '?')} on host {record.get('host', '?')} ({command}since {since})"


class FolderLock:
    """`with FolderLock(folder):` holds FOLDER/.lock; a second holder is refused (or, with `wait=True`, waits)
    with a line naming the first. `what` names the folder in messages ("run folder", "data folder")."""

    def __init__(self, folder: str | Path, what: str = "run folder", *, wait: bool = False):
        self.folder, self.what, self.wait = Path(folder), what, wait
        self.path = self.folder / LOCK_NAME
        self.fd: int | None = None

    def read_record(self) -> dict[str, Any]:
        try:
            record = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def _busy(self) -> MinigptError:
        record = self.read_record()
        who = describe(record) if record else "another process"
        return MinigptError(f"{self.folder}: this {self.what} is in use by {who}; wait for it to finish, or "
                            "use another folder")

    def acquire(self) -> "FolderLock":
        if fcntl is None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file where the folder (or a folder above it) would be, no permission...
            why = "a file is in the way" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
            raise MinigptError(f"{self.folder}: cannot be made a folder for this {self.what} ({why}); give "
                               "another --out") from None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not self._flock(fd):
                if not self.wait:
                    raise self._busy()
                console.print(f"waiting for {describe(self.read_record())}, which holds {self.folder}",
                              markup=False, highlight=False)
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._check_other_host()
            self._write_record(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _flock(self, fd: int) -> bool:
        """Try the lock without waiting; True when taken. A filesystem without locks: go on unlocked."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                console.print(f"note: {self.folder} cannot be locked here ({e.strerror}); make sure no other "
                              "process writes to it", markup=False, highlight=False)
                return True
            raise

    def _check_other_host(self) -> None:
        """The flock is ours, but a record from another host may be a live process there (locks on some network
        filesystems do not reach across hosts): respect it; a record from this host is a dead holder's."""
        record = self.read_record()
        host = record.get("host")
        if host and host != socket.gethostname():
            raise MinigptError(f"{self.folder}: this {self.what} is marked in use by {describe(record)}, which "
                               f"this host cannot check; if that process is gone, delete {self.path} and retry")

    def _write_record(self, fd: int) -> None:
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started": round(_process_started(), 2),
                  "since": round(time.time(), 2), "command": " ".join(["minigpt", *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # no record: free (the flock goes with the close)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_rank_zero() -> bool:
    """True outside torchrun and on its rank 0 (read from the environment, before any process group exists)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold a run folder for the block (rank 0 only): one writer per run, the second refused naming the first."""
    if not is_rank_zero():
        yield
        return
    with FolderLock(run_dir, "run folder"):
        yield
