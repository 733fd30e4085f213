"""Post-training data in every form `pretrain --data` takes (.jsonl line by line, .json/.parquet/.csv through
`datasets`) and in TRL's conversational preference forms: the real preference files converted to each form load
to identical pairs (ids, masks and train/val split)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from minigpt.common import MinigptError
from minigpt.text.chat_data import load_conversations, load_preferences, load_prompts
from minigpt.text.tokenizer import train_bpe

from conftest import shared_file

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def tok():
    text = shared_file("preference/pref_hh_rlhf_harmless_base_test.jsonl").read_text(encoding="utf-8")[:300_000]
    return train_bpe([text, shared_file("preference/pref_oasst1_zh.jsonl").read_text(encoding="utf-8")[:200_000]],
                     1024, progress=False)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def implicit(r: dict) -> dict:
    """TRL's conversational preference with an implicit prompt: two whole conversations sharing their start."""
    return {"chosen": r["prompt"] + [{"role": "assistant", "content": r["chosen"]}],
            "rejected": r["prompt"] + [{"role": "assistant", "content": r["rejected"]}]}


def explicit(r: dict) -> dict:
    return {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}]}


@pytest.mark.parametrize("name", ["pref_hh_rlhf_harmless_base_test.jsonl", "pref_oasst1_zh.jsonl"])
def test_preference_files_in_every_form_load_identical_pairs(tmp_path, tok, name):
    source = shared_file(f"preference/{name}")
    records = read(source)
    reference = load_preferences(str(source), tok)
    assert len(reference.train) + len(reference.val) == len(records) and reference.val
    forms = {
        "parquet": datasets.Dataset.from_list(records),
        "implicit.jsonl": [implicit(r) for r in records],
        "explicit.jsonl": [explicit(r) for r in records],
        "implicit.parquet": datasets.Dataset.from_list([implicit(r) for r in records]),
        "explicit.json": json.dumps([explicit(r) for r in records], ensure_ascii=False),  # one JSON array
    }
    for form, data in forms.items():
        path = tmp_path / f"data.{form}"
        if isinstance(data, list):
            write_jsonl(path, data)
        elif isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            data.to_parquet(str(path))
        loaded = load_preferences(str(path), tok)
        assert (loaded.train, loaded.val) == (reference.train, reference.val), form


def test_sft_and_rl_prompts_from_parquet_and_csv_equal_jsonl(tmp_path, tok):
    conversations = read(shared_file("sft/sft_identity.jsonl"))
    jsonl = write_jsonl(tmp_path / "sft.jsonl", conversations)
    datasets.Dataset.from_list(conversations).to_parquet(str(tmp_path / "sft.parquet"))
    a, b = load_conversations(str(jsonl), tok), load_conversations(str(tmp_path / "sft.parquet"), tok)
    assert (a.train, a.val) == (b.train, b.val) and a.train
    prompts = [{"prompt": c["messages"][0]["content"], "reference": c["messages"][1]["content"]} for c in conversations]
    write_jsonl(tmp_path / "rl.jsonl", prompts)
    datasets.Dataset.from_list(prompts).to_csv(str(tmp_path / "rl.csv"), index=False)
    a, b = load_prompts(str(tmp_path / "rl.jsonl"), tok), load_prompts(str(tmp_path / "rl.csv"), tok)
    assert (a.train, a.val) == (b.train, b.val)


def test_errors_keep_file_and_line_for_jsonl_and_name_the_problem(tmp_path, tok):
    good = {"prompt": "hi", "chosen": "hello", "rejected": "go away"}
    path = write_jsonl(tmp_path / "p.jsonl", [good, good])
    with path.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(MinigptError, match=r"p\.jsonl:3: not valid JSON"):
        load_preferences(str(path), tok)
    two_replies = implicit({"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"})
    two_replies["chosen"].append({"role": "user", "content": "more"})
    write_jsonl(path, [good, two_replies])
    with pytest.raises(MinigptError, match=r"p\.jsonl:2: after the prompt, 'chosen' must be exactly one assistant"):
        load_preferences(str(path), tok)
    write_jsonl(path, [{"chosen": "a", "rejected": "b"}])
    with pytest.raises(MinigptError, match=r"p\.jsonl:1: missing 'prompt'"):
        load_preferences(str(path), tok)
    write_jsonl(path, [{"prompt": "p", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}])
    with pytest.raises(MinigptError, match="both be strings or both message lists"):
        load_preferences(str(path), tok)
    datasets.Dataset.from_list([{"prompt": "p", "chosen": "a"}]).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(MinigptError, match=r"bad\.parquet \(train row 1\): missing 'rejected'"):
        load_preferences(str(tmp_path / "bad.parquet"), tok)
    (tmp_path / "notes.txt").write_text("plain text")
    with pytest.raises(MinigptError, match="not plain text"):
        load_conversations(str(tmp_path / "notes.txt"), tok)
    with pytest.raises(MinigptError, match="no such file"):
        load_conversations(str(tmp_path / "missing.jsonl"), tok)
