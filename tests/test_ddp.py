"""torchrun with 2 CPU processes (gloo): what only shows with more than one process.

The tests launch real torchrun jobs. Most scenarios run in one job of this file's `__main__` (a driver: each rank
runs the scenario and writes what it saw to a JSON file), to pay for torchrun's start-up once. A job that hangs
(ranks that disagree wait on each other for ever) is killed with its process group and fails the test."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve()
pytestmark = pytest.mark.slow


def torchrun(args: list[str], cwd: Path, timeout: float = 300) -> tuple[int | None, str]:
    """`torchrun --standalone --nproc-per-node 2 ARGS` in `cwd`: (exit status, stdout and stderr). A job still
    running after `timeout` seconds is killed, torchrun and ranks: (None, its output and a line saying so)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MINIGPT_HOME": str(cwd / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in _tree(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, f"{out}\n[the torchrun job hung for {timeout} s and was killed]"
    return proc.returncode, out


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (torchrun starts each rank in a session of its own: killpg misses them)."""
    found = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [p for child in children.read_text().split() for p in _tree(int(child))]
    return found


# ---------------------------------------------------------------------------------------------- the CLI


def test_reward_trains_under_torchrun_and_prints_once(base_run, tmp_path):
    """The reward model never uses its language model's output head: DDP must not wait for that gradient (it
    failed on the second step). Rank 1 prints nothing the user sees twice: the stage header, `done:`."""
    code, out = torchrun(["-m", "minigpt", "reward", "--checkpoint", str(base_run["base"]), "--data",
                          str(base_run["reward"]), "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1",
                          "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "r")], tmp_path)
    assert code == 0, out[-4000:]
    assert out.count("done:") == 1 and out.count(" val pairs from ") == 1, out
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 2, 4]


# ---------------------------------------------------------------------------------------------- the driver


@pytest.fixture(scope="module")
def driven(base_run, tmp_path_factory):
    """One torchrun job of the scenarios below; returns (its folder, its output, exit status or None: hung)."""
    from conftest import WORDS, tiny_model, tiny_train
    from minigpt.train.pretrain import pretrain

    root = tmp_path_factory.mktemp("ddp")
    rng = random.Random(0)
    (root / "corpus.txt").write_text("".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + ".\n"
                                             for _ in range(1500)))
    # SFT conversations whose replies differ in length, so each rank's slice of a batch holds its own number of
    # targets (a mean of per-rank means is then not the mean of the batch)
    replies = [" ".join(WORDS[: 1 + (3 * i) % 11]) for i in range(20)]
    (root / "sft.jsonl").write_text("".join(json.dumps({
        "messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": reply}],
        "split": "val" if i % 5 == 0 else "train"}) + "\n" for i, reply in enumerate(replies)))
    cwd = os.getcwd()
    os.chdir(root)
    try:  # a 1-process run, for a 2-process resume of it
        pretrain(str(root / "corpus.txt"), tokenizer="char", model_config=tiny_model(),
                 train_config=tiny_train(max_iters=2, eval_interval=2), out=root / "one")
    finally:
        os.chdir(cwd)
    code, out = torchrun([str(HERE), str(root), str(base_run["base"])], root)
    return root, out, code


def _result(driven, name: str, rank: int = 0) -> dict:
    root, out, code = driven
    path = root / f"{name}.{rank}.json"
    assert path.is_file(), f"the torchrun job ended ({code}) before scenario {name} wrote its result:\n{out[-4000:]}"
    return json.loads(path.read_text())


def test_ranks_stop_together_when_one_rank_is_interrupted(driven):
    """Ctrl-C that reaches rank 1 alone (during its 3rd step): both ranks stop after that step and save one
    checkpoint together, rank 1 prints nothing, and the hint is a torchrun command of 2 processes. A 1-process
    resume of that run is refused, naming both counts and the torchrun command."""
    from minigpt.checkpoint import load_checkpoint, resolve_step
    from minigpt.common import MinigptError
    from minigpt.train.pretrain import pretrain

    from conftest import tiny_train

    root, out, _ = driven
    assert [_result(driven, "stop", r) for r in (0, 1)] == [{"step": 3, "interrupted": True}] * 2
    assert resolve_step(root / "stop").name == "step_000003"
    assert load_checkpoint(root / "stop", with_trainer_state=True).trainer_state["world_size"] == 2
    assert "Ctrl-C" not in out and out.count("checkpoint saved") == 1
    assert "Resume with:\n  torchrun --nproc-per-node 2 -m minigpt" in out
    with pytest.raises(MinigptError) as err:
        pretrain(resume=True, out=root / "stop", train_config=tiny_train(max_iters=6))
    assert "trained by 2 processes and this resume runs 1" in str(err.value)
    assert "torchrun --nproc-per-node 2 -m minigpt" in str(err.value) and "\n" not in str(err.value)


def test_a_one_process_run_is_not_resumed_by_two(driven):
    message = _result(driven, "resume_1_on_2")["error"]
    assert "trained by 1 process and this resume runs 2" in message and "resume with 1: minigpt " in message


def test_sft_evaluation_on_two_processes_equals_one_process_with_twice_the_batch(driven):
    """Each evaluation batch's mean weighs each rank's slice by its targets, as one process would."""
    found = _result(driven, "sft_eval")
    assert found["two"].keys() == found["one"].keys() == {"train/loss", "val/loss"}
    for key, value in found["one"].items():
        assert found["two"][key] == pytest.approx(value, rel=1e-5), key


def test_sft_on_two_processes_trains_like_one_process_with_twice_the_batch(driven, base_run, tmp_path):
    """Each rank's loss counts by its share of the batch's targets, so the steps (and the logged losses) are
    those of one process with twice the batch."""
    from safetensors.torch import load_file

    from minigpt.checkpoint import resolve_step
    from minigpt.train import finetune

    root = driven[0]
    _result(driven, "sft_train")
    finetune.sft(base_run["base"], str(root / "sft.jsonl"), train_config=_sft_config(4), out=tmp_path / "one")

    def rows(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    for a, b in zip(rows(tmp_path / "one"), rows(root / "sft2"), strict=True):
        assert (a["step"], a["kind"]) == (b["step"], b["kind"])
        for key in ("loss", "train/loss", "val/loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    one, two = (load_file(str(resolve_step(run) / "model.safetensors")) for run in (tmp_path / "one", root / "sft2"))
    assert one.keys() == two.keys() and all(torch.allclose(one[k], two[k], rtol=0, atol=1e-5) for k in one)


def _sft_config(batch_size: int):
    from minigpt.train import finetune

    return finetune.stage_train_config("sft", max_iters=4, batch_size=batch_size, eval_interval=2, eval_iters=2,
                                       log_interval=1, warmup_iters=1, lr=1e-2, device="cpu")


def test_autosize_counts_every_rank_and_every_rank_builds_rank_0s_pick(driven):
    """Timed alone, rank 0 would find no shape that meets the tokens-per-parameter rule and rank 1 (faster)
    the third; 2 processes see twice the tokens, so rank 0 picks the second, and rank 1 builds it too."""
    from minigpt.train.autosize import LADDER

    for rank in (0, 1):
        assert tuple(_result(driven, "autosize", rank)["shape"]) == LADDER[1], rank


def test_each_rank_destroys_the_process_group_at_exit(driven):
    """Left to the interpreter's teardown, a gloo worker thread still freeing a finished collective aborted rank 1
    after the work was done (the reward test above, about 1 run in 35). minigpt destroys the group at exit."""
    root, out, code = driven
    assert code == 0, out[-4000:]
    for rank in (0, 1):
        assert json.loads((root / f"exit.{rank}.json").read_text()) == {"group": False}, rank


# ---------------------------------------------------------------------------------------------- scenarios


def _stop(root: Path, rank: int) -> dict:
    """Pretraining where rank 1 alone gets a Ctrl-C during its 3rd training step."""
    from minigpt.train import objectives
    from minigpt.train.pretrain import pretrain

    from conftest import tiny_model, tiny_train

    calls, loss = {"n": 0}, objectives.NextToken.loss

    def interrupted(self, model, batch):
        calls["n"] += model.training
        if rank == 1 and model.training and calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss(self, model, batch)

    objectives.NextToken.loss = interrupted
    try:
        result = pretrain(str(root / "corpus.txt"), tokenizer="char", model_config=tiny_model(),
                          train_config=tiny_train(max_iters=50), out=root / "stop")
    finally:
        objectives.NextToken.loss = loss
    return {"step": result.step, "interrupted": result.interrupted}


def _resume_1_on_2(root: Path, rank: int) -> dict:
    from minigpt.common import MinigptError
    from minigpt.train.pretrain import pretrain

    from conftest import tiny_train

    try:
        pretrain(resume=True, out=root / "one", train_config=tiny_train(max_iters=4, eval_interval=2))
    except MinigptError as e:
        return {"error": str(e)}
    return {"error": None}


def _sft_eval(root: Path, rank: int, base: str) -> dict:
    """The same model evaluated on SFT batches by 2 processes x batch 2 and by one process x batch 4."""
    from minigpt.checkpoint import load_checkpoint
    from minigpt.common import Dist, current_dist
    from minigpt.text.chat_data import lm_collate, load_conversations
    from minigpt.train.finetune import rows_factory
    from minigpt.train.objectives import EvalContext, NextToken

    parent = load_checkpoint(base)
    tok, model, block = parent.tokenizer, parent.model, parent.model.config.block_size
    rows = load_conversations(str(root / "sft.jsonl"), tok)

    def evaluate(batch_size: int, dist: Dist) -> dict:
        batches = rows_factory(rows, batch_size, lm_collate(block, tok.special_id("<|end|>")), pack=block + 1)
        objective = NextToken(batches, seed=0, eval_iters=3, only_targets=True)
        return objective.evaluate(model, EvalContext(torch.device("cpu"), dist))

    return {"two": evaluate(2, current_dist()), "one": evaluate(4, Dist())}


def _sft_train(root: Path, rank: int, base: str) -> dict:
    from minigpt.train import finetune

    result = finetune.sft(base, str(root / "sft.jsonl"), train_config=_sft_config(2), out=root / "sft2")
    return {"step": result.step}


def _autosize(root: Path, rank: int) -> dict:
    """pretrain's sizing with step times that differ per rank (set so that a process alone sees `per` tokens per
    parameter of each ladder shape in the budget)."""
    from minigpt.models.gpt import GPT, GPTConfig
    from minigpt.train import autosize, pretrain, throughput
    from minigpt.train.settings import TrainConfig

    per = {0: {autosize.LADDER[0]: 3.0, autosize.LADDER[1]: 2.5}, 1: {s: 50.0 for s in autosize.LADDER[:3]}}[rank]
    budget, batch, base = 100.0, 4, GPTConfig(vocab_size=64, block_size=32)

    def step_seconds(config, batch_size, device="auto", shard=None, train_config=None):
        shape = (config.n_layer, config.n_embd, config.n_head)
        return batch_size * config.block_size * budget / (per.get(shape, 1.0) * GPT(config).num_params())

    class Prepared:
        def tokens(self, split):
            return 10_000

        def shard(self, split):
            return None

    throughput.step_seconds = step_seconds
    config = pretrain._autosize(base, TrainConfig(max_seconds=budget, batch_size=batch, device="cpu"), Prepared())
    return {"shape": [config.n_layer, config.n_embd, config.n_head]}


def main(root: str, base: str) -> None:
    """Under torchrun: every scenario on every rank, each rank's result in ROOT/<scenario>.<rank>.json. A scenario
    that fails ends this rank at once (torchrun then stops the other), rather than leaving it waiting."""
    import atexit
    import traceback

    import torch.distributed as tdist

    from minigpt.common import init_distributed

    root_path = Path(root)
    # runs after every exit handler registered later (last in, first out): minigpt's, which destroys the group
    atexit.register(lambda: (root_path / f"exit.{os.environ['RANK']}.json").write_text(
        json.dumps({"group": tdist.is_initialized()})))
    dist = init_distributed(torch.device("cpu"))
    scenarios = {"autosize": lambda: _autosize(root_path, dist.rank),
                 "sft_eval": lambda: _sft_eval(root_path, dist.rank, base),
                 "sft_train": lambda: _sft_train(root_path, dist.rank, base),
                 "resume_1_on_2": lambda: _resume_1_on_2(root_path, dist.rank),
                 "stop": lambda: _stop(root_path, dist.rank)}  # last: where the ranks disagree, it hangs
    for name, scenario in scenarios.items():
        try:
            found = scenario()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        (root_path / f"{name}.{dist.rank}.json").write_text(json.dumps(found))
        tdist.barrier()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))  # conftest's helpers
    main(*sys.argv[1:])
