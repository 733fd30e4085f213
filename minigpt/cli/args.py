"""Flags shared by several commands, defined once, and the `--config` file layering.

Precedence, lowest first: a config dataclass's defaults < a parent checkpoint or a stage's defaults < a preset
< `--config FILE` < flags typed on the command line. `--config` works by making the file's keys the defaults
of the command's own flags (`apply_config_file`), so every flag (`--data`, `--out`, `--beta`, `--n-layer`, ...)
can come from the file under its flag name (`n_layer = 8`, `data = "corpus.txt"`), and a key that names no flag
is refused with the closest match.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
from typing import Any

from ..common import MinigptError

DATA_HELP = ("text source: pydocs (built in), a .txt file, a folder, a .jsonl/.parquet file with a 'text' field, "
             "or a Hub dataset id")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")


def add_checkpoint(p: argparse.ArgumentParser, *, required: bool = True, help: str | None = None) -> None:
    p.add_argument("--checkpoint", required=required, help=help or "run folder (its latest step), RUN/best (its "
                   "best validation step), or a step_* folder")


def add_data(p: argparse.ArgumentParser, *, default: str = "pydocs", tokenizer: str = "auto") -> None:
    p.add_argument("--data", default=default, help=f"{DATA_HELP} (default: {default})")
    p.add_argument("--tokenizer", default=tokenizer, help="auto (a BPE trained on the data, cached by source and "
                   f"vocabulary), char, or a tokenizer file (.bpe, .char, .tiktoken) (default: {tokenizer})")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size when --tokenizer auto "
                   "(default: 4096)")


def add_run(p: argparse.ArgumentParser, out_help: str) -> None:
    """--out, --resume and --config: every training command has all three and follows the same rule."""
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped "
                   "(without it, an --out that holds a run is refused)")
    add_config(p)


def require_out(args: argparse.Namespace):
    """--resume's run folder, checked: it must hold a run."""
    from ..checkpoint import check_run_dir

    if not args.out:
        raise MinigptError("--resume needs --out RUN_DIR (the run to continue)")
    return check_run_dir(args.out, resume=True)


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="a TOML or JSON file of flag values by flag name, e.g. "
                   "n_layer = 8 (flags typed on the command line override it)")
    p.set_defaults(_parser=p)


def apply_config_file(args: argparse.Namespace, argv: list[str] | None, root: argparse.ArgumentParser):
    """Re-parse with the `--config` file's values as the command's defaults; refuse keys that name no flag."""
    from ..config import load_config_file

    values = load_config_file(args.config)
    parser: argparse.ArgumentParser = args._parser
    known = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise MinigptError(f"--config {args.config}: unknown key {key!r}{hint}")
    parser.set_defaults(**values)
    return root.parse_args(argv)


def add_model(p: argparse.ArgumentParser) -> None:
    """--model KIND, --preset/--depth for the GPT, and one flag per field of every model config (union)."""
    from ..config import add_dataclass_args
    from ..models import classes, kinds
    from ..models.gpt import PRESETS

    p.add_argument("--model", default=None, choices=kinds(), help="model family (default: gpt)")
    p.add_argument("--preset", default=None, help=f"GPT size preset: {', '.join(PRESETS)} (default: tiny)")
    p.add_argument("--depth", type=int, default=None, help="GPT size dial: layers; width and heads follow")
    seen = {"kind", "vocab_size"}
    for kind in kinds():
        cls, _ = classes(kind)
        add_dataclass_args(p, cls, title=f"model ({kind})", exclude=tuple(seen),
                           shown=PRESETS["tiny"] if kind == "gpt" else None)
        seen.update(_field_names(cls))


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def model_config(args: argparse.Namespace, base: dict | None = None):
    """The model config: preset/depth < --config file < flags; flags of another model kind are refused."""
    from ..config import flag, resolve_config
    from ..models import classes, kinds

    kind = args.model or (base or {}).get("kind") or "gpt"
    cls, _ = classes(kind)
    mine = set(_field_names(cls))
    others = {f for k in kinds() for f in _field_names(classes(k)[0])} - mine
    stray = sorted(f for f in vars(args) if f in others)
    if stray:
        raise MinigptError(f"{flag(stray[0])} does not apply to --model {kind}; drop it or choose another --model")
    overrides: dict = {}
    if kind == "gpt":
        from ..models.gpt import PRESETS, scaled

        if args.preset and args.depth:
            raise MinigptError("--preset and --depth both set the model size; give one of them")
        if args.depth is not None and args.depth < 1:
            raise MinigptError(f"--depth {args.depth}: give at least 1 (layers; width and heads follow)")
        if args.depth:
            overrides = scaled(args.depth)
        else:
            name = args.preset or ("tiny" if not base else None)
            if name and name not in PRESETS:
                raise MinigptError(f"--preset {name}: unknown; choose one of {', '.join(PRESETS)}")
            overrides = PRESETS[name] if name else {}
    elif args.preset or args.depth:
        raise MinigptError(f"--preset/--depth size the GPT only; size --model {kind} with its own flags")
    values = {**(base or {}), "kind": kind}
    values.setdefault("vocab_size", 256)  # replaced by the tokenizer's size
    return resolve_config(cls, args, base=values, overrides=overrides)


