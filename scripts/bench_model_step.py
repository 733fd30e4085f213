"""Microbenchmark: one full training step (forward, backward, clip_grad_norm_, AdamW step) of the GPT, against the
reference CPU recipe's model (../shared/reference/gpt_cpu_recipe.py, imported by path) in the same run.

Rows: reference / minigpt with GPT-2 options (bias off and exact GELU, as the reference) / minigpt defaults, each
eager and under torch.compile, with AdamW in its three implementations (plain for-loop, foreach, fused). Rounds
are interleaved (every row runs a few steps in turn) so a busy machine slows every row alike; we report the
median ms/iter, tokens/s and the speed-up over the reference's own eager + plain-AdamW step (what its trainer
does: AdamW's default on CPU is the for-loop).

    python scripts/bench_model_step.py                     # the recipe shape: 4x4x128, block 64, batch 12, V=65
    python scripts/bench_model_step.py --threads 1,2 --dtypes float32,bfloat16
    python scripts/bench_model_step.py --threads 1 --clock cpu   # CPU time: steadier on a shared machine

OpenMP's wait policy is set to PASSIVE unless OMP_WAIT_POLICY is already set (it must be set before torch is
imported). When another job keeps one of the 2 cores busy, libgomp's default spin-waiting made 2 threads 7-30x
slower than 1 (a thread spins waiting for a descheduled peer); PASSIVE brings 2 threads back to about 1 thread's
speed. Run with OMP_WAIT_POLICY=spin (unrecognised, so libgomp's default) to see it.

Measured on the 2-core AMD EPYC (Zen 4, AVX512-BF16) with another job on one core, 1 thread, CPU clock, speed-up
over the reference's eager fp32 for-loop-AdamW step (64 ms): eager fp32 GPT-2 options 1.0x, defaults 0.92x;
fused AdamW +3-5%; torch.compile fp32 1.06-1.10x (warm-up 20-35 s cold, a few s with a warm inductor cache);
bf16 autocast eager 1.4x (defaults) / 1.6x (GPT-2 options), compiled 1.9x / 1.8x (defaults + fused: 33 ms).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import minigpt  # noqa: E402,F401  (chooses the OpenMP wait policy before torch loads libgomp)
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minigpt.models.gpt import GPT, GPTConfig, gpt2_compat  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "gpt_cpu_recipe.py"


def load_reference(path: Path):
    spec = importlib.util.spec_from_file_location("gpt_cpu_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, a) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "reference":
        return load_reference(Path(a.reference)).GPT(a.vocab, a.block, a.n_layer, a.n_head, a.n_embd)
    shape = dict(vocab_size=a.vocab, block_size=a.block, n_layer=a.n_layer, n_head=a.n_head, n_embd=a.n_embd)
    if name == "gpt2-compat":
        return GPT(GPTConfig(**shape, **{**gpt2_compat, "bias": False, "activation": "gelu"}))
    return GPT(GPTConfig(**shape))


def make_optimizer(model: torch.nn.Module, impl: str) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kw = {"plain": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]
    return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), **kw)


class Row:
    def __init__(self, model_name: str, compiled: bool, opt_impl: str, dtype: str, threads: int, a, batches):
        self.model_name, self.compiled, self.opt_impl, self.dtype = model_name, compiled, opt_impl, dtype
        self.threads = threads
        self.clock = time.thread_time if a.clock == "cpu" else time.perf_counter
        self.autocast = dtype != "float32"
        model = build(model_name, a)
        self.params = sum(p.numel() for p in model.parameters())
        self.fn = torch.compile(model) if compiled else model
        self.opt = make_optimizer(model, opt_impl)
        self.model, self.batches, self.i, self.times = model, batches, 0, []
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for _ in range(a.warmup):  # includes compilation for compiled rows
            self.step()
        self.warmup_s = time.perf_counter() - t0

    def step(self) -> float:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        t0 = self.clock()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.fn(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        return self.clock() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per row per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per row first (compiles)")
    ap.add_argument("--threads", default=str(torch.get_num_threads()),
                    help="comma-separated thread counts to compare (default: torch's choice, the core count)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this thread's CPU time, robust to a busy machine but only meaningful with --threads 1")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--models", default="reference,gpt2-compat,default")
    ap.add_argument("--opts", default="plain,foreach,fused")
    ap.add_argument("--dtypes", default="float32", help="float32 and/or bfloat16 (CPU autocast; fast where the CPU "
                                                        "has AVX512-BF16 or AMX)")
    ap.add_argument("--reference", default=str(REFERENCE))
    a = ap.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, a.vocab, (a.batch, a.block), generator=g),
                torch.randint(0, a.vocab, (a.batch, a.block), generator=g)) for _ in range(16)]
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, OpenMP waits: {minigpt.OMP_WAIT}, "
          f"load average {os.getloadavg()[0]:.1f}; shape {a.n_layer}x{a.n_head}x{a.n_embd}, "
          f"block {a.block}, batch {a.batch}, vocab {a.vocab}; {a.rounds} rounds x {a.steps} steps", flush=True)
    rows = []
    for compiled in ([False] if a.no_compile else [False, True]):
        for model_name in a.models.split(","):
            for opt_impl in a.opts.split(","):
                for dtype in a.dtypes.split(","):
                    for threads in map(int, a.threads.split(",")):
                        rows.append(Row(model_name, compiled, opt_impl, dtype, threads, a, batches))
    for _ in range(a.rounds):
        for row in rows:
            torch.set_num_threads(row.threads)
            row.times.extend(row.step() for _ in range(a.steps))
    rows_threads = [r.threads for r in rows]
    base = next((r for r in rows if r.model_name == "reference" and not r.compiled and r.opt_impl == "plain"
                 and not r.autocast and r.threads == max(rows_threads)), rows[0])
    base_ms = 1000 * statistics.median(base.times)
    tokens = a.batch * a.block
    print(f"\n{'model':<12} {'mode':<8} {'adamw':<8} {'dtype':<9} {'thr':>3} {'params':>8} {'ms/iter':>8} {'p10-p90':>13} {'tok/s':>7} "
          f"{'vs ref':>6} {'warm-up s':>9}")
    for r in rows:
        ts = sorted(1000 * t for t in r.times)
        ms = statistics.median(ts)
        spread = f"{ts[len(ts) // 10]:.1f}-{ts[9 * len(ts) // 10]:.1f}"
        print(f"{r.model_name:<12} {'compile' if r.compiled else 'eager':<8} {r.opt_impl:<8} {r.dtype:<9} {r.threads:>3} {r.params:>8,} "
              f"{ms:>8.2f} {spread:>13} {tokens / ms * 1000:>7.0f} {base_ms / ms:>5.2f}x {r.warmup_s:>9.1f}")


if __name__ == "__main__":
    main()
