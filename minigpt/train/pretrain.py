"""Pretraining: text source + tokenizer -> prepared shards -> a model trained on next-token prediction.

`pretrain()` is the library form of `minigpt pretrain`: it resolves (or trains) the tokenizer, prepares the
shards when missing, builds any registered model kind (the GPT or a baseline) and runs the one training loop
with the `NextToken` objective. With no arguments it trains the `tiny` GPT on the built-in `pydocs` corpus
with a 4096-token BPE trained on the spot (cached under data/tokenizers/).
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.markup import escape

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
             resume: bool = False, sample_prompt: str = "", init_from: str | Path | None = None,
             autosize: bool = False) -> TrainResult:
    """Train a language model on `data`. `model_config` is any registered config (vocab_size is set from the
    tokenizer); the default is the GPT `tiny` preset. On `resume`, everything comes from the run's run.json.
    `init_from`: a checkpoint (e.g. GPT-2 imported by models/hf.py `hf_start`) whose weights and tokenizer
    start the run; `model_config` may then differ from its config only in dropout and a shorter block_size.
    `autosize`: pick the GPT's depth and width for the time budget `train_config.max_seconds` (train/autosize.py)."""
    from ..checkpoint import check_run_dir
    from ..models import build_model, config_from_dict
    from ..models.gpt import GPTConfig, PRESETS

    cfg = train_config or TrainConfig()
    if resume:
        out, info = _resume_info(out)
        data, tokenizer, vocab_size = info["data"], info["tokenizer"], info.get("vocab_size", vocab_size)
        model_config = config_from_dict(info["model"])
    start = None
    if init_from is not None and not resume:
        from ..checkpoint import load_checkpoint

        start = load_checkpoint(init_from)
        tokenizer, model_config = str(start.tokenizer_path), _start_config(start.model.config, model_config)
    if not resume:  # a resume never re-reads the source: it continues on the shards it recorded
        source = open_source(data)
        kind = model_config.kind if model_config is not None else "gpt"
        out = check_run_dir(out if out else Path("checkpoints") / f"{source.name}-{kind}", resume)
    with rank_zero_first(init_distributed(resolve_device(cfg.device))):
        if resume:
            tok, prepared = _resume_data(out, info)
        else:
            tok = resolve_tokenizer(tokenizer, source, vocab_size)
            prepared = prepare(source, tok)
    if model_config is None:
        model_config = GPTConfig(**{**PRESETS["tiny"], "vocab_size": tok.vocab_size})
    model_config = replace(model_config, vocab_size=tok.vocab_size)
    prepared.check_block_size(model_config.block_size)  # both splits, before any timing, model or evaluation
    autosized = autosize and not resume
    if autosized:
        model_config = _autosize(model_config, cfg, prepared)
    if cfg.compile is None:
        cfg = replace(cfg, compile=compile_pays(model_config.kind, cfg))
        if cfg.compile:
            timed = ("; the shape above was timed without it, and compiled steps are often faster, so the run may see "
                     "more tokens than planned" if autosized else "")
            print0(f"torch.compile: on for this {cfg.max_seconds:.0f} s run (the first step waits for the compiler"
                   f"{timed}; --no-compile turns it off)")
    seed_everything(cfg.seed)  # the initial weights depend on --seed only
    model = build_model(model_config)
    if start is not None:
        _load_start(model, start.model)
    objective = lm_objective(prepared, model_config.block_size, cfg.batch_size, seed=cfg.seed,
                             eval_iters=cfg.eval_iters)
    print0(f"[bold]{model_config.kind}[/] {model.num_params() / 1e6:.2f}M parameters, "
           f"vocab {tok.vocab_size}, block {model_config.block_size}; data {escape(str(prepared.path))} "
           f"({prepared.tokens('train'):,} train / {prepared.tokens('val'):,} val tokens) -> {escape(str(out))}")
    run_info = {"stage": "pretrain", "parent": None, "data": data, "tokenizer": tokenizer, "vocab_size": vocab_size,
                "prepared": str(prepared.path), "model": to_dict(model_config),
                "init_from": str(start.path) if start is not None else info.get("init_from") if resume else None,
                "source_fingerprint": prepared.meta["source_fingerprint"], "data_sha256": prepared.fingerprint()}
    return train(model, objective, cfg, out, tokenizer_path=prepared.tokenizer_path, run_info=run_info,
                 resume=resume, on_eval=sample_callback(tok, sample_prompt, cfg.sample_tokens), title="pretrain")


COMPILE_MIN_SECONDS = 300.0  # torch.compile's warm-up is 10-20 s on 2 CPU cores; it pays back in runs this long


def compile_pays(kind: str, cfg: TrainConfig) -> bool:
    """Whether an unset --compile means on: a GPT (fixed shapes), a time budget of COMPILE_MIN_SECONDS or more,
    and a device inductor compiles for (CUDA, or a CPU with a C++ compiler; not MPS). On 2 CPU cores it pays at
    the speedrun's shape (4,096 tokens a step: 1.10x and 1.21x in two interleaved pairs of 200-step runs, same
    losses) and not at the tiny recipe's (768 tokens a step: 1.01x against 1.02x eager, scripts/bench_train.py)."""
    import shutil

    if kind != "gpt" or (cfg.max_seconds or 0) < COMPILE_MIN_SECONDS:
        return False
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        return any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    return device.type == "cuda"