def add_train(p: argparse.ArgumentParser, shown: dict[str, Any] | None = None) -> None:
    from ..config import add_dataclass_args
    from ..train.settings import TrainConfig

    add_dataclass_args(p, TrainConfig, title="training", shown=shown)


def train_config(args: argparse.Namespace, base: dict | None = None):
    """The training config: defaults < base < --config file < flags. `--max-seconds` given without
    `--max-iters` makes the clock the only limit (the schedule follows elapsed time)."""
    from ..config import resolve_config
    from ..train.settings import TrainConfig

    time_only = getattr(args, "max_seconds", None) is not None and getattr(args, "max_iters", None) is None
    return resolve_config(TrainConfig, args, base=base, overrides={"max_iters": 10**9} if time_only else None)


def add_sampling(p: argparse.ArgumentParser, shown: dict[str, Any] | None = None) -> None:
    """Everything that reads a checkpoint and generates: checkpoint, device, cache, stop texts, the sampler."""
    from ..config import add_dataclass_args
    from ..infer.sampling import SamplingConfig

    add_checkpoint(p)
    add_device(p)
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="no KV cache: a full forward over the window for every token (nanoGPT's way; slow)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop before this text (repeatable)")
    add_dataclass_args(p, SamplingConfig, title="sampling", shown=shown)
    if shown:
        p.set_defaults(**shown)


def sampling_config(args: argparse.Namespace):
    from ..config import resolve_config
    from ..infer.sampling import SamplingConfig

    return resolve_config(SamplingConfig, args).with_overrides(stop=tuple(args.stop))


def at_least(low: int):
    """An argparse type: an integer >= low ("--top -2" is refused by argparse with its usage line)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def file_path(text: str) -> str:
    """An argparse type for a file to write: not an existing folder."""
    from pathlib import Path

    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name, e.g. {Path(text) / 'out.png'}")
    return text


def load(args: argparse.Namespace):
    """Load --checkpoint on --device and say on stderr which step it is (a run folder means its latest step)."""
    from rich.console import Console
    from rich.markup import escape

    from ..checkpoint import load_checkpoint
    from ..common import resolve_device

    ckpt = load_checkpoint(args.checkpoint, device=resolve_device(args.device)).writer()
    Console(stderr=True, highlight=False).print(f"[dim]loaded {escape(str(ckpt.path))} (stage "
                                                f"{ckpt.config.get('stage', '?')}, step {ckpt.step})[/]", soft_wrap=True)
    return ckpt


def note_unknown(tokenizer, text: str) -> None:
    """Say on stderr which characters of the user's text a character tokenizer lacks (`unknown_note`)."""
    from ..common import err_console
    from ..text.chat_format import unknown_note

    if note := unknown_note(tokenizer, text):
        err_console.print(note, markup=False, highlight=False)
