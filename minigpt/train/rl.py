"""RL: on-policy policy gradient against a reward, with a KL leash to the parent (the InstructGPT step, small).

`Rollouts` is the RL batch iterator: each batch samples `group_size` replies to each of a few prompts with the
current policy through the one inference engine, scores them with the reward function, and returns the
sequences with their advantages (reward minus the group's mean, as GRPO) for `objectives.PolicyGradient`. So the
training loop never knows it is RL. `answer_eval` measures a policy by replying to held-out prompts.

On the built-in data RL trains on questions SFT never trained on (`chat_tasks.rl_conversations`), and each batch
also carries `anchor_rows` of SFT's identity, out-of-world and how-to turns, whose SFT loss the objective adds (the
anchor term, InstructGPT's "ptx" aimed at what RL breaks): without it every variant measured lowered held-out
identity accuracy by 10-23 points, even RL with no identity prompt at all (README, "What RL needed").
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

from ..checkpoint import load_checkpoint
from ..common import MinigptError, print0
from ..config import check, option, to_dict
from ..text import chat_tasks
from ..text.chat_data import RowBatches, Rows, lm_collate, load_conversations, load_prompts
from .finetune import BUILT_IN, _data, _parent, _run_info, facts_of, stage_train_config
from .objectives import PolicyGradient
from .trainer import TrainConfig, TrainResult, train


@dataclass
class RLConfig:
    group_size: int = option(8, "completions sampled per prompt: the group whose mean reward is the baseline")
    kl_coef: float = option(0.05, "weight of the KL penalty to the reference (the parent) model")
    max_new_tokens: int = option(48, "longest rollout reply in tokens")
    temperature: float = option(0.8, "rollout sampling temperature (1.0 samples the policy itself; 0.8 gives "
                                     "fewer wild samples, so the group baseline is less noisy)")
    anchor_rows: int = option(16, "SFT conversations per step whose replies RL keeps likely (the anchor term: "
                                  "built-in identity, out-of-world and how-to turns; 0 = off)")
    anchor_coef: float = option(1.0, "weight of the anchor term, the SFT loss on the anchor rows")
    eval_prompts: int = option(96, "held-out prompts answered at each evaluation, spread over them (4 sampled "
                                   "replies each, fixed seeds, plus one greedy)")

    def __post_init__(self) -> None:
        check(self.group_size >= 2, "group_size", "needs at least 2 per prompt for a group baseline")
        check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be positive")
        check(self.temperature > 0, "temperature", "must be positive for sampling rollouts")
        check(self.anchor_rows >= 0 and self.anchor_coef >= 0, "anchor_rows", "anchor_rows and anchor_coef must be "
              ">= 0")


class Rollouts:
    """The RL batch iterator: each batch samples `group_size` replies to each of a few prompts with the current
    policy (through the Engine), scores them, and returns (x, y, advantages) for the policy-gradient loss.
    State = the prompt order plus a counter that seeds each rollout, so RL resumes exactly too."""

    def __init__(self, policy, tokenizer, rows: list, reward_fn, rl: RLConfig, *, prompts_per_step: int, seed: int,
                 rank: int = 0, world: int = 1, anchors: list | None = None):
        self.policy, self.tokenizer, self.reward_fn, self.rl, self.seed = policy, tokenizer, reward_fn, rl, seed
        self.prompts = RowBatches(rows, prompts_per_step, list, seed=seed, rank=rank, world=world)
        self.collate = lm_collate(policy.config.block_size, tokenizer.special_id("<|end|>"))
        self.anchors = RowBatches(anchors, rl.anchor_rows, self.collate, seed=seed + 1, rank=rank, world=world) \
            if anchors and rl.anchor_rows else None
        self.count = 0

    def __iter__(self) -> "Rollouts":
        return self

    def __next__(self) -> dict[str, Any]:
        from ..infer.engine import Engine

        picked = next(self.prompts)
        self.count += 1
        seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{self.count}".encode()).digest()[:4], "little")
        gens = Engine(self.policy, self.tokenizer).generate_batch(
            [ids for ids, _ in picked], n=self.rl.group_size, seed=seed, **_rollout(self.rl))  # one batch
        rows, advantages, rewards, lengths = [], [], [], []
        for j, (prompt_ids, record) in enumerate(picked):
            group = gens[j * self.rl.group_size:(j + 1) * self.rl.group_size]
            messages = _messages(record)
            scores = [float(self.reward_fn(messages, g.text, record)) for g in group]
            mean = sum(scores) / len(scores)
            for g, s in zip(group, scores):
                reply = list(g.ids)
                rows.append((prompt_ids + reply, [0] * len(prompt_ids) + [1] * len(reply)))
                advantages.append(s - mean)
                lengths.append(len(reply))
            rewards += scores
        x, y = self.collate(rows)
        batch = {"x": x, "y": y, "advantages": torch.tensor(advantages), "reward": sum(rewards) / len(rewards),
                 "length": sum(lengths) / len(lengths)}
        if self.anchors is not None:
            batch["anchor"] = next(self.anchors)
        return batch

    def state_dict(self) -> dict[str, Any]:
        state = {"prompts": self.prompts.state_dict(), "count": self.count}
        return {**state, "anchors": self.anchors.state_dict()} if self.anchors is not None else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prompts.load_state_dict(state["prompts"])
        self.count = int(state["count"])
        if self.anchors is not None and "anchors" in state:  # runs saved before the anchor term have none
            self.anchors.load_state_dict(state["anchors"])


def _rollout(rl: RLConfig) -> dict[str, Any]:
    """Sampling settings of rollouts: the policy's own distribution at the rollout temperature."""
    return dict(max_new_tokens=rl.max_new_tokens, temperature=rl.temperature, top_k=0, top_p=1.0, min_p=0.0,
                repetition_penalty=1.0)


