"""Shared fixtures: an isolated MINIGPT_HOME for every test, and the ../shared/data folder when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("MINIGPT_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")).resolve()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("minigpt_home")
    monkeypatch.setenv("MINIGPT_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path_factory, monkeypatch):
    """Commands write data/ and checkpoints/ relative to the working folder: keep them out of the repo."""
    work = tmp_path_factory.mktemp("work")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real open datasets); tests that need it skip cleanly in a user's checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def one_thread():
    """For modules of tiny models (`pytestmark = pytest.mark.usefixtures("one_thread")`): one torch thread is as
    fast as two, and never stalls in OpenMP barriers on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- tiny runs
# Shared by the trainer, fine-tuning, chat and fault-injection tests: `from conftest import tiny_model, ...`.

WORDS = "the cat sat on a mat while a dog ran after the red ball in the long green garden".split()


@pytest.fixture
def corpus(tmp_path):
    """1,500 lines of random sentences over 17 words (26 characters): a corpus a tiny model learns in seconds."""
    import random

    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + ".\n" for _ in range(1500)]
    path = tmp_path / "corpus.txt"
    path.write_text("".join(lines))
    return path


def tiny_model():
    from minigpt.models.gpt import GPTConfig

    return GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32)


def tiny_train(**kw):
    from minigpt.train.trainer import TrainConfig

    base = dict(max_iters=20, batch_size=8, eval_interval=10, eval_iters=2, log_interval=5, warmup_iters=5,
                sample_tokens=0, device="cpu", lr=3e-3)
    return TrainConfig(**{**base, **kw})


FACTS = [("red", "apples are red."), ("blue", "the sky is blue."), ("green", "grass is green."),
         ("yellow", "bananas are yellow."), ("white", "snow is white."), ("black", "coal is black."),
         ("orange", "oranges are orange."), ("purple", "plums are purple.")]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny character-level GPT pretrained for a few steps on the facts, plus the stage data files."""
    import json

    from minigpt.models.gpt import GPTConfig
    from minigpt.train.pretrain import pretrain
    from minigpt.train.trainer import TrainConfig

    root = tmp_path_factory.mktemp("stages")
    text = "".join(f"what colour is it? {a}\n" for _, a in FACTS) * 40
    (root / "corpus.txt").write_text(text + "<>|" * 3)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        pretrain(str(root / "corpus.txt"), tokenizer="char",
                 model_config=GPTConfig(vocab_size=64, block_size=48, n_layer=1, n_head=2, n_embd=32),
                 train_config=TrainConfig(max_iters=10, batch_size=4, eval_interval=10, eval_iters=1, sample_tokens=0,
                                          device="cpu"), out=root / "base")
    finally:
        os.chdir(cwd)
    conv = root / "sft.jsonl"
    conv.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"what is {c}?"},
                                                     {"role": "assistant", "content": a}]}) + "\n" for c, a in FACTS))
    prefs = root / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"what is {c}?", "chosen": a, "rejected": FACTS[i - 1][1]}) + "\n"
                             for i, (c, a) in enumerate(FACTS)))
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"what is {c}?", "reference": a}) + "\n" for c, a in FACTS))
    return {"root": root, "base": root / "base", "sft": conv, "reward": prefs, "dpo": prefs, "rl": prompts}


def stage_run(name, base_run, out, max_iters=6, resume=False, reward=None, **train):
    """Run (or resume) stage `name` (sft, reward, dpo, rl) of `base_run` for a few tiny steps into `out`
    (`reward`: rl's --reward; `train`: TrainConfig fields)."""
    from minigpt.train import finetune, rl

    cfg = finetune.stage_train_config(name, **{**dict(max_iters=max_iters, batch_size=2, eval_interval=3,
                                                      eval_iters=1, device="cpu", warmup_iters=1), **train})
    kw = dict(train_config=cfg, out=out, resume=resume)
    if name == "rl":
        kw.update(rl_config=rl.RLConfig(group_size=2, max_new_tokens=6, eval_prompts=2),
                  **({"reward": reward} if reward else {}))
    fn = rl.rl if name == "rl" else getattr(finetune, name)
    return fn(None if resume else base_run["base"], None if resume else str(base_run[name]), **kw)


CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?#'<|>/-"  # no newline: see test_chat


def make_checkpoint(root: Path, stage: str, end_first: bool = False, chars: str = CHARS, block_size: int = 64) -> Path:
    """A tiny GPT (2x2x32, block 64) whose head never picks a special token, so replies run to max_new_tokens
    (handy for Ctrl-C); with `end_first` it always picks <|end|> instead (a reply that stops at once)."""
    import torch

    from minigpt.checkpoint import save_checkpoint
    from minigpt.models.gpt import GPT, GPTConfig
    from minigpt.text.tokenizer import train_char

    tok = train_char(chars)
    root.mkdir(parents=True, exist_ok=True)
    tok.save(root / "tokenizer.char")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():  # tiny residual branches: h ~ norm(embedding), whose dimension 0 is always positive
        model.transformer.wte.weight.normal_()
        model.transformer.wte.weight[:, 0] = 5.0
        model.lm_head.weight.normal_(0, 0.6)
        for i in tok.specials.values():
            model.lm_head.weight[i] = 0
            model.lm_head.weight[i, 0] = -20.0
        if end_first:
            model.lm_head.weight[tok.special_id("<|end|>"), 0] = 20.0
    run = root / f"run-{stage}{'-end' if end_first else ''}{'' if block_size == 64 else f'-{block_size}'}"
    save_checkpoint(run, 1, model, root / "tokenizer.char", extra={"stage": stage})
    return run
