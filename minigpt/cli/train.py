"""`minigpt prepare | pretrain | sft | reward | dpo | rl`: tokenize a corpus, then the training stages.

Every stage takes `--out`, `--resume` and `--config` and follows one rule (checkpoint.check_run_dir): a new run
needs a folder that holds no run, checked before any tokenizer or data work; `--resume` continues exactly.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.markup import escape

from ..common import MinigptError, console, print0
from .args import add_checkpoint, add_data, add_model, add_run, add_train, model_config, require_out, train_config

_SOURCES = ".jsonl/.json/.parquet/.csv file or Hub dataset id"
STAGES = {
    "sft": ("supervised fine-tuning on conversations (loss on assistant replies only)",
            f"conversations ({_SOURCES}): {{\"messages\": [...]}} or {{\"prompt\", \"completion\"}} (default: "
            "built-in chat tasks)"),
    "reward": ("train a Bradley-Terry reward model on preference pairs",
               f"preferences ({_SOURCES}): {{\"prompt\", \"chosen\", \"rejected\"}} as strings, or TRL's "
               "conversational form (chosen/rejected as message lists, prompt explicit or implicit) (default: "
               "built-in pairs)"),
    "dpo": ("direct preference optimisation against a frozen copy of the parent",
            f"preferences ({_SOURCES}): {{\"prompt\", \"chosen\", \"rejected\"}} as strings, or TRL's "
            "conversational form (chosen/rejected as message lists, prompt explicit or implicit) (default: "
            "built-in pairs)"),
    "rl": ("on-policy policy gradient against a reward, with a KL leash to the parent",
           f"prompts ({_SOURCES}): {{\"prompt\", ...extra fields for the reward}} (default: built-in questions)"),
}


def register(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize a text source into train/val token shards",
                       description="Tokenize a source into data/<name>/{train,val}.bin (memory-mapped) + meta.json "
                                   "($MINIGPT_DATA instead of data/ when set).")
    add_data(p)
    p.add_argument("--out", default=None, help="output folder (default: data/<source>-<tokenizer>)")
    p.add_argument("--num-proc", type=int, default=None, help="tokenizer processes (default: by corpus size)")
    p.add_argument("--force", action="store_true", help="re-tokenize even when the shards are current")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("pretrain", help="train a language model on next-token prediction",
                       description="Train a GPT (or a baseline) on a text source. With no arguments: the tiny GPT "
                                   "on the built-in pydocs corpus, a few minutes on 2 CPU cores.")
    add_data(p)
    add_run(p, "run folder (default: checkpoints/<source>-<model>)")
    p.add_argument("--sample-prompt", default="", help="prompt for the sample printed at each evaluation")
    _add_init_from(p)
    add_model(p)
    add_train(p)
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
    console.print(f"wrote {escape(str(prepared.path))}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from ..checkpoint import read_run_info
    from ..train.pretrain import pretrain

    if args.resume:
        info = read_run_info(require_out(args))
        _refuse_changes(args, info)
        result = pretrain(resume=True, out=args.out, train_config=train_config(args, info.get("train")),
                          sample_prompt=args.sample_prompt)
    elif args.init_from:
        from ..checkpoint import read_config, resolve_step
        from ..export.hf_import import hf_start

        if args.preset or args.depth:
            raise MinigptError("--preset/--depth: the model's size comes from --init-from; drop them")
        start = hf_start(args.init_from)
        base = read_config(resolve_step(start))["model"]
        result = pretrain(args.data, model_config=model_config(args, base=base), init_from=start,
                          train_config=train_config(args), out=args.out, sample_prompt=args.sample_prompt)
    else:
        shaped = args.preset or args.depth or any(hasattr(args, f) for f in ("n_layer", "n_embd", "n_head"))
        result = pretrain(args.data, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                          model_config=model_config(args), train_config=train_config(args),
                          out=args.out, sample_prompt=args.sample_prompt,
                          autosize=getattr(args, "max_seconds", None) is not None and not shaped
                          and args.model in (None, "gpt"))
    return _done(result)


def _register_stage(sub, name: str) -> None:
    from ..train.finetune import STAGE_DEFAULTS

    summary, data_help = STAGES[name]
    p = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ". The model shape and "
                       "tokenizer come from the parent checkpoint.")
    add_checkpoint(p, required=False, help="parent run folder, RUN/best, or a step_* folder; required "
                          "unless --resume")
    p.add_argument("--data", default=None, help=data_help)
    add_run(p, f"run folder (default: <parent run>-{name})")
    if name == "sft":
        _add_init_from(p)
    if name == "dpo":
        from ..train.finetune import RPO_ALPHA

        p.add_argument("--beta", type=float, default=0.1, help="DPO temperature: how far from the reference the "
                       "policy may move (default: 0.1)")
        p.add_argument("--rpo-alpha", type=float, default=RPO_ALPHA, help="weight of the SFT loss on the chosen "
                       f"reply (RPO; 0 = plain DPO) (default: {RPO_ALPHA:g})")
    if name == "rl":
        from ..config import add_dataclass_args
        from ..train.rl import RLConfig

        p.add_argument("--reward", default=None,
                       help="rm:RUN_DIR (a reward model) or python:module:function (default: "
                            "python:minigpt.train.rewards:task_reward: token F1 against each prompt's 'reference', "
                            "and for the built-in identity, out-of-world and how-to questions also whether the reply "
                            "says what it must). "
                            "python: is code execution: it imports that module, which runs its code, and under "
                            "`python -m minigpt` the current folder comes first on the import path. On --resume "
                            "a run's own non-default reward must be given again (never taken from run.json alone)")
        add_dataclass_args(p, RLConfig, title="rl")
    add_train(p, shown=STAGE_DEFAULTS[name])
    p.set_defaults(func=_stage, stage=name)


def _stage(args: argparse.Namespace) -> int:
    from ..checkpoint import read_run_info
    from ..config import resolve_config
    from ..train import finetune, rl

    base = dict(finetune.STAGE_DEFAULTS[args.stage])
    if args.resume:
        info = read_run_info(require_out(args))
        _refuse_changes(args, info)
        base.update(info.get("train", {}))
    common = dict(train_config=train_config(args, base), out=args.out, resume=args.resume)
    if getattr(args, "init_from", None) and not args.resume:
        from ..export.hf_import import hf_start

        if args.checkpoint:
            raise MinigptError("--checkpoint and --init-from both name the parent; give one of them")
        args.checkpoint = hf_start(args.init_from)
        common["out"] = args.out or Path("checkpoints") / f"{Path(str(args.init_from).rstrip('/')).name}-{args.stage}"
    if args.stage == "dpo":
        result = finetune.dpo(args.checkpoint, args.data, beta=args.beta, rpo_alpha=args.rpo_alpha, **common)
    elif args.stage == "rl":
        rl_config = resolve_config(rl.RLConfig, args)
        result = rl.rl(args.checkpoint, args.data, reward=args.reward, rl_config=rl_config, **common)
    else:
        result = getattr(finetune, args.stage)(args.checkpoint, args.data, **common)
    return _done(result)


def _refuse_changes(args: argparse.Namespace, info: dict) -> None:
    """`--resume` continues a run as it started (its data, tokenizer, model, parent and objective): a flag that
    would change one of them is refused rather than ignored. Training flags (--max-iters, --lr, ...) may change."""
    from ..checkpoint import resolve_step, run_path
    from ..config import flag

    def given(name: str) -> bool:  # typed (or from --config): present where flags default to absent, else not
        value, default = getattr(args, name, None), args._parser.get_default(name)  # the parser's default
        return value is not None and (default == argparse.SUPPRESS or value != default)

    def same(name: str, value, recorded) -> bool:
        if name in ("data", "tokenizer") and Path(str(value)).exists() and Path(str(recorded)).exists():
            return Path(str(value)).resolve() == Path(str(recorded)).resolve()
        if name == "checkpoint":
            return resolve_step(value).resolve() == Path(str(recorded)).resolve()
        return value == recorded

    recorded = {"data": run_path(info, info.get("data")), "tokenizer": run_path(info, info.get("tokenizer")),
                "vocab_size": info.get("vocab_size"), "checkpoint": run_path(info, info.get("parent")),
                "beta": info.get("beta"), "rpo_alpha": info.get("rpo_alpha"),
                **{k: v for k, v in (info.get("model") or {}).items() if k not in ("kind", "vocab_size")},
                **(info.get("rl") or {})}
    for name in ("preset", "depth", "model", "init_from"):
        if given(name):
            raise MinigptError(f"{flag(name)}: --resume continues {args.out} with the model it started with; drop "
                               f"{flag(name)}, or start a new run with another --out")
    for name, was in recorded.items():
        value = getattr(args, name, None)
        if was is not None and given(name) and not same(name, value, was):
            typed = (flag(name) if value else f"--no-{flag(name)[2:]}") if isinstance(value, bool) else \
                f"{flag(name)} {value}"
            raise MinigptError(f"{typed}: --resume continues {args.out} as it started, with {flag(name)[2:]} {was}; "
                               f"drop {flag(name)}, or start a new run with another --out")


def _add_init_from(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-from", default=None, metavar="DIR_OR_HUB_ID",
                   help="start from a Hugging Face GPT-2 (a local folder, or a Hub id such as "
                   "openai-community/gpt2 when online) or a minigpt run: its weights and its tokenizer (GPT-2's "
                   "ids, minigpt's 5 special tokens appended, their embedding rows mean-initialised)")


def _done(result) -> int:
    if result.interrupted:
        return 130
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items() if k.startswith("val/"))
    best = f", best {result.best_by} {result.best_val:.4f}" if math.isfinite(result.best_val) else ""
    print0(f"[green]done[/]: step {result.step}, {shown}{best} -> {escape(str(result.run_dir))}")  # once
    return 0
