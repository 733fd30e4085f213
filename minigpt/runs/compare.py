"""`minigpt compare`: bigram, MLP, CNN, RNN, LSTM, GRU and the GPT trained on your data, one command, one report.

Each model kind is sized to about the same parameter count (`models.sizing.sized`), given the same budget
(wall-clock: the total split equally, each run's schedule following its elapsed time; or tokens: the same number
of training tokens each), the same prepared shards, tokenizer, block size, batch size and evaluation windows,
and trained by the one loop (`pretrain`). What differs per family is only the peak learning rate (`LR`, from the
sweep below). The out folder holds one run folder per kind, `results.json` (rewritten atomically after each
model, so an interrupted comparison resumes: finished kinds are skipped, an interrupted one continues with
`resume=True`) and `report.md` + `curves.png` (regenerate them any time with `compare_report.write_report(out)`).

A --params that the vocabulary alone outgrows (200K at 6,964 Chinese characters: an RNN's token table and output
layer are 564K) is refused before any work (`check_size`): the sized kinds would all be 1-unit models far over the
target, stuck at the uniform loss. The bigram is never sized and never refused: its V^2 table is the floor every
model must beat (one token of context), most worth having where the others struggle, so it trains at its real
size, which the report's header, table and notes state.

The report: params, FLOPs per token, tokens/s, training steps, train/val loss, val bits per byte, time in training
steps and wall time, samples (each kind with its own recorded seed, `sample_seed`), the val bits-per-byte curves
against wall time and against tokens, and, for line-structured data (>= 90% of lines at most 24 characters, like
names), makemore's memorisation check: the share of sampled lines found in the training set, in the validation
set, or new. `diagnose` names the best model (none when all sit at the uniform loss), writes the likely causes
when the GPT does not come out best (budget, size, data), and flags what weakens the comparison.

Defaults (2 CPU cores, a few minutes): 200K parameters (makemore's transformer size), a 5-minute total budget,
block 64, batch 32, up to 8 evaluations of 10 batches per model (under a time budget at most EVAL_SHARE of it),
AdamW with cosine decay to a tenth of the peak rate.
Peak learning rates (`LR`) from a sweep on names.txt (char level, 200K parameters, 250K tokens each = 1.2 epochs,
block 64, batch 32; final val loss in nats per character, lower is better):

    lr        1e-3    3e-3    1e-2          bigram:  3e-2 2.666   1e-1 2.594   3e-1 2.596
    gpt       2.565   2.431   2.557
    lstm        -     2.579   2.457
    gru         -     2.482   2.362
    rnn       2.437   2.378   2.359
    cnn       2.492   2.381   2.336
    mlp       2.394   2.213   2.100

The small recurrent, convolutional and MLP models want 1e-2 (3x the GPT's 3e-3; the GPT at 1e-2 is worse than at
1e-3), and the bigram table, which only moves by about lr per step, wants 1e-1.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape

from ..common import MinigptError, atomic_write_text, console, human_count
from ..config import check, to_dict
from .compare_report import RESULTS, read_results, write_report

DEFAULT_MODELS = ("bigram", "mlp", "cnn", "rnn", "lstm", "gru", "gpt")
# Peak AdamW learning rates per family (cosine decay to a tenth). Chosen by the sweep in the module docstring.
LR: dict[str, float] = {"bigram": 1e-1, "mlp": 1e-2, "cnn": 1e-2, "rnn": 1e-2, "lstm": 1e-2, "gru": 1e-2,
                        "gpt": 3e-3}
LINE_LIMIT = 24          # a "short line", in characters
LINE_SHARE = 0.9         # share of lines that must be short for the memorisation check
EVAL_SHARE = 0.25        # the most of a time budget that evaluations between training steps may take
SEED_STRIDE = 1_000_000  # kind i of DEFAULT_MODELS samples with seed + i * SEED_STRIDE (sample j: + j)
FORMAT = 1


@dataclass
class CompareConfig:
    """What one comparison trains. Either `seconds` (total wall-clock, split equally) or `tokens` (each)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    params: float = 2e5
    seconds: float | None = 300.0
    tokens: float | None = None
    block_size: int = 64
    batch_size: int = 32
    lr: dict[str, float] = field(default_factory=dict)
    evals: int = 8
    eval_iters: int = 10
    samples: int = 100
    line_check: bool | None = None
    seed: int = 1337
    device: str = "auto"

    def __post_init__(self) -> None:
        from ..models import kinds

        self.models = tuple(self.models)
        check(len(self.models) >= 1, "models", "name at least one model kind")
        unknown = [m for m in self.models if m not in kinds()]
        check(not unknown, "models", f"unknown kind {', '.join(unknown)}; choose from {', '.join(kinds())}")
        check(len(set(self.models)) == len(self.models), "models", "a kind is listed twice")
        check(self.params > 0, "params", "must be positive")
        check((self.seconds is None) != (self.tokens is None), "budget", "give a time budget or --tokens, not both")
        check(self.seconds is None or self.seconds > 0, "budget", "must be positive")
        check(self.block_size >= 2, "block_size", "must be at least 2")
        check(self.batch_size >= 1, "batch_size", "must be at least 1")
        check(self.tokens is None or self.tokens >= self.block_size * self.batch_size, "tokens",
              f"must be at least one batch ({self.block_size * self.batch_size} tokens)")
        check(self.evals >= 1, "evals", "must be at least 1")
        check(self.eval_iters >= 1, "eval_iters", "must be at least 1")
        check(self.samples >= 0, "samples", "must be >= 0")
        bad = [k for k in self.lr if k not in kinds()]
        check(not bad, "lr", f"unknown kind {', '.join(bad)} (write KIND=RATE)")

    def lr_for(self, kind: str) -> float:
        return float(self.lr.get(kind, LR.get(kind, 1e-3)))


