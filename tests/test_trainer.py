"""The one training loop: schedule, parameter groups, loss going down, checkpoints and exact resume."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from minigpt.checkpoint import load_checkpoint, resolve_step
from minigpt.common import MinigptError
from minigpt.models.gpt import GPT, GPTConfig
from minigpt.train.metrics import read_metrics
from minigpt.train.pretrain import pretrain
from minigpt.train.optim import lr_at, param_groups
from minigpt.train.trainer import TrainConfig

from conftest import tiny_model, tiny_train

def run(corpus, out, **kw):
    return pretrain(str(corpus), tokenizer="char", model_config=tiny_model(), train_config=tiny_train(**kw), out=out)


def test_compile_is_on_by_default_only_where_it_pays(monkeypatch):
    """Unset --compile: a GPT pretraining run of 5 minutes or more compiles on CUDA or on a CPU with a C++
    compiler; shorter runs, other models, MPS and a CPU without a compiler do not."""
    import shutil as sh

    from minigpt.train import pretrain as pt

    long, short = TrainConfig(max_seconds=pt.COMPILE_MIN_SECONDS), TrainConfig(max_seconds=299)
    monkeypatch.setattr(sh, "which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    for device, expected in (("cuda", True), ("cpu", True), ("mps", False)):
        monkeypatch.setattr(pt, "resolve_device", lambda name, d=device: torch.device(d))
        assert pt.compile_pays("gpt", long) is expected
        assert not pt.compile_pays("gpt", short) and not pt.compile_pays("lstm", long)
    assert not pt.compile_pays("gpt", TrainConfig(max_iters=10**6))
    monkeypatch.setattr(sh, "which", lambda name: None)
    monkeypatch.setattr(pt, "resolve_device", lambda name: torch.device("cpu"))
    assert not pt.compile_pays("gpt", long)


def test_lr_schedule_by_hand():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    assert lr_at(0, cfg) == pytest.approx(1e-3 * 1 / 11)
    assert lr_at(9, cfg) == pytest.approx(1e-3 * 10 / 11)
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # start of the cosine
    assert lr_at(60, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway: cos(pi/2) = 0
    assert lr_at(110, cfg) == pytest.approx(1e-4)
    linear = TrainConfig(lr=1e-3, min_lr=0.0, warmup_iters=0, max_iters=100, schedule="linear")
    assert lr_at(25, linear) == pytest.approx(7.5e-4)
    assert lr_at(5, linear, progress=0.5) == pytest.approx(5e-4)  # time budget drives the decay


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, bias=True,
                          norm="layernorm", positions="learned", tie_embeddings=True))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 2 and "emb" not in names[id(p)] and "wte" not in names[id(p)] for p in decay["params"])
    assert any(p.dim() == 1 for p in no_decay["params"])
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert embedding_ids <= {id(p) for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len({id(p) for p in model.parameters()})


def test_loss_goes_down_and_run_folder_is_complete(corpus, tmp_path):
    result = run(corpus, tmp_path / "run", max_iters=60, eval_interval=30)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[0]["val/loss"] == pytest.approx(math.log(26), rel=0.05)  # 26 characters: uniform at first
    assert result.metrics["val/loss"] < 0.75 * math.log(tiny_model().vocab_size)
    assert 0 < result.metrics["val/bpb"] < 8
    step = resolve_step(tmp_path / "run")
    assert step.name == "step_000060"
    assert {p.name for p in step.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.char",
                                                "trainer_state.safetensors", "trainer_state.json"}
    assert (tmp_path / "run" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["stage"] == "pretrain" and info["model"]["n_layer"] == 2 and info["train"]["max_iters"] == 60


def test_a_time_budget_that_ends_between_log_steps_still_logs_the_last_steps(corpus, tmp_path):
    """The clock stops a run before its first log step: the metrics still get a train row for the steps run
    (the speedrun's report card reads RL's KL from such rows), at the step the run ended on, before its eval."""
    run(corpus, tmp_path / "run", max_iters=10**6, max_seconds=2.0, log_interval=10**6, eval_interval=10**6)
    rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 1 and train[0]["step"] == rows[-1]["step"] > 0 and math.isfinite(train[0]["loss"])
    assert [r["kind"] for r in rows] == ["eval", "train", "eval"]


@pytest.mark.parametrize("log_interval", [5, 10**6], ids=["seen-at-a-log-step", "seen-at-an-evaluation"])
def test_a_diverged_run_stops_in_one_line_and_saves_no_nan_weights(corpus, tmp_path, monkeypatch, log_interval):
    """Weights that turn NaN at step 12 (as a learning rate far too high makes them): the run stops at the first
    log step or evaluation that shows it, in one line naming the step and the fix, and saves nothing after
    step 10: every checkpoint it left holds finite weights."""
    from minigpt.train import trainer

    step = trainer.Run.step

    def poisoned(self, lr):
        out = step(self, lr)
        if self.progress.step == 12:
            with torch.no_grad():
                next(self.raw.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(trainer.Run, "step", poisoned)
    out = tmp_path / "run"
    at = 15 if log_interval == 5 else 20
    what = "the training loss" if log_interval == 5 else "val/loss"
    with pytest.raises(MinigptError, match=rf"^training diverged: {what} is nan at step {at} \(peak learning rate "
                                           r"0.003\); \S+step_000010 is the last checkpoint, saved before it\. "
                                           r"Start again with a lower --lr \(say 0.00075\) and another --out$"):
        run(corpus, out, max_iters=40, eval_interval=10, log_interval=log_interval)
    assert sorted(p.name for p in out.glob("step_*")) == ["step_000010"]
    # metrics.jsonl stays strict JSON (jq and JavaScript refuse Python's bare NaN): the diverged step's loss is
    # null there, and minigpt reads it back as NaN
    lines = (out / "metrics.jsonl").read_text().splitlines()
    strict = [json.loads(line, parse_constant=lambda word: pytest.fail(f"{word} in metrics.jsonl")) for line in lines]
    if log_interval == 5:
        assert strict[-1]["step"] == at and strict[-1]["loss"] is None and math.isnan(read_metrics(out)[-1]["loss"])
    for pointer in ("latest", "best"):
        weights = load_file(str(out / (out / pointer).read_text().strip() / "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_learning_rate_far_too_high_stops_before_the_first_checkpoint(corpus, tmp_path):
    with pytest.raises(MinigptError, match=r"training diverged: .* is nan at step 10 .*no checkpoint was saved"):
        run(corpus, tmp_path / "run", max_iters=200, lr=1e5, min_lr=1e5, warmup_iters=0, optimizer="adamw")
    assert not list((tmp_path / "run").glob("step_*"))


def test_existing_run_is_not_overwritten(corpus, tmp_path):
    run(corpus, tmp_path / "run", max_iters=2, eval_interval=2)
    with pytest.raises(MinigptError, match="--resume"):
        run(corpus, tmp_path / "run", max_iters=2, eval_interval=2)


def test_damaged_checkpoints_are_refused_with_a_reason(corpus, tmp_path):
    run(corpus, tmp_path / "run", max_iters=2, eval_interval=2)
    step = resolve_step(tmp_path / "run")
    ok = load_checkpoint(step)
    assert ok.step == 2 and ok.model.config.n_layer == 2

    def damaged(edit) -> str:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(step, copy)
        edit(copy)
        with pytest.raises(MinigptError) as err:
            load_checkpoint(copy)
        return str(err.value)

    def truncate(d):
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])

    def edit_config(key, value):
        def edit(d):
            cfg = json.loads((d / "config.json").read_text())
            cfg["model"][key] = value
            (d / "config.json").write_text(json.dumps(cfg))
        return edit

    def bump_format(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg["format"] = 99
        (d / "config.json").write_text(json.dumps(cfg))

    assert "truncated or corrupt" in damaged(truncate)
    assert "do not fit" in damaged(edit_config("vocab_size", 999))
    assert "do not fit" in damaged(edit_config("n_layer", 3))
    assert "format 99" in damaged(bump_format)
    assert "sha256" in damaged(lambda d: (d / "tokenizer.char").write_text(
        (d / "tokenizer.char").read_text().replace("a", "b", 1)))
    assert "config.json" in damaged(lambda d: (d / "config.json").write_text("{not json"))

    def poison(d):  # what a diverged run saved before minigpt stopped such runs
        weights = load_file(str(d / "model.safetensors"))
        name = sorted(weights)[1]
        weights[name][0] = float("nan")
        save_file(weights, str(d / "model.safetensors"))
        return name

    assert re.fullmatch(r".*model\.safetensors: \S+ holds NaN or infinite values \(the run that saved it diverged\); "
                        r"use another step \(give its step_\* folder\)", damaged(poison))
    with pytest.raises(MinigptError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing")


def _minigpt(*args, **kw):
    return subprocess.run([sys.executable, "-m", "minigpt", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


@pytest.mark.slow
def test_ctrl_c_saves_then_resume_is_bit_exact(corpus, tmp_path):
    """Train, Ctrl-C at an arbitrary step, resume: the weights equal an uninterrupted run's, bit for bit."""
    flags = ["--data", str(corpus), "--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "64",
             "--block-size", "64", "--batch-size", "8", "--max-iters", "200", "--eval-interval", "75",
             "--eval-iters", "2", "--log-interval", "5", "--sample-tokens", "0", "--device", "cpu", "--dropout", "0.1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "pretrain", *flags, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    metrics, deadline = out / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and "\"train\"" in metrics.read_text()):  # a step done
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output
    assert "--resume" in output and "checkpoint saved" in output
    stopped = load_checkpoint(out, with_trainer_state=True).trainer_state["step"]
    assert 0 < stopped < 200
    resumed = _minigpt("pretrain", *flags, "--out", str(out), "--resume", timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    straight = _minigpt("pretrain", *flags, "--out", str(tmp_path / "straight"), timeout=600)
    assert straight.returncode == 0, straight.stdout + straight.stderr
    a = load_file(str(resolve_step(out) / "model.safetensors"))
    b = load_file(str(resolve_step(tmp_path / "straight") / "model.safetensors"))
    assert resolve_step(out).name == "step_000200" and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(set(steps)), "metrics rows were duplicated by the resume"


@pytest.mark.slow
def test_ddp_two_processes_match_one_process_with_the_same_global_batch(corpus, tmp_path):
    """torchrun with 2 CPU processes (gloo) x batch 4 == 1 process x batch 8: same data, same loss curve."""
    common = ["--data", str(corpus), "--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
              "--block-size", "32", "--max-iters", "12", "--eval-interval", "6", "--eval-iters", "2",
              "--log-interval", "3", "--sample-tokens", "0", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    one = subprocess.run([sys.executable, "-m", "minigpt", "pretrain", *common, "--batch-size", "8",
                          "--out", str(tmp_path / "one")], capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stdout + one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "minigpt", "pretrain", *common, "--batch-size", "4", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr

    def rows(run):
        return [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]

    a, b = rows("one"), rows("two")
    assert [(r["step"], r["kind"]) for r in a] == [(r["step"], r["kind"]) for r in b]  # rank 0 alone wrote rows
    for ra, rb in zip(a, b):
        for key in ("loss", "train/loss", "val/loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)
        assert ra["tokens"] == rb["tokens"]
    wa = load_file(str(resolve_step(tmp_path / "one") / "model.safetensors"))
    wb = load_file(str(resolve_step(tmp_path / "two") / "model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
    assert two.stdout.count("parameters, vocab") == 1  # only rank 0 prints


def test_muon_orthogonalizes_and_trains_exactly_resumably(corpus, tmp_path):
    """Newton-Schulz gives a matrix with the gradient's singular vectors and singular values near 1; Muon puts
    only the hidden matrices in its group; a Muon run resumes bit-exactly like an AdamW run."""
    from minigpt.train.muon import orthogonalize
    from minigpt.train.optim import muon_groups

    g = torch.randn(48, 96, generator=torch.Generator().manual_seed(0))
    o = orthogonalize(g)
    s = torch.linalg.svdvals(o)
    assert 0.6 < float(s.min()) and float(s.max()) < 1.3
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    m = u.T @ o @ vh.T  # diagonal when o has g's singular vectors
    assert float((m - torch.diag(torch.diagonal(m))).abs().max()) < 1e-3
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    groups = muon_groups(model, 0.1)
    muon = {id(p) for g in groups if g["algorithm"] == "muon" for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon}
    assert names == {n for n, p in model.named_parameters() if n.startswith("transformer.h.") and p.dim() == 2}
    muon = dict(optimizer="muon", schedule="constant")  # the lr does not depend on max_iters: 10 + 10 == 20
    straight = run(corpus, tmp_path / "straight", max_iters=20, **muon)
    assert straight.metrics["val/loss"] < math.log(64) - 0.5  # it learns
    run(corpus, tmp_path / "resumed", max_iters=10, **muon)
    resumed = pretrain(resume=True, out=tmp_path / "resumed", train_config=tiny_train(max_iters=20, **muon))
    a = load_file(str(resolve_step(tmp_path / "straight") / "model.safetensors"))
    b = load_file(str(resolve_step(tmp_path / "resumed") / "model.safetensors"))
    assert resumed.step == 20 and all(torch.equal(a[k], b[k]) for k in a)


def test_muon_batched_step_matches_one_matrix_at_a_time():
    """MuonAdamW stacks same-shape matrices into one batched Newton-Schulz; each result must equal the textbook
    step done on that matrix alone: decay, momentum, Nesterov, Newton-Schulz written term by term, RMS scale."""
    from minigpt.train.muon import NS_COEFFS, MuonAdamW, orthogonalize

    def newton_schulz(g):  # the quintic iteration on one matrix, written out
        a, b, c = NS_COEFFS
        x = g.T if g.size(0) > g.size(1) else g
        x = x / (x.norm() + 1e-7)
        for _ in range(5):
            A = x @ x.T
            x = a * x + (b * A + c * A @ A) @ x
        return x.T if g.size(0) > g.size(1) else x

    gen = torch.Generator().manual_seed(0)
    shapes = [(24, 8), (8, 24), (24, 8), (16, 16), (8, 24), (16, 16), (24, 8)]
    params = [torch.nn.Parameter(torch.randn(*s, generator=gen)) for s in shapes]
    expected = [p.detach().clone() for p in params]
    momentum = [torch.zeros_like(p) for p in params]
    lr, wd, mu = 0.02, 0.1, 0.95
    opt = MuonAdamW([{"params": params, "algorithm": "muon", "weight_decay": wd}], lr=lr, momentum=mu)
    for _ in range(3):
        grads = [torch.randn(*s, generator=gen) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(grads):
            momentum[i] = mu * momentum[i] + g
            update = newton_schulz(g + mu * momentum[i])
            expected[i] = expected[i] * (1 - lr * wd) - lr * 0.2 * max(shapes[i]) ** 0.5 * update
    for p, e in zip(params, expected):
        assert torch.allclose(p.detach(), e, atol=1e-5), float((p.detach() - e).abs().max())
    stack = torch.randn(5, 24, 8, generator=gen)
    assert torch.allclose(orthogonalize(stack), torch.stack([newton_schulz(m) for m in stack]), atol=1e-5)


def _edit_trainer_state(run_dir, edit) -> None:
    """Rewrite the latest step's trainer_state.json skeleton ({"__dict__": [[key, value], ...]}) through `edit`."""
    path = resolve_step(run_dir) / "trainer_state.json"
    state = json.loads(path.read_text())
    state["__dict__"] = edit(state["__dict__"])
    path.write_text(json.dumps(state))


def test_resume_command_repeats_the_launcher_and_adds_resume_only_where_it_exists(monkeypatch):
    """The hint after Ctrl-C: under torchrun a torchrun command with the run's processes; the speedrun, which has no
    --resume (it resumes when run again as it was), is repeated as it was."""
    from minigpt.train.stopping import resume_command

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["minigpt", "pretrain", "--out", "my run"])
    assert resume_command() == "minigpt pretrain --out 'my run' --resume"
    monkeypatch.setattr(sys, "argv", ["minigpt", "sft", "--out", "r", "--resume"])
    assert resume_command() == "minigpt sft --out r --resume"
    monkeypatch.setattr(sys, "argv", ["minigpt", "speedrun", "--budget", "3m", "--out", "sr"])
    assert resume_command() == "minigpt speedrun --budget 3m --out sr"
    monkeypatch.setattr(sys, "argv", ["minigpt", "learn", "chinese"])
    assert resume_command() is None  # a lesson starts again: no command to print
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(sys, "argv", ["/x/minigpt/__main__.py", "pretrain", "--out", "r"])
    assert resume_command() == "torchrun --nproc-per-node 2 -m minigpt pretrain --out r --resume"
    assert resume_command(1) == "minigpt pretrain --out r --resume"


def test_resume_refuses_another_number_of_processes(corpus, tmp_path):
    """A checkpoint records its number of processes; a resume with another number is refused in one line that
    names both and the command to use. Runs saved before it was recorded resume as before."""
    run(corpus, tmp_path / "run", max_iters=2, eval_interval=2)
    assert load_checkpoint(tmp_path / "run", with_trainer_state=True).trainer_state["world_size"] == 1
    _edit_trainer_state(tmp_path / "run", lambda kv: [p for p in kv if p[0] != "world_size"] + [["world_size", 2]])
    with pytest.raises(MinigptError) as err:
        pretrain(resume=True, out=tmp_path / "run", train_config=tiny_train(max_iters=4, eval_interval=2))
    message = str(err.value)
    assert "trained by 2 processes and this resume runs 1" in message and "\n" not in message
    assert "resume with 2: torchrun --nproc-per-node 2 -m minigpt " in message
    _edit_trainer_state(tmp_path / "run", lambda kv: [p for p in kv if p[0] != "world_size"])  # an older run
    assert pretrain(resume=True, out=tmp_path / "run", train_config=tiny_train(max_iters=4, eval_interval=2)).step == 4


def test_damaged_trainer_state_and_weights_say_how_to_resume_without_that_step(corpus, tmp_path):
    """A trainer_state.json that is JSON but lacks a key, and truncated weights, are one line each that says
    what to do under --resume (which has no flag to pick a step); doing it resumes from the step before."""
    run(corpus, tmp_path / "run", max_iters=4, eval_interval=2)
    step = resolve_step(tmp_path / "run")
    cfg = tiny_train(max_iters=4, eval_interval=2)
    _edit_trainer_state(tmp_path / "run", lambda kv: [p for p in kv if p[0] != "data"])
    with pytest.raises(MinigptError, match=r"trainer_state.json: no 'data'; the file is damaged: move .*step_000004 "
                                           r"out of the run folder .*'latest' falls back"):
        pretrain(resume=True, out=tmp_path / "run", train_config=cfg)
    data = (step / "model.safetensors").read_bytes()
    (step / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(MinigptError, match=r"truncated or corrupt: move .*step_000004 out of the run folder"):
        pretrain(resume=True, out=tmp_path / "run", train_config=cfg)
    shutil.move(step, tmp_path / "damaged")
    result = pretrain(resume=True, out=tmp_path / "run", train_config=cfg)
    assert result.step == 4 and resolve_step(tmp_path / "run").name == "step_000004"


def test_resume_works_from_another_working_folder(corpus, base_run, tmp_path, monkeypatch):
    """run.json's relative paths (data, shards, parent) are relative to the folder the run started in, which it
    records: --resume from elsewhere continues on them (it used to fail, or tokenize the corpus again here). A run
    saved before that folder was recorded gets one line saying where to resume from."""
    from minigpt.train import finetune

    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir(), elsewhere.mkdir()
    shutil.copy(corpus, start / "corpus.txt")
    monkeypatch.chdir(start)
    pretrain("corpus.txt", tokenizer="char", model_config=tiny_model(), train_config=tiny_train(max_iters=2,
             eval_interval=2), out="run")
    shutil.copytree(base_run["base"], start / "base")
    shutil.copy(base_run["sft"], start / "sft.jsonl")
    sft = finetune.stage_train_config("sft", max_iters=2, batch_size=2, eval_interval=2, eval_iters=1, device="cpu")
    finetune.sft("base", "sft.jsonl", train_config=sft, out="sft-run")
    info = json.loads((start / "run" / "run.json").read_text())
    assert info["data"] == "corpus.txt" and info["cwd"] == str(start) and not Path(info["prepared"]).is_absolute()

    monkeypatch.chdir(elsewhere)
    assert pretrain(resume=True, out=start / "run", train_config=tiny_train(max_iters=4, eval_interval=2)).step == 4
    assert finetune.sft(train_config=replace(sft, max_iters=4), out=start / "sft-run", resume=True).step == 4
    assert not (elsewhere / "data").exists()
    del info["cwd"]  # the first run.json, as an older minigpt saved it
    (start / "run" / "run.json").write_text(json.dumps(info))
    with pytest.raises(MinigptError, match="relative to the folder the run started in.*resume from that folder"):
        pretrain(resume=True, out=start / "run", train_config=tiny_train(max_iters=6, eval_interval=2))


def test_sigterm_saves_a_checkpoint_like_ctrl_c(corpus, tmp_path):
    """SIGTERM (torchrun's to surviving ranks, Slurm's, docker stop's) during step 3: the step finishes, a
    checkpoint is saved, exit status 130 as for Ctrl-C."""
    script = f"""
import os, signal, sys
from minigpt.cli import main
from minigpt.train import objectives

calls, loss = [0], objectives.NextToken.loss
def terminated(self, model, batch):
    calls[0] += model.training
    if model.training and calls[0] == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return loss(self, model, batch)
objectives.NextToken.loss = terminated
sys.exit(main({["pretrain", "--data", str(corpus), "--tokenizer", "char", "--n-layer", "1", "--n-head", "2",
                "--n-embd", "32", "--block-size", "32", "--batch-size", "4", "--max-iters", "50", "--eval-iters", "1",
                "--sample-tokens", "0", "--device", "cpu", "--out", str(tmp_path / "run")]!r}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 130, done.stdout + done.stderr
    assert "SIGTERM: saving a checkpoint after this step" in done.stdout and "checkpoint saved" in done.stdout
    assert resolve_step(tmp_path / "run").name == "step_000003"


def test_resuming_a_finished_run_shows_its_last_figures_not_nan(corpus, tmp_path, capsys):
    run(corpus, tmp_path / "run", max_iters=5, eval_interval=5)
    last = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
            if '"train"' in l][-1]
    capsys.readouterr()
    pretrain(resume=True, out=tmp_path / "run", train_config=tiny_train(max_iters=5, eval_interval=5))
    out = capsys.readouterr().out
    assert "nan" not in out and f"loss {last['loss']:.4f}" in out, out
