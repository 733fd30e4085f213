"""SFT, reward model and DPO: the stages after pretraining, each a small function over the one training loop.

    sft     parent LM + conversations     -> NextToken on assistant tokens only       -> chat model
    reward  parent LM + preference pairs  -> RewardPairwise (Bradley-Terry)           -> reward model
    dpo     parent LM + preference pairs  -> DPO against a frozen copy of the parent  -> policy
    (rl     parent LM + prompts + reward  -> PolicyGradient on engine rollouts: rl.py)

Every stage inherits the model shape and tokenizer from its parent checkpoint, records its parent in run.json,
and resumes exactly like pretraining (`resume=True` reads everything back from the run folder). With no data
argument each stage uses the built-in chat data (text/chat_tasks.py): questions about standard-library functions
(from memory, about a pasted function, follow-ups), identity and out-of-world questions, with 1 function in 10
and 1 phrasing in 4 held out.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..text import chat_pairs, chat_tasks
from ..text.chat_format import render_conversation
from ..text.chat_data import Rows, RowBatches, lm_collate, load_conversations, load_preferences, pair_collate
from ..checkpoint import Checkpoint, check_run_dir, load_checkpoint, read_run_info, run_path
from ..common import MinigptError, init_distributed, print0, resolve_device, seed_everything, sha256_file
from ..config import to_dict
from .objectives import DPO, NextToken, RewardPairwise
from .trainer import TrainConfig, TrainResult, train

# Training defaults per stage (flags and config files override them). SFT's learning rate is the plateau of a sweep
# (scripts/ablate_sft.py, README): 2e-3 to 4e-3 answered held-out questions 0.06 F1 better than 5e-4.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": dict(max_iters=600, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_iters=30, weight_decay=0.0,
                eval_interval=100, eval_iters=8, sample_tokens=0),
    "reward": dict(max_iters=300, batch_size=16, lr=3e-4, min_lr=3e-5, warmup_iters=20, weight_decay=0.0,
                   eval_interval=100, eval_iters=8, sample_tokens=0),
    "dpo": dict(max_iters=200, batch_size=8, lr=1e-4, min_lr=1e-5, warmup_iters=10, weight_decay=0.0,
                eval_interval=50, eval_iters=8, sample_tokens=0),
    "rl": dict(max_iters=100, batch_size=8, lr=1e-4, min_lr=1e-4, warmup_iters=5, weight_decay=0.0,
               eval_interval=50, eval_iters=1, sample_tokens=0, grad_clip=1.0, schedule="constant"),
}


BUILT_IN = "built-in"  # the --data of a stage run on the built-in chat data (text/chat_tasks.py)
RPO_ALPHA = 10.0  # weight of the SFT term in DPO (scripts/ablate_dpo.py: 10 beat 3 from a stronger SFT model; README)


def stage_train_config(stage: str, **overrides: Any) -> TrainConfig:
    return TrainConfig(**{**STAGE_DEFAULTS[stage], **overrides})


# ---------------------------------------------------------------------------------------------- plumbing


def rows_factory(rows: Rows, batch_size: int, collate, pack: int | None = None):
    def make(split: str, seed: int, rank: int, world: int) -> RowBatches:
        return RowBatches(rows.split(split), batch_size, collate, seed=seed, rank=rank, world=world, pack=pack)
    return make


def _parent(checkpoint: str | Path, out: str | Path | None, stage: str, resume: bool) -> tuple[Checkpoint, Path, dict]:
    """Load the parent (on resume: the parent recorded in run.json) and pick the run folder."""
    info: dict = {}
    if resume:
        if not out:
            raise MinigptError("--resume needs --out RUN_DIR (the run to continue)")
        info = read_run_info(check_run_dir(out, resume=True))
        if info.get("stage") != stage:
            raise MinigptError(f"--resume: {out} is not a {stage} run (run.json says {info.get('stage')!r}); "
                               f"continue it with `minigpt {info.get('stage')} --out {out} --resume`")
        checkpoint = run_path(info, info["parent"])
    if checkpoint is None:
        raise MinigptError(f"{stage} needs --checkpoint PARENT_RUN (e.g. a pretrain run folder)")
    try:
        parent = load_checkpoint(checkpoint)
    except MinigptError as e:
        if not resume:
            raise
        where = (" (relative to the folder the run started in: resume from there)"
                 if "cwd" not in info and not Path(checkpoint).is_absolute() else "")
        raise MinigptError(f"--resume: cannot load the parent {checkpoint}{where} that {out}/run.json records ({e}); "
                           "the run needs it (its tokenizer, and for dpo and rl the reference): restore it") from None
    if parent.config["model"].get("kind") == "reward":
        raise MinigptError(f"--checkpoint {checkpoint}: a reward model cannot be fine-tuned as a policy; "
                           "give a language model run")
    out = check_run_dir(out if out else parent.run_dir.with_name(f"{parent.run_dir.name}-{stage}"), resume)
    return parent, out, info


def _join(cfg: TrainConfig) -> None:
    """Join the torchrun job before the stage's header (train() would, later): print0 then knows this process's
    rank, and the header prints once, not once per process."""
    init_distributed(resolve_device(cfg.device))


def _data(info: dict, data, default) -> tuple[Any, str]:
    """The records or file to use: on resume what run.json recorded, else `data`, else the built-in set
    (recorded as "built-in"; runs made before the stdlib corpus recorded "pydocs")."""
    spec = info.get("data", data if data is not None else BUILT_IN)
    if spec in (BUILT_IN, "pydocs"):
        return default(), spec
    return run_path(info, spec), str(spec)


def facts_of(parent: Checkpoint) -> chat_tasks.Facts:
    """What the built-in identity answers say about the model being fine-tuned (its parameter count)."""
    return chat_tasks.Facts(params=parent.model.num_params())


def _run_info(stage: str, parent: Checkpoint, data: str, model, extra: dict | None = None, *,
              rows: Rows | None = None) -> dict:
    """run.json's content. `data_sha256` (of the rendered rows) and `parent_sha256` (of the parent's weights) are
    what a resume is checked against (trainer._check_resume): other data or another parent is refused."""
    return {"stage": stage, "parent": str(parent.path), "data": data, "model": to_dict(model.config),
            "data_sha256": rows_sha256(rows) if rows is not None else None,
            "parent_sha256": sha256_file(parent.path / "model.safetensors"), **(extra or {})}


def _cut_note(rows: Rows, block_size: int) -> str:
    """How many conversations (or pairs) are longer than the context, and how `chat_data.window` cuts them."""
    long = sum(any(len(ids) > block_size + 1 for ids, _ in (row if isinstance(row[0], tuple) else [row]))
               for row in rows.train + rows.val)
    return (f"; {long:,} longer than the {block_size}-token context, cut to fit it (the end of the prompt, at "
            "least half the context when the reply is long too, then the start of the reply)") if long else ""


def rows_sha256(rows: Rows) -> str:
    """A hash of the rendered rows of both splits: the data, its split and the tokenizer in one number."""
    h = hashlib.sha256()
    for split in (rows.train, rows.val):
        for row in split:
            h.update(repr(row).encode("utf-8", "surrogatepass"))
        h.update(b"|")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- stages


def sft(checkpoint: str | Path | None = None, data: str | None = None, *, train_config: TrainConfig | None = None,
        out: str | Path | None = None, resume: bool = False) -> TrainResult:
    """Supervised fine-tuning on conversations: loss on the assistant's tokens only. The built-in conversations
    are chained into chat sessions that fit the context (`chat_tasks.sessions`); `data` is trained as given."""
    parent, out, info = _parent(checkpoint, out, "sft", resume)
    cfg = train_config or stage_train_config("sft")
    _join(cfg)
    tok, model = parent.tokenizer, parent.model

    def fits(messages: list[dict[str, str]]) -> bool:  # a chat session of the built-in data fits the context
        return len(render_conversation(tok, messages)[0]) <= model.config.block_size + 1

    records, spec = _data(info, data, lambda: chat_tasks.sessions(chat_tasks.sft_records(facts_of(parent)), fits,
                                                                  seed=cfg.seed))
    rows = load_conversations(records, tok, source=spec)
    collate = lm_collate(model.config.block_size, tok.special_id("<|end|>"))
    batches = rows_factory(rows, cfg.batch_size, collate, pack=model.config.block_size + 1)  # packed rows
    objective = NextToken(batches, seed=cfg.seed, eval_iters=cfg.eval_iters, only_targets=True)
    print0(f"[bold]sft[/] {len(rows.train):,} train / {len(rows.val):,} val conversations from {escape(spec)}"
           f"{_cut_note(rows, model.config.block_size)} -> {escape(str(out))}")
    return train(model, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="sft",
                 run_info=_run_info("sft", parent, spec, model, rows=rows))


def reward(checkpoint: str | Path | None = None, data: str | None = None, *,
           train_config: TrainConfig | None = None, out: str | Path | None = None, resume: bool = False) -> TrainResult:
    """A Bradley-Terry reward model: the parent's features plus a scalar head, on preference pairs."""
    from ..models.reward import RewardConfig, RewardModel

    parent, out, info = _parent(checkpoint, out, "reward", resume)
    cfg = train_config or stage_train_config("reward")
    _join(cfg)
    records, spec = _data(info, data, lambda: chat_pairs.preference_records(facts_of(parent)))
    tok = parent.tokenizer
    seed_everything(cfg.seed)
    model = RewardModel(RewardConfig(base=to_dict(parent.model.config)))
    model.lm.load_state_dict(parent.model.state_dict())
    rows = load_preferences(records, tok, source=spec)
    collate = pair_collate(model.config.block_size, tok.special_id("<|end|>"))
    objective = RewardPairwise(rows_factory(rows, cfg.batch_size, collate), seed=cfg.seed, eval_iters=cfg.eval_iters)
    print0(f"[bold]reward[/] {len(rows.train):,} train / {len(rows.val):,} val pairs from {escape(spec)}"
           f"{_cut_note(rows, model.config.block_size)} -> {escape(str(out))}")
    return train(model, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="reward",
                 run_info=_run_info("reward", parent, spec, model, rows=rows))


