"""SFT and RLHF-lite: the stages after pretraining, each a small function over the one training loop.

    sft     parent LM + conversations     -> NextToken on assistant tokens only       -> chat model
    reward  parent LM + preference pairs  -> RewardPairwise (Bradley-Terry)           -> reward model
    dpo     parent LM + preference pairs  -> DPO against a frozen copy of the parent  -> policy
    rl      parent LM + prompts + reward  -> PolicyGradient on engine rollouts, KL to the parent -> policy

Every stage inherits the model shape and tokenizer from its parent checkpoint, records its parent in run.json,
and resumes exactly like pretraining (`resume=True` reads everything back from the run folder). With no data
argument each stage uses the built-in data generated from the pydocs corpus (pydocs.py): questions about
standard-library functions answered with their docstring's first sentence, with 1 in 10 functions held out.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import pydocs
from .chat_data import Rows, RowBatches, lm_collate, load_conversations, load_preferences, load_prompts, pair_collate
from .checkpoint import Checkpoint, load_checkpoint, read_run_info
from .common import MinigptError, print0, seed_everything
from .config import check, option, to_dict
from .objectives import DPO, NextToken, PolicyGradient, RewardPairwise
from .trainer import TrainConfig, TrainResult, train

# Training defaults per stage (flags and config files override them): fine-tuning takes smaller steps.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": dict(max_iters=600, batch_size=16, lr=5e-4, min_lr=5e-5, warmup_iters=30, weight_decay=0.0,
                eval_interval=100, eval_iters=8, sample_tokens=0),
    "reward": dict(max_iters=300, batch_size=16, lr=3e-4, min_lr=3e-5, warmup_iters=20, weight_decay=0.0,
                   eval_interval=100, eval_iters=8, sample_tokens=0),
    "dpo": dict(max_iters=200, batch_size=8, lr=1e-4, min_lr=1e-5, warmup_iters=10, weight_decay=0.0,
                eval_interval=50, eval_iters=8, sample_tokens=0),
    "rl": dict(max_iters=100, batch_size=8, lr=2e-4, min_lr=2e-4, warmup_iters=5, weight_decay=0.0,
               eval_interval=50, eval_iters=1, sample_tokens=0, grad_clip=1.0, schedule="constant"),
}


def stage_train_config(stage: str, **overrides: Any) -> TrainConfig:
    return TrainConfig(**{**STAGE_DEFAULTS[stage], **overrides})


@dataclass
class RLConfig:
    samples: int = option(8, "completions sampled per prompt (the group whose mean is the baseline)")
    kl_coef: float = option(0.02, "weight of the KL penalty to the reference (the parent) model")
    max_new_tokens: int = option(48, "longest rollout reply in tokens")
    temperature: float = option(0.8, "rollout sampling temperature (1.0 samples the policy itself; 0.8 gives "
                                     "fewer wild samples, so the group baseline is less noisy)")
    eval_prompts: int = option(96, "held-out prompts answered at each evaluation (4 sampled replies each, fixed "
                                   "seeds, plus one greedy)")

    def __post_init__(self) -> None:
        check(self.samples >= 2, "samples", "needs at least 2 per prompt for a group baseline")
        check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        check(self.max_new_tokens >= 1, "max_new_tokens", "must be positive")
        check(self.temperature > 0, "temperature", "must be positive for sampling rollouts")


# ---------------------------------------------------------------------------------------------- plumbing


def rows_factory(rows: Rows, batch_size: int, collate):
    def make(split: str, seed: int, rank: int, world: int) -> RowBatches:
        return RowBatches(rows.split(split), batch_size, collate, seed=seed, rank=rank, world=world)
    return make


def _parent(checkpoint: str | Path, out: str | Path | None, stage: str, resume: bool) -> tuple[Checkpoint, Path, dict]:
    """Load the parent (on resume: the parent recorded in run.json) and pick the run folder."""
    info: dict = {}
    if resume:
        if not out:
            raise MinigptError("--resume needs --out RUN_DIR (the run to continue)")
        info = read_run_info(Path(out))
        if info.get("stage") != stage:
            raise MinigptError(f"--resume: {out} is not a {stage} run (run.json says {info.get('stage')!r})")
        checkpoint = info["parent"]
    if checkpoint is None:
        raise MinigptError(f"{stage} needs --checkpoint PARENT_RUN (e.g. a pretrain run folder)")
    parent = load_checkpoint(checkpoint)
    if parent.config["model"].get("kind") == "reward":
        raise MinigptError(f"--checkpoint {checkpoint}: a reward model cannot be fine-tuned as a policy; "
                           "give a language model run")
    out = Path(out) if out else parent.run_dir.with_name(f"{parent.run_dir.name}-{stage}")
    return parent, out, info


def _data(info: dict, data, default) -> tuple[Any, str]:
    """The records or file to use: on resume what run.json recorded, else `data`, else the built-in set."""
    spec = info.get("data", data if data is not None else "pydocs")
    return (default() if spec == "pydocs" else spec), str(spec)


def _run_info(stage: str, parent: Checkpoint, data: str, model, extra: dict | None = None) -> dict:
    return {"stage": stage, "parent": str(parent.path), "data": data, "model": to_dict(model.config), **(extra or {})}


# ---------------------------------------------------------------------------------------------- stages


def sft(checkpoint: str | Path | None = None, data: str | None = None, *, train_config: TrainConfig | None = None,
        out: str | Path | None = None, resume: bool = False) -> TrainResult:
    """Supervised fine-tuning on conversations: loss on the assistant's tokens only."""
    parent, out, info = _parent(checkpoint, out, "sft", resume)
    cfg = train_config or stage_train_config("sft")
    records, spec = _data(info, data, pydocs.sft_records)
    tok, model = parent.tokenizer, parent.model
    rows = load_conversations(records, tok, source=spec)
    collate = lm_collate(model.config.block_size, tok.special_id("<|end|>"))
    objective = NextToken(rows_factory(rows, cfg.batch_size, collate), seed=cfg.seed, eval_iters=cfg.eval_iters)
    print0(f"[bold]sft[/] {len(rows.train):,} train / {len(rows.val):,} val conversations from {spec} -> {out}")
    return train(model, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="sft",
                 run_info=_run_info("sft", parent, spec, model))


