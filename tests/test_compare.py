"""`minigpt compare`: every kind trained and reported, resume after an interruption, the memorisation check,
the diagnosis when the GPT does not win, and the CLI end to end."""
from __future__ import annotations

import json
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

import minigpt.train.pretrain
import minigpt.train.trainer
from minigpt.common import MinigptError, human_count
from minigpt.runs.compare import DEFAULT_MODELS, CompareConfig, compare, line_structured, memorisation, parse_count
from minigpt.runs.compare_report import diagnose, write_report
from minigpt.common import parse_seconds
from minigpt.models import kinds

SYLLABLES = "ka to mi ra le no su vi an el".split()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def names(tmp_path) -> Path:
    """2,000 made-up names, one per line: line-structured like makemore's names.txt."""
    rng = random.Random(0)
    path = tmp_path / "names.txt"
    path.write_text("".join("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) + "\n"
                            for _ in range(2000)))
    return path


def tiny(models, **kw) -> CompareConfig:
    """8 steps of 8 x 16 tokens per model, 2 evaluations of 2 batches: seconds per model on 2 CPU cores."""
    base = dict(models=tuple(models), params=3000, seconds=None, tokens=8 * 8 * 16, block_size=16, batch_size=8,
                evals=2, eval_iters=2, samples=20, device="cpu")
    return CompareConfig(**{**base, **kw})


def files_with_mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------------------------------------- pieces


def test_memorisation_shares_by_hand():
    train = ["emma", "olivia", "ava"]
    val = ["zed", "olivia"]
    samples = ["emma", "zed", "olivia", "", "qqq", "emma ", "  "]  # blanks left out; compared stripped
    got = memorisation(samples, train, val)
    # 5 lines: emma, olivia, emma in train (olivia counts as train, first match wins); zed in val; qqq new
    assert got == {"n": 5, "train": 3 / 5, "val": 1 / 5, "new": 1 / 5}
    assert memorisation([], train, val) == {"n": 0, "train": 0.0, "val": 0.0, "new": 0.0}
    assert memorisation(["x", "y"], [], []) == {"n": 2, "train": 0.0, "val": 0.0, "new": 1.0}


def test_line_structured_data_is_detected():
    short = [f"name{i}" for i in range(200)]
    prose = ["It was the best of times, it was the worst of times, it was the age of wisdom"] * 200
    assert line_structured(short)
    assert not line_structured(prose)
    assert not line_structured(short[:50])  # too few lines to say
    assert line_structured(short + prose[:10])  # 95% short
    assert not line_structured(short + prose[:40])  # 83% short


def test_budget_and_size_parsing():
    assert parse_count("200K") == 2e5 and parse_count("1M") == 1e6 and parse_count("5e5") == 5e5
    assert parse_count("1.5m") == 1.5e6 and parse_count("300") == 300
    assert parse_seconds("5m") == 300 and parse_seconds("90s") == 90 and parse_seconds("1.5h") == 5400
    assert parse_seconds("45") == 45
    with pytest.raises(MinigptError, match="--budget"):
        parse_seconds("soon")
    with pytest.raises(MinigptError, match="--params"):
        parse_count("lots")


def test_config_is_validated_with_the_flag_to_change():
    with pytest.raises(MinigptError, match="--models.*transformer"):
        CompareConfig(models=("gpt", "transformer"))
    with pytest.raises(MinigptError, match="--budget"):
        CompareConfig(seconds=60, tokens=1e6)
    with pytest.raises(MinigptError, match="--lr"):
        CompareConfig(lr={"gtp": 1e-3})
    assert set(DEFAULT_MODELS) == set(kinds())


def _entry(val_bpb, *, params=200_000, tokens=1_000_000, curve=None, train_loss=2.0, val_loss=2.05):
    return {"status": "done", "val_bpb": val_bpb, "params": params, "tokens": tokens, "train_loss": train_loss,
            "val_loss": val_loss, "curve": curve or [], "settings": {"model": {"n_embd": 64, "n_layer": 4, "block_size": 64}}}


