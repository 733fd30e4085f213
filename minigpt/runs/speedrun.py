"""`minigpt speedrun`: the whole pipeline on the built-in data in one command, and its report card.

tokenizer -> prepare -> pretrain -> sft -> reward -> dpo -> rl, each stage the same library function its own
subcommand calls, each given a share of the wall-clock budget (the trainer's `max_seconds`, so the learning-rate
schedule follows time). Progress is recorded in <out>/speedrun.json after every stage, so an interrupted
speedrun rerun with the same --out resumes the stage it was in and skips finished ones (a finished run's report
card too: `--report-only` rewrites it).

Each chat stage starts from the one before (SFT from pretraining, DPO from SFT, RL from DPO); the reward model
starts from SFT and is measured, not used (RL's default reward is the task's own, `train/rewards.py`).

The report card (runs/report_card.py) measures every stage on held-out data. Pretraining hands on its
best-val-loss step, the other stages their last (`checkpoint_of`). Pretraining compiles the model
(torch.compile) where that pays (`pretrain.compile_pays`)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..train import finetune, rl
from ..common import MinigptError, atomic_write_text, console, seed_everything
from ..train.pretrain import pretrain
from ..models.gpt import GPTConfig
from ..train.trainer import Diverged, TrainConfig
from .report_card import PARENTS, checkpoint_of, read_state, write_report_card

# Shares of the budget left after tokenizer training and data preparation. Pretraining had 49% and SFT 24% until
# sr56: with 15% of the budget moved from pretraining to SFT the base model reads 0.045-0.06 bits per byte worse and
# the chat answers better at every stage (README "What changed since").
SHARES = {"pretrain": 0.34, "sft": 0.39, "reward": 0.03, "dpo": 0.07, "rl": 0.12, "report": 0.05}


def _save_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write_text(out / "speedrun.json", json.dumps(state, indent=2))


def stage_config(stage: str, seconds: float, **fixed: Any) -> TrainConfig:
    """A stage's training config under a time budget: the schedule follows elapsed time, not steps."""
    defaults = PRETRAIN if stage == "pretrain" else finetune.STAGE_DEFAULTS[stage]
    return TrainConfig(**{**defaults, "max_iters": 1_000_000, "max_seconds": max(5.0, seconds), **fixed})


# The built-in corpus and the pretraining recipe under a time budget (the sweep in the README chose them on 2 CPU
# cores); the model's depth and width are picked for the budget (train/autosize.py), its context is 256 tokens so
# that a pasted function and its question fit.
CORPUS = "stdlib"
PRETRAIN = dict(eval_interval=250, eval_iters=10, batch_size=16, optimizer="muon", lr=4e-3, min_lr=1e-4,
                warmup_iters=100)
BLOCK_SIZE = 256


def prepare_corpus(name: str) -> None:
    """Train (or find cached) the default tokenizer on the corpus and tokenize it into shards."""
    from ..text.shards import DEFAULT_VOCAB, prepare, resolve_tokenizer
    from ..text.sources import open_source

    source = open_source(name)
    prepare(source, resolve_tokenizer("auto", source, DEFAULT_VOCAB))


def _settings(out: Path, state: dict[str, Any], budget: float | None, seed: int | None) -> tuple[float, int]:
    """The budget and seed of the speedrun in `out`: a new one records them (defaults 30 minutes, 1337); a rerun
    resumes with its own, and one given other values is refused (its stages' shares came from them)."""
    given = {"budget": budget, "seed": seed}
    if "budget" not in state:
        state.update(budget=1800.0 if budget is None else budget, seed=1337 if seed is None else seed)
        return state["budget"], state["seed"]
    changed = [f"--budget {_duration(state[k])}" if k == "budget" else f"--{k} {state[k]}"
               for k, v in given.items() if v is not None and v != state[k]]
    if changed:
        raise MinigptError(f"--out {out} holds a speedrun started with {' '.join(changed)}; rerun without those "
                           f"flags (or with these) to {'see' if state.get('reported') else 'resume'} it, or give "
                           "another --out for a new one")
    return state["budget"], state["seed"]


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


def speedrun(budget: float | None = None, out: str | Path = "checkpoints/speedrun", *, seed: int | None = None,
             device: str = "auto") -> Path:
    """Run every stage within `budget` seconds (default 30 minutes; a rerun: the one `out` was started with);
    returns the report path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = read_state(out)
    budget, seed = _settings(out, state, budget, seed)
    started = time.perf_counter() - state.get("elapsed", 0.0)
    console.rule(f"[bold]minigpt speedrun[/]: budget {budget / 60:.1f} min -> {out}")
    seed_everything(seed)

    def remaining_share(stage: str) -> float:
        left = budget - (time.perf_counter() - started)
        todo = [s for s in SHARES if s not in state["stages"]]
        return max(5.0, left * SHARES[stage] / sum(SHARES[s] for s in todo))

    def run(stage: str, fn) -> None:
        if stage in state["stages"]:
            console.print(f"[dim]{stage}: done earlier, skipping[/]")
            return
        run_dir = out / stage
        resume = (run_dir / "latest").is_file()
        console.rule(f"{stage}{' (resuming)' if resume else ''}")
        # a stage's share is fixed when it first starts: resumed, its trainer's clock goes on from where it was
        seconds = state.setdefault("shares", {}).setdefault(stage, remaining_share(stage))
        _save_state(out, state)
        try:
            result = fn(run_dir, seconds, resume)
        except Diverged as e:  # the recipe has no --lr to lower: the advice for `pretrain` does not apply
            raise MinigptError(f"{stage}: {e.what}. The speedrun's recipe should not diverge: start it again with "
                               "another --seed and --out, and please report it") from None
        state["elapsed"] = time.perf_counter() - started  # an interrupted attempt's time counts too
        if not result.interrupted:
            state["stages"][stage] = {"run": str(run_dir), "step": result.step, "metrics": result.metrics}
            state.pop("reported", None)
        _save_state(out, state)
        if result.interrupted:
            raise KeyboardInterrupt

    fixed = dict(seed=seed, device=device)
    prepare_corpus(CORPUS)  # before the shares are computed: tokenizer and shards are cached for pretrain
    shape = GPTConfig(block_size=BLOCK_SIZE)
    run("pretrain", lambda d, s, r: pretrain(CORPUS, out=d, resume=r, model_config=shape, autosize=True,
                                             train_config=stage_config("pretrain", s, **fixed)))
    for stage, fn in (("sft", finetune.sft), ("reward", finetune.reward), ("dpo", finetune.dpo), ("rl", rl.rl)):
        start = checkpoint_of(out, PARENTS[stage])
        run(stage, lambda d, s, r, fn=fn, start=start, stage=stage: fn(start, out=d, resume=r,
                                                                       train_config=stage_config(stage, s, **fixed)))
    report = out / "report.md"
    if state.get("reported") and report.is_file():  # a finished run rerun: its card is already written
        console.print("[dim]report card: written earlier, skipping (--report-only rewrites it)[/]")
    else:
        console.rule("report card")
        report = write_report_card(out, state)
        state["reported"] = True
        state["total"] = time.perf_counter() - started  # "elapsed" stays the stages' time, as the card says
        _save_state(out, state)
    console.print(f"\n[bold green]speedrun finished[/] in {state.get('total', state['elapsed']) / 60:.1f} min. "
                  f"Report: {escape(str(report))}")
    console.print(f"Chat with the final model:\n  [bold]minigpt chat --checkpoint {escape(str(out / 'rl'))}[/]")
    return report
