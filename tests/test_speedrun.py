"""The whole pipeline in one command, at a tiny budget, through the real CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minigpt.common import parse_seconds as parse_budget


def test_parse_budget():
    assert parse_budget("30m") == 1800 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget("45") == 45
    with pytest.raises(Exception, match="not a duration"):
        parse_budget("soon")


def test_the_report_card_splits_identity_by_who_wrote_the_questions():
    from minigpt.runs.report_card import summarise
    from minigpt.text.chat_tasks import Facts
    from minigpt.text.identity import identity_records

    prompts = [{"family": r["family"], "phrasing": r["phrasing"], "split": r["split"], "blind": r.get("blind", 0)}
               for r in identity_records(Facts()) if r["split"] == "val"]
    right = [i % 3 == 0 or p["blind"] == 2 for i, p in enumerate(prompts)]  # any pattern the groups must follow
    rows = [{"f1": float(ok), "exact": float(ok), "correct": float(ok)} for ok in right]
    stage = summarise(prompts, {"sft": rows})["stages"]["sft"]
    for n, who in enumerate(("hand", "blind", "blind-after")):
        mine = [ok for ok, p in zip(right, prompts) if p["blind"] == n]
        assert len(mine) > 30 and stage[f"identity-{who}"]["correct"][0] == pytest.approx(sum(mine) / len(mine))
    assert stage["identity"]["correct"][0] == pytest.approx(sum(right) / len(right))


def test_the_report_card_summarises_the_answers_asked_second_in_a_chat():
    from minigpt.runs.report_card import summarise

    families = ["recall"] * 6 + ["identity"] * 3 + ["unknown"] * 2
    prompts = [{"family": f, "entry": f"e{i}", "prompt": []} for i, f in enumerate(families)]
    row = lambda x: {"f1": x, "exact": x, "correct": x}  # noqa: E731
    first = [row(1.0)] * len(prompts)
    second = [row(float(i % 2)) for i in range(len(prompts))]
    summary = summarise(prompts, {"sft": first}, {"sft": second})
    chat = summary["in_chat"]["sft"]
    assert chat["all"]["f1"][0] == pytest.approx(5 / 11) and summary["stages"]["sft"]["all"]["f1"][0] == 1.0
    assert chat["identity"]["correct"][0] == pytest.approx(1 / 3) and chat["unknown"]["correct"][0] == 0.5
    assert summarise(prompts, {"sft": first})["in_chat"] == {}


def test_pretraining_hands_on_its_lowest_val_loss_step_and_the_chat_stages_their_last(tmp_path):
    from minigpt.runs.report_card import checkpoint_of

    for stage in ("pretrain", "sft", "dpo", "rl"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "best").write_text("step_000005\n")  # a step before the last one
    assert checkpoint_of(tmp_path, "pretrain") == tmp_path / "pretrain" / "best"
    assert [checkpoint_of(tmp_path, s) for s in ("sft", "dpo", "rl")] == [tmp_path / s for s in ("sft", "dpo", "rl")]


def test_a_speedrun_rerun_keeps_its_budget_seed_and_shares(tmp_path, monkeypatch, capsys):
    """The stages faked, the bookkeeping real: an interrupted stage resumes with the share it started with (its
    trainer's clock goes on), the time of the interrupted attempt counts, the card's figure is the stages' time
    (not the card's own evaluation), and a rerun with another --budget or --seed is refused, not ignored."""
    from types import SimpleNamespace

    from minigpt.cli import main
    from minigpt.common import MinigptError
    from minigpt.runs import speedrun as sr
    from minigpt.train import finetune, rl

    calls, interrupt = [], {"sft"}

    def fake(stage):
        def train(*args, out, resume, train_config, **kwargs):
            calls.append((stage, train_config.max_seconds, resume))
            out.mkdir(parents=True, exist_ok=True)
            (out / "latest").write_text("step_000001\n")
            stop = stage in interrupt
            interrupt.discard(stage)
            return SimpleNamespace(interrupted=stop, step=1, metrics={})
        return train

    cards = []
    monkeypatch.setattr(sr, "prepare_corpus", lambda name: None)
    monkeypatch.setattr(sr, "pretrain", fake("pretrain"))
    for module, stage in ((finetune, "sft"), (finetune, "reward"), (finetune, "dpo"), (rl, "rl")):
        monkeypatch.setattr(module, stage, fake(stage))
    monkeypatch.setattr(sr, "write_report_card", lambda out, state: cards.append(dict(state)) or out / "report.md")
    out = tmp_path / "sr"
    with pytest.raises(KeyboardInterrupt):
        sr.speedrun(600, out, seed=7)
    state = json.loads((out / "speedrun.json").read_text())
    assert (state["budget"], state["seed"], list(state["stages"])) == (600, 7, ["pretrain"])
    assert set(state["shares"]) == {"pretrain", "sft"} and state["elapsed"] > 0
    sft_share = calls[1][1]
    with pytest.raises(MinigptError, match="started with --budget 10m --seed 7"):
        sr.speedrun(1800, out, seed=1)
    sr.speedrun(None, out)  # resumes with its own budget and seed
    assert calls[2] == ("sft", sft_share, True) and [c[0] for c in calls[3:]] == ["reward", "dpo", "rl"]
    state = json.loads((out / "speedrun.json").read_text())
    assert state["elapsed"] == cards[0]["elapsed"] <= state["total"]  # the card reads the stages' time
    assert main(["speedrun", "--budget", "0", "--out", str(tmp_path / "new")]) == 2
    assert "--budget 0: too short" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert main(["speedrun", "--report-only", "--out", str(tmp_path / "none")]) == 2
    assert "no speedrun there" in capsys.readouterr().err and not (tmp_path / "none").exists()


@pytest.mark.slow
def test_speedrun_runs_every_stage_and_writes_the_report_card():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "minigpt", "speedrun", "--budget", "75s", "--out", "sr", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "minigpt chat --checkpoint sr/rl" in done.stdout
    state = json.loads(open("sr/speedrun.json").read())
    assert list(state["stages"]) == ["pretrain", "sft", "reward", "dpo", "rl"]
    parents = {s: json.loads(open(f"sr/{s}/run.json").read())["parent"] for s in ("sft", "reward", "dpo", "rl")}
    assert parents == {"sft": f"sr/pretrain/{open('sr/pretrain/best').read().strip()}",  # each from the one before
                       **{s: f"sr/sft/{open('sr/sft/latest').read().strip()}" for s in ("reward", "dpo")},
                       "rl": f"sr/dpo/{open('sr/dpo/latest').read().strip()}"}
    report = open("sr/report.md").read()
    for row in ("| pretrain |", "| base |", "| SFT |", "| DPO |", "| RL |", "| reward |", "| RL vs SFT |",
                "| RL vs DPO |"):
        assert row in report
    for png in ("answer_f1.png", "pretrain_loss.png", "rl_loss.png"):
        assert open(f"sr/{png}", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    card = json.loads(open("sr/report.json").read())
    stages = card["summary"]["stages"]
    assert set(stages) == {"pretrain", "sft", "dpo", "rl"}
    for stage in stages.values():  # a mean and its 95% interval, per family and over all held-out prompts
        assert {"all", "recall", "context", "followup", "identity", "unknown", "howto"} <= set(stage)
        mean, low, high = stage["all"]["f1"]
        assert 0 <= low <= mean <= high <= 1
    assert set(card["summary"]["diffs"]) == {"sft-pretrain", "dpo-sft", "rl-sft", "rl-dpo"}
    assert set(card["summary"]["in_chat"]) == set(card["answers_in_chat"]) == {"sft", "dpo", "rl"}
    assert {"all", "identity", "unknown", "howto"} == set(card["summary"]["in_chat"]["rl"])
    assert "| RL | the same prompts asked second in a chat" in report
    assert 0 < card["pydocs_val"]["bpb"] < 10 and len(card["answers"]["rl"]) == len(card["prompts"])
    written = os.stat("sr/report.md").st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)  # a finished run is not redone
    assert again.returncode == 0 and again.stdout.count("done earlier, skipping") == 5
    assert "report card: written earlier" in again.stdout and os.stat("sr/report.md").st_mtime_ns == written


def test_a_diverged_stage_is_reported_with_the_speedrun_s_own_fix(tmp_path, monkeypatch, capsys):
    """The trainer's advice ("a lower --lr") names a flag the speedrun does not have: it says what it can do."""
    from minigpt.cli import main
    from minigpt.runs import speedrun as sr
    from minigpt.train.trainer import Diverged

    def diverge(*args, **kwargs):
        raise Diverged("training diverged: the training loss is nan at step 40 (peak learning rate 0.004); no "
                       "checkpoint was saved", "Start again with a lower --lr (say 0.001) and another --out")

    monkeypatch.setattr(sr, "prepare_corpus", lambda name: None)
    monkeypatch.setattr(sr, "pretrain", diverge)
    assert main(["speedrun", "--budget", "10m", "--out", str(tmp_path / "sr")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: pretrain: training diverged: the training loss is nan at step 40") and "--lr" not in err
    assert "start it again with another --seed and --out" in err and err.count("\n") == 1
