"""What the RL stage's pieces are worth: RL variants from one chat model (the speedrun's RL starts from its DPO
model), each scored on the report card's held-out prompts, with paired 95% bootstrap intervals against that
starting model (a script, not a test).

Every variant trains for the same number of RL steps (not seconds, so a busy machine changes nothing) on the
built-in prompts with the speedrun's RL settings plus its own changes, into <out>/<variant>; then the starting
model and every variant answer the report card's held-out prompts greedily (`runs/heldout.py`, as the report
card does). Prints answer F1 with its interval, the paired difference to the start, identity accuracy and each
family's F1. `--sft` names the starting model (any chat model: the flag keeps the name it had when RL started
from SFT).

    python scripts/ablate_rl.py --sft checkpoints/speedrun/dpo
    python scripts/ablate_rl.py --sft checkpoints/speedrun/dpo --steps 120 --variants default,no-anchor

Variants (`VARIANTS`): default (the defaults: fresh prompts, the task reward, the anchor term), no-anchor,
anchor-only (the reward is 0 for every reply, so only the KL and anchor terms train: what the anchor alone
does), lr-5e-5, lr-2e-4, lr-4e-4 and lr-8e-4 (the learning rate, constant like the default's 1e-4), seed-2 and
lr-4e-4-seed-2 (another seed; the others use 1337), t-0.6 and lr-2e-4-t-0.6 (with the anchor; t: the rollout
temperature), lr-3e-5 and kl-0.2 (no anchor: the gentler updates tried before the anchor), no-identity (no anchor,
a learning rate of 3e-5 and no identity prompts in RL: does RL on functions alone move the identity answers?),
anchor-8 and anchor-8-seed-2 (8 anchor rows a step, the default before 16), adv-std (each group's advantages
divided by their standard deviation, as GRPO), adv-informative (the policy-gradient mean over the replies of
groups whose rewards differ, so groups that all scored alike no longer dilute the step) and anchor-small (the
anchor rows drawn from SFT's identity and out-of-world turns only, not its how-to ones: the default through sr46,
measured against it as `anchor-howto`).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ZERO_REWARD = "python:ablate_rl:zero_reward"
VARIANTS: dict[str, dict] = {
    "default": {},
    "no-anchor": {"anchor_rows": 0},
    "anchor-only": {"reward": ZERO_REWARD},
    **{f"lr-{lr}": {"lr": float(lr), "min_lr": float(lr)} for lr in ("5e-5", "2e-4", "4e-4", "8e-4")},
    "seed-2": {"seed": 2},
    "lr-4e-4-seed-2": {"lr": 4e-4, "min_lr": 4e-4, "seed": 2},
    "t-0.6": {"temperature": 0.6},
    "lr-2e-4-t-0.6": {"lr": 2e-4, "min_lr": 2e-4, "temperature": 0.6},
    "lr-3e-5": {"anchor_rows": 0, "lr": 3e-5, "min_lr": 3e-5},
    "kl-0.2": {"anchor_rows": 0, "kl_coef": 0.2},
    "no-identity": {"anchor_rows": 0, "lr": 3e-5, "min_lr": 3e-5, "no_identity": True},
    "anchor-8": {"anchor_rows": 8},
    "anchor-8-seed-2": {"anchor_rows": 8, "seed": 2},
    "adv-std": {"advantage": "std"},
    "adv-informative": {"advantage": "informative"},
    "anchor-small": {"anchor_families": ("identity", "unknown")},
}


def advantage_loss(kind: str, group: int, plain):
    """`plain` (objectives.policy_gradient_loss) with its advantages divided by their group's standard deviation
    (GRPO's normalisation; "std"), or with the policy-gradient mean taken over the tokens of informative replies
    only ("informative": a group whose replies all score alike has advantages 0 and no longer dilutes the step)."""
    import torch

    def loss(logp, ref_logp, advantages, mask, kl_coef):
        if kind == "std":
            a = advantages.view(-1, group)
            return plain(logp, ref_logp, (a / (a.pow(2).mean(1, keepdim=True).sqrt() + 1e-4)).view(-1), mask, kl_coef)
        informative = mask * (advantages != 0)[:, None]
        pg, _ = plain(logp, ref_logp, advantages, informative, 0.0)  # averaged over informative replies' tokens
        leash, kl = plain(logp, ref_logp, torch.zeros_like(advantages), mask, kl_coef)  # the KL over all of them
        return pg + leash, kl
    return loss


def zero_reward(prompt, completion, record) -> float:
    """Every reply scores 0: all advantages are 0, so RL's policy-gradient term does nothing."""
    return 0.0


def jsonl_file(path: Path, records) -> str:
    """`records` written to `path` as JSONL (a variant's data in place of the built-in); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def train_variant(sft: str, out: Path, steps: int, change: dict) -> Path:
    from minigpt.checkpoint import load_checkpoint
    from minigpt.text import chat_tasks
    from minigpt.train import objectives, rl
    from minigpt.train.finetune import facts_of, stage_train_config

    if (out / "latest").is_file():
        return out
    change = dict(change)
    reward, no_identity = change.pop("reward", None), change.pop("no_identity", False)
    seed, advantage = change.pop("seed", 1337), change.pop("advantage", None)
    anchored, families = chat_tasks.anchor_records, change.pop("anchor_families", None)
    if families:  # SFT's training turns of these families as the anchor rows
        chat_tasks.anchor_records = functools.partial(anchored, families=families)
    rl_fields = set(rl.RLConfig.__dataclass_fields__)
    rl_cfg = rl.RLConfig(**{k: v for k, v in change.items() if k in rl_fields})
    cfg = stage_train_config("rl", max_iters=steps, eval_interval=10**9, seed=seed,
                             **{k: v for k, v in change.items() if k not in rl_fields})
    prompts = None
    if no_identity:  # the built-in prompts less the identity ones, as a file (anchors need the built-in data)
        prompts = jsonl_file(out.parent / "prompts-no-identity.jsonl",
                             [p for p in chat_tasks.rl_prompts(facts_of(load_checkpoint(sft)))
                              if not (p["family"] == "identity" and p["split"] == "train")])
    plain = objectives.policy_gradient_loss
    if advantage:
        objectives.policy_gradient_loss = advantage_loss(advantage, rl_cfg.group_size, plain)
    try:
        rl.rl(sft, prompts, reward=reward, rl_config=rl_cfg, train_config=cfg, out=out)
    finally:
        objectives.policy_gradient_loss, chat_tasks.anchor_records = plain, anchored
    return out


def scores(path: Path, cache: Path) -> list[dict]:
    """Greedy answers of a checkpoint to the held-out prompts, scored (kept in `cache` as JSON): each row also
    has `chat_f1` and `chat_correct`, the same prompt asked second in a chat (`heldout.in_conversation`); a
    cache written before those were measured gets them added while its checkpoint is still there."""
    from minigpt.checkpoint import load_checkpoint
    from minigpt.runs.heldout import answer, cluster_of, heldout_prompts, in_conversation
    from minigpt.text import chat_tasks

    rows = json.loads(cache.read_text()) if cache.is_file() else None
    if rows is not None and ("chat_f1" in rows[0] or not path.exists()):
        return rows
    ckpt = load_checkpoint(path)
    facts = chat_tasks.Facts(params=ckpt.model.num_params())
    prompts = heldout_prompts(facts)
    rows = rows or [{**r, "family": p["family"], "cluster": cluster_of(p)}
                    for r, p in zip(answer(ckpt, prompts, facts), prompts)]
    for row, r in zip(rows, answer(ckpt, in_conversation(prompts, facts), facts)):
        row["chat_f1"], row["chat_correct"] = r["f1"], r["correct"]
    cache.write_text(json.dumps(rows))
    return rows


def compare(runs: dict[str, Path], out: Path, title: str) -> None:
    """Score every run (the first is the baseline) on the held-out prompts and print one table: answer F1 with
    its interval, the paired difference to the baseline, identity accuracy and each family's F1."""
    from rich.console import Console
    from rich.table import Table

    from minigpt.runs.heldout import mean_ci, paired_ci

    scored = {n: scores(path, out / f"{n}.scores.json") for n, path in runs.items()}
    base = next(iter(scored))
    families = sorted({r["family"] for r in scored[base]})
    clusters = [r.get("cluster", i) for i, r in enumerate(scored[base])]  # older score files: by prompt
    table = Table(title=f"{title}; greedy answers to {len(scored[base])} held-out prompts; "
                        f"\\[a, b] = 95% cluster-bootstrap interval (by function and phrasing)")
    for col in ("model", "answer F1", f"vs {base} (paired)", "identity correct", *families,
                "asked second in a chat: F1", f"vs {base}", "identity", "declined"):
        table.add_column(col, justify="left" if col == "model" else "right")

    def pct(rows: list[dict], family: str, key: str) -> str:
        picked = [r[key] for r in rows if r["family"] == family]
        return f"{100 * sum(picked) / max(1, len(picked)):.0f}%"

    def ci(v: tuple, sign: str = "") -> str:
        return f"{v[0]:{sign}.3f} [{v[1]:{sign}.3f}, {v[2]:{sign}.3f}]"

    for n, rows in scored.items():
        d = paired_ci([r["f1"] for r in scored[base]], [r["f1"] for r in rows], clusters) if n != base else None
        per = [sum(r["f1"] for r in rows if r["family"] == f) / sum(r["family"] == f for r in rows) for f in families]
        chat = ["n/a"] * 4
        if all("chat_f1" in r for r in rows + scored[base]):
            dc = (paired_ci([r["chat_f1"] for r in scored[base]], [r["chat_f1"] for r in rows], clusters)
                  if n != base else None)
            chat = [ci(mean_ci([r["chat_f1"] for r in rows], clusters)), "" if dc is None else ci(dc, "+"),
                    pct(rows, "identity", "chat_correct"), pct(rows, "unknown", "chat_correct")]
        table.add_row(n, ci(mean_ci([r["f1"] for r in rows], clusters)), "" if d is None else ci(d, "+"),
                      pct(rows, "identity", "correct"), *(f"{v:.2f}" for v in per), *chat)
    Console(width=200).print(table)


def ablate(argv: list[str] | None, doc: str, stage: str, variants: dict[str, dict], train, steps: int,
           default: str, start: str = "sft", baseline: str | None = "SFT") -> int:
    """The command line the ablation scripts share: --<start> (the checkpoint every variant starts from), --out,
    --steps, --variants (an unknown name is a usage error naming the known ones); trains each variant with
    `train(start, out, steps, change)` and prints `compare`'s table against the starting model, named `baseline`
    (None: against the first variant, when the start is not a model of this stage's kind)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument(f"--{start}", required=True, help="the checkpoint every variant starts from")
    p.add_argument("--out", default=f"/tmp/minigpt-ablate-{stage.lower()}", help="folder for the variants' runs")
    p.add_argument("--steps", type=int, default=steps, help=f"{stage} steps per variant (default: {steps})")
    p.add_argument("--variants", default=default, help=f"comma-separated, of: {', '.join(variants)}"
                   + ("" if baseline else "; the first is the baseline"))
    a = p.parse_args(argv)
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in variants]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(variants)}")
    out = Path(a.out)
    origin = getattr(a, start)
    runs = ({baseline: Path(origin)} if baseline else {}) | {n: train(origin, out / n, a.steps, variants[n])
                                                            for n in names}
    compare(runs, out, f"{stage} variants, {a.steps} steps each from {origin}")
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # so that python:ablate_rl:zero_reward imports
    return ablate(argv, __doc__, "RL", VARIANTS, train_variant, 120, "default,no-anchor,anchor-only",
                  baseline="start")


if __name__ == "__main__":
    sys.exit(main())
