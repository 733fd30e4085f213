"""The `minigpt` command: argparse subcommands, each a thin layer that parses flags, builds configs and calls
one library function. This is the only place where errors become exit codes: a `MinigptError` prints one line
(`error: ...`) and exits 2; Ctrl-C exits 130 after the library has saved what it must.
"""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .common import MinigptError, console


# ---------------------------------------------------------------------------------------------- subcommands
# Each `_add_<name>(sub)` registers one subcommand and binds its handler with set_defaults(func=...).
# Handlers import their library modules lazily so `minigpt --help` stays instant.

_SUBCOMMANDS: list = []


def subcommand(add):
    """Register a function `add(subparsers)` that defines one subcommand (help lists them in this order)."""
    _SUBCOMMANDS.append(add)
    return add


# ---------------------------------------------------------------------------------------------- tokenizer


@subcommand
def _add_tokenizer(sub) -> None:
    p = sub.add_parser("tokenizer", help="train, try and describe tokenizers (byte-level BPE or characters)",
                       description="Byte-level BPE (or characters) trained on your text; encoding runs in tiktoken.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("train", help="learn a tokenizer from a text source",
                           description="Learn a byte-level BPE (or a character vocabulary) from a text source's "
                                       "train split and report bytes/token on its val split.")
    t.add_argument("--data", default="pydocs", help="text source: pydocs (built in), a .txt file, a folder, a "
                   ".jsonl/.parquet file with a 'text' field, or a Hub dataset id (default: pydocs)")
    t.add_argument("--vocab-size", type=int, default=4096,
                   help="all ids, the 5 special tokens included; = the model's embedding size (default: 4096)")
    t.add_argument("--kind", choices=("bpe", "char"), default="bpe",
                   help="bpe, or char: one id per character, for nanoGPT-style baselines (default: bpe)")
    t.add_argument("--pattern", default="minigpt", help="pre-split regex, or a name: minigpt (GPT-4's with one "
                   "chunk per Han character), gpt4, gpt2 (default: minigpt)")
    t.add_argument("--out", default=None, help="file to write (default: data/tokenizers/<source>-bpe<vocab>.bpe, "
                   "or <source>-char.char)")
    t.set_defaults(func=_tokenizer_train)
    e = actions.add_parser("encode", help="show how a text splits into tokens (coloured, with ids)")
    e.add_argument("--tokenizer", required=True, help="a .bpe/.char/.tiktoken file, or cl100k_base")
    e.add_argument("text", help="the text to encode ('-' reads standard input)")
    e.set_defaults(func=_tokenizer_encode)
    i = actions.add_parser("info", help="vocabulary size, special tokens, compression, longest tokens, merges")
    i.add_argument("--tokenizer", required=True, help="a .bpe/.char/.tiktoken file, or cl100k_base")
    i.add_argument("--text", default=None, help="a UTF-8 text file to measure bytes/token on")
    i.add_argument("--top", type=int, default=10, help="how many longest tokens and first merges (default: 10)")
    i.set_defaults(func=_tokenizer_info)