@dataclass
class CompareResult:
    out: Path
    results: dict[str, Any]
    report: Path | None
    interrupted: bool = False


# ---------------------------------------------------------------------------------------------- parsing

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}


def parse_count(text: str, what: str = "--params") -> float:
    """'200K' -> 2e5, '1M' -> 1e6, '5e5' -> 5e5."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbg]?)\s*", str(text).lower())
    if not m:
        raise MinigptError(f"{what} {text}: not a count; write e.g. 200K, 1M or 500000")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


# ---------------------------------------------------------------------------------------------- line data


def line_structured(lines: list[str]) -> bool:
    """Like names.txt: at least 100 non-empty lines, 90% of them at most 24 characters."""
    lines = [ln for ln in lines if ln.strip()]
    return len(lines) >= 100 and sum(len(ln) <= LINE_LIMIT for ln in lines) >= LINE_SHARE * len(lines)


def _lines(source, split: str, limit: int | None = None) -> list[str]:
    """Non-empty lines of a split, stripped (the first `limit` only, when given)."""
    lines = (ln.strip() for doc in source.documents(split) for ln in doc.splitlines() if ln.strip())
    return list(itertools.islice(lines, limit))


def memorisation(samples: list[str], train_lines, val_lines) -> dict[str, Any]:
    """makemore's check: the share of sampled lines that are in the training set, else in the validation set,
    else new. Lines are compared stripped; empty samples are left out."""
    train_set, val_set = set(train_lines), set(val_lines)
    picked = [s.strip() for s in samples if s.strip()]
    n = len(picked)
    in_train = sum(s in train_set for s in picked)
    in_val = sum(s not in train_set and s in val_set for s in picked)
    if n == 0:
        return {"n": 0, "train": 0.0, "val": 0.0, "new": 0.0}
    return {"n": n, "train": in_train / n, "val": in_val / n, "new": (n - in_train - in_val) / n}


# ---------------------------------------------------------------------------------------------- planning


def check_size(cfg: CompareConfig, vocab_size: int) -> None:
    """Refuse a --params that the vocabulary alone outgrows: the token table and output layer of some kind's
    narrowest model (models.sizing.narrowest) have more parameters than the whole target, so `sized` would
    build 1-unit models far over it, which all stay at the uniform loss. The bigram is not checked: its V^2
    table is the one-token floor, not a sized model, and the report gives its real size."""
    from ..models.sizing import narrowest, vocab_params

    need = {k: vocab_params(narrowest(k, vocab_size, cfg.block_size)) for k in cfg.models if k != "bigram"}
    kind = max(need, key=need.__getitem__, default=None)
    if kind is None or need[kind] <= cfg.params:
        return
    smaller = 2 ** int(math.log2(max(1.0, cfg.params * vocab_size / (2 * need[kind]))))  # vocab at half the target
    vocab = (f", or use a smaller vocabulary (--tokenizer auto --vocab-size {smaller})"
             if 512 <= smaller < vocab_size else "")
    raise MinigptError(f"--params {human_count(cfg.params)}: at vocab {vocab_size:,} the {kind}'s token table and "
                       f"output layer alone need {human_count(need[kind])} parameters; raise --params to at least "
                       f"{human_count(2 * need[kind])}{vocab}")


def plan(kind: str, vocab_size: int, cfg: CompareConfig) -> tuple[Any, dict[str, Any]]:
    """(model config, the settings that must match on resume) for one kind."""
    from ..models.sizing import sized

    model_config = sized(kind, vocab_size, cfg.block_size, cfg.params)
    per_model = {"seconds": cfg.seconds / len(cfg.models)} if cfg.seconds else {"tokens": int(cfg.tokens)}
    settings = {"model": to_dict(model_config), "lr": cfg.lr_for(kind), "batch_size": cfg.batch_size,
                "evals": cfg.evals, "eval_iters": cfg.eval_iters, "seed": cfg.seed, **per_model}
    return model_config, settings


def train_config(model_config: Any, settings: dict[str, Any], device: str, shard=None):
    """The TrainConfig for one kind: a token budget sets max_iters; a time budget sets max_seconds and a
    generous max_iters (the schedule follows elapsed time), with eval_interval from a measured step time.

    Under a time budget evaluations spend the same clock as training, and the trainer spaces them in steps. So
    the gap between two is at least `min_gap` training steps, which keeps them to EVAL_SHARE of the time whatever
    the step-time estimate says (an evaluation of both splits is ~2/3 eval_iters steps' worth: a forward is ~1/3
    of a training step); a wrong estimate then changes how many evaluations there are, not their share."""
    from ..train.throughput import step_seconds
    from ..train.trainer import TrainConfig

    batch, block = settings["batch_size"], model_config.block_size
    if "tokens" in settings:  # evaluations are outside a token budget
        iters = max(1, math.ceil(settings["tokens"] / (batch * block)))
        expected, max_iters, min_gap = iters, iters, 1
    else:
        step = step_seconds(model_config, batch, device, shard)
        expected = max(1, int(settings["seconds"] * (1 - EVAL_SHARE) / step))
        max_iters = 10 * expected + 100
        min_gap = math.ceil(2 * settings["eval_iters"] / 3 * (1 - EVAL_SHARE) / EVAL_SHARE)
    lr = settings["lr"]
    log_every = max(1, min(50, expected // 50))  # evals land on logged steps, which carry their wall time
    eval_every = max(log_every, expected // settings["evals"] // log_every * log_every)
    eval_every = max(eval_every, math.ceil(min_gap / log_every) * log_every)  # a multiple of log_every too
    return TrainConfig(max_iters=max_iters, batch_size=batch, lr=lr, min_lr=lr / 10,
                       warmup_iters=min(100, expected // 50), eval_interval=eval_every,
                       eval_iters=settings["eval_iters"], log_interval=log_every,
                       sample_tokens=0, max_seconds=settings.get("seconds"), seed=settings["seed"], device=device,
                       keep_checkpoints=1)


# ---------------------------------------------------------------------------------------------- running


def _write_results(out: Path, results: dict[str, Any]) -> None:
    atomic_write_text(out / RESULTS, json.dumps(results, indent=1))


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on every platform
        return None


def compare(data: str = "pydocs", *, tokenizer: str = "char", vocab_size: int = 4096,
            config: CompareConfig | None = None, out: str | Path | None = None) -> CompareResult:
    """Train every kind in `config.models` on `data` with equal size and budget; write results and the report.
    Rerunning with the same arguments resumes: finished kinds are skipped, an interrupted one continues."""
    from ..text.sources import open_source
    from ..text.shards import prepare
    from ..text.shards import resolve_tokenizer

    cfg = config or CompareConfig()
    source = open_source(data)
    out = Path(out) if out else Path("checkpoints") / f"compare-{source.name}"
    if out.exists() and not out.is_dir():
        raise MinigptError(f"--out {out}: is a file, not a folder; choose another --out")
    tok = resolve_tokenizer(tokenizer, source, vocab_size)
    check_size(cfg, tok.vocab_size)
    prepared = prepare(source, tok)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MinigptError(f"--out {out}: cannot create the folder ({e.strerror or e}); choose another --out") from None
    results = read_results(out)
    if results and (results.get("data") != data or results.get("tokenizer_sha256") != tok.sha256):
        held = f"--task {results['task']}" if results.get("task") else f"{results.get('data')} with another tokenizer"
        raise MinigptError(f"{out}: holds a comparison on {held} or other data; choose another --out")
    lines = cfg.line_check if cfg.line_check is not None else line_structured(_lines(source, "train", 10_000))
    train_lines, val_lines = (_lines(source, "train"), _lines(source, "val")) if lines else ([], [])
    ascending = sum(a <= b for a, b in zip(val_lines, val_lines[1:])) / max(1, len(val_lines) - 1)
    results.update({"format": FORMAT, "data": data, "tokenizer": tokenizer, "tokenizer_sha256": tok.sha256,
                    "vocab_size": tok.vocab_size, "prepared": str(prepared.path),
                    "train_tokens": prepared.tokens("train"), "val_tokens": prepared.tokens("val"),
                    "bytes_per_token": prepared.bytes_per_token("val"), "lines": lines,
                    "val_ascending": ascending if lines else None,
                    "config": {**asdict(cfg), "models": list(cfg.models)}, "machine": _machine()})
    entries = results.setdefault("models", {})
    for i, kind in enumerate(cfg.models, 1):
        model_config, settings = plan(kind, tok.vocab_size, cfg)
        entry, run_dir = entries.get(kind), out / kind
        if entry and entry.get("settings") != settings:
            raise MinigptError(f"{run_dir}: was trained with other settings ({_diff(entry.get('settings'), settings)}); "
                               "rerun with the original flags, or choose another --out")
        if entry and entry.get("status") == "done" and (run_dir / "latest").is_file():
            console.print(f"[dim][{i}/{len(cfg.models)}] {kind}: done (val bpb {entry['val_bpb']:.3f}), skipped[/]")
            continue
        console.rule(f"[{i}/{len(cfg.models)}] {kind}")

        def record(entry: dict[str, Any], kind: str = kind) -> None:
            entries[kind] = entry
            _write_results(out, results)

        entry = _train_one(kind, model_config, settings, entry, run_dir, data, prepared, cfg, record)
        if entry["status"] == "interrupted":
            console.print(f"[yellow]comparison interrupted during {kind}; rerun the same command to resume[/]")
            return CompareResult(out, results, None, interrupted=True)
        entry.update(measure_run(run_dir, cfg, lines, train_lines, val_lines, seed=sample_seed(cfg.seed, kind)))
        entry["status"] = "done"
        _write_results(out, results)
    path = write_report(out)
    console.print(f"[green]report[/]: {escape(str(path))}")
    return CompareResult(out, results, path)


def _train_one(kind: str, model_config: Any, settings: dict[str, Any], entry: dict | None, run_dir: Path,
               data: str, prepared, cfg: CompareConfig, record) -> dict[str, Any]:
    """Train (or resume) one kind; its results entry with status "running" or "interrupted". `record(entry)`
    saves the entry before training starts, so a crash mid-run still leaves its settings for the resume."""
    from ..config import from_dict
    from ..train.pretrain import pretrain
    from ..train.trainer import TrainConfig

    resume = bool(entry) and (run_dir / "latest").is_file()
    if resume:  # the stored TrainConfig: a time budget's step estimate must not change mid-run
        tcfg = from_dict(TrainConfig, entry["train"])
    else:
        shutil.rmtree(run_dir, ignore_errors=True)  # a run killed before its first checkpoint holds nothing
        tcfg = train_config(model_config, settings, cfg.device, prepared.shard("train"))
    budget = f"{tcfg.max_seconds:.0f} s" if tcfg.max_seconds else f"{tcfg.max_iters} steps"
    console.print(f"{kind}: {'resuming, ' if resume else ''}lr {tcfg.lr:g}, {budget}")
    entry = {"kind": kind, "status": "running", "run_dir": str(run_dir), "settings": settings,
             "train": to_dict(tcfg), "lr": tcfg.lr}
    record(entry)
    load_before = _load()
    result = pretrain(data, tokenizer=str(prepared.tokenizer_path), model_config=model_config, train_config=tcfg,
                      out=run_dir, resume=resume)
    entry["load"] = [load_before, _load()]
    entry["status"] = "interrupted" if result.interrupted else "running"
    record(entry)
    return entry


def _diff(old: dict | None, new: dict) -> str:
    old = old or {}
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:3]) or "unknown"


def _machine() -> dict[str, Any]:
    import platform

    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "platform": platform.platform(terse=True)}


# ---------------------------------------------------------------------------------------------- measuring


def measure_run(run_dir: Path, cfg: CompareConfig, lines: bool, train_lines: list[str], val_lines: list[str],
                seed: int | None = None) -> dict[str, Any]:
    """What the report needs from one finished run: its metrics, size, speed, curve and samples (drawn with
    `seed`, default cfg.seed). `train_s` is the time spent in training steps (each train row's tokens over its
    tokens/s, which leaves evaluations and checkpoints out), so the report can show what the budget bought."""
    from ..checkpoint import load_checkpoint
    from ..train.metrics import read_metrics

    ckpt = load_checkpoint(run_dir, with_trainer_state=True)
    model = ckpt.model.eval()
    rows = read_metrics(run_dir)
    evals = [r for r in rows if r.get("kind") == "eval"]
    train = [r for r in rows if r.get("kind") == "train"]
    speeds = [r["tokens_per_s"] for r in train if r.get("tokens_per_s")]
    if not evals:
        raise MinigptError(f"{run_dir}/metrics.jsonl: no evaluation rows; delete {run_dir} to retrain it")
    last = evals[-1]
    wall = float((ckpt.trainer_state or {}).get("elapsed", last["time"]))

    def when(r: dict) -> float:  # an eval row's time can lag; the train row of its step has the wall time
        return max([r["time"]] + [t["time"] for t in train if t["step"] <= r["step"]][-1:])

    best = min((r for r in evals if "val/loss" in r), key=lambda r: r["val/loss"], default=last)
    train_s = sum((b["tokens"] - a["tokens"]) / b["tokens_per_s"]
                  for a, b in zip([{"tokens": 0}] + train, train) if b.get("tokens_per_s"))
    found = {"params": model.num_params(), "flops_per_token": model.flops_per_token(),
             "steps": last["step"], "tokens": last["tokens"], "wall_s": wall, "train_s": train_s,
             "evals": len(evals),
             "tokens_per_s": statistics.median(speeds) if speeds else None,
             "train_loss": last.get("train/loss"), "train_bpb": last.get("train/bpb"),
             "final_val_loss": last.get("val/loss"), "best_step": best["step"],
             "val_loss": best.get("val/loss"), "val_bpb": best.get("val/bpb"),
             "curve": [{"time": wall if r is last else when(r), "tokens": r["tokens"], "val_bpb": r.get("val/bpb"),
                        "val_loss": r.get("val/loss"), "train_loss": r.get("train/loss")} for r in evals]}
    if (run_dir / "best").is_file():  # samples from the checkpoint the table reports (makemore keeps the best too)
        model = load_checkpoint(run_dir / "best").model.eval()
    found.update(sample(model, ckpt.tokenizer, cfg, lines, train_lines, val_lines, seed=seed))
    return found


def sample_seed(seed: int, kind: str) -> int:
    """Each kind's own sampling seed, fixed by its place in DEFAULT_MODELS: with one shared seed, near-uniform
    models draw the same uniforms and their samples share fragments, as if they copied each other."""
    from ..infer.sampling import nth_seed

    return nth_seed(seed, DEFAULT_MODELS.index(kind) * SEED_STRIDE)


def sample(model, tokenizer, cfg: CompareConfig, lines: bool, train_lines: list[str], val_lines: list[str],
           seed: int | None = None) -> dict[str, Any]:
    """Samples from the model's own distribution (temperature 1, no top-k/top-p, as makemore samples), through
    the one inference engine, seeded `seed` (default cfg.seed). Line data: `cfg.samples` lines, each begun after a
    newline and stopped at the next (one batch, one shared prefill). Other data: one text of 256 tokens after
    <|bos|>. A base model can draw the special tokens (chat markers, <|bos|>) and the unknown-character id, which
    plain data never holds: they are the engine's stop ids here, so no sample prints one; `sample_end` says why the
    text ended, and the lines the memorisation check leaves out are counted in `dropped` (cut by the length
    limit, ended on such a token, blank)."""
    from ..infer.engine import Engine
    from ..text.tokenizer import UNK

    seed = cfg.seed if seed is None else seed
    engine = Engine(model, tokenizer)
    names = {i: name for name, i in tokenizer.specials.items()}
    if getattr(tokenizer, "unk_id", None) is not None:
        names[tokenizer.unk_id] = UNK
    plain = dict(temperature=1.0, top_k=0, top_p=1.0, stop_ids=set(names), seed=seed)

    def stopped_on(g) -> str | None:
        """The name of the special token that ended g; None when a newline or the length limit did."""
        return names.get(g.ids[-1]) if g.finish_reason == "stop" else None

    if not lines or cfg.samples == 0:
        gen = engine.generate([tokenizer.bos_id], max_new_tokens=256, **plain)
        end = {"tokens": len(gen.ids), "reason": gen.finish_reason, "token": stopped_on(gen)}
        return {"samples": [], "sample_text": gen.text, "sample_end": end, "sample_seed": seed, "memorisation": None}
    prompt = tokenizer.encode("\n")
    gens = engine.generate_many(prompt, cfg.samples, max_new_tokens=max(1, model.config.block_size - len(prompt)),
                                stop=("\n",), **plain)
    ended = [g for g in gens if g.finish_reason == "stop" and stopped_on(g) is None]  # at a newline
    picked = [g.text for g in ended if g.text.strip()]
    dropped = {"length": sum(g.finish_reason == "length" for g in gens),
               "special": sum(stopped_on(g) is not None for g in gens), "blank": len(ended) - len(picked)}
    return {"samples": picked, "sample_text": "\n".join(picked[:12]), "sample_seed": seed, "dropped": dropped,
            "memorisation": memorisation(picked, train_lines, val_lines)}
