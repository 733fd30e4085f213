"""Sweep of the speedrun's pretraining recipe at equal wall-clock: which shape, optimizer, learning rate and batch
reach the lowest validation loss in the same time on this machine (a script, not a test).

Each configuration's speed is measured first (`train.throughput.step_seconds`: real steps at the machine's
thread count, one configuration after another), which turns the wall-clock budget into its number of steps; then
every configuration trains for exactly that many steps on the `stdlib` corpus (the schedule by steps, so the
result does not depend on how busy the machine is while the sweep runs, and `--jobs 2` can train two at once on
one thread each). Prints one table: shape, parameters, measured tokens/s, steps, tokens per parameter, passes over
the corpus, the best val loss and bits per byte, and bits per byte on pydocs' held-out modules.

    python scripts/sweep_pretrain.py --seconds 360 --grid "optimizer=adamw,muon lr=1e-3,2e-3,4e-3"
    python scripts/sweep_pretrain.py --seconds 1080 --shapes 4x128,4x192,6x192,6x256 --jobs 2
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def shapes(spec: str) -> list[dict]:
    out = []
    for item in spec.split(","):
        layers, width = (int(v) for v in item.lower().split("x"))
        out.append({"n_layer": layers, "n_embd": width, "n_head": max(1, width // (32 if width < 256 else 64))})
    return out


def grid(spec: str) -> list[dict]:
    axes = [(k, v.split(",")) for k, _, v in (part.partition("=") for part in spec.split())]
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def measure(configs: list[dict], data: str, batch: int, block: int) -> list[float]:
    """Tokens/s of each configuration's training step here (the machine's own thread count)."""
    from dataclasses import replace

    from minigpt.models.gpt import GPTConfig
    from minigpt.text.shards import DEFAULT_VOCAB, prepare, resolve_tokenizer
    from minigpt.text.sources import open_source
    from minigpt.train.throughput import step_seconds

    source = open_source(data)
    prepared = prepare(source, resolve_tokenizer("auto", source, DEFAULT_VOCAB))
    speeds = []
    for c in configs:
        model = replace(GPTConfig(vocab_size=prepared.meta["vocab_size"], block_size=block),
                        **{k: c[k] for k in ("n_layer", "n_embd", "n_head")})
        b = int(c.get("batch_size", batch))
        speeds.append(b * block / step_seconds(model, b, "cpu", prepared.shard("train")))
    return speeds


def flags(c: dict, steps: int, block: int, batch: int) -> list[str]:
    out = ["--block-size", str(block), "--batch-size", str(c.get("batch_size", batch)), "--max-iters", str(steps),
           "--eval-interval", str(max(50, steps // 8)), "--eval-iters", "20", "--sample-tokens", "0",
           "--warmup-iters", str(min(100, steps // 20)), "--device", "cpu", "--log-interval", "50"]
    for k, v in c.items():
        if k != "batch_size":
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def result(run: Path) -> dict:
    from minigpt.checkpoint import load_checkpoint
    from minigpt.runs.heldout import corpus_bpb
    from minigpt.train.metrics import read_metrics

    evals = [r for r in read_metrics(run) if r.get("kind") == "eval"]
    best = min(evals, key=lambda r: r["val/loss"])
    ckpt = load_checkpoint(run / "best")
    return {"val_loss": best["val/loss"], "val_bpb": best["val/bpb"], "best_step": best["step"],
            "last_step": evals[-1]["step"], "train_loss": evals[-1]["train/loss"],
            "pydocs_bpb": corpus_bpb(ckpt.model, ckpt.tokenizer, "pydocs")["bpb"], "params": ckpt.model.num_params()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=360, help="wall-clock budget each configuration gets")
    ap.add_argument("--shapes", default="4x128", help="comma-separated LAYERSxWIDTH (heads of 32 dims below width "
                    "256, of 64 from there)")
    ap.add_argument("--grid", default="", help='other flags, e.g. "optimizer=adamw,muon lr=1e-3,2e-3"')
    ap.add_argument("--data", default="stdlib")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--jobs", type=int, default=1, help="configurations trained at once (one thread each if > 1)")
    ap.add_argument("--out", default="checkpoints/sweep")
    ap.add_argument("--speeds", default=None, help="a JSON file of measured tokens/s to reuse (written otherwise)")
    args = ap.parse_args()
    configs = [{**s, **g} for s in shapes(args.shapes) for g in (grid(args.grid) if args.grid else [{}])]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ["-".join(f"{k}{v}" for k, v in c.items()) for c in configs]
    cache = Path(args.speeds) if args.speeds else out / "speeds.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [c for c, n in zip(configs, names) if n not in known]
    if todo:
        for c, tps in zip(todo, measure(todo, args.data, args.batch_size, args.block_size)):
            known[names[configs.index(c)]] = tps
        cache.write_text(json.dumps(known, indent=1))
    env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if args.jobs > 1 else {})}
    running: list[subprocess.Popen] = []
    for c, name in zip(configs, names):
        run = out / name
        if (run / "best").is_file():
            continue
        steps = int(args.seconds * known[name] / (int(c.get("batch_size", args.batch_size)) * args.block_size))
        cmd = [sys.executable, "-m", "minigpt", "pretrain", "--data", args.data, "--out", str(run),
               *flags(c, steps, args.block_size, args.batch_size)]
        while sum(p.poll() is None for p in running) >= args.jobs:
            time.sleep(5)
        with open(out / f"{name}.log", "w") as log:
            running.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        print(f"started {name}: {steps} steps", flush=True)
    for p in running:
        p.wait()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pretraining sweep on {args.data}: {args.seconds / 60:.1f} min each at the measured speed")
    for col in ("config", "params", "tok/s", "steps", "tokens/param", "val loss", "val bpb", "best @", "pydocs bpb"):
        table.add_column(col, justify="left" if col == "config" else "right")
    rows = []
    for c, name in zip(configs, names):
        if not (out / name / "best").is_file():
            table.add_row(name, *["-"] * 8)
            continue
        r = result(out / name)
        tokens = r["last_step"] * int(c.get("batch_size", args.batch_size)) * args.block_size
        rows.append({"config": name, "tokens_per_s": known[name], **r, "tokens": tokens})
        table.add_row(name, f"{r['params'] / 1e6:.2f}M", f"{known[name]:,.0f}", str(r["last_step"]),
                      f"{tokens / r['params']:.1f}", f"{r['val_loss']:.4f}", f"{r['val_bpb']:.4f}",
                      f"{r['best_step']}", f"{r['pydocs_bpb']:.4f}")
    Console(width=160).print(table)
    (out / "sweep.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
