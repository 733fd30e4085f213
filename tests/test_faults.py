"""Fault injection (issue 12): runs killed at chosen points resume to a straight run's weights bit for bit and
never load a corrupt checkpoint; one writer per run folder and per data folder; bad run folders refused in one line.

A kill is a forked child dying by `os._exit` (no cleanup, no flush: what kill -9 leaves) at the n-th occurrence of
a point: the start of an optimizer step, a checkpoint file write (left half-written), a rename (a step folder or a
pointer flipping into place) or a metrics row (left torn). n comes from a seeded RNG, so the points are spread over
the whole run and the same on every machine. After each kill, what a reader would load is checked against the
straight run's checkpoint of that step; then the parent resumes (in-process) and the final weights must be equal.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import select
import signal
import socket
import sys
import traceback
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minigpt import checkpoint
from minigpt.checkpoint import load_checkpoint, resolve_step
from minigpt.common import MinigptError
from minigpt.runlock import FolderLock
from minigpt.train import logger, trainer
from minigpt.train.pretrain import pretrain

from conftest import make_checkpoint, stage_run, tiny_model, tiny_train

pytestmark = pytest.mark.usefixtures("one_thread")
KILLED = 77


# ---------------------------------------------------------------------------------------------- the machinery


def _die() -> None:
    os._exit(KILLED)


def arm(kind: str, n: int) -> None:
    """In a doomed child: die at the n-th `kind` event (step, write, rename, metrics)."""
    count = itertools.count(1)
    if kind == "step":
        step = trainer.Run.step
        trainer.Run.step = lambda self, lr: _die() if next(count) == n else step(self, lr)
    elif kind == "write":  # inside a checkpoint file write: half the file on disk, then dead
        put = checkpoint._put

        def torn_put(path, write):
            if next(count) == n:
                write(path)
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
                _die()
            put(path, write)
        checkpoint._put = torn_put
    elif kind == "rename":  # right after a step folder or a pointer (latest, best, run.json) flips into place
        for name in ("rename", "replace"):
            def flip(src, dst, *a, _real=getattr(os, name), **k):
                _real(src, dst, *a, **k)
                if next(count) == n:
                    _die()
            setattr(os, name, flip)
    elif kind == "metrics":  # half a metrics row written, no newline
        write = logger.Logger._write

        def torn_write(self, row):
            if next(count) == n and self.file:
                text = json.dumps(row) + "\n"
                self.file.write(text[: len(text) // 2])
                self.file.flush()
                _die()
            write(self, row)
        logger.Logger._write = torn_write


def crash(fn, kind: str, n: int) -> int:
    """Run `fn()` in a forked child armed to die at the n-th `kind` event; its exit code (KILLED when it did)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        code = 1
        try:
            signal.alarm(120)  # a hung child dies instead of hanging the suite
            arm(kind, n)
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def weights(step_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(step_dir / "model.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_loadable(run: Path, straight: Path) -> None:
    """What a reader (chat, sample, --resume) would load now is complete and is the straight run's step."""
    if not (run / "latest").exists():
        return
    ckpt = load_checkpoint(run, with_trainer_state=True)
    assert ckpt.trainer_state["step"] == ckpt.step
    assert_same(weights(ckpt.path), weights(straight / checkpoint.step_name(ckpt.step)))


def finish(run_fn, run: Path) -> None:
    """Resume the killed run to the end, or start it again when it died before its first checkpoint."""
    try:
        run_fn(resume=True)
    except MinigptError as e:
        if "before its first checkpoint" not in str(e) and "holds no run" not in str(e):
            raise
        run_fn(resume=False)
    assert not list(run.glob(".*.tmp")) and not list(run.glob(".*.old")), "crash leftovers were tidied"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]  # no torn line left
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == sorted(set(steps)), "no metrics row twice"


def points(seed: int, counts: dict[str, int], per_kind: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(kind, rng.randint(1, top)) for kind, top in counts.items() for _ in range(per_kind)]


# ---------------------------------------------------------------------------------------------- kill and resume


@pytest.fixture
def lm_setup(corpus, tmp_path):
    """A char tokenizer file, a straight 12-step pretraining run that keeps every checkpoint, and the runner."""
    from minigpt.text.tokenizer import train_char

    tok = tmp_path / "tok.char"
    train_char(corpus.read_text()).save(tok)
    model = replace(tiny_model(), dropout=0.1)  # dropout: the RNG state must resume exactly too

    def run(out: Path, resume: bool = False, **train):
        cfg = tiny_train(max_iters=12, eval_interval=3, log_interval=2, **train)
        return pretrain(str(corpus), tokenizer=str(tok), model_config=model, train_config=cfg, out=out, resume=resume)

    straight = tmp_path / "straight"
    run(straight, keep_checkpoints=100)
    return run, straight


# 4 saves x 5 files; ~3 renames per save; 11 metrics rows
PRETRAIN_POINTS = points(12, {"step": 12, "write": 20, "rename": 14, "metrics": 11}, 2)


@pytest.mark.slow
def test_pretrain_killed_anywhere_resumes_bit_exactly(lm_setup, tmp_path):
    run, straight = lm_setup
    final = weights(resolve_step(straight))
    for i, (kind, n) in enumerate(PRETRAIN_POINTS):
        out = tmp_path / f"killed{i}"
        assert crash(lambda: run(out), kind, n) in (KILLED, 0), (kind, n)
        check_loadable(out, straight)
        finish(lambda resume: run(out, resume=resume), out)
        assert resolve_step(out).name == "step_000012"
        assert_same(weights(resolve_step(out)), final)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "reward", "dpo", "rl"])
