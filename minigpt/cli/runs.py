"""`minigpt compare` (every model family on the same data and budget, one report) and `minigpt speedrun` (the
whole pipeline on the built-in data, with a report card)."""
from __future__ import annotations

import argparse

from rich.markup import escape

from ..common import MinigptError, console
from .args import add_data, add_device


def register(sub) -> None:
    from ..runs.compare import DEFAULT_MODELS, LR

    p = sub.add_parser("compare", help="train bigram, MLP, CNN, RNN, LSTM, GRU and GPT on your data; write a report",
                       description="Train each model kind at about the same parameter count with the same time or "
                                   "token budget on the same data, then write report.md + curves.png (params, "
                                   "FLOPs, speed, losses, bits per byte, samples, learning curves). Rerunning the "
                                   "same command resumes an interrupted comparison and skips finished models.")
    add_data(p, tokenizer="char")
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
    p.add_argument("--evals", type=int, default=8, help="at most this many evaluations per model (the "
                   "learning-curve points); under a time budget at least 2 x --eval-iters steps apart (default: 8)")
    p.add_argument("--eval-iters", type=int, default=10, help="batches per evaluation (default: 10)")
    p.add_argument("--samples", type=int, default=100, help="lines sampled per model for the memorisation check "
                   "on line data (default: 100)")
    p.add_argument("--line-check", action=argparse.BooleanOptionalAction, default=None,
                   help="force the memorisation check on or off (default: on when most lines are short)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    add_device(p)
    p.add_argument("--out", default=None, help="comparison folder (default: checkpoints/compare-<source>)")
    p.add_argument("--resume", action="store_true", help="accepted for symmetry: rerunning always resumes")
    p.add_argument("--report-only", action="store_true", help="regenerate report.md and curves.png from --out's "
                   "results.json without training")
    p.add_argument("--task", default=None, metavar="NAME", help="train on a synthetic task instead of --data and "
                   "report accuracy against the gap: recall (associative recall; see `minigpt learn why-attention`)")
    p.set_defaults(func=_compare, data_defaults={name: p.get_default(name) for name in DATA_ONLY})
    _register_speedrun(sub)


DATA_ONLY = ("data", "tokenizer", "vocab_size", "block_size", "evals", "eval_iters", "samples", "line_check")


def _compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..common import parse_seconds
    from ..runs.compare import CompareConfig, compare, parse_count
    from ..runs.compare_report import read_results, write_report

    if args.report_only:
        if not args.out:
            raise MinigptError("--report-only needs --out DIR (a comparison folder)")
        results = read_results(Path(args.out))
        if results.get("task"):  # accuracy against the gap, written by the lesson's code
            from ..learn.tasks import write_task_report

            console.print(f"wrote {escape(str(write_task_report(results, Path(args.out))))}")
        else:
            console.print(f"wrote {escape(str(write_report(args.out)))}")
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
    if args.task:
        from ..learn.tasks import compare_task, get_task

        given = ["--" + k.replace("_", "-") for k, v in args.data_defaults.items() if getattr(args, k) != v]
        if given:
            raise MinigptError(f"--task {args.task}: {', '.join(given)} do not apply to a synthetic task (it makes "
                               "its own data, vocabulary and sequences and scores accuracy); leave them out")
        compare_task(get_task(args.task), config, out=Path(args.out or f"checkpoints/compare-task-{args.task}"))
        return 0
    result = compare(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size, config=config, out=args.out)
    return 130 if result.interrupted else 0


def _register_speedrun(sub) -> None:
    p = sub.add_parser("speedrun", help="the whole pipeline on the built-in data, with a report card",
                       description="tokenizer -> prepare -> pretrain -> sft -> reward -> dpo -> rl on the built-in "
                                   "stdlib data within a time budget, then a report card (markdown + PNG). Rerun "
                                   "with the same --out to resume an interrupted speedrun (a finished one is not "
                                   "redone).")
    p.add_argument("--budget", default=None, help="wall-clock budget of the stages, e.g. 30m, 5m, 90s, 1h; the "
                   "report card's evaluation (a minute or two on 2 cores) comes after them (default: 30m; a rerun: "
                   "the --out run's own)")
    p.add_argument("--out", default="checkpoints/speedrun", help="folder for the runs and the report "
                   "(default: checkpoints/speedrun)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 1337; a rerun: the --out run's own)")
    add_device(p)
    p.add_argument("--report-only", action="store_true", help="only rewrite the report from finished stages")
    p.set_defaults(func=_speedrun)


def _speedrun(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..common import parse_seconds
    from ..runs.report_card import write_report_card
    from ..runs.speedrun import speedrun

    if args.report_only:
        if not (Path(args.out) / "speedrun.json").is_file():
            raise MinigptError(f"--out {args.out}: no speedrun there (no speedrun.json) to write a report card for; "
                               f"run `minigpt speedrun --out {args.out}` first")
        console.print(f"wrote {escape(str(write_report_card(Path(args.out))))}")
        return 0
    budget = None if args.budget is None else parse_seconds(args.budget)
    if budget is not None and budget < 30:
        raise MinigptError(f"--budget {args.budget}: too short for the five training stages (each gets at least "
                           "5 s); give 30s or more, e.g. 5m")
    speedrun(budget, args.out, seed=args.seed, device=args.device)
    return 0
