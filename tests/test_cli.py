"""The `minigpt` command end to end in subprocesses: version, help, one-line errors, and the first pipeline."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from minigpt import __version__

from conftest import shared_file


def minigpt(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minigpt", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})


def test_version_and_help():
    assert minigpt("--version").stdout.strip() == f"minigpt {__version__}"
    out = minigpt("--help").stdout
    for command in ("tokenizer", "prepare", "pretrain", "sft", "reward", "dpo", "rl", "sample", "chat", "inspect",
                    "compare", "speedrun"):
        assert command in out


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--data", "no/such/file.txt"], "no such file"),
    (["pretrain", "--n-embd", "100", "--n-head", "3"], "--n-head"),
    (["pretrain", "--model", "mlp", "--n-head", "4"], "--n-head does not apply to --model mlp"),
    (["pretrain", "--lr", "-1"], "--lr"),
    (["sample", "--checkpoint", "missing-run"], "no such checkpoint"),
    (["sft"], "--checkpoint"),
    (["pretrain", "--config", "missing.toml"], "--config missing.toml: no such file"),
    (["sample", "--checkpoint", "missing-run", "--device", "bogus"], "--device bogus: not a device"),
    (["sample", "--checkpoint", "missing-run", "--seed", str(2**64)], "--seed: must be an integer from 0 to 2**64"),
    (["sample", "--checkpoint", "missing-run", "--temperature", "inf"], "--temperature: must be a number >= 0"),
    (["sample", "--checkpoint", "missing-run", "--max-new-tokens", "100000000000"], "from 1 to 1,000,000"),
    (["chat", "--checkpoint", "missing-run", "-p", " "], "-p: the question is empty"),
    (["sample", "--checkpoint", "missing-run", "--grid", "temperature=0,1", "-n", "2"], "-n 2 with --grid"),
])
def test_user_errors_are_one_line_and_exit_2(args, message):
    r = minigpt(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]  # errors go to stderr; stdout stays output
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert not r.stdout.strip()


def _parse(*argv):
    from minigpt.cli import build_parser
    from minigpt.cli.args import apply_config_file

    parser = build_parser()
    args = parser.parse_args(list(argv))
    return apply_config_file(args, list(argv), parser) if args.config else args


def test_a_time_budget_alone_is_the_only_limit(tmp_path):
    from minigpt.cli.args import train_config

    def cfg(*flags):
        return train_config(_parse("pretrain", *flags))

    assert cfg().max_iters == 2000 and cfg().max_seconds is None
    assert cfg("--max-seconds", "60").max_iters == 10**9  # the clock alone decides
    assert cfg("--max-seconds", "60", "--max-iters", "7").max_iters == 7  # both given: whichever comes first
    (tmp_path / "t.toml").write_text("max_seconds = 60\n")
    assert cfg("--config", str(tmp_path / "t.toml")).max_iters == 10**9


def test_config_file_then_flags(tmp_path):
    from minigpt.cli.args import model_config, train_config

    path = tmp_path / "run.toml"
    path.write_text('data = "corpus.txt"\nout = "ck/x"\n[model]\nn_layer = 3\nn_embd = 96\n'
                    '[train]\nlr = 0.002\nmax_iters = 50\n')
    args = _parse("pretrain", "--config", str(path), "--max-iters", "70")
    model, train = model_config(args), train_config(args)
    assert (model.n_layer, model.n_embd, model.block_size) == (3, 96, 128)  # file over the tiny preset
    assert (train.lr, train.max_iters) == (0.002, 70)  # the flag over the file
    assert (args.data, args.out) == ("corpus.txt", "ck/x")  # any flag, not only config fields
    dpo = tmp_path / "dpo.toml"
    dpo.write_text("beta = 0.3\nlr = 1e-5\n")
    args = _parse("dpo", "--config", str(dpo))
    from minigpt.train.finetune import STAGE_DEFAULTS

    assert args.beta == 0.3 and train_config(args, STAGE_DEFAULTS["dpo"]).lr == 1e-5


def test_config_file_typo_is_refused_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("n_layers = 8\n")
    r = minigpt("pretrain", "--config", str(path), "--max-iters", "1")
    assert r.returncode == 2 and "unknown key 'n_layers'" in r.stderr and "did you mean 'n_layer'" in r.stderr


def test_existing_run_is_refused_before_any_data_work(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_DATA", str(tmp_path / "cache"))
    out = tmp_path / "run"
    out.mkdir()
    (out / "latest").write_text("step_000010")
    (out / "run.json").write_text("{}")
    (tmp_path / "corpus.txt").write_text("some text to train a tokenizer on\n" * 50)
    r = minigpt("pretrain", "--data", str(tmp_path / "corpus.txt"), "--out", str(out))
    assert r.returncode == 2 and "already holds a run; add --resume" in r.stderr, r.stderr
    assert not (tmp_path / "cache").exists(), "no tokenizer trained, no shards written"
    r = minigpt("pretrain", "--out", str(tmp_path / "nothing"), "--resume")
    assert r.returncode == 2 and "holds no run" in r.stderr, r.stderr


def test_tokenizer_prepare_pretrain_sample_through_the_cli(tmp_path):
    text = tmp_path / "story.txt"
    text.write_text("".join(f"Once upon a time there was a small model number {i}. It learned to write.\n"
                            for i in range(300)))
    tok = minigpt("tokenizer", "train", "--data", str(text), "--vocab-size", "300", "--out", str(tmp_path / "t.bpe"))
    assert tok.returncode == 0, tok.stdout + tok.stderr
    prep = minigpt("prepare", "--data", str(text), "--tokenizer", str(tmp_path / "t.bpe"))
    assert prep.returncode == 0 and "train:" in prep.stdout, prep.stdout + prep.stderr
    run = tmp_path / "run"
    train = minigpt("pretrain", "--data", str(text), "--tokenizer", str(tmp_path / "t.bpe"), "--n-layer", "2",
                    "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--max-iters", "30",
                    "--eval-interval", "15", "--eval-iters", "2", "--out", str(run))
    assert train.returncode == 0, train.stdout + train.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[-1]["val/loss"] < evals[0]["val/loss"] and "sample" in evals[-1]
    sample = minigpt("sample", "--checkpoint", str(run), "Once upon", "--max-new-tokens", "20",
                     "--seed", "1")
    assert sample.returncode == 0 and sample.stdout.startswith("Once upon"), sample.stdout + sample.stderr


def test_tokenizer_encode_refuses_text_that_is_not_utf8(tmp_path):
    tok = tmp_path / "t.char"
    from minigpt.text.tokenizer import train_char

    train_char("abc").save(tok)
    env = {**os.environ, "COLUMNS": "200"}
    for argv, stdin in (([b"caf\xe9"], None), ([b"-"], b"caf\xe9 au lait\n")):
        r = subprocess.run([sys.executable, "-m", "minigpt", "tokenizer", "encode", "--tokenizer", str(tok), *argv],
                           input=stdin, capture_output=True, timeout=120, env=env)
        lines = r.stderr.decode().strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "not valid UTF-8 (byte 0xe9 at offset 3)" in lines[0]


def test_tokenizer_train_refuses_to_overwrite_its_own_corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text to learn from\n" * 30)
    before = corpus.read_bytes()
    for data in (corpus, tmp_path):  # the file, and a folder holding only that file
        r = minigpt("tokenizer", "train", "--data", str(data), "--vocab-size", "270", "--out", str(corpus))
        assert r.returncode == 2 and "the corpus the tokenizer learns from" in r.stderr, r.stderr
    assert corpus.read_bytes() == before


def test_real_chat_files_load(shared_data):
    """The shared SFT and preference files parse and render: Chinese conversations and HH-RLHF pairs."""
    from minigpt.text.chat_data import load_conversations, load_preferences
    from minigpt.text.tokenizer import train_bpe

    zh = shared_file("sft/sft_oasst1_zh.jsonl")
    hh = shared_file("preference/pref_hh_rlhf_harmless_base_test.jsonl")
    tok = train_bpe([zh.read_text(encoding="utf-8")[:200_000]], 600, progress=False)
    rows = load_conversations(zh, tok)
    assert len(rows.train) + len(rows.val) == 689 and all(sum(mask) > 0 for _, mask in rows.train)
    ids, mask = rows.train[0]
    assert "<|assistant|>" in tok.decode(ids) and tok.decode([t for t, m in zip(ids, mask) if m]).endswith("<|end|>")
    prefs = load_preferences(hh, tok)
    assert len(prefs.train) + len(prefs.val) == 2299


def test_a_reward_model_is_refused_where_text_is_written(tmp_path, capsys):
    from minigpt.checkpoint import save_checkpoint
    from minigpt.cli import main
    from minigpt.models.gpt import GPTConfig
    from minigpt.models.reward import RewardConfig, RewardModel
    from minigpt.text.tokenizer import train_char

    tok = train_char("hello world")
    tok.save(tmp_path / "tokenizer.char")
    base = vars(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    save_checkpoint(tmp_path / "rm", 1, RewardModel(RewardConfig(base=base)), tmp_path / "tokenizer.char",
                    extra={"stage": "reward"})
    for argv in (["chat", "-p", "hi"], ["sample", "hi"], ["inspect", "attention", "hi"]):
        assert main([*argv, "--checkpoint", str(tmp_path / "rm")]) == 2
        err = capsys.readouterr().err
        assert "a reward model scores replies and cannot write any" in err and "Traceback" not in err, argv


def test_inspect_numbers_and_files_are_checked_by_argparse(tmp_path, capsys):
    from minigpt.cli import main

    for argv, words in ((["attention", "x", "--window", "-3"], "--window: must be at least 1"),
                        (["embeddings", "--top", "0"], "--top: must be at least 1"),
                        (["embeddings", "--count", "1"], "--count: must be at least 2"),
                        (["attention", "x", "--png", str(tmp_path)], "is a folder; give a file name")):
        with pytest.raises(SystemExit) as exit_:
            main(["inspect", *argv, "--checkpoint", "anything"])
        assert exit_.value.code == 2 and words in capsys.readouterr().err, argv



def test_an_out_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path, capsys):
    from minigpt.cli import main

    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "corpus.txt").write_text("hello world\n" * 50)
    for out, words in ((tmp_path / "file.txt", "is a file, not a folder"),
                       (tmp_path / "file.txt" / "run", "cannot be created")):
        assert main(["pretrain", "--data", str(tmp_path / "corpus.txt"), "--tokenizer", "char", "--out",
                     str(out)]) == 2
        assert words in capsys.readouterr().err
    assert (tmp_path / "file.txt").read_text() == "not a folder"
    assert main(["tokenizer", "train", "--data", str(tmp_path / "corpus.txt"), "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err
    for out in (tmp_path / "file.txt", tmp_path / "file.txt" / "shards"):  # was a FileExistsError traceback
        assert main(["prepare", "--data", str(tmp_path / "corpus.txt"), "--tokenizer", "char", "--out",
                     str(out)]) == 2
        assert "cannot be made a folder for this data folder (a file is in the way)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tokenizer", "info", "--tokenizer", "cl100k_base", "--top", "-3"])
    assert "--top: must be at least 1" in capsys.readouterr().err