def test_every_stage_killed_anywhere_resumes_bit_exactly(stage, base_run, tmp_path):
    straight = tmp_path / "straight"
    stage_run(stage, base_run, straight, keep_checkpoints=100)
    final = weights(resolve_step(straight))
    # 2 saves (steps 3, 6) x 5 files; ~3 renames per save; 6 steps
    for i, (kind, n) in enumerate(points(len(stage), {"step": 6, "write": 10, "rename": 7}, 1)):
        out = tmp_path / f"killed{i}"
        assert crash(lambda: stage_run(stage, base_run, out), kind, n) in (KILLED, 0), (kind, n)
        check_loadable(out, straight)
        finish(lambda resume: stage_run(stage, base_run, out, resume=resume), out)
        assert_same(weights(resolve_step(out)), final)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_saving_a_step_again_never_leaves_latest_dangling(lm_setup, tmp_path, n):
    """Ctrl-C during an evaluation saves that step twice; a kill after any rename of the second save leaves a
    loadable `latest` (the old code renamed the first save away before renaming the second in)."""
    run, straight = lm_setup
    out, saves = tmp_path / "twice", []
    evaluate, save = trainer.Run.evaluate, trainer.save_checkpoint

    def doomed() -> None:
        def evaluate_then_ctrl_c(self):
            if self.progress.step == 6:
                os.kill(os.getpid(), signal.SIGINT)  # lands during the evaluation of step 6
            return evaluate(self)

        def save_counting(run_dir, step, *a, **k):
            saves.append(step)
            if saves.count(6) == 2:
                arm("rename", n)
            return save(run_dir, step, *a, **k)
        trainer.Run.evaluate, trainer.save_checkpoint = evaluate_then_ctrl_c, save_counting
        run(out)

    assert crash(doomed, "step", 10**9) == KILLED
    check_loadable(out, straight)
    assert load_checkpoint(out).step == 6
    finish(lambda resume: run(out, resume=resume), out)
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))


def test_a_torn_metrics_line_is_trimmed_on_resume(lm_setup, tmp_path):
    run, straight = lm_setup
    out = tmp_path / "torn"
    assert crash(lambda: run(out), "metrics", 9) == KILLED
    assert not (out / "metrics.jsonl").read_text().endswith("\n")  # the torn row is there
    finish(lambda resume: run(out, resume=resume), out)
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))


def test_leftovers_of_an_older_minigpt_are_recovered_and_a_missing_step_names_the_fix(lm_setup, tmp_path):
    run, straight = lm_setup
    out = tmp_path / "old"
    assert crash(lambda: run(out), "step", 8) == KILLED
    latest = resolve_step(out).name
    os.rename(out / latest, out / f".{latest}.old")  # what the old re-save left when killed between its renames
    with pytest.raises(MinigptError, match=rf"latest names {latest}, which is missing.*--checkpoint .*step_000003.*"
                                           r"--resume"):
        load_checkpoint(out)
    finish(lambda resume: run(out, resume=resume), out)
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))


def test_disk_full_while_saving_is_one_line_and_keeps_the_previous_checkpoint(lm_setup, tmp_path, monkeypatch):
    run, straight = lm_setup
    out, save_model, calls = tmp_path / "full", checkpoint.save_model, itertools.count(1)

    def full(model, path, *a, **k):
        if next(calls) == 2:  # the weights of the second save
            raise OSError(28, "No space left on device")
        save_model(model, path, *a, **k)

    monkeypatch.setattr(checkpoint, "save_model", full)
    with pytest.raises(MinigptError, match=r"cannot save step 6 .*No space left.*previous checkpoint is kept") as e:
        run(out)
    assert "\n" not in str(e.value)
    assert resolve_step(out).name == "step_000003" and not list(out.glob(".*.tmp"))
    check_loadable(out, straight)
    monkeypatch.setattr(checkpoint, "save_model", save_model)
    finish(lambda resume: run(out, resume=resume), out)
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))