def test_diagnosis_names_the_causes_when_the_gpt_loses():
    def curve(*bpb):  # evaluations every 10 s
        return [{"time": 10.0 * i, "tokens": 1000 * i, "val_bpb": v} for i, v in enumerate(bpb)]

    results = {"config": {"seconds": 300}, "machine": {"cpus": 2}, "lines": True, "models": {
        "lstm": _entry(2.90, tokens=3_000_000, curve=curve(5.0, 3.2, 3.0, 2.95, 2.90)),
        "gpt": _entry(3.00, tokens=1_000_000, curve=curve(5.0, 3.6, 3.3, 3.1, 3.0), train_loss=1.8, val_loss=2.1)}}
    notes = diagnose(results)
    assert notes[0].startswith("Best: **lstm** at 2.900")
    why = notes[1]
    assert "0.100 bpb behind lstm. Likely causes:\n  - " in why
    # budget: half-way (20 s) the GPT was 3.3 - 3.0 = 0.3 behind, at the end 0.1
    assert "closing the gap (0.300 bpb behind lstm half-way, 0.100 at the end)" in why
    assert "3.0x fewer tokens" in why
    assert "the GPT overfits more than lstm (val - train loss 0.300 vs 0.050)" in why  # data
    assert "size: at 200K parameters (n_embd 64, 4 layers)" in why
    assert "context: the block is 64 tokens" in why  # the winner is recurrent
    assert "lines are short" in why  # data: line-structured
    assert not any("sorted order" in n for n in notes)
    results["models"]["gpt"] = _entry(2.5)
    results["val_ascending"] = 0.97  # names.txt: the val split is the sorted tail of the file
    notes = diagnose(results)
    assert notes[0].startswith("Best: **gpt**") and not any("behind" in n for n in notes)
    assert any("sorted order (97% of neighbours ascending" in n for n in notes)


# ---------------------------------------------------------------------------------------------- end to end


def test_compare_trains_every_kind_and_writes_the_report(names, tmp_path):
    out = tmp_path / "cmp"
    result = compare(str(names), tokenizer="char", config=tiny(DEFAULT_MODELS), out=out)
    assert not result.interrupted and result.report == out / "report.md"
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["models"]) == list(DEFAULT_MODELS) and saved["lines"] is True
    assert 0.3 < saved["val_ascending"] < 0.7  # random made-up names: not sorted
    text = result.report.read_text()
    for kind, entry in saved["models"].items():
        assert entry["status"] == "done" and (out / kind / "latest").is_file()
        assert entry["tokens"] == 8 * 8 * 16 and entry["steps"] == 8
        assert entry["val_bpb"] > 0 and entry["params"] > 0 and entry["flops_per_token"] > 0
        best = min(entry["curve"], key=lambda c: c["val_loss"])  # ranked by the best evaluation, kept as `best`
        assert (entry["val_loss"], entry["val_bpb"]) == (best["val_loss"], best["val_bpb"])
        assert entry["final_val_loss"] == entry["curve"][-1]["val_loss"] >= entry["val_loss"]
        assert entry["memorisation"]["n"] == len(entry["samples"]) > 0
        assert f"| {kind} | {entry['params']:,} |" in text  # one table row per model
        row = next(line for line in text.splitlines() if line.startswith(f"| {kind} |"))
        assert f" | {entry['steps']:,} | {human_count(entry['tokens'])} | " in row  # training steps, and their time:
        assert 0 < entry["train_s"] <= entry["wall_s"] and entry["evals"] == len(entry["curve"])
        assert f"**{kind}** (seed {entry['sample_seed']})" in text  # its samples, with the seed that drew them
    assert "## Memorisation" in text and "![validation bits per byte](curves.png)" in text
    assert "| training time | wall time |" in text
    assert len({e["sample_seed"] for e in saved["models"].values()}) == len(DEFAULT_MODELS)
    png = out / "curves.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[:2] == (504, 1320)  # 11 x 4.2 inches at 120 dpi
    # the report regenerates from results.json alone
    (out / "report.md").unlink()
    png.unlink()
    assert write_report(out) == out / "report.md" and png.read_bytes()[:8] == PNG_MAGIC
    assert (out / "report.md").read_text() == text


