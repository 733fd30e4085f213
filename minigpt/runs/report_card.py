"""The speedrun's report card: every stage measured on held-out data, in <out>/report.md (+ report.json, PNGs).

Pretraining val loss and bits per byte; answer F1 on held-out functions for the base, SFT, DPO and RL models
(greedy, the same prompts); reward-model pairwise accuracy; DPO preference accuracy (policy log-prob of chosen
above rejected) before and after; RL mean reward before and after (of replies sampled at the rollout
temperature: what RL optimises; and of the greedy reply), with its KL to the reference; and the four models'
answers side by side. `write_report_card(out)` can be rerun at any time from a speedrun folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..common import atomic_write_text
from ..text import chat_tasks

MODELS = ("pretrain", "sft", "dpo", "rl")
LABELS = {"pretrain": "base", "sft": "SFT", "dpo": "DPO", "rl": "RL"}


def checkpoint_of(out: Path, stage: str) -> Path:
    """The checkpoint a stage hands on and is judged by. Pretraining and SFT: the step with the lowest val loss
    (early stopping: on this small corpus SFT starts to overfit part-way through its share); DPO and RL, whose
    val loss is not the goal: the last step (also when no step beat the parent's val loss)."""
    best = out / stage / "best"
    return best if stage in ("pretrain", "sft") and best.is_file() else out / stage


def read_state(out: Path) -> dict[str, Any]:
    """<out>/speedrun.json: the finished stages, their results and the time used."""
    path = out / "speedrun.json"
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


def heldout_answers(out: Path, n: int = 96, max_new_tokens: int = 48) -> dict[str, Any]:
    """Greedy answers of each stage's model to the same held-out questions, with token F1 to the reference."""
    from ..text.chat_format import render_prompt
    from ..checkpoint import load_checkpoint
    from ..infer.engine import Engine
    from ..train.rewards import f1

    prompts = [p for p in chat_tasks.rl_prompts() if p["split"] == "val"][:n]
    answers: dict[str, list[str]] = {}
    scores: dict[str, float] = {}
    for stage in MODELS:
        if not (out / stage / "latest").is_file():
            continue
        ckpt = load_checkpoint(checkpoint_of(out, stage))
        engine = Engine(ckpt.model, ckpt.tokenizer)
        texts = [engine.generate(render_prompt(ckpt.tokenizer, [{"role": "user", "content": p["prompt"]}]),
                                 max_new_tokens=max_new_tokens, temperature=0.0).text.strip() for p in prompts]
        answers[stage] = texts
        scores[stage] = sum(f1(t, p["reference"]) for t, p in zip(texts, prompts)) / max(1, len(prompts))
    return {"prompts": prompts, "answers": answers, "f1": scores}


def _eval_rows(run_dir: Path) -> list[dict]:
    from ..train.metrics import read_metrics

    return [r for r in read_metrics(run_dir) if r.get("kind") == "eval"]


def _best_eval(run_dir: Path) -> dict:
    """The evaluation row with the lowest val loss (the step `best` points at), or {}."""
    rows = [r for r in _eval_rows(run_dir) if "val/loss" in r] if run_dir.is_dir() else []
    return min(rows, key=lambda r: r["val/loss"]) if rows else {}


def _first_last(run_dir: Path, key: str) -> tuple[float | None, float | None]:
    rows = [r[key] for r in _eval_rows(run_dir) if key in r]
    return (rows[0], rows[-1]) if rows else (None, None)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def write_report_card(out: Path, state: dict[str, Any] | None = None) -> Path:
    """report.md + figures from the stage run folders (can be regenerated at any time)."""
    from ..train.metrics import plot_run, read_metrics

    state = state or read_state(out)
    held = heldout_answers(out)
    figures = []
    for stage in ("pretrain", "sft", "reward", "dpo", "rl"):
        if (out / stage / "metrics.jsonl").is_file():
            png = plot_run(out / stage, out / f"{stage}_loss.png")
            figures.append((stage, png.name if png else None))
    f1_png = _plot_f1(out, held["f1"])
    pre = _best_eval(out / "pretrain")
    rm_first, rm_last = _first_last(out / "reward", "val/accuracy")
    dpo_first, dpo_last = _first_last(out / "dpo", "val/pref_acc")
    rl_first, rl_last = _first_last(out / "rl", "val/reward")
    greedy_first, greedy_last = _first_last(out / "rl", "val/greedy_reward")
    rl_kl = [r["kl"] for r in read_metrics(out / "rl") if r.get("kind") == "train" and "kl" in r]
    lines = [
        "# minigpt speedrun report card", "",
        f"Budget used: {state.get('elapsed', 0) / 60:.1f} min. All figures on held-out data: pretraining on unseen "
        "modules; chat stages on functions never shown in SFT, DPO or RL data.", "",
        "| stage | measure | before | after |", "| --- | --- | ---: | ---: |",
        f"| pretrain | val loss (nats/token) / bits per byte, best step ({pre.get('step', 'n/a')}) | | "
        f"{_fmt(pre.get('val/loss'))} / {_fmt(pre.get('val/bpb'))} |",
        f"| sft | held-out answer F1 (base -> SFT) | {_fmt(held['f1'].get('pretrain'))} | {_fmt(held['f1'].get('sft'))} |",
        f"| reward | held-out pairwise accuracy | {_fmt(rm_first)} | {_fmt(rm_last)} |",
        f"| dpo | held-out preference accuracy, log p(chosen) > log p(rejected) (SFT -> DPO) | {_fmt(dpo_first)} | {_fmt(dpo_last)} |",
        f"| rl | held-out mean reward, token F1 of sampled replies (SFT -> RL) | {_fmt(rl_first)} | {_fmt(rl_last)} |",
        f"| rl | held-out reward of the greedy reply (SFT -> RL) | {_fmt(greedy_first)} | {_fmt(greedy_last)} |",
        f"| rl | KL to the SFT model per token (first / last logged step) | {_fmt(rl_kl[0] if rl_kl else None, 4)} | {_fmt(rl_kl[-1] if rl_kl else None, 4)} |",
        "", "## Answer F1 on held-out functions, every model", "",
        "| model | F1 |", "| --- | ---: |",
        *[f"| {LABELS[s]} | {held['f1'][s]:.3f} |" for s in MODELS if s in held["f1"]], "",
        f"![answer F1]({f1_png.name})" if f1_png else "", "",
        "## Training curves", "", *[f"![{s}]({p})" for s, p in figures if p], "",
        "## The same questions, answered by each model", "",
        "| question | reference | " + " | ".join(LABELS[s] for s in MODELS if s in held["answers"]) + " |",
        "| --- | --- | " + " | ".join("---" for s in MODELS if s in held["answers"]) + " |",
    ]
    for i, p in enumerate(held["prompts"][:8]):
        cells = [p["prompt"], p["reference"]] + [held["answers"][s][i] for s in MODELS if s in held["answers"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    lines += ["", f"Chat with the final model: `minigpt chat --checkpoint {out / 'rl'}`", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    atomic_write_text(out / "report.json", json.dumps({"f1": held["f1"], "reward_accuracy": [rm_first, rm_last],
                                                       "dpo_pref_acc": [dpo_first, dpo_last],
                                                       "rl_reward": [rl_first, rl_last],
                                                       "rl_greedy_reward": [greedy_first, greedy_last],
                                                       "rl_kl": [rl_kl[0], rl_kl[-1]] if rl_kl else None,
                                                       "pretrain": pre}, indent=2))
    return report


def _plot_f1(out: Path, scores: dict[str, float]) -> Path | None:
    if not scores:
        return None
    from ..train.metrics import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3), dpi=120)
    names = [LABELS[s] for s in MODELS if s in scores]
    bars = ax.bar(names, [scores[s] for s in MODELS if s in scores],
                  color=["#999", "#4a90d9", "#7b61ff", "#e5533d"][:len(names)])
    ax.bar_label(bars, fmt="%.3f", padding=2)
    ax.set_ylabel("held-out answer F1")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "answer_f1.png"
    fig.savefig(path)
    plt.close(fig)
    return path
