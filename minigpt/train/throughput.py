"""What this machine can do: its dense matmul peak (for MFU) and the measured time of one training step.

`matmul_peak_flops` is the denominator of model-FLOP utilisation; `step_seconds` times real training steps of a
model (batches drawn as the trainer draws them, forward under its autocast, backward, clipping, its optimizer),
which is what `minigpt compare` needs to turn a time budget into evaluation intervals and what the speedrun
needs to size its model to the budget.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from typing import Any

import torch

from ..common import atomic_write_text, minigpt_home


def sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA, MPS) so a timer measures it; a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """This machine's dense matmul FLOP/s for MFU: measured at each start (best of a few 1024^3 matmuls on CPU,
    ~50 ms) and remembered under MINIGPT_HOME as the best ever seen, since a measurement taken while the
    machine is busy reads low, and a peak is what the hardware can do. An unreadable cache is measured anew."""
    key = f"{device.type}:{torch.cuda.get_device_name(device) if device.type == 'cuda' else ''}:" \
          f"{dtype}:{torch.get_num_threads()}"
    cache = minigpt_home() / "peak_flops.json"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    n = 1024 if device.type == "cpu" else 8192
    g = torch.Generator(device=device).manual_seed(0)  # never touch the global RNG (exact resume)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    best = math.inf
    for _ in range(5 if device.type == "cpu" else 20):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    measured = 2 * n**3 / best
    if measured > float(known.get(key, 0.0) or 0.0):
        known[key] = measured
        atomic_write_text(cache, json.dumps(known, indent=1))
    return float(known[key])


def step_seconds(model_config: Any, batch: int, device: str | torch.device = "auto", shard=None,
                 train_config: Any = None) -> float:
    """Median seconds per training step of a fresh model of `model_config` here: windows drawn from `shard`
    (random ids when none), forward under the run's autocast, backward, clipping and the run's optimizer
    (`train_config`'s, default TrainConfig's: Muon costs more per step than fused AdamW, and on a GPU bf16 runs
    several times faster than fp32); 2 warm-up steps, then about 1 s of steps. Not compiled."""
    from ..common import autocast, resolve_device, resolve_dtype
    from ..models import build_model
    from ..text.shards import TokenWindows
    from .optim import make_optimizer
    from .settings import TrainConfig

    cfg = train_config or TrainConfig()
    dev = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(cfg.dtype, dev)
    model = build_model(model_config).to(dev)
    opt = make_optimizer(model, cfg, dev)
    if shard is None or len(shard) <= model_config.block_size + 1:
        gen = torch.Generator().manual_seed(0)
        shard = torch.randint(0, model_config.vocab_size, (64 * model_config.block_size,), generator=gen).numpy()
    windows = TokenWindows(shard, model_config.block_size, batch, seed=0)
    times: list[float] = []
    for i in range(40):
        t0 = time.perf_counter()
        x, y = (t.to(dev) for t in next(windows))
        with autocast(dev, dtype):
            loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(dev)
        if i >= 2:
            times.append(time.perf_counter() - t0)
            if sum(times) > 1.0 and len(times) >= 3:
                break
    return statistics.median(times)
