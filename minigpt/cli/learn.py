"""`minigpt learn`: list the lessons (from a neuron to attention); `minigpt learn NAME` runs one."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..common import MinigptError, console
from .args import add_device


def register(sub) -> None:
    p = sub.add_parser("learn", help="runnable lessons: neuron, perceptron, backprop, MNIST, RNNs, attention, Chinese",
                       description="Worked examples from a single neuron to attention, each a small module whose "
                                   "code is the lesson: it tells its story in the terminal, draws its pictures "
                                   "and ends with the next step. Without NAME: the list of lessons.")
    p.add_argument("name", nargs="?", default=None, metavar="NAME", help="the lesson to run (default: list them)")
    p.add_argument("--lang", choices=("en", "zh"), default="en", help="tell the story in English or Chinese "
                   "(default: en)")
    p.add_argument("--png", default="checkpoints/learn", metavar="DIR", help="folder for the pictures, the HTML "
                   "page and the Chinese lesson's model (default: checkpoints/learn)")
    p.add_argument("--no-png", dest="png", action="store_const", const=None, help="draw no pictures")
    p.add_argument("--quick", action="store_true", help="a small, fast version (under a minute each on 2 CPU "
                   "cores): fewer steps, smaller tasks")
    p.add_argument("--data", default=None, help="mnist: ylecun/mnist (Hub), a folder of IDX files or a .parquet "
                   "file/folder (default: the shipped 8x8 digits); chinese: a UTF-8 text file (default: the "
                   "shipped Tang poems)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**64 - 1 (default: 0)")
    add_device(p)
    p.set_defaults(func=_learn)


def _learn(args: argparse.Namespace) -> int:
    from ..learn import lessons
    from ..learn.story import Story

    if args.name is None:
        console.print(lessons.listing(args.lang))
        console.print("run one: minigpt learn NAME [--lang zh] [--quick] [--png DIR]" if args.lang == "en" else
                      "运行一课：minigpt learn 课程名 [--lang zh] [--quick] [--png 目录]")
        return 0
    lesson = lessons.find(args.name)
    if args.data and lesson.name not in ("mnist", "chinese"):
        raise MinigptError(f"--data applies to the mnist and chinese lessons, not {lesson.name}; drop it")
    _check_flags(args)
    story = Story(lang=args.lang, png=args.png, quick=args.quick, device=args.device, data=args.data, seed=args.seed)
    result = lessons.run(lesson.name, story)
    return 130 if result.get("interrupted") else 0  # Ctrl-C stopped the lesson; it said what was kept


def _check_flags(args: argparse.Namespace) -> None:
    """Flags a lesson would trip over only after it has printed much of its story (or, for --device, not at all
    in the lessons that need no device): one error line before it starts."""
    from ..common import resolve_device
    from ..infer.sampling import SEEDS

    resolve_device(args.device)
    if not 0 <= args.seed < SEEDS:
        raise MinigptError(f"--seed {args.seed}: must be an integer from 0 to 2**64 - 1")
    if args.png is None:
        return
    png = Path(args.png)
    if png.exists() and not png.is_dir():
        raise MinigptError(f"--png {args.png}: is a file, not a folder; give a folder (made if missing) or --no-png")
    try:
        png.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MinigptError(f"--png {args.png}: cannot make the folder ({e.strerror}); give another folder or "
                           "--no-png") from None
    if not os.access(png, os.W_OK | os.X_OK):
        raise MinigptError(f"--png {args.png}: the folder is not writable; give another folder or --no-png")
