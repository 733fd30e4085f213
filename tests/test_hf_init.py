"""--init-from: a Hugging Face GPT-2 folder becomes an ordinary minigpt run (GPT-2's ids and weights, minigpt's
5 special tokens appended with mean-initialised rows) that trains, fine-tunes, chats, is inspected, and exports
back with equal logits. Offline: a randomly initialised GPT2LMHeadModel and a byte-level BPE trained here."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from minigpt.checkpoint import load_checkpoint, read_run_info
from minigpt.cli import main
from minigpt.models.gpt import GPT, GPTConfig
from minigpt.export.hf_import import hf_start
from minigpt.models.hf import resize_vocab
from minigpt.text.hf_tokenizer import from_hf_tokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TEXT = "".join((ROOT / "minigpt" / name).read_text(encoding="utf-8") for name in ("checkpoint.py", "config.py"))
PROBE = "def load(path):\n    return 'café' + \"<|endoftext|>\"  # 42 ... done  \n\n"


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory) -> Path:
    """What `save_pretrained` writes for a (tiny, random) GPT-2 and its byte-level BPE tokenizer."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("gpt2")
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        show_progress=False))
    transformers.GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>").save_pretrained(folder)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=400, n_positions=64, n_embd=32,
                                                                 n_layer=2, n_head=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "code.txt"
    path.write_text(TEXT * 3, encoding="utf-8")
    return path


def test_tokenizer_keeps_gpt2_ids_and_appends_the_specials(gpt2_folder, tmp_path):
    ours = from_hf_tokenizer(gpt2_folder)
    theirs = transformers.AutoTokenizer.from_pretrained(gpt2_folder)
    assert ours.encode(TEXT) == theirs(TEXT)["input_ids"]
    rng = random.Random(0)  # GPT-2's regex as minigpt writes it, on odd whitespace, contractions and scripts
    alphabet = list(" \t\n\r\x0b\xa0\u2000\u3000'sStTdDlLvVrReEmM") + list("abXZ09٣,.:!?-_()<>|/\\\"`@#") + ["é", "中", "😀"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(1000)]
    assert [ours.encode(t) for t in texts] == [theirs(t, split_special_tokens=True)["input_ids"] for t in texts]
    assert (ours.n_ranks, ours.vocab_size, ours.bos_id) == (400, 405, 400)
    assert ours.token_bytes(0) == b"<|endoftext|>"  # GPT-2's own special stays an ordinary (unreachable) rank
    assert 0 not in ours.encode(PROBE) and ours.decode(ours.encode(PROBE)) == PROBE  # typed text stays text
    # the older vocab.json + merges.txt layout gives the same tokenizer
    old = tmp_path / "old"
    old.mkdir()
    tokenizers.Tokenizer.from_file(str(gpt2_folder / "tokenizer.json")).model.save(str(old))
    assert from_hf_tokenizer(old).to_text() == ours.to_text()


def test_import_grows_the_vocabulary_with_mean_rows_and_keeps_the_logits(gpt2_folder):
    run = hf_start(gpt2_folder)
    assert hf_start(gpt2_folder) == run  # imported once, then reused
    ckpt = load_checkpoint(run)
    assert ckpt.config["stage"] == "import" and read_run_info(run)["source"] == str(gpt2_folder)
    wte = ckpt.model.transformer.wte.weight
    assert wte.shape == (405, 32) and ckpt.model.lm_head.weight is wte  # tied, as GPT-2
    torch.testing.assert_close(wte[400:], wte[:400].mean(0, keepdim=True).expand(5, -1), atol=0, rtol=0)
    hf = transformers.GPT2LMHeadModel.from_pretrained(gpt2_folder).eval()
    ids = torch.tensor([ckpt.tokenizer.encode(TEXT)[:64]])
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model.eval()(ids)[..., :400], hf(ids).logits, atol=1e-5, rtol=0)


def test_resize_vocab_grows_and_drops_padding_rows():
    torch.manual_seed(0)
    untied = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8))
    grown = resize_vocab(untied, 13)
    assert torch.equal(grown.lm_head.weight[:10], untied.lm_head.weight)
    torch.testing.assert_close(grown.lm_head.weight[12], untied.lm_head.weight.mean(0))
    cut = resize_vocab(untied, 7)
    assert torch.equal(cut.transformer.wte.weight, untied.transformer.wte.weight[:7]) and cut.config.vocab_size == 7


def test_pretrain_from_gpt2_then_export_back_round_trip(gpt2_folder, text_file, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", "--init-from", str(gpt2_folder), "--data", str(text_file), "--out", str(run),
                 "--block-size", "32", "--max-iters", "3", "--eval-interval", "3", "--eval-iters", "1",
                 "--batch-size", "4", "--sample-tokens", "0"]) == 0
    ckpt = load_checkpoint(run)
    start = load_checkpoint(hf_start(gpt2_folder))
    assert ckpt.config["model"]["block_size"] == 32 and ckpt.model.config.vocab_size == 405
    assert not torch.equal(ckpt.model.transformer.wte.weight, start.model.transformer.wte.weight)  # it trained
    assert read_run_info(run)["init_from"] == str(start.path)
    assert main(["export", str(run), "--out", str(tmp_path / "back")]) == 0
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert type(back).__name__ == "GPT2LMHeadModel" and back.config.n_positions == 32
    ids = torch.tensor([ckpt.tokenizer.encode(TEXT)[:32]])
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ckpt.model.eval()(ids), atol=1e-5, rtol=0)
    # the exported tokenizer still has GPT-2's ids for ordinary text
    original = transformers.AutoTokenizer.from_pretrained(gpt2_folder)
    exported = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    ids = original(PROBE, split_special_tokens=True)["input_ids"]
    assert exported(PROBE, split_special_tokens=True)["input_ids"] == [ckpt.tokenizer.bos_id] + ids  # minigpt's start
    assert exported(PROBE, split_special_tokens=True, add_special_tokens=False)["input_ids"] == ids


@pytest.mark.slow
def test_sft_from_gpt2_then_dpo_chat_and_inspect(gpt2_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = ["--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2"]
    assert main(["sft", "--init-from", str(gpt2_folder), *quick]) == 0
    sft = tmp_path / "checkpoints" / f"{gpt2_folder.name}-sft"
    assert read_run_info(sft)["parent"] == str(load_checkpoint(hf_start(gpt2_folder)).path)
    assert main(["dpo", "--checkpoint", str(sft), *quick]) == 0
    capsys.readouterr()
    assert main(["chat", "--checkpoint", str(sft), "-p", "hello", "--max-new-tokens", "4", "--seed", "0"]) == 0
    assert main(["inspect", "attention", "--checkpoint", str(sft), "def f(x): return x"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--init-from", "no/such/folder"], "no such folder"),
    (["pretrain", "--n-layer", "3"], "--n-layer 3: the model's shape and options come from --init-from"),
    (["pretrain", "--preset", "small"], "--preset/--depth"),
    (["sft", "--checkpoint", "somewhere"], "--checkpoint and --init-from"),
])
def test_init_from_errors_are_one_line(gpt2_folder, args, message, capsys, tmp_path):
    if "no/such/folder" not in args:
        args = [*args, "--init-from", str(gpt2_folder), "--data", str(tmp_path / "x.txt")]
        (tmp_path / "x.txt").write_text(TEXT)
    assert main(args) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[-1], lines


def test_only_gpt2_folders_import(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert main(["pretrain", "--init-from", str(tmp_path)]) == 2
    assert "only GPT-2 models import" in capsys.readouterr().err