def test_interrupted_comparison_resumes_without_retraining_finished_models(names, tmp_path, monkeypatch):
    out, models = tmp_path / "cmp", ("bigram", "mlp", "gpt")
    calls: list[tuple[str, bool]] = []
    real_pretrain, real_interrupt = minigpt.train.pretrain.pretrain, minigpt.train.trainer.Interrupt
    stop_in = {"kind": "gpt"}

    class CtrlC:
        """The trainer's Ctrl-C handler, as if pressed during step 3 (the loop checks it once per step)."""

        def __init__(self):
            self.checks = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        @property
        def requested(self):
            self.checks += 1
            return self.checks > 3

    def spy(*args, **kw):
        name = Path(kw["out"]).name
        calls.append((name, kw["resume"]))
        monkeypatch.setattr(minigpt.train.trainer, "Interrupt", CtrlC if name == stop_in["kind"] else real_interrupt)
        return real_pretrain(*args, **kw)

    monkeypatch.setattr(minigpt.train.pretrain, "pretrain", spy)
    first = compare(str(names), tokenizer="char", config=tiny(models), out=out)
    assert first.interrupted and first.report is None
    saved = json.loads((out / "results.json").read_text())
    assert [saved["models"][k]["status"] for k in models] == ["done", "done", "interrupted"]
    assert calls == [("bigram", False), ("mlp", False), ("gpt", False)]
    assert (out / "gpt" / "latest").read_text().strip() == "step_000003"  # saved where it stopped
    finished = {k: files_with_mtimes(out / k) for k in ("bigram", "mlp")}
    gpt_before = (out / "gpt" / "metrics.jsonl").read_text()

    stop_in["kind"] = None
    calls.clear()
    second = compare(str(names), tokenizer="char", config=tiny(models), out=out)
    assert not second.interrupted and calls == [("gpt", True)]
    for kind in ("bigram", "mlp"):
        assert files_with_mtimes(out / kind) == finished[kind], f"{kind} was touched"
    saved = json.loads((out / "results.json").read_text())
    assert all(saved["models"][k]["status"] == "done" for k in models)
    assert saved["models"]["gpt"]["steps"] == 8 and saved["models"]["gpt"]["tokens"] == 8 * 8 * 16
    assert (out / "gpt" / "metrics.jsonl").read_text().startswith(gpt_before)  # continued, not restarted
    assert "| gpt |" in (out / "report.md").read_text()
    # a third run trains nothing; other settings in the same folder are refused
    calls.clear()
    compare(str(names), tokenizer="char", config=tiny(models), out=out)
    assert calls == []
    with pytest.raises(MinigptError, match="other settings"):
        compare(str(names), tokenizer="char", config=tiny(models, params=9000), out=out)