def _tokenizer_train(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rich.table import Table

    from .data import default_data_root, open_source
    from .bpe import resolve_pattern
    from .tokenizer import bytes_per_token, train_bpe, train_char

    pattern = resolve_pattern(args.pattern)
    source = open_source(args.data)
    name = f"{source.name}-char.char" if args.kind == "char" else f"{source.name}-bpe{args.vocab_size}.bpe"
    out = Path(args.out) if args.out else default_data_root() / "tokenizers" / name
    start = time.perf_counter()
    if args.kind == "char":  # like nanoGPT (and `--tokenizer char`): every character of both splits
        tok = train_char(doc for split in ("train", "val") for doc in source.documents(split))
    else:
        tok = train_bpe(source.documents("train"), args.vocab_size, pattern=pattern)
    elapsed = time.perf_counter() - start
    tok.save(out)
    val = "".join(source.documents("val"))
    table = Table(title=f"{tok.kind} tokenizer trained on {source.spec}", show_header=False)
    table.add_row("vocab size", f"{tok.vocab_size:,} (special tokens {min(tok.specials.values())}.."
                                f"{max(tok.specials.values())})")
    table.add_row("training time", f"{elapsed:.1f} s")
    table.add_row("bytes/token (val)", f"{bytes_per_token(tok, val):.3f} on {len(val.encode()):,} bytes"
                  if val else "no val text")
    table.add_row("file", f"{out} (sha256 {tok.sha256[:12]})")
    console.print(table)
    return 0


def _tokenizer_encode(args: argparse.Namespace) -> int:
    from rich.text import Text

    from .tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    text = sys.stdin.read() if args.text == "-" else args.text
    ids = tok.encode(text)
    view = Text()
    for n, i in enumerate(ids):
        piece = tok.token_bytes(i).decode("utf-8", errors="backslashreplace")
        view.append(piece.replace("\n", "↵\n").replace("\t", "→"),
                    style=("black on #8ec07c", "black on #83a5d8")[n % 2])
    console.print(view)
    console.print(f"[dim]ids:[/] {ids}")
    n_bytes = len(text.encode("utf-8"))
    console.print(f"{len(ids)} tokens, {n_bytes} bytes ({n_bytes / max(1, len(ids)):.2f} bytes/token)")
    return 0


def _tokenizer_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from .tokenizer import bytes_per_token, load_tokenizer, printable

    tok = load_tokenizer(args.tokenizer)
    table = Table(title=escape(f"tokenizer {args.tokenizer}"), show_header=False)
    table.add_row("kind", tok.kind)
    table.add_row("vocab size", f"{tok.vocab_size:,}")
    table.add_row("special tokens", ", ".join(f"{name} {i}" for name, i in tok.specials.items()))
    if tok.kind == "bpe":
        table.add_row("pre-split pattern", Text(tok.pattern))
    table.add_row("sha256", tok.sha256)
    if args.text:
        path = Path(args.text)
        if not path.is_file():
            raise MinigptError(f"--text {path}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise MinigptError(f"--text {path}: not UTF-8 text") from None
        table.add_row("bytes/token", f"{bytes_per_token(tok, text):.3f} on {path.name}")
    console.print(table)
    ordinary = [i for i in range(tok.vocab_size) if not tok.is_special(i)]
    if tok.kind == "char":
        console.print("[bold]characters:[/] " + escape(printable(tok.chars.encode("utf-8", "surrogatepass"))))
        return 0
    longest = Table("id", "bytes", "token", title=f"{args.top} longest tokens")
    for i in sorted(ordinary, key=lambda i: (-len(tok.token_bytes(i)), i))[:args.top]:
        shown = printable(tok.token_bytes(i))
        longest.add_row(str(i), str(len(tok.token_bytes(i))), Text(shown if len(shown) < 60 else shown[:57] + "..."))
    console.print(longest)
    merges = Table("id", "token", "merge of", title=f"first {args.top} merges")
    for i in [i for i in ordinary if len(tok.token_bytes(i)) > 1][:args.top]:
        parts = " + ".join(f"{p} {printable(tok.token_bytes(p))}" for p in tok.merge_parents(i))
        merges.add_row(str(i), Text(printable(tok.token_bytes(i))), Text(parts))
    console.print(merges)
    return 0



# ---------------------------------------------------------------------------------------------- shared flags


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="pydocs", help="text source: pydocs (built in), a .txt file, a folder, "
                   "a .jsonl/.parquet file with a 'text' field, or a Hub dataset id (default: pydocs)")
    p.add_argument("--tokenizer", default="auto", help="auto (train a BPE on the data), char, or a tokenizer "
                   "file (.bpe, .char, .tiktoken) (default: auto)")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size when --tokenizer auto "
                   "(default: 4096)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    """--model KIND, --preset/--depth for the GPT, and one flag per field of every model config (union)."""
    from .config import add_dataclass_args
    from .models import classes, kinds

    p.add_argument("--model", default=None, choices=kinds(), help="model family (default: gpt)")
    p.add_argument("--preset", default=None, help="GPT size preset: tiny, small, ..., gpt2 (default: tiny)")
    p.add_argument("--depth", type=int, default=None, help="GPT size dial: layers; width and heads follow")
    seen = {"kind", "vocab_size"}
    for kind in kinds():
        cls, _ = classes(kind)
        add_dataclass_args(p, cls, title=f"model ({kind})", exclude=tuple(seen))
        seen.update(_field_names(cls))


def _field_names(cls) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)]


def _model_config(args: argparse.Namespace, file_values: dict, base: dict | None = None):
    """The model config: preset/depth < --config file < flags; flags of another model kind are refused."""
    from .config import flag, resolve
    from .models import classes, kinds

    kind = args.model or file_values.get("kind") or (base or {}).get("kind") or "gpt"
    cls, _ = classes(kind)
    mine = set(_field_names(cls))
    others = {f for k in kinds() for f in _field_names(classes(k)[0])} - mine
    stray = sorted(f for f in vars(args) if f in others)
    if stray:
        raise MinigptError(f"{flag(stray[0])} does not apply to --model {kind}; drop it or choose another --model")
    overrides: dict = {}
    if kind == "gpt":
        from .models.gpt import PRESETS, scaled

        if args.preset and args.depth:
            raise MinigptError("--preset and --depth both set the model size; give one of them")
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
    return resolve(cls, args, file_values=file_values, base=values, overrides=overrides)


def _train_config(args: argparse.Namespace, file_values: dict, base: dict | None = None):
    """The training config: defaults < base < --config file < flags. `--max-seconds` given without
    `--max-iters` makes the clock the only limit (the schedule follows elapsed time)."""
    from .config import resolve
    from .trainer import TrainConfig

    given = {**file_values, **vars(args)}
    time_only = given.get("max_seconds") is not None and given.get("max_iters") is None
    return resolve(TrainConfig, args, file_values=file_values, base=base,
                   overrides={"max_iters": 10**9} if time_only else None)


def _config_file(args: argparse.Namespace) -> dict:
    from .config import load_config_file

    return load_config_file(args.config) if getattr(args, "config", None) else {}


# ---------------------------------------------------------------------------------------------- prepare, pretrain


@subcommand
def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize a text source into train/val token shards",
                       description="Tokenize a source into data/<name>/{train,val}.bin (memory-mapped) + meta.json.")
    _add_data_args(p)
    p.add_argument("--out", default=None, help="output folder (default: data/<source>-<tokenizer>)")
    p.add_argument("--num-proc", type=int, default=None, help="tokenizer processes (default: by corpus size)")
    p.add_argument("--force", action="store_true", help="re-tokenize even when the shards are current")
    p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
    from .data import open_source, prepare
    from .pretrain import resolve_tokenizer

    source = open_source(args.data)
    tokenizer = resolve_tokenizer(args.tokenizer, source, args.vocab_size)
    prepared = prepare(source, tokenizer, out=args.out, num_proc=args.num_proc, force=args.force)
    for split, s in prepared.meta["splits"].items():
        console.print(f"{split}: {s['tokens']:,} tokens, {s['bytes']:,} bytes "
                      f"({s['bytes'] / max(1, s['tokens']):.2f} bytes/token)")
    console.print(f"wrote {prepared.path}")
    return 0


@subcommand
def _add_pretrain(sub) -> None:
    from .config import add_dataclass_args
    from .trainer import TrainConfig

    p = sub.add_parser("pretrain", help="train a language model on next-token prediction",
                       description="Train a GPT (or a baseline) on a text source. With no arguments: the tiny GPT "
                                   "on the built-in pydocs corpus, a few minutes on 2 CPU cores.")
    _add_data_args(p)
    p.add_argument("--out", default=None, help="run folder (default: checkpoints/<source>-<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--config", default=None, help="a TOML or JSON file of config fields (flags override it)")
    p.add_argument("--sample-prompt", default="", help="prompt for the sample printed at each evaluation")
    _add_model_args(p)
    add_dataclass_args(p, TrainConfig, title="training")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from .checkpoint import read_run_info
    from .pretrain import pretrain

    file_values = _config_file(args)
    if args.resume:
        if not args.out:
            raise MinigptError("--resume needs --out RUN_DIR (the run to continue)")
        info = read_run_info(args.out)
        if not info:
            raise MinigptError(f"--resume: {args.out} holds no run (no run.json); check the path")
        result = pretrain(resume=True, out=args.out, train_config=_train_config(args, file_values, info.get("train")),
                          sample_prompt=args.sample_prompt)
    else:
        result = pretrain(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                          model_config=_model_config(args, file_values), train_config=_train_config(args, file_values),
                          out=args.out, sample_prompt=args.sample_prompt)
    if result.interrupted:
        return 130
    val = result.metrics.get("val/loss")
    console.print(f"[green]done[/]: step {result.step}, val loss {val:.4f}, best {result.best_val:.4f} -> "
                  f"{result.run_dir}")
    return 0


# ---------------------------------------------------------------------------------------------- sft, reward, dpo, rl

_STAGES = {
    "sft": ("supervised fine-tuning on conversations (loss on assistant replies only)",
            "conversations JSONL: {\"messages\": [...]} or {\"prompt\", \"completion\"} (default: built-in pydocs Q&A)"),
    "reward": ("train a Bradley-Terry reward model on preference pairs",
               "preferences JSONL: {\"prompt\", \"chosen\", \"rejected\"} (default: built-in pydocs pairs)"),
    "dpo": ("direct preference optimisation against a frozen copy of the parent",
            "preferences JSONL: {\"prompt\", \"chosen\", \"rejected\"} (default: built-in pydocs pairs)"),
    "rl": ("on-policy policy gradient against a reward, with a KL leash to the parent",
           "prompts JSONL: {\"prompt\", ...extra fields for the reward} (default: built-in pydocs questions)"),
}


def _add_stage(sub, name: str) -> None:
    from .config import add_dataclass_args
    from .trainer import TrainConfig

    summary, data_help = _STAGES[name]
    p = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ". The model shape and "
                       "tokenizer come from the parent checkpoint.")
    p.add_argument("--checkpoint", help="parent run folder (or a step_* folder); required unless --resume")
    p.add_argument("--prompts" if name == "rl" else "--data", default=None, dest="data", help=data_help)
    p.add_argument("--out", default=None, help=f"run folder (default: <parent run>-{name})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--config", default=None, help="a TOML or JSON file of config fields (flags override it)")
    if name == "dpo":
        p.add_argument("--beta", type=float, default=0.1, help="DPO temperature: how far from the reference the "
                       "policy may move (default: 0.1)")
    if name == "rl":
        from .finetune import RLConfig

        p.add_argument("--reward", default="python:minigpt.rewards:token_f1",
                       help="rm:RUN_DIR (a reward model) or python:module:function (default: token F1 against "
                            "each prompt's 'reference')")
        add_dataclass_args(p, RLConfig, title="rl")
    add_dataclass_args(p, TrainConfig, title="training")
    p.set_defaults(func=_stage, stage=name)


def _stage(args: argparse.Namespace) -> int:
    from . import finetune
    from .checkpoint import read_run_info
    from .config import resolve

    file_values = _config_file(args)
    base = dict(finetune.STAGE_DEFAULTS[args.stage])
    if args.resume and args.out:
        base.update(read_run_info(args.out).get("train", {}))
    common = dict(train_config=_train_config(args, file_values, base), out=args.out, resume=args.resume)
    if args.stage == "dpo":
        result = finetune.dpo(args.checkpoint, args.data, beta=args.beta, **common)
    elif args.stage == "rl":
        rl_config = resolve(finetune.RLConfig, args, file_values=file_values)
        result = finetune.rl(args.checkpoint, args.data, reward=args.reward, rl_config=rl_config, **common)
    else:
        result = getattr(finetune, args.stage)(args.checkpoint, args.data, **common)
    if result.interrupted:
        return 130
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith("val/"))
    console.print(f"[green]done[/]: step {result.step}, {shown} -> {result.run_dir}")
    return 0


for _name in _STAGES:
    subcommand(lambda sub, _n=_name: _add_stage(sub, _n))


# ---------------------------------------------------------------------------------------------- compare


@subcommand
def _add_compare(sub) -> None:
    from .compare import DEFAULT_MODELS, LR

    p = sub.add_parser("compare", help="train bigram, MLP, CNN, RNN, LSTM, GRU and GPT on your data; write a report",
                       description="Train each model kind at about the same parameter count with the same time or "
                                   "token budget on the same data, then write report.md + curves.png (params, "
                                   "FLOPs, speed, losses, bits per byte, samples, learning curves). Rerunning the "
                                   "same command resumes an interrupted comparison and skips finished models.")
    p.add_argument("--data", default="pydocs", help="text source: pydocs (built in), a .txt file, a folder, "
                   "a .jsonl/.parquet file with a 'text' field, or a Hub dataset id (default: pydocs)")
    p.add_argument("--tokenizer", default="char", help="char (one id per character), auto (a BPE trained on the "
                   "data), or a tokenizer file (.bpe, .char, .tiktoken) (default: char)")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size when --tokenizer auto "
                   "(default: 4096)")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help=f"comma-separated kinds, trained in this order (default: {','.join(DEFAULT_MODELS)})")
    p.add_argument("--params", default="200K", help="target parameter count per model, e.g. 200K, 1M (the bigram "
                   "is always V^2) (default: 200K)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget", default=None, help="total wall-clock budget, split equally between the "
                        "models, e.g. 5m, 90s, 1h (default: 5m)")
    budget.add_argument("--tokens", default=None, help="training tokens per model instead of a time budget, "
                        "e.g. 2M (repeatable on a busy machine)")
    p.add_argument("--block-size", type=int, default=64, help="context/training window in tokens (default: 64)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default: 32)")
    p.add_argument("--lr", default="", help="peak learning rates, e.g. gpt=3e-3,lstm=1e-2 (defaults: "
                   + ", ".join(f"{k} {v:g}" for k, v in LR.items()) + ")")
    p.add_argument("--evals", type=int, default=8, help="evaluations per model: the learning-curve points "
                   "(default: 8)")
    p.add_argument("--eval-iters", type=int, default=10, help="batches per evaluation (default: 10)")
    p.add_argument("--samples", type=int, default=100, help="lines sampled per model for the memorisation check "
                   "on line data (default: 100)")
    p.add_argument("--line-check", action=argparse.BooleanOptionalAction, default=None,
                   help="force the memorisation check on or off (default: on when most lines are short)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    p.add_argument("--out", default=None, help="comparison folder (default: checkpoints/compare-<source>)")
    p.add_argument("--resume", action="store_true", help="accepted for symmetry: rerunning always resumes")
    p.add_argument("--report-only", action="store_true", help="regenerate report.md and curves.png from --out's "
                   "results.json without training")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from .common import parse_seconds
    from .compare import CompareConfig, compare, parse_count, report

    if args.report_only:
        if not args.out:
            raise MinigptError("--report-only needs --out DIR (a comparison folder)")
        console.print(f"wrote {report(args.out)}")
        return 0
    lrs = {}
    for item in filter(None, (s.strip() for s in args.lr.split(","))):
        kind, _, value = item.partition("=")
        try:
            lrs[kind.strip()] = float(value)
        except ValueError:
            raise MinigptError(f"--lr {item}: write KIND=RATE, e.g. gpt=3e-3") from None
    config = CompareConfig(
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()), params=parse_count(args.params),
        seconds=None if args.tokens else parse_seconds(args.budget or "5m"),
        tokens=parse_count(args.tokens, "--tokens") if args.tokens else None, block_size=args.block_size,
        batch_size=args.batch_size, lr=lrs, evals=args.evals, eval_iters=args.eval_iters, samples=args.samples,
        line_check=args.line_check, seed=args.seed, device=args.device)
    result = compare(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size, config=config, out=args.out)
    return 130 if result.interrupted else 0


# ---------------------------------------------------------------------------------------------- sample, chat


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from .config import add_dataclass_args
    from .sampling import SamplingConfig

    p.add_argument("--checkpoint", required=True, help="run folder (its latest step), or a step_* folder")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    p.add_argument("--no-cache", dest="use_cache", action="store_false",
                   help="no KV cache: a full forward over the window for every token (nanoGPT's way; slow)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop before this text (repeatable)")
    add_dataclass_args(p, SamplingConfig, title="sampling")


def _sampling_config(args: argparse.Namespace):
    from .config import resolve
    from .sampling import SamplingConfig

    return resolve(SamplingConfig, args).with_overrides(stop=tuple(args.stop))


@subcommand
def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="continue a prompt with a checkpoint (streamed; --grid compares settings)",
                       description="Sample continuations of a prompt, streamed token by token. The prompt is "
                                   "encoded as <|bos|> + its text; no chat template.")
    p.add_argument("--prompt", default="", help="text to continue (default: empty, i.e. from <|bos|>)")
    p.add_argument("-n", "--num-samples", type=int, default=1, help="how many samples (default: 1)")
    p.add_argument("--batch", action="store_true", help="with -n: decode the samples as one batch sharing one "
                   "prefill, then print them (same output as one after another)")
    p.add_argument("--grid", nargs="+", default=None, metavar="NAME=V1,V2",
                   help="a table of continuations for every combination, e.g. temperature=0.2,0.8,1.2 top_p=0.9,1")
    _add_sampling_args(p)
    p.set_defaults(func=_sample)


def _sample(args: argparse.Namespace) -> int:
    import random

    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from .checkpoint import load_checkpoint
    from .common import resolve_device
    from .engine import Engine, collect
    from .sampling import grid_configs, parse_grid

    config = _sampling_config(args)
    grid = parse_grid(args.grid) if args.grid else None
    if args.num_samples < 1:
        raise MinigptError(f"-n {args.num_samples}: give at least 1 sample")
    ckpt = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    engine = Engine(ckpt.model, ckpt.tokenizer)
    ids = [ckpt.tokenizer.bos_id] + ckpt.tokenizer.encode(args.prompt)
    if config.seed is None:  # one seed for the whole run, printed so the run can be repeated
        config = config.with_overrides(seed=random.SystemRandom().randrange(2**31))
    note = (f"note: the text outgrew the model's {engine.block_size}-token context; the window slid (the model "
            f"saw only the most recent tokens)")
    if grid:
        table = Table(*grid, "continuation", title=escape(f"prompt {args.prompt!r} · seed {config.seed}"),
                      show_lines=True)
        slid = False
        for values, cfg in grid_configs(config, grid):
            gen = engine.generate(ids, cfg, use_cache=args.use_cache)
            slid |= gen.slid
            table.add_row(*(f"{v:g}" if isinstance(v, float) else str(v) for v in values.values()),
                          Text(gen.text))
        console.print(table)
        if slid:
            console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)
        return 0

    def footer(gen) -> None:
        t = gen.timings
        console.print(f"[dim]{len(gen.ids)} tokens · {t.tokens_per_s:.1f} tokens/s · first token "
                      f"{t.ttft_s * 1000:.0f} ms · {gen.finish_reason}"
                      + (f" · seed {gen.seed}" if gen.seed is not None else "") + "[/]")
        if gen.slid:
            console.print(f"[dim]{escape(note)}[/]", soft_wrap=True)

    def show(ev) -> None:  # stream the text as it is sampled
        if ev.text:
            console.file.write(ev.text)
            console.file.flush()

    n = args.num_samples
    if args.batch and n > 1:
        for i, gen in enumerate(engine.generate_many(ids, n, config, use_cache=args.use_cache)):
            console.print(f"[bold]── sample {i + 1}/{n}[/]")
            console.print(Text(args.prompt, style="bold") + Text(gen.text))
            footer(gen)
        return 0
    for i in range(n):
        if n > 1:
            console.print(f"[bold]── sample {i + 1}/{n}[/]")
        console.print(Text(args.prompt, style="bold"), end="")
        stream = engine.stream(ids, config.with_overrides(seed=config.seed + i), use_cache=args.use_cache)
        gen = collect(stream, on_event=show)[0]
        console.file.write("\n")
        footer(gen)
    return 0


@subcommand
def _add_chat(sub) -> None:
    p = sub.add_parser("chat", help="talk to a checkpoint in the terminal (streamed, multi-turn, slash commands)",
                       description="Chat with a fine-tuned checkpoint (a base model is continued as plain text). "
                                   "Enter sends, Alt-Enter (or Esc Enter) inserts a new line, Ctrl-C stops a "
                                   "reply, Ctrl-D exits, /help lists commands. With -p: answer once and exit; with "
                                   "a pipe on stdin: each line is a user turn, output is plain text.")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("-p", "--prompt", default=None, help="ask one question, print the answer, exit")
    p.add_argument("--mode", choices=("auto", "chat", "continue"), default="auto",
                   help="chat template or plain continuation (default: auto, from the checkpoint's stage)")
    _add_sampling_args(p)
    p.set_defaults(func=_chat)


def _chat(args: argparse.Namespace) -> int:
    from .chat import chat_main

    return chat_main(args.checkpoint, device=args.device, sampling=_sampling_config(args), system=args.system,
                     prompt=args.prompt, mode=args.mode, use_cache=args.use_cache)


# ---------------------------------------------------------------------------------------------- inspect


@subcommand
def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="look inside a checkpoint: attention heatmaps, token influence, embeddings",
                       description="Attention of a GPT checkpoint in the terminal, as a PNG or as a self-contained "
                                   "HTML page; the token-influence view of a generation; embedding neighbours.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def view_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--layer", type=int, default=-1, help="layer to show; negative counts from the end "
                       "(default: -1, the last)")
        q.add_argument("--head", default="mean", help="head number, or mean: the average over the layer's heads "
                       "(default: mean)")
        q.add_argument("--window", type=int, default=None, help="show the last N tokens (default: what fits the "
                       "terminal; 48 in the PNG, in the influence view)")
        q.add_argument("--no-bos", dest="bos", action="store_false", help="do not start the text with <|bos|>")
        q.add_argument("--html", default=None, metavar="FILE", help="also write a self-contained HTML page "
                       "(pick layer and head, hover tokens, the influence view)")
        q.add_argument("--png", default=None, metavar="FILE", help="also write every layer x head as thumbnails "
                       "and the chosen head large (the last --window tokens) to a PNG")

    a = actions.add_parser("attention", help="a query x key heatmap of a text (terminal, --png, --html)",
                           description="Run the text through the checkpoint and show one layer's head (or the "
                                       "mean of its heads) as a query x key heatmap.")
    a.add_argument("--checkpoint", required=True, help="run folder (its latest step), or a step_* folder")
    a.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    a.add_argument("text", help="the text ('-' reads standard input)")
    view_args(a)
    a.add_argument("--view", choices=("heatmap", "influence"), default="heatmap",
                   help="heatmap, or influence: each token after the first with the earlier tokens coloured by "
                        "how much its prediction attended to them (default: heatmap)")
    a.set_defaults(func=_inspect_attention)
    g = actions.add_parser("generate", help="generate, showing what each new token attended to",
                           description="Generate through the engine with attention capture and show, for each "
                                       "new token, the earlier tokens coloured by how much its prediction "
                                       "attended to them (red: the new token; blue: strong; grey: weak). "
                                       "--max-new-tokens defaults to 32 here.")
    g.add_argument("prompt", nargs="?", default="", help="text to continue (default: empty, from <|bos|>)")
    _add_sampling_args(g)
    view_args(g)
    g.set_defaults(func=_inspect_generate)
    e = actions.add_parser("embeddings", help="nearest tokens by embedding cosine; --png: a 2-D PCA map",
                           description="Token embeddings of any checkpoint with an embedding table.")
    e.add_argument("--checkpoint", required=True, help="run folder (its latest step), or a step_* folder")
    e.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    e.add_argument("--token", default=None, metavar="WORD", help="a token (its text, or #ID) to find neighbours of")
    e.add_argument("--top", type=int, default=10, help="how many neighbours (default: 10)")
    e.add_argument("--png", default=None, metavar="FILE", help="write a labelled PCA map of frequent tokens")
    e.add_argument("--count", type=int, default=200, help="tokens in the PCA map (default: 200)")
    e.set_defaults(func=_inspect_embeddings)


def _inspect_attention(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from . import inspect as insp
    from . import inspect_plots as plots
    from .checkpoint import load_checkpoint
    from .common import resolve_device

    ckpt = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    text = sys.stdin.read() if args.text == "-" else args.text
    rec = insp.record(ckpt.model, ckpt.tokenizer, insp.encode_text(ckpt.tokenizer, text, args.bos))
    layer, head = rec.check(args.layer, insp.parse_head(args.head))
    if args.view == "influence":
        console.print(insp.influence_view(rec, layer, head, window=args.window or 48))
    else:
        console.print(insp.heatmap_text(rec, layer, head, window=args.window, width=console.width))
    if rec.start:
        console.print(f"[dim]the text is longer than the {len(rec)}-token context: its last {len(rec)} tokens "
                      f"were run[/]")
    title = f"attention · {insp.describe(ckpt)}"
    if args.png:
        for note in plots.save_png(rec, args.png, layer, head, window=args.window or 48, title=title):
            console.print(f"[yellow]note:[/] {escape(note)}")
        console.print(f"wrote {escape(args.png)}")
    if args.html:
        insp.save_html(rec, args.html, layer=layer, head=head, title="minigpt attention", info=insp.describe(ckpt))
        console.print(f"wrote {escape(args.html)}")
    return 0


def _inspect_generate(args: argparse.Namespace) -> int:
    import random

    from rich.markup import escape

    from . import inspect as insp
    from . import inspect_plots as plots
    from .checkpoint import load_checkpoint
    from .common import resolve_device
    from .engine import Engine

    config = _sampling_config(args)
    if "max_new_tokens" not in vars(args):  # one line per token: a shorter default than sample's
        config = config.with_overrides(max_new_tokens=32)
    if config.seed is None and not config.greedy:
        config = config.with_overrides(seed=random.SystemRandom().randrange(2**31))
    ckpt = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    model, tok = ckpt.model, ckpt.tokenizer
    insp.require_attention(model)
    c = model.config
    layer, head = insp.check_view(c.n_layer, c.n_head, args.layer, insp.parse_head(args.head))
    ids = insp.encode_text(tok, args.prompt, args.bos)
    console.print(f"[dim]{escape(insp.describe(ckpt))} · layer {layer}, "
                  f"{'mean of heads' if head == 'mean' else f'head {head}'}[/]")
    steps = insp.print_steps(insp.stream_influence(Engine(model, tok), ids, config, use_cache=args.use_cache),
                             ids, tok, layer, head, window=args.window or 48, show=console.print)
    console.print(insp.influence_legend())
    generated = [s.token_id for s in steps]
    console.print(f"[dim]{len(steps)} tokens" + (f" · seed {config.seed}" if config.seed is not None else "")
                  + "[/]")
    if args.html or args.png:  # one full forward: equal to the rows captured while decoding (tested)
        rec = insp.record(model, tok, ids + generated, prompt_len=len(ids))
        if args.png:
            for note in plots.save_png(rec, args.png, layer, head, window=args.window or 48,
                                      title=f"generation · {insp.describe(ckpt)}"):
                console.print(f"[yellow]note:[/] {escape(note)}")
            console.print(f"wrote {escape(args.png)}")
        if args.html:
            insp.save_html(rec, args.html, layer=layer, head=head, title="minigpt generation",
                           info=insp.describe(ckpt))
            console.print(f"wrote {escape(args.html)}")
    return 0


def _inspect_embeddings(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from . import inspect as insp
    from . import inspect_plots as plots
    from .checkpoint import load_checkpoint
    from .common import resolve_device

    if not args.token and not args.png:
        raise MinigptError("give --token WORD (nearest tokens) and/or --png FILE (a PCA map)")
    ckpt = load_checkpoint(args.checkpoint, device=resolve_device(args.device))
    model, tok = ckpt.model, ckpt.tokenizer
    marked: list[int] = []
    if args.token:
        token_id, note = plots.find_token(tok, args.token)
        if note:
            console.print(f"[dim]{escape(note)}[/]")
        rows = plots.nearest_tokens(model, tok, token_id, args.top)
        table = Table("#", "id", "token", "cosine", title=escape(f"nearest to {insp.token_text(tok, token_id)!r} "
                                                                  f"(id {token_id})"))
        for n, (i, text, cos) in enumerate(rows, 1):
            table.add_row(str(n), str(i), Text(repr(text)), f"{cos:+.3f}")
        console.print(table)
        marked = [token_id] + [i for i, _, _ in rows]
    if args.png:
        for note in plots.save_embedding_png(model, tok, args.png, count=args.count, highlight=marked,
                                            title=f"token embeddings · {insp.describe(ckpt)}"):
            console.print(f"[yellow]note:[/] {escape(note)}")
        console.print(f"wrote {escape(args.png)}")
    return 0


# ---------------------------------------------------------------------------------------------- speedrun


@subcommand
def _add_speedrun(sub) -> None:
    p = sub.add_parser("speedrun", help="the whole pipeline on the built-in data, with a report card",
                       description="tokenizer -> prepare -> pretrain -> sft -> reward -> dpo -> rl on the built-in "
                                   "pydocs data within a time budget, then a report card (markdown + PNG). Rerun "
                                   "with the same --out to resume an interrupted speedrun.")
    p.add_argument("--budget", default="30m", help="wall-clock budget, e.g. 30m, 5m, 90s, 1h (default: 30m)")
    p.add_argument("--out", default="checkpoints/speedrun", help="folder for the runs and the report "
                   "(default: checkpoints/speedrun)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default: auto)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from finished stages")
    p.set_defaults(func=_speedrun)


def _speedrun(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .common import parse_seconds
    from .speedrun import speedrun, write_report

    if args.report_only:
        console.print(f"wrote {write_report(Path(args.out))}")
        return 0
    speedrun(parse_seconds(args.budget), args.out, seed=args.seed, device=args.device)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minigpt",
        description="From raw text to a GPT you can chat with: tokenizer, pretraining, SFT, DPO, RL, "
                    "sampling, chat, attention inspection and baselines.",
    )
    parser.add_argument("--version", action="version", version=f"minigpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MinigptError as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
