"""`minigpt prepare | pretrain | sft | reward | dpo | rl`: tokenize a corpus, then the training stages.

Every stage takes `--out`, `--resume` and `--config` and follows one rule (checkpoint.check_run_dir): a new run
needs a folder that holds no run, checked before any tokenizer or data work; `--resume` continues exactly.
"""
from __future__ import annotations

import argparse

from ..common import console
from . import args as shared

STAGES = {
    "sft": ("supervised fine-tuning on conversations (loss on assistant replies only)",
            "conversations JSONL: {\"messages\": [...]} or {\"prompt\", \"completion\"} (default: built-in chat "
            "tasks)"),
    "reward": ("train a Bradley-Terry reward model on preference pairs",
               "preferences JSONL: {\"prompt\", \"chosen\", \"rejected\"} (default: built-in pairs)"),
    "dpo": ("direct preference optimisation against a frozen copy of the parent",
            "preferences JSONL: {\"prompt\", \"chosen\", \"rejected\"} (default: built-in pairs)"),
    "rl": ("on-policy policy gradient against a reward, with a KL leash to the parent",
           "prompts JSONL: {\"prompt\", ...extra fields for the reward} (default: built-in questions)"),
}


def register(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize a text source into train/val token shards",
                       description="Tokenize a source into data/<name>/{train,val}.bin (memory-mapped) + meta.json "
                                   "($MINIGPT_DATA instead of data/ when set).")
    shared.add_data(p)
    p.add_argument("--out", default=None, help="output folder (default: data/<source>-<tokenizer>)")
    p.add_argument("--num-proc", type=int, default=None, help="tokenizer processes (default: by corpus size)")
    p.add_argument("--force", action="store_true", help="re-tokenize even when the shards are current")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("pretrain", help="train a language model on next-token prediction",
                       description="Train a GPT (or a baseline) on a text source. With no arguments: the tiny GPT "
                                   "on the built-in pydocs corpus, a few minutes on 2 CPU cores.")
    shared.add_data(p)
    shared.add_run(p, "run folder (default: checkpoints/<source>-<model>)")
    p.add_argument("--sample-prompt", default="", help="prompt for the sample printed at each evaluation")
    shared.add_model(p)
    shared.add_train(p)
    p.set_defaults(func=_pretrain)

    for name in STAGES:
        _register_stage(sub, name)


def _prepare(args: argparse.Namespace) -> int:
    from ..text.shards import prepare, resolve_tokenizer
    from ..text.sources import open_source

    source = open_source(args.data)
    tokenizer = resolve_tokenizer(args.tokenizer, source, args.vocab_size)
    prepared = prepare(source, tokenizer, out=args.out, num_proc=args.num_proc, force=args.force)
    for split, s in prepared.meta["splits"].items():
        console.print(f"{split}: {s['tokens']:,} tokens, {s['bytes']:,} bytes "
                      f"({s['bytes'] / max(1, s['tokens']):.2f} bytes/token)")
    console.print(f"wrote {prepared.path}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from ..checkpoint import read_run_info
    from ..train.pretrain import pretrain

    if args.resume:
        info = read_run_info(shared.require_out(args))
        result = pretrain(resume=True, out=args.out, train_config=shared.train_config(args, info.get("train")),
                          sample_prompt=args.sample_prompt)
    else:
        result = pretrain(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                          model_config=shared.model_config(args), train_config=shared.train_config(args),
                          out=args.out, sample_prompt=args.sample_prompt)
    return _done(result)


def _register_stage(sub, name: str) -> None:
    from ..train.finetune import STAGE_DEFAULTS

    summary, data_help = STAGES[name]
    p = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ". The model shape and "
                       "tokenizer come from the parent checkpoint.")
    shared.add_checkpoint(p, required=False, help="parent run folder, RUN/best, or a step_* folder; required "
                          "unless --resume")
    p.add_argument("--data", default=None, help=data_help)
    shared.add_run(p, f"run folder (default: <parent run>-{name})")
    if name == "dpo":
        p.add_argument("--beta", type=float, default=0.1, help="DPO temperature: how far from the reference the "
                       "policy may move (default: 0.1)")
    if name == "rl":
        from ..config import add_dataclass_args
        from ..train.rl import RLConfig

        p.add_argument("--reward", default="python:minigpt.train.rewards:token_f1",
                       help="rm:RUN_DIR (a reward model) or python:module:function (default: token F1 against "
                            "each prompt's 'reference'). python: imports that module, so it runs its code; "
                            "modules in the current folder are found first")
        add_dataclass_args(p, RLConfig, title="rl")
    shared.add_train(p, shown=STAGE_DEFAULTS[name])
    p.set_defaults(func=_stage, stage=name)


def _stage(args: argparse.Namespace) -> int:
    from ..checkpoint import read_run_info
    from ..config import resolve_config
    from ..train import finetune, rl

    base = dict(finetune.STAGE_DEFAULTS[args.stage])
    if args.resume:
        base.update(read_run_info(shared.require_out(args)).get("train", {}))
    common = dict(train_config=shared.train_config(args, base), out=args.out, resume=args.resume)
    if args.stage == "dpo":
        result = finetune.dpo(args.checkpoint, args.data, beta=args.beta, **common)
    elif args.stage == "rl":
        rl_config = resolve_config(rl.RLConfig, args)
        result = rl.rl(args.checkpoint, args.data, reward=args.reward, rl_config=rl_config, **common)
    else:
        result = getattr(finetune, args.stage)(args.checkpoint, args.data, **common)
    return _done(result)


def _done(result) -> int:
    if result.interrupted:
        return 130
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith("val/"))
    best = f", best {result.best_val:.4f}" if getattr(result, "best_val", None) is not None else ""
    console.print(f"[green]done[/]: step {result.step}, {shown}{best} -> {result.run_dir}")
    return 0
