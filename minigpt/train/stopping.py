"""Stopping a run: Ctrl-C or SIGTERM asks the training loop to stop after the step and save (`Interrupt`), and
`resume_command` is the command that continues it, printed when it stops."""
from __future__ import annotations

import os
import shlex
import signal
import sys

from .. import common
from ..common import console
from ..runlock import is_rank_zero


class Interrupt:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save; a second one
    stops at once. SIGTERM is what torchrun sends the ranks that survive a failed one, and what Slurm and
    `docker stop` send before they kill: without a handler it would end the run with nothing saved."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "Interrupt":
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread
            pass
        return self

    def _handle(self, signum, frame) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if is_rank_zero():  # under torchrun every rank gets the signal: one message
            console.print(f"\n[yellow]{name}: saving a checkpoint after this step ({name} again to stop now)[/]")

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


RESUMED_BY_RERUN = ("speedrun",)  # commands with no --resume flag: run again as they were, they go on


def resume_command(world_size: int | None = None) -> str | None:
    """The command that continues this run: the one that started it plus `--resume`, except where running it
    again as it was resumes (RESUMED_BY_RERUN), under torchrun with the run's number of processes (`world_size`,
    default this job's) when that is more than one. None for a lesson: `minigpt learn` starts again, and keeps
    its earlier model until a new one is complete."""
    args = common.CLI_ARGS if common.CLI_ARGS is not None else sys.argv[1:]
    if args[:1] == ["learn"]:
        return None
    if "--resume" not in args and not (args and args[0] in RESUMED_BY_RERUN):
        args = [*args, "--resume"]
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    launcher = ["torchrun", "--nproc-per-node", str(world), "-m", "minigpt"] if world > 1 else ["minigpt"]
    return shlex.join([*launcher, *args])