def test_disk_full_while_logging_is_one_line_and_the_run_resumes(lm_setup, tmp_path, monkeypatch):
    """A metrics row that cannot be written stops the run with one line naming the resume command; the last
    checkpoint is whole and the resumed run ends like a straight one."""
    run, straight = lm_setup
    out, real_dump, rows = tmp_path / "full-log", logger.dump_row, itertools.count(1)

    def full_disk(row):
        if row.get("kind") == "train" and next(rows) == 3:
            raise OSError(28, "No space left on device")
        return real_dump(row)

    monkeypatch.setattr(logger, "dump_row", full_disk)
    with pytest.raises(MinigptError, match=r"metrics\.jsonl: cannot write a metrics row \(No space left on device\)"
                                           r".*--resume") as e:
        run(out)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(logger, "dump_row", real_dump)
    check_loadable(out, straight)
    finish(lambda resume: run(out, resume=resume), out)
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))


# ---------------------------------------------------------------------------------------------- what a resume uses


def test_resume_keeps_its_tokenizer_and_shards_when_the_corpus_changes(corpus, tmp_path, capsys):
    """--tokenizer auto retrains when the corpus changes; a resumed run must not follow it (ids change meaning)."""
    def run(out, resume=False):
        return pretrain(str(corpus), vocab_size=300, model_config=tiny_model(), out=out, resume=resume,
                        train_config=tiny_train(max_iters=8, eval_interval=4))

    run(tmp_path / "straight")
    out = tmp_path / "grow"
    assert crash(lambda: run(out), "step", 6) == KILLED
    first = (resolve_step(out) / "tokenizer.bpe").read_bytes()
    with open(corpus, "a") as f:
        f.write("a brand new line with new words: zebra quokka\n")
    run(out, resume=True)
    assert (resolve_step(out) / "tokenizer.bpe").read_bytes() == first
    assert "changed since this run started" in " ".join(capsys.readouterr().out.split())  # rich wraps long paths
    assert_same(weights(resolve_step(out)), weights(resolve_step(tmp_path / "straight")))


def test_resume_keeps_its_tokenizer_when_the_tokenizer_file_is_retrained(lm_setup, tmp_path):
    from minigpt.text.tokenizer import train_char

    run, straight = lm_setup
    out = tmp_path / "retrained"
    assert crash(lambda: run(out), "step", 8) == KILLED
    tok_file = Path(json.loads((out / "run.json").read_text())["tokenizer"])
    train_char("a different alphabet: xyz").save(tok_file)  # retrained in place
    finish(lambda resume: run(out, resume=resume), out)
    kept = (straight / "step_000012" / "tokenizer.char").read_bytes()
    assert (resolve_step(out) / "tokenizer.char").read_bytes() == kept
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))


def test_resume_refuses_shards_that_were_prepared_again_from_other_text(lm_setup, corpus, tmp_path):
    from minigpt.text.shards import prepare
    from minigpt.text.sources import open_source
    from minigpt.text.tokenizer import load_tokenizer

    run, _ = lm_setup
    out = tmp_path / "reprepared"
    assert crash(lambda: run(out), "step", 8) == KILLED
    info = json.loads((out / "run.json").read_text())
    with open(corpus, "a") as f:
        f.write("the cat ran.\n" * 50)
    prepare(open_source(str(corpus)), load_tokenizer(info["tokenizer"]), out=Path(info["prepared"]))
    with pytest.raises(MinigptError, match="changed since .* started"):
        run(out, resume=True)


def test_stage_resume_refuses_edited_data(base_run, tmp_path):
    import shutil

    data = dict(base_run, sft=tmp_path / "sft.jsonl")
    shutil.copy(base_run["sft"], data["sft"])
    out = tmp_path / "sft"
    assert crash(lambda: stage_run("sft", data, out), "step", 5) == KILLED
    with open(data["sft"], "a") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "new?"}, {"role": "assistant", "content": "yes"}]})
                + "\n")
    with pytest.raises(MinigptError, match=r"the data .*sft\.jsonl.* changed since"):
        stage_run("sft", data, out, resume=True)