def dpo(checkpoint: str | Path | None = None, data: str | None = None, *, beta: float = 0.1,
        rpo_alpha: float = RPO_ALPHA, train_config: TrainConfig | None = None, out: str | Path | None = None,
        resume: bool = False) -> TrainResult:
    """Direct preference optimisation against a frozen copy of the parent, plus `rpo_alpha` times the chosen
    replies' SFT loss (objectives.DPO)."""
    parent, out, info = _parent(checkpoint, out, "dpo", resume)
    beta, rpo_alpha = info.get("beta", beta), info.get("rpo_alpha", rpo_alpha)
    cfg = train_config or stage_train_config("dpo")
    _join(cfg)
    records, spec = _data(info, data, lambda: chat_pairs.preference_records(facts_of(parent)))
    tok, model = parent.tokenizer, parent.model
    reference = load_checkpoint(parent.path).model
    rows = load_preferences(records, tok, source=spec)
    collate = pair_collate(model.config.block_size, tok.special_id("<|end|>"))
    objective = DPO(rows_factory(rows, cfg.batch_size, collate), reference, beta=beta, seed=cfg.seed,
                    eval_iters=cfg.eval_iters, sft_weight=rpo_alpha)
    print0(f"[bold]dpo[/] beta {beta}, rpo_alpha {rpo_alpha}, {len(rows.train):,} train / {len(rows.val):,} val "
           f"pairs from {escape(spec)}{_cut_note(rows, model.config.block_size)} -> {escape(str(out))}")
    return train(model, objective, cfg, out, tokenizer_path=parent.tokenizer_path, resume=resume, title="dpo",
                 run_info=_run_info("dpo", parent, spec, model, {"beta": beta, "rpo_alpha": rpo_alpha}, rows=rows))