def _fitting(rows: Rows, block_size: int, new_tokens: int) -> Rows:
    """The prompts that leave room for a `new_tokens` reply in the context. A longer one would be sampled in a
    window the engine slides and scored by the loss in another (`chat_data.window`): its update would not be
    the gradient of what was sampled."""
    room = block_size - new_tokens
    kept = Rows([r for r in rows.train if len(r[0]) <= room], [r for r in rows.val if len(r[0]) <= room],
                rows.source, rows.extra)
    for split in ("train", "val"):
        if not kept.split(split):
            raise MinigptError(f"{rows.source}: no {split} prompt is {room} tokens or shorter, which a "
                               f"{new_tokens}-token reply needs in the model's {block_size}-token context; give "
                               "shorter prompts or a smaller --max-new-tokens")
    dropped = len(rows.train) + len(rows.val) - len(kept.train) - len(kept.val)
    if dropped:
        print0(f"[yellow]note:[/] {dropped:,} of {len(rows.train) + len(rows.val):,} prompts are longer than {room} "
               f"tokens and are left out: with a {new_tokens}-token reply they would not fit the model's "
               f"{block_size}-token context")
    return kept


def _messages(record: dict) -> list:
    from ..text.chat_format import prompt_messages

    return prompt_messages(record["prompt"])


@torch.no_grad()
def answer_eval(model, tokenizer, rows: list, reward_fn, *, n: int, samples: int, rl: RLConfig,
                seed: int = 0) -> dict[str, float]:
    """Replies to n prompt rows spread evenly over `rows` (the built-in held-out rows come family by family, so
    the first n would all be about functions), all in one batch each way. `reward`: the mean reward of `samples`
    replies per prompt sampled at the rollout temperature with fixed seeds (what RL optimises, measured the
    same way at every evaluation); `greedy_reward`: of the one greedy reply; `length`: mean sampled reply
    length in tokens."""
    from ..infer.engine import Engine

    engine, picked = Engine(model, tokenizer), [rows[i * len(rows) // n] for i in range(min(n, len(rows)))]
    prompts = [ids for ids, _ in picked]
    sampled = engine.generate_batch(prompts, n=samples, seed=seed, **_rollout(rl))
    greedy = engine.generate_batch(prompts, **{**_rollout(rl), "temperature": 0.0})
    score = lambda g, record: float(reward_fn(_messages(record), g.text, record))  # noqa: E731
    rewards = [score(g, picked[i // samples][1]) for i, g in enumerate(sampled)]
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    return {"reward": mean(rewards), "greedy_reward": mean([score(g, r) for g, (_, r) in zip(greedy, picked)]),
            "length": mean([len(g.ids) for g in sampled])}


def rl(checkpoint: str | Path | None = None, prompts: str | None = None, *, reward: str | None = None,
       rl_config: RLConfig | None = None, train_config: TrainConfig | None = None, out: str | Path | None = None,
       resume: bool = False) -> TrainResult:
    """On-policy policy gradient against a reward, with a KL leash to the parent (the reference). `reward`:
    a spec for rewards.load_reward (default: token F1); on resume it must repeat a run's own python: reward."""
    from .rewards import load_reward, reward_spec

    parent, out, info = _parent(checkpoint, out, "rl", resume)
    reward = reward_spec(reward, info.get("reward"), out)
    rl_cfg = RLConfig(**info["rl"]) if "rl" in info else (rl_config or RLConfig())
    cfg = train_config or stage_train_config("rl")
    records, spec = _data(info, prompts, lambda: chat_tasks.rl_prompts(facts_of(parent)))
    tok, policy = parent.tokenizer, parent.model
    reference = load_checkpoint(parent.path).model
    reward_fn = load_reward(reward)
    rows = _fitting(load_prompts(records, tok, source=spec), policy.config.block_size, rl_cfg.max_new_tokens)
    anchors = None
    if spec == BUILT_IN and rl_cfg.anchor_rows:
        anchors = load_conversations(chat_tasks.anchor_records(facts_of(parent)), tok, source=spec).train

    def make(split: str, seed: int, rank: int, world: int) -> Rollouts:
        return Rollouts(policy, tok, rows.split(split), reward_fn, rl_cfg, prompts_per_step=cfg.batch_size,
                        seed=seed, rank=rank, world=world, anchors=anchors)

    def evaluate(model) -> dict[str, float]:
        found = answer_eval(model, tok, rows.val, reward_fn, n=rl_cfg.eval_prompts, samples=4, rl=rl_cfg,
                            seed=cfg.seed)
        return {f"val/{k}": v for k, v in found.items()}

    objective = PolicyGradient(make, reference, kl_coef=rl_cfg.kl_coef, seed=cfg.seed, evaluate=evaluate,
                               anchor_coef=rl_cfg.anchor_coef)
    anchored = f", anchor {rl_cfg.anchor_rows} SFT turns per step (of {len(anchors):,})" if anchors else ""
    print0(f"[bold]rl[/] {len(rows.train):,} train / {len(rows.val):,} val prompts from {escape(spec)}, reward "
           f"{escape(reward)}, group of {rl_cfg.group_size} replies per prompt, KL coefficient {rl_cfg.kl_coef}"
           f"{anchored} -> {escape(str(out))}")
    return train(policy, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="rl",
                 run_info=_run_info("rl", parent, spec, policy, {"reward": reward, "rl": to_dict(rl_cfg)},
                                    rows=rows))