def test_resume_refuses_flags_that_would_change_what_the_run_is(base_run, tmp_path, capsys):
    from minigpt.cli import main

    out = tmp_path / "dpo"
    stage_run("dpo", base_run, out, max_iters=3)
    capsys.readouterr()
    for extra, words in [(["--data", str(base_run["sft"])], "--data"), (["--checkpoint", str(out)], "--checkpoint"),
                         (["--beta", "0.5"], "--beta 0.5")]:
        before = sorted(p.name for p in out.iterdir())
        assert main(["dpo", "--out", str(out), "--resume", "--max-iters", "6", *extra]) == 2, extra
        said = capsys.readouterr().err.strip()
        assert "\n" not in said and words in said and "--resume continues" in said, said
        assert sorted(p.name for p in out.iterdir()) == before  # refused before anything ran
    # the flags it started with, spelled another way, and training flags, are fine
    same = ["--checkpoint", str(base_run["base"]), "--data", str(base_run["dpo"]), "--beta", "0.1"]
    assert main(["dpo", "--out", str(out), "--resume", "--max-iters", "4", "--batch-size", "2", *same]) == 0
    assert "resuming" in capsys.readouterr().out
    for extra in (["--n-layer", "3"], ["--no-qk-norm"], ["--preset", "small"]):  # pretrain: the model's shape
        assert main(["pretrain", "--out", str(base_run["base"]), "--resume", *extra]) == 2
        assert "--resume continues" in capsys.readouterr().err, extra


def test_pretrain_resume_of_an_sft_run_and_a_corrupt_run_json_are_one_line(base_run, tmp_path, capsys):
    from minigpt.cli import main

    out = tmp_path / "sft"
    stage_run("sft", base_run, out, max_iters=3)
    capsys.readouterr()
    assert main(["pretrain", "--out", str(out), "--resume"]) == 2
    said = capsys.readouterr().err.strip()
    assert "\n" not in said and "is a sft run" in said and f"minigpt sft --out {out} --resume" in said
    (out / "run.json").write_text('{"stage": "sft", "par')  # torn
    assert main(["sft", "--out", str(out), "--resume"]) == 2
    said = capsys.readouterr().err.strip()
    assert "\n" not in said and "run.json: unreadable" in said


def test_rl_resume_never_imports_the_reward_run_json_names(base_run, tmp_path, monkeypatch):
    """A shared run folder must not be enough to run code: the flag wins, and a stored python: spec needs it."""
    builtin = "python:minigpt.train.rewards:token_f1"
    Path("evilmod.py").write_text("open('imported', 'w').close()\ndef score(prompt, completion, record):\n"
                                  "    return 1.0\n")
    monkeypatch.syspath_prepend(os.getcwd())  # as under `python -m minigpt` run from this folder
    out = tmp_path / "rl"
    assert crash(lambda: stage_run("rl", base_run, out), "step", 5) == KILLED
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "reward": "python:evilmod:score"}))
    with pytest.raises(MinigptError, match="give --reward python:evilmod:score"):
        stage_run("rl", base_run, out, resume=True)
    stage_run("rl", base_run, out, resume=True, reward=builtin)
    assert not Path("imported").exists()
    assert json.loads((out / "run.json").read_text())["reward"] == builtin


def test_rl_help_says_python_rewards_run_code_from_the_current_folder():
    from minigpt.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["rl"].format_help().split())
    assert "code execution" in text and "python -m minigpt" in text and "current folder" in text


# ---------------------------------------------------------------------------------------------- one writer


def hold(folder: Path, record: dict | None = None) -> tuple[int, int]:
    """A forked child holding `folder`'s lock until its pipe is closed: (pid, write end)."""
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os.close(w)
        with FolderLock(folder):
            os.write(ready_w, b"1")
            os.read(r, 1)
        os._exit(0)
    os.close(r)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    return pid, w


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(lm_setup, tmp_path):
    run, straight = lm_setup
    out = tmp_path / "busy"
    pid, w = hold(out)
    with pytest.raises(MinigptError, match=rf"in use by pid {pid} on host {socket.gethostname()}"):
        run(out)
    os.kill(pid, signal.SIGKILL)  # the holder dies without releasing anything
    os.waitpid(pid, 0)
    assert json.loads((out / ".lock").read_text())["pid"] == pid  # its record is still there
    run(out)
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))
    os.close(w)


def test_two_runs_into_one_folder_one_wins_and_the_folder_is_whole(lm_setup, tmp_path):
    run, straight = lm_setup
    out = tmp_path / "race"
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover
            code = 0
            try:
                run(out)
            except MinigptError as e:
                code = 2 if "in use by" in str(e) or "already holds a run" in str(e) else 1
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    codes = sorted(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids)
    assert codes == [0, 2]
    assert_same(weights(resolve_step(out)), weights(resolve_step(straight)))
    assert len([r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                if r["kind"] == "eval" and r["step"] == 12]) == 1