def _autosize(model_config: Any, cfg: TrainConfig, prepared: Prepared) -> Any:
    """The GPT shape for the budget. Under torchrun the run sees every rank's tokens, and every rank times the
    ladder (as they will train: side by side) but builds rank 0's pick: timings differ, shapes must not."""
    import torch

    from .autosize import choose

    if model_config.kind != "gpt" or not cfg.max_seconds:
        raise MinigptError("sizing the model to the budget needs a GPT and --max-seconds; give the shape instead")
    device = resolve_device(cfg.device)
    dist = init_distributed(device)
    choice = choose(model_config, cfg.max_seconds, prepared.tokens("train"), batch_size=cfg.batch_size,
                    device=cfg.device, shard=prepared.shard("train"), train_config=cfg, world=dist.world_size)
    print0(choice.why, markup=False)
    if not dist.enabled:
        return choice.config
    import torch.distributed as tdist

    shape = [(choice.config.n_layer, choice.config.n_embd, choice.config.n_head)]
    tdist.broadcast_object_list(shape, src=0, device=torch.device("cuda", dist.local_rank)
                                if device.type == "cuda" else None)
    return replace(choice.config, **dict(zip(("n_layer", "n_embd", "n_head"), shape[0])))


def _resume_info(out: str | Path | None) -> tuple[Path, dict]:
    """The run folder to resume and its run.json, refused unless it is a pretraining run."""
    from ..checkpoint import check_run_dir, read_run_info

    if not out:
        raise MinigptError("--resume needs --out RUN_DIR (the run to continue)")
    out = check_run_dir(out, resume=True)
    info = read_run_info(out)
    if info.get("stage") != "pretrain":
        stage = info.get("stage")
        raise MinigptError(f"--resume: {out} is a {stage} run, not a pretraining run; continue it with `minigpt "
                           f"{stage} --out {out} --resume`" if stage else f"--resume: {out}/run.json names no stage; "
                           "restore it, or start a new run with another --out")
    missing = [k for k in ("data", "tokenizer", "model", "prepared") if k not in info]
    if missing:
        raise MinigptError(f"{out}/run.json: no {missing[0]!r}; the file is damaged: restore it, or start a new run")
    return out, info


def _resume_data(out: Path, info: dict) -> tuple[Any, Prepared]:
    """A resumed run's tokenizer and shards: the tokenizer in its checkpoint and the shards run.json records,
    both checked unchanged (shards that were deleted are made again when the source is unchanged), so --resume
    never switches either, whatever happened to the corpus or a --tokenizer file since."""
    from ..checkpoint import read_config, resolve_step, run_path, tokenizer_file
    from ..common import sha256_file
    from ..text import corpora
    from ..text.shards import load_prepared
    from ..text.sources import looks_like_path
    from ..text.tokenizer import load_tokenizer

    step = resolve_step(out)
    tok_file = tokenizer_file(step)
    if tok_file is None or sha256_file(tok_file) != read_config(step, resume=True).get("tokenizer_sha256"):
        raise MinigptError(f"--resume: {step} has no intact tokenizer file; resume needs it, so restore it")
    ckpt_tok = load_tokenizer(tok_file)
    path = Path(run_path(info, info["prepared"]))
    data = info["data"] if info["data"] in corpora.CORPORA else run_path(info, info["data"])
    if (path / "meta.json").is_file():
        prepared = load_prepared(path)
    else:
        if "cwd" not in info and not path.is_absolute() and looks_like_path(data) and not Path(data).exists():
            raise MinigptError(f"--resume: {out}/run.json names the shards {path} and the data {data} relative to "
                               "the folder the run started in, and neither is here; resume from that folder")
        source = open_source(data)
        if source.fingerprint != info.get("source_fingerprint"):
            raise MinigptError(f"--resume: the run's shards {path} are gone and --data {data} has changed "
                               "since the run started; restore one of them, or start a new run with another --out")
        prepared = prepare(source, ckpt_tok, out=path)
    if prepared.meta.get("tokenizer_sha256") != ckpt_tok.sha256:
        raise MinigptError(f"--resume: the shards in {path} were made with another tokenizer than {out}'s "
                           "checkpoint (re-prepared since the run started?); restore them, or start a new run")
    if info.get("data_sha256") not in (None, prepared.fingerprint()):
        raise MinigptError(f"--resume: the shards in {path} changed since {out} started (re-prepared from an "
                           "edited source?); restore them, or start a new run with another --out")
    with contextlib.suppress(MinigptError):
        if open_source(data).fingerprint != prepared.meta.get("source_fingerprint"):
            print0(f"note: --data {data} changed since this run started; the run continues on the shards "
                   f"it was started with ({path})", markup=False)
    return ckpt_tok, prepared


def _start_config(start: Any, asked: Any) -> Any:
    """The config of a run that starts from `start`'s weights: `asked` (flags on top of `start`) may change
    only what keeps the weights' shapes, dropout and a shorter context."""
    from ..config import flag

    if asked is None:
        return start
    if asked.kind != start.kind:
        raise MinigptError(f"--model {asked.kind}: --init-from holds a {start.kind} model; drop --model")
    for name, value in vars(asked).items():
        if name not in ("dropout", "block_size", "vocab_size") and value != getattr(start, name):
            raise MinigptError(f"{flag(name)} {value}: the model's shape and options come from --init-from "
                               f"({getattr(start, name)}); only --dropout and a smaller --block-size may change")
    if asked.block_size > start.block_size and getattr(start, "positions", None) == "learned":
        raise MinigptError(f"--block-size {asked.block_size}: the --init-from model learned only "
                           f"{start.block_size} positions; give at most that")
    return asked


def _load_start(model: Any, start: Any) -> None:
    """Copy `start`'s weights into `model` (a learned position table is cut to the model's context)."""
    weights = start.state_dict()
    if "transformer.wpe.weight" in weights:
        weights["transformer.wpe.weight"] = weights["transformer.wpe.weight"][:model.config.block_size]
    model.load_state_dict(weights)