@pytest.mark.slow
def test_cli_end_to_end_with_a_time_budget(names, tmp_path):
    out = tmp_path / "cmp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "minigpt", "compare", "--data", str(names), "--models", "bigram,gru,gpt",
            "--params", "3K", "--budget", "6s", "--block-size", "16", "--batch-size", "8", "--evals", "3",
            "--eval-iters", "2", "--samples", "10", "--device", "cpu", "--lr", "gpt=2e-3", "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["models"]) == ["bigram", "gru", "gpt"]
    assert saved["models"]["gpt"]["lr"] == 2e-3
    for entry in saved["models"].values():
        assert entry["status"] == "done" and entry["train"]["max_seconds"] == pytest.approx(2.0)
        assert 1.5 < entry["wall_s"] < 30  # the time budget ended each run (plus its final evaluation)
    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC
    again = subprocess.run(args[:4] + ["--out", str(out), "--report-only"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert again.returncode == 0 and "report.md" in again.stdout
    bad = subprocess.run(args[:4] + ["--models", "gpt,transformer"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and "error: --models: unknown kind transformer" in bad.stderr


# ---------------------------------------------------------------------------------------------- faults found by use


def _cli(argv, capsys) -> tuple[int, str]:
    """`minigpt compare ...` in this process: (exit code, stderr)."""
    from minigpt.cli import main

    code = main(["compare", *argv])
    return code, capsys.readouterr().err


def test_config_errors_name_the_flag_that_is_wrong():
    with pytest.raises(MinigptError, match=r"^--batch-size: must be at least 1$"):
        CompareConfig(batch_size=0)
    with pytest.raises(MinigptError, match=r"^--block-size: must be at least 2$"):
        CompareConfig(block_size=1)
    with pytest.raises(MinigptError, match=r"^--eval-iters: must be at least 1$"):
        CompareConfig(eval_iters=0)
    with pytest.raises(MinigptError, match=r"^--evals: must be at least 1$"):
        CompareConfig(evals=0)


def test_a_vocabulary_the_target_size_cannot_hold_is_refused_up_front(tmp_path, capsys):
    """3,000 distinct characters (a Chinese text's vocabulary): at 200K parameters an RNN's 64-wide token table
    and its output layer alone are ~250K, so every sized kind would be a 1-unit model near the uniform loss."""
    rng = random.Random(0)
    chars = [chr(0x4E00 + i) for i in range(3000)]
    data = tmp_path / "poems.txt"
    data.write_text("".join("".join(rng.choice(chars) for _ in range(7)) + "\n" for _ in range(2000)))
    out = tmp_path / "cmp"
    code, err = _cli(["--data", str(data), "--budget", "70s", "--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    found = re.fullmatch(r"error: --params 200K: at vocab ([\d,]+) the rnn's token table and output layer alone "
                         r"need \S+ parameters; raise --params to at least (\S+), or use a smaller vocabulary "
                         r"\(--tokenizer auto --vocab-size (\d+)\)", lines[0])
    assert found, lines[0]
    assert not out.exists()  # refused before any data preparation or training
    from minigpt.runs.compare import check_size

    vocab, at_least, smaller = int(found[1].replace(",", "")), parse_count(found[2]), int(found[3])
    assert 2900 < vocab < 3100 and smaller < vocab
    check_size(CompareConfig(params=at_least), vocab)  # either suggestion passes the check
    check_size(CompareConfig(), smaller)


def test_no_model_is_named_best_when_none_got_below_the_uniform_loss():
    uniform = math.log(6964)

    def flat(steps, loss):
        return {**_entry(loss / math.log(2) / 2.8, val_loss=loss), "steps": steps, "wall_s": 10.0}

    results = {"config": {"seconds": 70, "models": ["cnn", "gru", "gpt"], "params": 2e6}, "machine": {"cpus": 2},
               "vocab_size": 6964, "models": {"cnn": flat(4, uniform - 0.09), "gru": flat(3, uniform - 0.05),
                                               "gpt": flat(2, uniform + 0.01)}}
    notes = diagnose(results)
    assert notes[0].startswith("No model learned beyond the uniform loss") and "ln 6,964 = 8.849" in notes[0]
    assert "2 to 4 steps" in notes[0]
    assert not any(n.startswith("Best") or "Likely causes" in n for n in notes)
    results["models"]["cnn"] = flat(400, uniform - 2)  # one learned: it is ranked, the others are named flat
    notes = diagnose(results)
    assert notes[0].startswith("Best: **cnn**")
    assert any(n.startswith("At the uniform loss") and n.endswith("gru, gpt.") for n in notes)


def test_weak_runs_are_flagged_in_the_notes():
    """Few steps, evaluation eating a time budget, wall time over the per-model budget, sizes off target."""
    results = {"config": {"seconds": 70, "models": ["bigram", "cnn", "gpt"], "params": 2e5}, "machine": {"cpus": 2},
               "models": {"bigram": {**_entry(4.5, params=48_497_296), "steps": 3, "wall_s": 16.0, "train_s": 1.0},
                          "cnn": {**_entry(4.4, params=460_000), "steps": 15, "wall_s": 12.0, "train_s": 2.0},
                          "gpt": {**_entry(4.3, params=210_000), "steps": 500, "wall_s": 23.0, "train_s": 20.0}}}
    notes = "\n".join(diagnose(results))
    assert "Few training steps (bigram 3, cnn 15; under 100)" in notes
    assert "cnn (2 s of 12 s in training steps)" in notes and "bigram (1 s of 16 s" in notes
    assert "Not near the target size of 200K parameters (cnn 460,000 = 2.3x)" in notes  # the bigram is exempt
    assert "Wall time over" not in notes  # 23 s of 70 s / 3 = 23.3 s
    results["models"]["gpt"]["wall_s"] = 30.0
    assert "Wall time over the per-model budget of 23 s (gpt 30 s)" in "\n".join(diagnose(results))


def test_evaluation_is_a_bounded_share_of_a_time_budget_whatever_the_step_estimate(monkeypatch):
    """The trainer spaces evaluations in steps; with a step-time estimate that is wrong (a busy machine), the old
    eval_interval of 1 let 16 evaluations eat a 10 s budget that held 15 training steps."""
    import minigpt.train.throughput
    from minigpt.models.sizing import sized
    from minigpt.runs.compare import EVAL_SHARE, plan, train_config

    cfg = CompareConfig(models=("cnn",), seconds=10.0, evals=8, eval_iters=10)
    model_config, settings = plan("cnn", 65, cfg)
    per_eval = 2 * cfg.eval_iters / 3  # training steps' worth: both splits' batches, a forward ~1/3 of a step
    for estimate in (1e-4, 1e-3, 0.01, 0.15, 0.6, 5.0, 60.0):
        monkeypatch.setattr(minigpt.train.throughput, "step_seconds", lambda *a, **k: estimate)
        tcfg = train_config(model_config, settings, "cpu")
        assert per_eval / (tcfg.eval_interval + per_eval) <= EVAL_SHARE + 1e-9, estimate
        assert tcfg.max_seconds == 10.0 and tcfg.eval_interval % tcfg.log_interval == 0
        expected = 10.0 * (1 - EVAL_SHARE) / estimate
        assert expected / tcfg.eval_interval <= cfg.evals + 1  # an accurate estimate: about --evals of them
    assert sized("cnn", 65, 64, 2e5) == model_config


def test_an_out_that_is_a_file_is_refused_in_one_line(names, tmp_path, capsys):
    afile = tmp_path / "outfile"
    afile.write_text("")
    code, err = _cli(["--data", str(names), "--models", "bigram", "--tokens", "4K", "--out", str(afile)], capsys)
    assert code == 2 and err.strip() == f"error: --out {afile}: is a file, not a folder; choose another --out"


def test_report_only_regenerates_a_task_folder_report(tmp_path, capsys):
    from minigpt.learn.tasks import compare_task, get_task

    out = tmp_path / "cmp_recall"
    compare_task(get_task("recall"), tiny(["gpt"]), steps=2, out=out, per_length=2)
    before = (out / "report.md").read_text()
    (out / "report.md").unlink()
    code, err = _cli(["--report-only", "--out", str(out)], capsys)
    assert code == 0, err
    assert (out / "report.md").read_text() == before and before.startswith("# minigpt compare --task recall")
    assert "trained for 2 steps each" in before


def test_task_refuses_the_flags_it_would_ignore(tmp_path, capsys):
    """--task makes its own data: --data (even a missing file), --block-size, --line-check... were ignored."""
    code, err = _cli(["--task", "recall", "--data", "nosuch.txt", "--block-size", "32", "--no-line-check",
                      "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "--data, --block-size, --line-check do not apply to a synthetic task" in err
    assert not (tmp_path / "t").exists()


def _special_loving_bigram():
    """A char tokenizer of '\\n', 'a', 'b' and a bigram table that always goes \\n -> a -> <|unk|> and
    <|bos|> -> <|user|>: what a lightly trained model does now and then, here every time."""
    import torch

    from minigpt.models import build_model, config_from_dict
    from minigpt.text.tokenizer import train_char

    tok = train_char("ab\n")
    model = build_model(config_from_dict({"kind": "bigram", "vocab_size": tok.vocab_size, "block_size": 16}))
    nl, a = tok.encode("\n")[0], tok.encode("a")[0]
    with torch.no_grad():
        table = model.table.weight
        table.fill_(-30.0)
        for row, col in ((nl, a), (a, tok.unk_id), (tok.unk_id, nl), (tok.bos_id, tok.special_id("<|user|>"))):
            table[row, col] = 30.0
        table[tok.special_id("<|user|>"), a] = 30.0
    return model.eval(), tok


def test_samples_never_print_special_tokens_and_say_why_they_end():
    from minigpt.runs.compare import sample
    from minigpt.runs.compare_report import _ending

    model, tok = _special_loving_bigram()
    cfg = tiny(["bigram"], samples=5)
    lines = sample(model, tok, cfg, True, ["a", "b"], [])
    # every line went "a" then the unknown-character id: left out, not counted as a new name "a" or "a\ufffd"
    assert lines["samples"] == [] and lines["memorisation"]["n"] == 0
    assert lines["dropped"] == {"length": 0, "special": 5, "blank": 0}
    text = sample(model, tok, cfg, False, [], [])
    assert "<|" not in text["sample_text"] and text["sample_text"] == ""
    assert text["sample_end"] == {"tokens": 1, "reason": "stop", "token": "<|user|>"}
    assert _ending(text["sample_end"]) == ("ended after 0 tokens: the model drew <|user|> (a special token plain "
                                           "text never holds)")


def test_each_model_samples_with_its_own_recorded_seed():
    from minigpt.runs.compare import SEED_STRIDE, sample, sample_seed

    seeds = {kind: sample_seed(1337, kind) for kind in DEFAULT_MODELS}
    assert len(set(seeds.values())) == len(DEFAULT_MODELS) and min(seeds.values()) == 1337
    assert sorted(seeds.values())[1] - 1337 == SEED_STRIDE  # far apart: model k's sample j never meets another's
    model, tok = _special_loving_bigram()
    assert sample(model, tok, tiny(["bigram"]), False, [], [], seed=seeds["gpt"])["sample_seed"] == seeds["gpt"]