def test_a_lock_recorded_by_another_host_is_respected(lm_setup, tmp_path):
    run, _ = lm_setup
    out = tmp_path / "nfs"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"host": "other-host", "pid": 1, "since": 0, "command": "minigpt x"}))
    with pytest.raises(MinigptError, match=r"pid 1 on host other-host.*delete .*\.lock"):
        run(out)


def test_two_prepares_of_the_same_data_wait_for_each_other(corpus, tmp_path):
    from minigpt.text.shards import default_data_root, prepare, prepared_name
    from minigpt.text.sources import open_source
    from minigpt.text.tokenizer import train_char

    source = open_source(str(corpus))
    tok = train_char(corpus.read_text())
    folder = default_data_root() / prepared_name(source, tok)
    pid, w = hold(folder)
    r, child_out = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover
        os.close(w)  # only the parent may end the holder
        sys.stdout = os.fdopen(child_out, "w", buffering=1)  # what the console prints comes to the parent
        try:
            prepare(source, tok)
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(child_out)
    said = b""
    while b"waiting for" not in said:
        assert select.select([r], [], [], 60)[0], "the second prepare neither waited nor finished"
        chunk = os.read(r, 4096)
        assert chunk, "the second prepare finished without waiting for the first"
        said += chunk
    assert f"pid {pid}".encode() in said and not (folder / "meta.json").exists()
    os.close(w)  # the first one is done
    os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    again = prepare(source, tok)
    expected = [tok.bos_id] + tok.encode("".join(source.documents("train")))
    assert again.shard("train").tolist() == expected and not list(folder.glob(".*.tmp"))


def test_concurrent_prepares_all_succeed_with_the_same_shards(corpus, tmp_path):
    from minigpt.text.shards import prepare
    from minigpt.text.sources import open_source
    from minigpt.text.tokenizer import train_char

    source = open_source(str(corpus))
    tok = train_char(corpus.read_text())
    reference = prepare(source, tok, out=tmp_path / "reference").shard("train").tolist()
    for trial in range(3):
        pids = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:  # pragma: no cover
                try:
                    prepare(source, tok, out=tmp_path / f"shared{trial}", force=True)
                    os._exit(0)
                except BaseException:
                    os._exit(1)
            pids.append(pid)
        assert [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids] == [0, 0]
        assert prepare(source, tok, out=tmp_path / f"shared{trial}").shard("train").tolist() == reference


# ---------------------------------------------------------------------------------------------- bad run folders


def test_a_crafted_config_is_checked_against_the_weights_before_anything_is_built(tmp_path):
    run = make_checkpoint(tmp_path, "sft")
    step = resolve_step(run)
    config = json.loads((step / "config.json").read_text())
    config["model"]["n_embd"] = 1_000_000  # ~10^13 parameters if built
    (step / "config.json").write_text(json.dumps(config))
    with pytest.raises(MinigptError, match=r"do not fit the config \([\w.]+ is \(\d+, 32\) in the file, "
                                           r"config\.json gives \(\d+, 1000000\)\)"):
        load_checkpoint(run)


def test_a_corrupt_peak_flops_cache_is_measured_again(monkeypatch):
    from minigpt.common import minigpt_home
    from minigpt.train.throughput import matmul_peak_flops

    cache = minigpt_home() / "peak_flops.json"
    for junk in ("{not json", "[1, 2]", '{"cpu::torch.float32:1": "fast"'):
        cache.write_text(junk)
        assert matmul_peak_flops(torch.device("cpu"), torch.float32) > 1e6
        assert isinstance(json.loads(cache.read_text()), dict)


def test_paths_with_rich_markup_are_printed_as_they_are(corpus, tmp_path, capsys):
    from minigpt.cli import main

    out = tmp_path / "ck[/x]"
    flags = ["--data", str(corpus), "--tokenizer", "char", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
             "--block-size", "16", "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1",
             "--sample-tokens", "0", "--device", "cpu"]
    assert main(["pretrain", *flags, "--out", str(out)]) == 0
    assert f"-> {out}" in capsys.readouterr().out.replace("\n", "")
    weird = tmp_path / "corp[/x].txt"
    weird.parent.mkdir()
    weird.write_text(corpus.read_text())
    assert main(["tokenizer", "train", "--data", str(weird), "--vocab-size", "270", "--out",
                 str(tmp_path / "t[/b].bpe")]) == 0
    assert "corp[/x].txt" in capsys.readouterr().out
