"""Objectives: the only part of training that differs between stages (DESIGN section 3).

An objective (the `Objective` protocol) supplies `train_batches(rank, world)` (a stateful iterator with
`state_dict()`/`load_state_dict()`), `loss(model, batch) -> (loss, metrics)`, `tokens(batch)` (for tokens/s) and
`evaluate(model, ctx) -> {"split/name": value}`. `BatchObjective.evaluate` measures the loss and metrics on the
same fixed batches of both splits at every evaluation; RL measures reward by generating instead. Metrics from
`loss` may be tensors: the loop turns them into numbers only at log steps, so a step never waits on the device.

- `NextToken`: pretraining and SFT (SFT only differs in its batches: targets are -1 outside assistant replies).
- `RewardPairwise`: Bradley-Terry loss for a reward model.
- `DPO`: direct preference optimisation against a frozen reference.
- `PolicyGradient`: on-policy REINFORCE with a group-mean baseline and a KL leash to the reference; its batches
  are rollouts made by `rl.Rollouts`.
The losses themselves are small pure functions below, each with its maths, so they can be tested by hand.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator, Protocol

import torch
import torch.nn.functional as F

from ..common import Dist
from ..text.shards import fixed_batches

BatchFactory = Callable[..., Iterator]  # (split, seed, rank, world) -> iterator of batches


# ---------------------------------------------------------------------------------------------- pure losses


def sequence_logprobs(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) sum over positions with y != -1 of log p(y_t | x_<=t): the log-probability of each reply."""
    return -model(x, y, reduction="none", only_targets=True).sum(dim=1)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged: the negative log-likelihood that the chosen reply wins
    under the Bradley-Terry model P(a > b) = sigmoid(r_a - r_b) (Ouyang et al. 2022, eq. 1)."""
    return -F.logsigmoid(chosen - rejected).mean()


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Direct Preference Optimization, sigmoid form (Rafailov et al. 2023, eq. 7):

        L = -log sigmoid( beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

    Inputs are (B,) summed reply log-probabilities. The bracketed terms times beta are the implicit rewards of
    the chosen and rejected replies; when the policy equals the reference both are 0 and L = ln 2.
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_reward - rejected_reward).mean()
    return loss, {"chosen_reward": chosen_reward.detach(), "rejected_reward": rejected_reward.detach()}


def policy_gradient_loss(logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                         kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with a baseline and a KL penalty, per token (as GRPO, Shao et al. 2024, without clipping since
    each rollout is used for exactly one on-policy step):

        L = -mean_t( A * log pi(a_t) ) + kl_coef * mean_t( exp(r_t) - r_t - 1 ),   r_t = log ref(a_t) - log pi(a_t)

    `logp`, `ref_logp`: (B, T) per-token log-probs; `advantages`: (B,) reward minus its group's mean;
    `mask`: (B, T) 1 on sampled reply tokens. The KL term is Schulman's k3 estimator: unbiased, always >= 0.
    Returns (loss, mean KL).
    """
    mask = mask.float()
    n = mask.sum().clamp(min=1)
    pg = -(advantages[:, None] * logp * mask).sum() / n
    log_ratio = (ref_logp - logp) * mask
    kl = ((torch.exp(log_ratio) - log_ratio - 1) * mask).sum() / n
    return pg + kl_coef * kl, kl.detach()


