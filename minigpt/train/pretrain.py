"""Pretraining: text source + tokenizer -> prepared shards -> a model trained on next-token prediction.

`pretrain()` is the library form of `minigpt pretrain`: it resolves (or trains) the tokenizer, prepares the
shards when missing, builds any registered model kind (the GPT or a baseline) and runs the one training loop
with the `NextToken` objective. With no arguments it trains the `tiny` GPT on the built-in `pydocs` corpus
with a 4096-token BPE trained on the spot (cached under data/tokenizers/).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..common import MinigptError, init_distributed, print0, rank_zero_first, resolve_device, seed_everything
from ..config import to_dict
from ..text.shards import DEFAULT_VOCAB, Prepared, TokenWindows, prepare, resolve_tokenizer
from ..text.sources import open_source
from .objectives import NextToken
from .trainer import TrainConfig, TrainResult, train


def lm_objective(prepared: Prepared, block_size: int, batch_size: int, *, seed: int, eval_iters: int) -> NextToken:
    shards = {split: prepared.shard(split) for split in ("train", "val")}

    def windows(split: str, seed: int, rank: int, world: int) -> TokenWindows:
        return TokenWindows(shards[split], block_size, batch_size, seed=seed, rank=rank, world=world)

    return NextToken(windows, seed=seed, eval_iters=eval_iters,
                     bytes_per_token={s: prepared.bytes_per_token(s) for s in shards})


def sample_callback(tokenizer, prompt: str = "", max_new_tokens: int = 64):
    """At each evaluation: a short, seeded sample from the model (through the one inference engine)."""
    def sample(model) -> str | None:
        from ..infer.engine import Engine

        was_training = model.training
        engine = Engine(model, tokenizer)
        ids = [tokenizer.bos_id] + tokenizer.encode(prompt)
        text = engine.generate(ids, max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, seed=0).text
        model.train(was_training)
        return prompt + text
    return sample


def pretrain(data: str = "pydocs", *, tokenizer: str = "auto", vocab_size: int = DEFAULT_VOCAB,
             model_config: Any = None, train_config: TrainConfig | None = None, out: str | Path | None = None,
             resume: bool = False, sample_prompt: str = "") -> TrainResult:
    """Train a language model on `data`. `model_config` is any registered config (vocab_size is set from the
    tokenizer); the default is the GPT `tiny` preset. On `resume`, everything comes from the run's run.json."""
    from ..checkpoint import check_run_dir, read_run_info
    from ..models import build_model, config_from_dict
    from ..models.gpt import GPTConfig, PRESETS

    cfg = train_config or TrainConfig()
    if resume:
        info = read_run_info(Path(out)) if out else {}
        if not info:
            raise MinigptError(f"--resume: {out} has no run.json to resume; give the --out of an earlier run")
        data, tokenizer, vocab_size = info["data"], info["tokenizer"], info.get("vocab_size", vocab_size)
        model_config = config_from_dict(info["model"])
    source = open_source(data)
    kind = model_config.kind if model_config is not None else "gpt"
    out = check_run_dir(out if out else Path("checkpoints") / f"{source.name}-{kind}", resume)
    with rank_zero_first(init_distributed(resolve_device(cfg.device))):
        tok = resolve_tokenizer(tokenizer, source, vocab_size)
        prepared = prepare(source, tok)
    if model_config is None:
        model_config = GPTConfig(**{**PRESETS["tiny"], "vocab_size": tok.vocab_size})
    model_config = replace(model_config, vocab_size=tok.vocab_size)
    seed_everything(cfg.seed)  # the initial weights depend on --seed only
    model = build_model(model_config)
    objective = lm_objective(prepared, model_config.block_size, cfg.batch_size, seed=cfg.seed,
                             eval_iters=cfg.eval_iters)
    print0(f"[bold]{model_config.kind}[/] {model.num_params() / 1e6:.2f}M parameters, "
                  f"vocab {tok.vocab_size}, block {model_config.block_size}; data {prepared.path} "
                  f"({prepared.tokens('train'):,} train / {prepared.tokens('val'):,} val tokens) -> {out}")
    run_info = {"stage": "pretrain", "parent": None, "data": data, "tokenizer": tokenizer, "vocab_size": vocab_size,
                "prepared": str(prepared.path), "model": to_dict(model_config)}
    return train(model, objective, cfg, out, tokenizer_path=prepared.tokenizer_path, run_info=run_info,
                 resume=resume, on_eval=sample_callback(tok, sample_prompt, cfg.sample_tokens), title="pretrain")
