"""Scaling table: training tokens/s and model-FLOP utilisation of the tiny, small and medium presets, in one run.

Each preset is timed with real training steps (`train.throughput.step_seconds`: forward, backward, clipping and
the trainer's optimizer; random token ids, vocabulary 4096) at its own context length, in fp32 and, with
`--dtype bfloat16`, under autocast; `--compile` times the torch.compile'd model after its warm-up (reported).
MFU is tokens/s x training FLOPs per token over this machine's dense matmul peak measured in the same run
(`train.throughput.matmul_peak_flops`). On a GPU the same command measures the CUDA path.

    python scripts/bench_scaling.py                              # CPU, fp32
    python scripts/bench_scaling.py --device cuda --dtype bfloat16 --compile --batch 32
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed_steps(config, batch: int, device, dtype, compile_model: bool, steps: int) -> tuple[float, float]:
    """(median seconds per step, warm-up seconds) with autocast and compile as asked."""
    import statistics

    import torch

    from minigpt.common import autocast
    from minigpt.models.gpt import GPT
    from minigpt.train.optim import make_optimizer
    from minigpt.train.settings import TrainConfig
    from minigpt.train.throughput import sync

    model = GPT(config).to(device)
    opt = make_optimizer(model, TrainConfig(), device)
    run = torch.compile(model) if compile_model else model
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, config.vocab_size, (batch, config.block_size + 1), generator=g).to(device)
    times, t_warm = [], time.perf_counter()
    for i in range(steps + 3):
        t0 = time.perf_counter()
        with autocast(device, dtype):
            loss = run(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if i == 2:
            t_warm = time.perf_counter() - t_warm
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), t_warm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,small,medium")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per preset")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from minigpt.common import resolve_device
    from minigpt.models.gpt import GPT, GPTConfig, PRESETS
    from minigpt.train.throughput import matmul_peak_flops

    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    peak = matmul_peak_flops(device, dtype if device.type == "cuda" else torch.float32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    table = Table(title=f"training throughput on {name} ({args.dtype}{', compiled' if args.compile else ''}), "
                        f"batch {args.batch}; matmul peak {peak / 1e9:,.0f} GFLOP/s")
    for col in ("preset", "shape", "params", "block", "ms/step", "tokens/s", "MFU", "warm-up s"):
        table.add_column(col, justify="left" if col in ("preset", "shape") else "right")
    for preset in args.presets.split(","):
        config = replace(GPTConfig(**PRESETS[preset]), vocab_size=4096)
        model = GPT(config)
        step, warm = timed_steps(config, args.batch, device, dtype, args.compile, args.steps)
        tps = args.batch * config.block_size / step
        table.add_row(preset, f"{config.n_layer}x{config.n_embd}", f"{model.num_params() / 1e6:.1f}M",
                      str(config.block_size), f"{1000 * step:.0f}", f"{tps:,.0f}",
                      f"{100 * tps * model.flops_per_token() / peak:.0f}%", f"{warm:.1f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