def win_rate(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Share of pairs where chosen scores above rejected (a 0-d tensor); a tie counts half (an untrained head
    ties them all)."""
    return ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).mean()


# ---------------------------------------------------------------------------------------------- objectives


@dataclass
class EvalContext:
    """What `Objective.evaluate` may use from the loop: the device, the process group and the autocast."""

    device: torch.device
    dist: Dist = field(default_factory=Dist)
    autocast: Callable[[], ContextManager] = contextlib.nullcontext

    def to_device(self, batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def mean(self, totals: dict[str, float], count: int) -> dict[str, float]:
        """Sums over this rank's batches -> means over every rank's (`count` batches per rank)."""
        if self.dist.enabled:
            import torch.distributed as tdist

            keys = sorted(totals)
            t = torch.tensor([totals[k] for k in keys], dtype=torch.float64)
            tdist.all_reduce(t)
            totals = dict(zip(keys, t.tolist()))
        return {k: v / (count * self.dist.world_size) for k, v in totals.items()}

    def batch_means(self, values: list[dict[str, float]], weights: list[float]) -> dict[str, float]:
        """This rank's metrics of each evaluation batch and what each averages over (its `weight`: targets, rows)
        -> the mean over batches of every rank's slices of a batch taken together, each slice by its weight. So
        N processes give what one process with N times the batch gives, where a mean of per-rank means would not
        (SFT's slices hold different numbers of targets)."""
        keys = sorted(values[0]) if values else []
        t = torch.tensor([[w * v[k] if w else 0.0 for k in keys] + [w] for v, w in zip(values, weights)],
                         dtype=torch.float64).reshape(len(values), len(keys) + 1)
        if self.dist.enabled:
            import torch.distributed as tdist

            tdist.all_reduce(t)
        means = (t[:, :-1] / t[:, -1:].clamp(min=1e-12)).mean(0)
        return dict(zip(keys, means.tolist()))


class Objective(Protocol):
    """What a stage supplies to the loop. Batches are tuples/dicts of tensors."""

    def train_batches(self, rank: int, world: int) -> Iterator: ...

    def loss(self, model, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def tokens(self, batch: Any) -> int: ...

    def evaluate(self, model, ctx: EvalContext) -> dict[str, float]: ...


class BatchObjective:
    """Batches from a factory `(split, seed, rank, world) -> iterator`; evaluation on the first `eval_iters`
    batches of freshly seeded iterators of each split (the same batches at every evaluation)."""

    def __init__(self, make_batches: BatchFactory, *, seed: int, eval_iters: int):
        self.make_batches, self.seed, self.eval_iters = make_batches, seed, eval_iters
        self._eval: dict[tuple[str, int, int], list] = {}

    def train_batches(self, rank: int, world: int) -> Iterator:
        return self.make_batches("train", self.seed, rank, world)

    def eval_batches(self, split: str, rank: int = 0, world: int = 1) -> list:
        """This rank's slices of the same `eval_iters` global batches at every evaluation, whatever the world
        size: N processes evaluate exactly what one process would. Made once, then kept."""
        key = (split, rank, world)
        if key not in self._eval:
            seed = self.seed + (1 if split == "train" else 2) * 1_000_003
            self._eval[key] = fixed_batches(lambda: self.make_batches(split, seed, rank, world), self.eval_iters)
        return self._eval[key]

    def tokens(self, batch: Any) -> int:
        return int(batch[0].numel())

    def weight(self, batch: Any) -> float:
        """What the loss of `batch` is a mean over (its rows; NextToken: its targets): a rank's share of an
        evaluation batch counts by it (EvalContext.batch_means)."""
        return float(len(batch[0]))

    def eval_metrics(self, split: str, metrics: dict[str, float]) -> dict[str, float]:
        """Derived figures from the mean loss and metrics of a split (e.g. bits per byte)."""
        return metrics

    @torch.no_grad()
    def evaluate(self, model, ctx: EvalContext) -> dict[str, float]:
        """Mean loss and metrics over the fixed batches of train and val: {"train/loss", "val/loss", ...}."""
        was_training = model.training
        model.eval()
        out: dict[str, float] = {}
        for split in ("train", "val"):
            values, weights = [], []
            for batch in self.eval_batches(split, ctx.dist.rank, ctx.dist.world_size):
                with ctx.autocast():
                    loss, metrics = self.loss(model, ctx.to_device(batch))
                values.append({k: float(v) for k, v in {"loss": loss, **metrics}.items()})
                weights.append(self.weight(batch))
            means = self.eval_metrics(split, ctx.batch_means(values, weights))
            out.update({f"{split}/{k}": v for k, v in means.items()})
        model.train(was_training)
        return out


class NextToken(BatchObjective):
    """Cross-entropy on the next token (targets of -1 are ignored). Reports bits per byte when it knows the
    bytes per token of each split, so models with different vocabularies compare honestly. `only_targets`: the
    head runs only where there is a target (SFT, whose prompts have none; `LanguageModel.forward`)."""

    def __init__(self, make_batches: BatchFactory, *, seed: int, eval_iters: int,
                 bytes_per_token: dict[str, float] | None = None, only_targets: bool = False):
        super().__init__(make_batches, seed=seed, eval_iters=eval_iters)
        self.bytes_per_token, self.only_targets = bytes_per_token or {}, only_targets
        self.uneven_slices = only_targets  # SFT: each rank's slice holds its own number of targets (Run._share)

    def loss(self, model, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        return model(x, y, only_targets=self.only_targets), {}

    def weight(self, batch: Any) -> float:
        return float((batch[1] != -1).sum())

    def eval_metrics(self, split: str, metrics: dict[str, float]) -> dict[str, float]:
        if split in self.bytes_per_token:
            metrics["bpb"] = metrics["loss"] / math.log(2) / self.bytes_per_token[split]
        return metrics


class RewardPairwise(BatchObjective):
    """Batches are (2B, T) pairs: chosen rows then rejected rows. The model returns one score per row."""

    # The reward model scores with its language model's features, never its output head: DDP must expect
    # parameters without a gradient (they keep none, as in one process)
    find_unused_parameters = True

    def loss(self, model, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        scores = model(x, y)
        chosen, rejected = scores.chunk(2)
        return bradley_terry_loss(chosen, rejected), {"accuracy": win_rate(chosen, rejected),
                                                      "margin": (chosen - rejected).detach().mean()}


class _WithReference(BatchObjective):
    """Holds a frozen reference model, moved to the batch's device on first use."""

    def __init__(self, make_batches: BatchFactory, reference, *, seed: int, eval_iters: int):
        super().__init__(make_batches, seed=seed, eval_iters=eval_iters)
        self.reference = reference.eval().requires_grad_(False)

    def _ref(self, device: torch.device):
        if next(self.reference.parameters()).device != device:
            self.reference.to(device)
        return self.reference


class DPO(_WithReference):
    """Preference pairs as (2B, T) batches (chosen first). Metrics: implicit rewards, margin, accuracy (implicit
    reward of chosen above rejected) and `pref_acc` (raw policy log-prob of chosen above rejected).

    `sft_weight` > 0 adds the chosen replies' negative log-likelihood per token (RPO: Pang et al. 2024,
    "Iterative Reasoning Preference Optimization", eq. 3, as TRL's `rpo_alpha`): plain DPO can lower the
    likelihood of both replies as long as their margin grows, and greedy answers get worse; the SFT term keeps
    the chosen reply likely."""

    def __init__(self, make_batches: BatchFactory, reference, *, beta: float, seed: int, eval_iters: int,
                 sft_weight: float = 0.0):
        super().__init__(make_batches, reference, seed=seed, eval_iters=eval_iters)
        self.beta, self.sft_weight = beta, sft_weight

    def loss(self, model, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        per_token = model(x, y, reduction="none", only_targets=True)  # (2B, T), 0 where y == -1
        policy = -per_token.sum(dim=1)
        with torch.no_grad():
            ref = sequence_logprobs(self._ref(x.device), x, y)
        pc, pr = policy.chunk(2)
        rc, rr = ref.chunk(2)
        loss, r = dpo_loss(pc, pr, rc, rr, self.beta)
        chosen = y[: len(y) // 2] != -1
        nll = per_token[: len(y) // 2].sum() / chosen.sum().clamp(min=1)
        if self.sft_weight:
            loss = loss + self.sft_weight * nll
        return loss, {"chosen_reward": r["chosen_reward"].mean(), "rejected_reward": r["rejected_reward"].mean(),
                      "margin": (r["chosen_reward"] - r["rejected_reward"]).mean(),
                      "accuracy": win_rate(r["chosen_reward"], r["rejected_reward"]),
                      "pref_acc": win_rate(pc, pr), "chosen_nll": nll.detach()}


class PolicyGradient(_WithReference):
    """Batches are rollouts made by the engine (`rl.Rollouts`): dicts with x, y, advantages and the rollout
    statistics. `evaluate` replies to held-out prompts and measures their reward (the function RL passes in)."""

    def __init__(self, make_batches: BatchFactory, reference, *, kl_coef: float, seed: int,
                 evaluate: Callable[[Any], dict[str, float]], anchor_coef: float = 0.0):
        super().__init__(make_batches, reference, seed=seed, eval_iters=1)
        self.kl_coef, self._evaluate, self.anchor_coef = kl_coef, evaluate, anchor_coef

    def tokens(self, batch: Any) -> int:
        return int(batch["x"].numel())

    def loss(self, model, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch["x"], batch["y"]
        logp = -model(x, y, reduction="none", only_targets=True)
        with torch.no_grad():
            ref_logp = -self._ref(x.device)(x, y, reduction="none", only_targets=True)
        loss, kl = policy_gradient_loss(logp, ref_logp, batch["advantages"], y != -1, self.kl_coef)
        metrics = {"reward": batch["reward"], "kl": kl, "length": batch["length"]}
        if "anchor" in batch:  # the SFT loss on replies RL must not forget (InstructGPT's ptx term, aimed)
            anchor = model(*batch["anchor"], only_targets=True)
            loss, metrics["anchor_nll"] = loss + self.anchor_coef * anchor, anchor.detach()
        return loss, metrics

    best_by = ("val/reward", -1)  # the run's `best` step: the highest held-out reward (there is no val loss)

    def evaluate(self, model, ctx: EvalContext) -> dict[str, float]:
        return self._evaluate(model)