def reward(checkpoint: str | Path | None = None, data: str | None = None, *,
           train_config: TrainConfig | None = None, out: str | Path | None = None, resume: bool = False) -> TrainResult:
    """A Bradley-Terry reward model: the parent's features plus a scalar head, on preference pairs."""
    from .models.reward import RewardConfig, RewardModel

    parent, out, info = _parent(checkpoint, out, "reward", resume)
    cfg = train_config or stage_train_config("reward")
    records, spec = _data(info, data, pydocs.preference_records)
    tok = parent.tokenizer
    seed_everything(cfg.seed)
    model = RewardModel(RewardConfig(base=to_dict(parent.model.config)))
    model.lm.load_state_dict(parent.model.state_dict())
    rows = load_preferences(records, tok, source=spec)
    collate = pair_collate(model.config.block_size, tok.special_id("<|end|>"))
    objective = RewardPairwise(rows_factory(rows, cfg.batch_size, collate), seed=cfg.seed, eval_iters=cfg.eval_iters)
    print0(f"[bold]reward[/] {len(rows.train):,} train / {len(rows.val):,} val pairs from {spec} -> {out}")
    return train(model, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="reward",
                 run_info=_run_info("reward", parent, spec, model))


def dpo(checkpoint: str | Path | None = None, data: str | None = None, *, beta: float = 0.1,
        train_config: TrainConfig | None = None, out: str | Path | None = None, resume: bool = False) -> TrainResult:
    """Direct preference optimisation against a frozen copy of the parent."""
    parent, out, info = _parent(checkpoint, out, "dpo", resume)
    beta = info.get("beta", beta)
    cfg = train_config or stage_train_config("dpo")
    records, spec = _data(info, data, pydocs.preference_records)
    tok, model = parent.tokenizer, parent.model
    reference = load_checkpoint(parent.path).model
    rows = load_preferences(records, tok, source=spec)
    collate = pair_collate(model.config.block_size, tok.special_id("<|end|>"))
    objective = DPO(rows_factory(rows, cfg.batch_size, collate), reference, beta=beta, seed=cfg.seed,
                    eval_iters=cfg.eval_iters)
    print0(f"[bold]dpo[/] beta {beta}, {len(rows.train):,} train / {len(rows.val):,} val pairs from {spec} -> {out}")
    return train(model, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="dpo",
                 run_info=_run_info("dpo", parent, spec, model, {"beta": beta}))


