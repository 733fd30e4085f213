"""Training speed and quality against the nanoGPT CPU recipe, in one run (a script, not a test).

Runs, one after another on this machine: the reference trainer (../shared/reference/gpt_cpu_recipe.py, the
classic recipe: Tiny Shakespeare characters, 4 layers x 4 heads x 128, block 64, batch 12, 2000 iterations),
then `minigpt pretrain` with exactly those flags for (a) minigpt's GPT-2-compatible options (learned positions,
LayerNorm, GELU, tied head; no biases, like the reference) and (b) minigpt's default options (rotary positions,
RMSNorm, QK-norm, ReLU^2, untied head), each in fp32 (the CPU default) and with `--dtype bfloat16`. Prints ms/iter (median over training steps), tokens/s, MFU against the
fp32 matmul peak measured in the same run, val loss at 250/500/1000/2000 iterations and wall time, with the
ratios to the reference. Targets: (a) >= 1.25x the reference's tokens/s; (b) val loss <= 1.85 within the
reference's wall-clock.

    python scripts/bench_train.py [--data ../shared/data/tinyshakespeare.txt] [--max-iters 2000] [--quick]
    python scripts/bench_train.py --fp32-only --nanogpt PATH/TO/nanoGPT   # + whole-process rows against nanoGPT

Whole process (`--nanogpt`, a checkout of karpathy/nanoGPT; nothing of it is copied here): nanoGPT's `train.py`
with the same shape (its shakespeare_char data prepared from the same text) and `minigpt pretrain` on
already-prepared data, 500 iterations each, timed from the command to its exit and to its first finished
training step (nanoGPT: its "iter 0" line; minigpt: its first metrics row, logged every step here).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RECIPE = ["--tokenizer", "char", "--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64",
          "--batch-size", "12", "--eval-interval", "250", "--eval-iters", "20", "--dropout", "0.0",
          "--sample-tokens", "0", "--device", "cpu"]
GPT2_OPTIONS = ["--positions", "learned", "--norm", "layernorm", "--activation", "gelu", "--tie-embeddings",
                "--no-qk-norm", "--no-zero-init", "--no-bias"]


def matmul_peak() -> float:
    import torch

    n, best = 1024, float("inf")
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(10):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def run_reference(data: Path, iters: int) -> dict:
    out = subprocess.run([sys.executable, str(SHARED / "reference" / "gpt_cpu_recipe.py"), "--data", str(data),
                          "--max-iters", str(iters)], capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"ms_per_iter": r["ms_per_iter"], "tokens_per_s": r["tokens_per_s"], "wall_s": r["wall_s"],
            "val": {int(k): v for k, v in r["val_loss"].items()}, "params": r["params"]}


def run_minigpt(data: Path, iters: int, options: list[str], work: Path, name: str) -> dict:
    out = work / name
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "minigpt", "pretrain", "--data", str(data), *RECIPE,
                           "--max-iters", str(iters), "--log-interval", "10", "--out", str(out), *options],
                          capture_output=True, text=True, cwd=work)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"minigpt {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tps = [r["tokens_per_s"] for r in rows if r["kind"] == "train"]
    median_tps = statistics.median(tps)
    train_time = max(r["time"] for r in rows)
    evals = [r["step"] for r in rows if r["kind"] == "eval"]
    logged = [r for r in rows if r["kind"] == "train" and "loop_share" in r]
    quiet = [b["loop_share"] for a, b in zip(logged, logged[1:])  # intervals (a, b] that held no evaluation
             if not any(a["step"] <= e < b["step"] for e in evals)]
    return {"ms_per_iter": 12 * 64 / median_tps * 1000, "tokens_per_s": median_tps, "wall_s": wall,
            "loop_share": statistics.median(quiet) if quiet else None,
            "train_s": train_time, "val": {r["step"]: r["val/loss"] for r in rows if r["kind"] == "eval"},
            "val_by_time": [(r["time"], r["val/loss"]) for r in rows if r["kind"] == "eval"],
            "mfu_reported": statistics.median(r["mfu"] for r in rows if r["kind"] == "train")}


def whole_process(cmd: list[str], cwd: Path, first_step) -> dict:
    """Wall time of a command from start to exit, and to its first finished training step (`first_step()` turns
    true: polled every 10 ms)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    first = None
    while proc.poll() is None:
        if first is None and first_step(lines):
            first = time.perf_counter() - t0
        time.sleep(0.01)
    reader.join()
    if proc.returncode:
        sys.exit(f"{cmd[1]} failed:\n{''.join(lines)[-3000:]}")
    return {"wall_s": time.perf_counter() - t0, "first_step_s": first}


