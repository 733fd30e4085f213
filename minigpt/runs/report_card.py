"""The speedrun's report card: every stage measured on held-out data, in <out>/report.md (+ report.json, PNGs).

- pretraining: val loss and bits per byte on the corpus's unseen modules, and bits per byte on `pydocs`'s
  held-out modules (the docstring text alone, comparable with a model trained on pydocs);
- every chat model (base, SFT, DPO, RL) answers the same held-out prompts greedily (runs/heldout.py): token F1
  against the reference, exact match, and the pass rate per family (identity facts stated, out-of-world
  questions declined, how-to questions answered with what to use), each with a cluster-bootstrap 95% interval
  (`heldout.cluster_of`), and the paired differences between stages (each against SFT, and RL against DPO, the
  model it starts from); and the same prompts asked second in a chat, after one earlier exchange
  (`heldout.in_conversation`), as a user asks them;
- the reward model's pairwise accuracy, DPO's preference accuracy, RL's sampled reward and KL;
- the models' answers side by side. `write_report_card(out)` can be rerun at any time from a speedrun folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..common import atomic_write_text
from ..text import chat_tasks

MODELS = ("pretrain", "sft", "dpo", "rl")
LABELS = {"pretrain": "base", "sft": "SFT", "dpo": "DPO", "rl": "RL"}
# the model each speedrun stage starts from: each chat stage from the one before (README "What changed since")
PARENTS = {"sft": "pretrain", "reward": "sft", "dpo": "sft", "rl": "dpo"}
# identity and out-of-world questions by who wrote them (a record's "blind"): the hand-written phrasings (and the
# out-of-world templates), a blind writer's, a blind writer's asked for after the training questions were fixed
# (the fairest test: none was chosen with it), and the eighth writer's (thanks, goodbyes and out-of-world requests)
WRITERS = ("hand", "blind", "blind-after", "blind-8")


def checkpoint_of(out: Path, stage: str) -> Path:
    """The checkpoint a stage hands on and is judged by. Pretraining: the step with the lowest val loss. SFT, DPO
    and RL: the last step. SFT's val loss turns up part-way through its share while its held-out answers keep
    improving (in three default runs the last step beat the lowest-val-loss one by +0.016 to +0.031 answer F1,
    README "What changed since"), and DPO's and RL's val loss is not their goal."""
    best = out / stage / "best"
    return best if stage == "pretrain" and best.is_file() else out / stage


def read_state(out: Path) -> dict[str, Any]:
    """<out>/speedrun.json: the finished stages, their results and the time used."""
    path = out / "speedrun.json"
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}}


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


def stage_answers(out: Path, facts: chat_tasks.Facts) -> dict[str, Any]:
    """Every stage's scored answers to the same held-out prompts (`scored`), and the chat models' answers to them
    asked second in a chat (`in_chat`, `heldout.in_conversation`)."""
    from ..checkpoint import load_checkpoint
    from .heldout import answer, heldout_prompts, in_conversation

    prompts = heldout_prompts(facts)
    second = in_conversation(prompts, facts)
    scored, in_chat = {}, {}
    for stage in MODELS:
        if (out / stage / "latest").is_file():
            ckpt = load_checkpoint(checkpoint_of(out, stage))
            scored[stage] = answer(ckpt, prompts, facts)
            if stage != "pretrain":
                in_chat[stage] = answer(ckpt, second, facts)
    return {"prompts": prompts, "scored": scored, "in_chat": in_chat}


def summarise(prompts: list[dict], scored: dict[str, list[dict]],
              in_chat: dict[str, list[dict]] | None = None) -> dict[str, Any]:
    """Means with 95% intervals per stage (all prompts, and per family), paired differences between stages, and
    per chat model the answers asked second in a chat (`in_chat`: F1, identity and out-of-world pass rates)."""
    from .heldout import cluster_of, mean_ci, paired_ci

    families = sorted({p["family"] for p in prompts})
    clusters = [cluster_of(p) for p in prompts]
    table: dict[str, Any] = {}
    for stage, rows in scored.items():
        by = {"all": range(len(rows)),
              **{f: [i for i, p in enumerate(prompts) if p["family"] == f] for f in families},
              **{f"{family}-{who}": [i for i, p in enumerate(prompts) if p["family"] == family
                                     and p.get("blind", 0) == n]
                 for family in ("identity", "unknown") for n, who in enumerate(WRITERS)}}
        table[stage] = {group: {k: mean_ci([rows[i][k] for i in ix], [clusters[i] for i in ix])
                                for k in ("f1", "exact", "correct")} for group, ix in by.items() if ix}
    diffs = {}
    for before, after in (("pretrain", "sft"), ("sft", "dpo"), ("sft", "rl"), (PARENTS["rl"], "rl")):
        if before in scored and after in scored:
            diffs[f"{after}-{before}"] = paired_ci([r["f1"] for r in scored[before]], [r["f1"] for r in scored[after]],
                                                   clusters)
    second = {}
    for stage, rows in (in_chat or {}).items():
        ix = {"all": range(len(rows)), **{f: [i for i, p in enumerate(prompts) if p["family"] == f]
                                         for f in chat_tasks.KEYED_FAMILIES}}
        second[stage] = {group: {k: mean_ci([rows[i][k] for i in ix[group]], [clusters[i] for i in ix[group]])
                                 for k in ("f1", "correct")} for group in ix if ix[group]}
    return {"stages": table, "diffs": diffs, "families": families, "in_chat": second}


def _describe(ckpt) -> str:
    if ckpt is None:
        return "none yet"
    c = ckpt.model.config
    return (f"GPT {c.n_layer} layers x {c.n_embd} wide, {c.n_head} heads, context {c.block_size}, "
            f"{ckpt.model.num_params() / 1e6:.2f}M parameters")


def _ci(v: tuple[float, float, float] | None, digits: int = 3) -> str:
    if not v:
        return "n/a"
    return f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"


def _pct(v: tuple[float, float, float] | None, ci: bool = True) -> str:
    if not v:
        return "n/a"
    return f"{100 * v[0]:.0f}% [{100 * v[1]:.0f}, {100 * v[2]:.0f}]" if ci else f"{100 * v[0]:.0f}%"


def write_report_card(out: Path, state: dict[str, Any] | None = None) -> Path:
    """report.md + report.json + figures from the stage run folders (can be regenerated at any time)."""
    from ..checkpoint import load_checkpoint
    from ..train.metrics import plot_run, read_metrics
    from .heldout import corpus_bpb

    state = state or read_state(out)
    base = load_checkpoint(checkpoint_of(out, "pretrain")) if (out / "pretrain" / "latest").is_file() else None
    facts = chat_tasks.Facts(params=base.model.num_params() if base else None)
    held = stage_answers(out, facts)
    summary = summarise(held["prompts"], held["scored"], held["in_chat"])
    docs_bpb = corpus_bpb(base.model, base.tokenizer, "pydocs") if base else {}
    figures = []
    for stage in ("pretrain", "sft", "reward", "dpo", "rl"):
        if (out / stage / "metrics.jsonl").is_file():
            png = plot_run(out / stage, out / f"{stage}_loss.png")
            figures.append((stage, png.name if png else None))
    f1_png = _plot_f1(out, summary)
    pre = _best_eval(out / "pretrain")
    pre_steps = max((r["step"] for r in _eval_rows(out / "pretrain")), default=None)
    rm_first, rm_last = _first_last(out / "reward", "val/accuracy")
    dpo_first, dpo_last = _first_last(out / "dpo", "val/pref_acc")
    rl_first, rl_last = _first_last(out / "rl", "val/reward")
    rl_kl = [r["kl"] for r in read_metrics(out / "rl") if r.get("kind") == "train" and "kl" in r]
    st, diffs = summary["stages"], summary["diffs"]
    rl_start = LABELS[PARENTS["rl"]]
    get = lambda stage, group, key: st.get(stage, {}).get(group, {}).get(key)  # noqa: E731
    n_prompts = len(held["prompts"])
    lines = [
        "# minigpt speedrun report card", "",
        f"Budget used by the stages: {state.get('elapsed', 0) / 60:.1f} min (the evaluation for this card "
        f"comes after them). Model: {_describe(base)}. "
        f"All figures on held-out data: pretraining on modules it never saw; the chat models on {n_prompts} "
        "prompts about functions no SFT, DPO or RL example mentions, and identity and out-of-world questions "
        "asked in phrasings never trained on. [a, b] is a 95% bootstrap interval that resamples whole held-out "
        "functions and identity phrasings (a function's questions, or a phrasing's variants, stand or fall "
        "together).", "",
        "| stage | measure | value |", "| --- | --- | ---: |",
        f"| pretrain | val loss (nats/token) / bits per byte, best step {pre.get('step', 'n/a')} of {pre_steps} | "
        f"{_fmt(pre.get('val/loss'))} / {_fmt(pre.get('val/bpb'))} |",
        f"| pretrain | bits per byte on pydocs' held-out modules (the docstrings alone) | "
        f"{_fmt(docs_bpb.get('bpb'))} |",
    ]
    for stage in MODELS:
        if stage in st:
            by_writer = {family: " / ".join(_pct(get(stage, f"{family}-{who}", "correct"), ci=False)
                                            for who in WRITERS if get(stage, f"{family}-{who}", "correct"))
                         for family in ("identity", "unknown")}
            lines.append(f"| {LABELS[stage]} | answer F1, all families / exact match / identity correct (questions "
                         f"hand-written / written blind / written blind after the training data / by the eighth "
                         f"writer) / out-of-world declined (templates / by the eighth writer) / how-to questions "
                         f"answered with what to use | "
                         f"{_ci(get(stage, 'all', 'f1'))} / {_pct(get(stage, 'all', 'exact'))} / "
                         f"{_pct(get(stage, 'identity', 'correct'))} ({by_writer['identity']}) / "
                         f"{_pct(get(stage, 'unknown', 'correct'))} ({by_writer['unknown']}) / "
                         f"{_pct(get(stage, 'howto', 'correct'))} |")
    for stage, chat in summary["in_chat"].items():
        lines.append(f"| {LABELS[stage]} | the same prompts asked second in a chat, after one earlier exchange: "
                     f"answer F1 / identity correct / out-of-world declined / how-to answered | "
                     f"{_ci(chat['all']['f1'])} / {_pct(chat.get('identity', {}).get('correct'))} / "
                     f"{_pct(chat.get('unknown', {}).get('correct'))} / {_pct(chat.get('howto', {}).get('correct'))} |")
    for name, d in diffs.items():
        after, before = name.split("-")
        lines.append(f"| {LABELS[after]} vs {LABELS[before]} | answer F1 difference (paired) | {_ci(d)} |")
    lines += [
        f"| reward | pairwise accuracy, first / last evaluation | {_fmt(rm_first)} / {_fmt(rm_last)} |",
        f"| DPO | preference accuracy log p(chosen) > log p(rejected), SFT / DPO | {_fmt(dpo_first)} / "
        f"{_fmt(dpo_last)} |",
        f"| RL | mean reward of sampled replies, {rl_start} (its start) / RL | {_fmt(rl_first)} / "
        f"{_fmt(rl_last)} |",
        f"| RL | KL to the {rl_start} model per token, first / last step | {_fmt(rl_kl[0] if rl_kl else None, 4)} / "
        f"{_fmt(rl_kl[-1] if rl_kl else None, 4)} |", "",
        "## Answer F1 by family", "",
        "| family | prompts | " + " | ".join(LABELS[s] for s in MODELS if s in st) + " |",
        "| --- | ---: | " + " | ".join("---:" for s in MODELS if s in st) + " |",
    ]
    for f in summary["families"]:
        count = sum(p["family"] == f for p in held["prompts"])
        lines.append(f"| {f} | {count} | " + " | ".join(_ci(get(s, f, "f1"), 2) for s in MODELS if s in st) + " |")
    lines += ["", f"![answer F1]({f1_png.name})" if f1_png else "", "",
              "## Training curves", "", *[f"![{s}]({p})" for s, p in figures if p], "",
              "## The same questions, answered by each model", ""]
    lines += _side_by_side(held)
    lines += ["", f"Chat with the final model: `minigpt chat --checkpoint {out / 'rl'}`", ""]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    atomic_write_text(out / "report.json", json.dumps({
        "summary": summary, "pretrain": pre, "pretrain_steps": pre_steps, "pydocs_val": docs_bpb,
        "reward_accuracy": [rm_first, rm_last], "dpo_pref_acc": [dpo_first, dpo_last],
        "rl_reward": [rl_first, rl_last], "rl_kl": [rl_kl[0], rl_kl[-1]] if rl_kl else None,
        "answers": {s: [r["reply"] for r in rows] for s, rows in held["scored"].items()},
        "answers_in_chat": {s: [r["reply"] for r in rows] for s, rows in held["in_chat"].items()},
        "prompts": held["prompts"]}, indent=1, ensure_ascii=False))
    return report


def _side_by_side(held: dict[str, Any], per_family: int = 2) -> list[str]:
    stages = [s for s in MODELS if s in held["scored"]]
    lines = ["| family | question | reference | " + " | ".join(LABELS[s] for s in stages) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in stages) + " |"]
    shown: dict[str, int] = {}
    for i, p in enumerate(held["prompts"]):
        if shown.get(p["family"], 0) >= per_family:
            continue
        shown[p["family"]] = shown.get(p["family"], 0) + 1
        question = " / ".join(m["content"] for m in p["prompt"] if m["role"] == "user")
        cells = [p["family"], question, p["reference"]] + [held["scored"][s][i]["reply"] for s in stages]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return lines


def _plot_f1(out: Path, summary: dict[str, Any]) -> Path | None:
    """Grouped bars: answer F1 of every stage, on all held-out prompts and per family, with 95% intervals."""
    stages = [s for s in MODELS if s in summary["stages"]]
    if not stages:
        return None
    from ..train.metrics import pyplot

    plt = pyplot()
    groups = ["all", *summary["families"], "all, asked\nsecond in a chat"]

    def value(stage: str, group: str) -> tuple[float, float, float] | None:
        table = summary["in_chat"].get(stage, {}) if group == groups[-1] else summary["stages"][stage]
        return table.get("all" if group == groups[-1] else group, {}).get("f1")

    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=120)
    width = 0.8 / len(stages)
    colours = {"pretrain": "#999", "sft": "#4a90d9", "dpo": "#7b61ff", "rl": "#e5533d"}
    for k, stage in enumerate(stages):
        vals = [value(stage, g) or (0.0, 0.0, 0.0) for g in groups]
        xs = [g + (k - (len(stages) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [v[0] for v in vals], width, color=colours[stage], label=LABELS[stage],
               yerr=[[v[0] - v[1] for v in vals], [v[2] - v[0] for v in vals]], capsize=2, error_kw={"lw": 0.8})
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("held-out answer F1")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(stages), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    path = out / "answer_f1.png"
    fig.savefig(path)
    plt.close(fig)
    return path
