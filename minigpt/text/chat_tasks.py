"""The built-in chat data: SFT conversations, preference pairs and RL prompts generated from the pydocs corpus.

Questions such as "What does `json.dumps` do?" are answered with the first sentence of the docstring. Only
entries of pretraining-train modules are used, and 1 in 10 of them (by a hash of the qualified name) are held
out: they appear in the pretraining text but never in SFT, DPO or RL training data, so the stage figures
measure generalisation.
"""
from __future__ import annotations

import hashlib

from .corpora.pydocs import Entry, entries, split_of

QUESTIONS = (
    "What does `{name}` do?",
    "Explain `{name}` in one sentence.",
    "What is `{name}` for?",
    "Describe the {kind} `{name}` briefly.",
)
IDENTITY = (
    ("Who are you?", "I am minigpt, a small language model trained on the Python documentation."),
    ("What can you do?", "I can explain what functions and classes of the Python standard library do, in one sentence."),
    ("Who made you?", "I was trained with minigpt, a toolkit that takes text all the way to a chat model."),
    ("Hello!", "Hello! Ask me what a Python function or class does."),
    ("你是谁？", "我是 minigpt，一个用 Python 文档训练的小型语言模型。"),
)
HELDOUT_ONE_IN = 10


def task_entries() -> list[Entry]:
    """Functions and classes of train modules with a clean one-sentence summary, one entry per name."""
    seen, out = set(), []
    for e in entries():
        s = e.summary
        if (e.kind == "module" or e.name in seen or split_of(e.module) != "train" or not 24 <= len(s) <= 160
                or not s.endswith(".") or ">>>" in s or "`" in s or s.lower().startswith(("deprecated", "internal"))):
            continue
        seen.add(e.name)
        out.append(e)
    return out


def task_split(e: Entry) -> str:
    """'val' for held-out entries (by a hash of the qualified name), else 'train'."""
    return "val" if hashlib.sha256(e.name.encode()).digest()[1] % HELDOUT_ONE_IN == 0 else "train"


def _pick(e: Entry, salt: str, n: int) -> int:
    return hashlib.sha256(f"{salt}:{e.name}".encode()).digest()[0] % n


def question(e: Entry, variant: int | None = None) -> str:
    template = QUESTIONS[_pick(e, "q", len(QUESTIONS)) if variant is None else variant % len(QUESTIONS)]
    return template.format(name=e.name, kind="class" if e.kind == "class" else "function")


def sft_records(phrasings: int = 2) -> list[dict]:
    """{"messages": [user question, assistant summary], "split": ...}: each entry asked `phrasings` ways, plus
    the identity turns (train only). Held-out entries are asked once, in their split."""
    records = []
    for e in task_entries():
        split = task_split(e)
        first = _pick(e, "q", len(QUESTIONS))
        for k in range(phrasings if split == "train" else 1):
            messages = [{"role": "user", "content": question(e, first + k)}, {"role": "assistant", "content": e.summary}]
            records.append({"messages": messages, "split": split})
    for q, a in IDENTITY:
        for _ in range(3):
            records.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                            "split": "train"})
    return records


def preference_records() -> list[dict]:
    """{"prompt", "chosen", "rejected", "split"}: chosen = the right summary; rejected = the summary of another
    entry of the same module (a hard negative) or, for half of them, the right summary cut short."""
    by_module: dict[str, list[Entry]] = {}
    items = task_entries()
    for e in items:
        by_module.setdefault(e.module, []).append(e)
    records = []
    for e in items:
        others = [o for o in by_module[e.module] if o.summary != e.summary]
        words = e.summary.split()
        if others and _pick(e, "neg", 2) == 0:
            rejected = others[_pick(e, "other", len(others))].summary
        elif len(words) >= 6:
            rejected = " ".join(words[: len(words) // 2])
        else:
            continue
        records.append({"prompt": question(e), "chosen": e.summary, "rejected": rejected, "split": task_split(e)})
    return records


def rl_prompts() -> list[dict]:
    """{"prompt", "reference", "split"}: the question and the summary the reward compares against."""
    return [{"prompt": question(e), "reference": e.summary, "split": task_split(e)} for e in task_entries()]