def run_nanogpt(nanogpt: Path, data: Path, iters: int, work: Path) -> dict:
    import shutil

    repo = work / "nanogpt"
    shutil.copytree(nanogpt, repo, ignore=shutil.ignore_patterns(".git"))
    shutil.copyfile(data, repo / "data" / "shakespeare_char" / "input.txt")
    subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=repo, check=True, capture_output=True)
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
           "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
           "--n_embd=128", f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--dropout=0.0",
           f"--warmup_iters={min(100, iters // 2)}"]
    return whole_process(cmd, repo, lambda lines: any(ln.startswith("iter 0:") for ln in lines))


def run_minigpt_process(data: Path, iters: int, options: list[str], work: Path, name: str) -> dict:
    out = work / f"process-{name}"
    cmd = [sys.executable, "-m", "minigpt", "pretrain", "--data", str(data), *RECIPE, "--max-iters", str(iters),
           "--warmup-iters", str(min(100, iters // 2)), "--log-interval", "1", *options, "--out", str(out)]
    subprocess.run([*cmd[:-2], "--max-iters", "1", "--out", str(work / f"prepare-{name}")], cwd=work, check=True,
                   capture_output=True)  # tokenizer and shards made once, as a user's second run finds them
    metrics = out / "metrics.jsonl"
    return whole_process(cmd, work, lambda lines: metrics.is_file() and '"kind": "train"' in metrics.read_text())


REFERENCE = "reference (nanoGPT recipe)"


def merged(rounds: list[dict], reference: list[dict]) -> dict:
    """One configuration over its rounds: median speed, and the median and range of its ratio to the
    reference of the same round (the losses are the same every round: same seed, same steps)."""
    ratios = [r["tokens_per_s"] / ref["tokens_per_s"] for r, ref in zip(rounds, reference)]
    tps = statistics.median(r["tokens_per_s"] for r in rounds)
    return {**rounds[0], "tokens_per_s": tps, "ms_per_iter": 12 * 64 / tps * 1000, "ratio": statistics.median(ratios),
            "ratio_range": (min(ratios), max(ratios)), "train_s": statistics.median(r.get("train_s", r["wall_s"])
                                                                                 for r in rounds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED / "data" / "tinyshakespeare.txt"))
    ap.add_argument("--max-iters", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="500 iterations, for a smoke run")
    ap.add_argument("--fp32-only", action="store_true", help="skip the bf16 autocast runs")
    ap.add_argument("--compile", action="store_true", help="also the two fp32 runs with --compile (torch.compile)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every configuration this many times, interleaved, and report medians (this machine's "
                         "speed drifts by 10-20%% between minute-long runs; interleaving gives each the same drift)")
    ap.add_argument("--nanogpt", default=None, help="a karpathy/nanoGPT checkout: adds the whole-process rows")
    ap.add_argument("--process-iters", type=int, default=500, help="iterations of the whole-process rows")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_file():
        print(f"skipped: {data} is absent (the shared data folder is not on this machine)")
        return
    iters = 500 if args.quick else args.max_iters
    from rich.console import Console
    from rich.table import Table

    import torch

    console = Console(width=max(140, Console().width))
    peak = matmul_peak()
    console.print(f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env_note = os.environ.get("OMP_NUM_THREADS", "default")
        configs = {REFERENCE: lambda k: run_reference(data, iters),
                   "minigpt (a) GPT-2 options": lambda k: run_minigpt(data, iters, GPT2_OPTIONS, work, f"gpt2-{k}"),
                   "minigpt (b) default options": lambda k: run_minigpt(data, iters, [], work, f"default-{k}")}
        if args.compile:  # the same two compiled (inductor's C++ kernels on CPU; its warm-up is in "train s")
            configs["minigpt (a) GPT-2 options, compiled"] = lambda k: run_minigpt(
                data, iters, [*GPT2_OPTIONS, "--compile"], work, f"gpt2-compiled-{k}")
            configs["minigpt (b) default options, compiled"] = lambda k: run_minigpt(
                data, iters, ["--compile"], work, f"default-compiled-{k}")
        if not args.fp32_only:  # the same two with bf16 autocast (fast on CPUs with AVX512-BF16 or AMX)
            configs["minigpt (a) GPT-2 options, bf16"] = lambda k: run_minigpt(
                data, iters, [*GPT2_OPTIONS, "--dtype", "bfloat16"], work, f"gpt2-bf16-{k}")
            configs["minigpt (b) default options, bf16"] = lambda k: run_minigpt(
                data, iters, ["--dtype", "bfloat16"], work, f"default-bf16-{k}")
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        for k in range(args.rounds):  # interleaved: every configuration once per round
            for name, run in configs.items():
                runs[name].append(run(k))
        results = {name: merged(rs, runs[REFERENCE]) for name, rs in runs.items()}
        process = {}
        if args.nanogpt:
            n = args.process_iters
            process["nanoGPT train.py"] = run_nanogpt(Path(args.nanogpt), data, n, work)
            process["minigpt pretrain (a) GPT-2 options"] = run_minigpt_process(data, n, GPT2_OPTIONS, work, "gpt2")
            process["minigpt pretrain (b) default options"] = run_minigpt_process(data, n, [], work, "default")
    from minigpt.models.gpt import GPT, GPTConfig

    def flops(options: dict) -> int:
        return GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, **options)).flops_per_token()

    gpt2 = flops(dict(positions="learned", norm="layernorm", activation="gelu", tie_embeddings=True, qk_norm=False,
                      bias=False))
    flops_per_token = {name: flops({}) if "(b)" in name else gpt2 for name in results}
    checkpoints = [s for s in (250, 500, 1000, 2000) if s <= iters]
    table = Table(title=f"CPU recipe, {iters} iterations, Tiny Shakespeare characters (OMP_NUM_THREADS={env_note}), "
                        f"median of {args.rounds} interleaved round(s)")
    for col in ("run", "ms/iter", "tokens/s", "x ref", "MFU", *[f"val@{s}" for s in checkpoints], "train s"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for name, r in results.items():
        mfu = r["tokens_per_s"] * flops_per_token[name] / peak
        lo, hi = r["ratio_range"]
        table.add_row(name, f"{r['ms_per_iter']:.1f}", f"{r['tokens_per_s']:,.0f}",
                      f"{r['ratio']:.2f}" + (f" ({lo:.2f}-{hi:.2f})" if args.rounds > 1 else ""), f"{100 * mfu:.0f}%",
                      *[f"{r['val'].get(s, float('nan')):.3f}" for s in checkpoints], f"{r.get('train_s', r['wall_s']):.0f}")
    console.print(table)
    ref, b = results[REFERENCE], results["minigpt (b) default options"]
    for label, target in (("(a) GPT-2 options", 1.25), ("(b) default options", 1.1)):
        fp32 = {name.split(", ")[-1] if "compiled" in name else "eager": r["ratio"] for name, r in results.items()
                if label in name and "bf16" not in name}
        best = max(fp32.values())
        console.print(f"target {label} fp32 tokens/s >= {target}x reference: "
                      + ", ".join(f"{k} {v:.2f}x" for k, v in fp32.items()) + f" -> {'met' if best >= target else 'MISSED'}")
    for name, r in results.items():
        if "loop_share" in r:
            console.print(f"{name}: the loop's own work between steps (logging, progress bar, data, schedule) "
                          f"{100 * r['loop_share']:.1f}% of the time, median over log intervals without an evaluation "
                          f"(target <= 3%)")
    if process:
        ptable = Table(title=f"whole process, {args.process_iters} iterations, from the command (data prepared)")
        for col in ("run", "to the first step s", "to exit s", "x nanoGPT"):
            ptable.add_column(col, justify="left" if col == "run" else "right")
        nano = process["nanoGPT train.py"]["wall_s"]
        for name, r in process.items():
            ptable.add_row(name, f"{r['first_step_s']:.1f}", f"{r['wall_s']:.1f}", f"{nano / r['wall_s']:.2f}")
        console.print(ptable)
    in_time = [(t, v) for t, v in b["val_by_time"] if t <= ref["wall_s"]]
    t_b, best_b = min(in_time, key=lambda tv: tv[1]) if in_time else (float("nan"), float("inf"))
    console.print(f"target (b) val loss <= 1.85 within the reference's {ref['wall_s']:.0f} s: {best_b:.3f} at "
                  f"{t_b:.0f} s of training (the reference ends at {ref['val'][max(ref['val'])]:.3f}) -> "
                  f"{'met' if best_b <= 1.85 else 'MISSED'}")


if __name__ == "__main__":
    main()
