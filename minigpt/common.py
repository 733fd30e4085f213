"""Small shared services every stage needs, and nothing else.

Owns: the one user-facing error type (`MinigptError`, printed as one line by the CLI), `MINIGPT_HOME`,
device and precision autodetection (cpu, cuda, mps), seeding, torchrun/DDP set-up and rank-0 printing,
atomic file and directory writes (temp + fsync + rename + fsync of the folder, so a crash or power cut leaves
the old version or the new one, never a torn file), and hashing. No training, model or data logic lives here.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from rich.console import Console

if TYPE_CHECKING:  # torch is imported where it is used, so `minigpt --help` and the CLI's checks start instantly
    import torch

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)  # errors, notes and footers: stdout stays the output
CLI_ARGS: list[str] | None = None  # the arguments of the `minigpt` command running (cli.main sets them; None: a
# library call): what `train.stopping.resume_command` repeats


class MinigptError(Exception):
    """A problem the user can fix. The CLI prints `error: <message>` on one line and exits with 2."""


# ---------------------------------------------------------------------------------------------- places


def minigpt_home() -> Path:
    """Where history and caches live: $MINIGPT_HOME, else $XDG_CACHE_HOME/minigpt, else ~/.cache/minigpt."""
    if os.environ.get("MINIGPT_HOME"):
        path = Path(os.environ["MINIGPT_HOME"])
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minigpt"
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------- device


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit name is checked and refused if absent."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise MinigptError(f"--device {name}: not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MinigptError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MinigptError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: 'auto' is bf16 on CUDA that supports it, else fp16 on CUDA, else fp32."""
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in table:
        raise MinigptError(f"--dtype {name}: unknown; use auto, float32, bfloat16 or float16")
    return table[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """The context a forward pass runs under: autocast to `dtype` on `device`, or nothing for fp32."""
    import torch

    return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    import numpy as np
    import torch

    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------- DDP


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA); a no-op otherwise."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        atexit.register(_close_distributed)
    return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())


def _close_distributed() -> None:
    """At exit: let gloo's worker threads finish, then destroy the process group, while the interpreter is whole.
    A worker freeing a finished collective's tensors may need the GIL for it; if Python's teardown has begun by
    then, the thread exits inside a C++ destructor and the rank aborts after its work is done ("terminate called
    without an active exception": rank 1 of `torchrun ... minigpt reward` in about 1 exit of 35 here;
    pytorch/pytorch#190489). The pause hands the GIL to such a worker; the collection frees what still holds the
    group (the DDP wrapper), whose destructor then joins the worker threads."""
    import gc
    import time

    import torch.distributed as dist

    time.sleep(0.01)
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()


def current_dist() -> Dist:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    return Dist()


@contextlib.contextmanager
def rank_zero_first(dist: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. training a tokenizer, writing shards); the others then run it and
    find the result cached. A no-op outside torchrun."""
    import torch.distributed as tdist

    if dist.enabled and not dist.is_main:
        tdist.barrier()
    yield
    if dist.enabled and dist.is_main:
        tdist.barrier()


def print0(*args, **kwargs) -> None:
    """Print through rich on rank 0 only (under torchrun before its process group exists too: $RANK)."""
    if current_dist().is_main and int(os.environ.get("RANK", "0")) == 0:
        console.print(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | Path) -> None:
    """Make a rename or an unlink inside `path` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename, fsync the folder: readers see the old file or the
    new one, and after a crash the file is the old or the new one too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def temp_dir_beside(path: str | Path) -> Path:
    """A new empty folder `.NAME.XXXX.tmp` next to `path` (usual permissions), to be renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp.chmod(0o777 & ~_umask())
    return tmp


def fsync_tree(folder: Path) -> None:
    """fsync every file in `folder` (recursively), then the folders themselves."""
    for sub in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        if sub.is_file():
            fsync_file(sub)
        elif sub.is_dir():
            fsync_dir(sub)
    fsync_dir(folder)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path`; on success its files are fsynced and it is renamed to `path`
    (replacing an older one: for a moment there is neither; run checkpoints avoid that window, see
    checkpoint.save_checkpoint)."""
    path = Path(path)
    tmp = temp_dir_beside(path)
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def human_count(n: float) -> str:
    """1234567 -> '1.23M' (for parameter and token counts in tables)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)


_TIME = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_seconds(text: str, what: str = "--budget") -> float:
    """A duration flag: '10m' -> 600, '90s' -> 90, '1.5h' -> 5400, '300' -> 300."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", str(text).lower())
    if not m:
        raise MinigptError(f"{what} {text}: not a duration; write e.g. 30m, 90s or 1.5h")
    return float(m.group(1)) * _TIME[m.group(2) or ""]