class Rollouts:
    """The RL batch iterator: each batch samples `samples` replies to each of a few prompts with the current
    policy (through the Engine), scores them, and returns (x, y, advantages) for the policy-gradient loss.
    State = the prompt order plus a counter that seeds each rollout, so RL resumes exactly too."""

    def __init__(self, policy, tokenizer, rows: list, reward_fn, rl: RLConfig, *, prompts_per_step: int, seed: int,
                 rank: int = 0, world: int = 1):
        self.policy, self.tokenizer, self.reward_fn, self.rl, self.seed = policy, tokenizer, reward_fn, rl, seed
        self.prompts = RowBatches(rows, prompts_per_step, list, seed=seed, rank=rank, world=world)
        self.collate = lm_collate(policy.config.block_size, tokenizer.special_id("<|end|>"))
        self.count = 0

    def __iter__(self) -> "Rollouts":
        return self

    def __next__(self) -> dict[str, Any]:
        from .engine import Engine

        picked = next(self.prompts)
        self.count += 1
        engine = Engine(self.policy, self.tokenizer)
        rows, advantages, rewards, lengths = [], [], [], []
        for j, (prompt_ids, record) in enumerate(picked):
            seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{self.count}:{j}".encode()).digest()[:4], "little")
            gens = engine.generate_many(prompt_ids, self.rl.samples, max_new_tokens=self.rl.max_new_tokens,
                                        temperature=self.rl.temperature, top_k=0, top_p=1.0, min_p=0.0,
                                        repetition_penalty=1.0, seed=seed)
            messages = _messages(record)
            scores = [float(self.reward_fn(messages, g.text, record)) for g in gens]
            mean = sum(scores) / len(scores)
            for g, s in zip(gens, scores):
                reply = list(g.ids)
                rows.append((prompt_ids + reply, [0] * len(prompt_ids) + [1] * len(reply)))
                advantages.append(s - mean)
                lengths.append(len(reply))
            rewards += scores
        x, y = self.collate(rows)
        return {"x": x, "y": y, "advantages": torch.tensor(advantages), "reward": sum(rewards) / len(rewards),
                "length": sum(lengths) / len(lengths)}

    def state_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts.state_dict(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prompts.load_state_dict(state["prompts"])
        self.count = int(state["count"])


def _messages(record: dict) -> list:
    from .chat_format import prompt_messages

    return prompt_messages(record["prompt"])


@torch.no_grad()
def answer_eval(model, tokenizer, rows: list, reward_fn, *, n: int, samples: int, temperature: float,
                max_new_tokens: int, seed: int = 0) -> dict[str, float]:
    """Replies to the first n prompt rows. `reward`: the mean reward of `samples` replies per prompt sampled at
    the rollout temperature with fixed seeds (what RL optimises, measured the same way at every evaluation);
    `greedy_reward`: of the one greedy reply; `length`: mean sampled reply length in tokens."""
    from .engine import Engine

    engine = Engine(model, tokenizer)
    rewards, greedy, lengths = [], [], []
    for i, (prompt_ids, record) in enumerate(rows[:n]):
        messages = _messages(record)
        gens = engine.generate_many(prompt_ids, samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                    top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, seed=seed + samples * i)
        rewards += [float(reward_fn(messages, g.text, record)) for g in gens]
        lengths += [len(g.ids) for g in gens]
        g = engine.generate(prompt_ids, max_new_tokens=max_new_tokens, temperature=0.0)
        greedy.append(float(reward_fn(messages, g.text, record)))
    mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
    return {"reward": mean(rewards), "greedy_reward": mean(greedy), "length": mean(lengths)}


def rl(checkpoint: str | Path | None = None, prompts: str | None = None, *, reward: str = "python:minigpt.rewards:token_f1",
       rl_config: RLConfig | None = None, train_config: TrainConfig | None = None, out: str | Path | None = None,
       resume: bool = False) -> TrainResult:
    """On-policy policy gradient against a reward, with a KL leash to the parent (the reference)."""
    from .rewards import load_reward

    parent, out, info = _parent(checkpoint, out, "rl", resume)
    reward, rl_cfg = info.get("reward", reward), RLConfig(**info["rl"]) if "rl" in info else (rl_config or RLConfig())
    cfg = train_config or stage_train_config("rl")
    records, spec = _data(info, prompts, pydocs.rl_prompts)
    tok, policy = parent.tokenizer, parent.model
    reference = load_checkpoint(parent.path).model
    reward_fn = load_reward(reward)
    rows = load_prompts(records, tok, source=spec)

    def make(split: str, seed: int, rank: int, world: int) -> Rollouts:
        return Rollouts(policy, tok, rows.split(split), reward_fn, rl_cfg, prompts_per_step=cfg.batch_size,
                        seed=seed, rank=rank, world=world)

    def evaluate(model) -> dict[str, float]:
        found = answer_eval(model, tok, rows.val, reward_fn, n=rl_cfg.eval_prompts, samples=4,
                            temperature=rl_cfg.temperature, max_new_tokens=rl_cfg.max_new_tokens, seed=cfg.seed)
        return {f"val/{k}": v for k, v in found.items()}

    objective = PolicyGradient(make, reference, kl_coef=rl_cfg.kl_coef, seed=cfg.seed, evaluate=evaluate)
    print0(f"[bold]rl[/] {len(rows.train):,} train / {len(rows.val):,} val prompts from {spec}, reward "
           f"{reward}, {rl_cfg.samples} samples per prompt, KL coefficient {rl_cfg.kl_coef} -> {out}")
    return train(policy, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="rl",
                 run_info=_run_info("rl", parent, spec, policy, {"reward": reward, "rl": to_dict(rl_cfg)}))
