"""The `unknown` chat family: questions outside the model's world (cooking, geography, sums, poems...), declined
politely ("I don't know that. I only know about Python's standard library.", in Chinese when asked in Chinese).

Two sources: 23 templates with fillings ("What is the capital of {place}?", "What is {a}+{b}?", "How do I {code} in
{language}?"), 1 question in 4 held out by a hash, RL asking other fillings; and the requests other writers wrote
blind, the seventh writer's (social_blind.py) and the thirteenth writer's Chinese ones (out_of_world_zh.py) to train
on (SFT's and RL's, split like the identity paraphrases) and the eighth writer's held out. Until sr43 there were
only twelve templates, and the held-out questions were their other fillings: the report card read 17 of 18 declined
while "What is 2+2?" got the greeting and "Can you write me a poem?" the model's size.
"""
from __future__ import annotations

import functools
import itertools
import re
from typing import Any

from .identity import (PARAPHRASE_RL_ONE_IN, assistant_turn, casual, hash_byte, is_chinese, near, phrasing_split,
                       user_turn)
from .out_of_world_zh import OUT_OF_WORLD_TRAIN_ZH
from .social_blind import OUT_OF_WORLD_TEST, OUT_OF_WORLD_TRAIN

# the requests other writers wrote to train on: the seventh writer's, the thirteenth writer's Chinese ones
WRITTEN_FOR_TRAINING = (OUT_OF_WORLD_TRAIN, OUT_OF_WORLD_TRAIN_ZH)

UNKNOWN_TEMPLATES = (
    "What is the capital of {place}?", "How do I cook {dish}?", "Who won the football World Cup in {year}?",
    "What is the weather like in {place} today?", "Can you recommend a good book about {topic}?",
    "How tall is the highest mountain in {place}?", "What is the best recipe for {dish}?",
    "Who was the first king of {place}?", "Tell me a fun fact about {topic}.", "How do I grow {plant} at home?",
    "What did people eat in {place} in {year}?", "Write a poem about {topic}.",
    # short ones, shaped like "Who are you?": sr43's model gave "What is 2+2?" its greeting
    "What is {a}+{b}?", "What is {a} plus {b}?", "Can you write me a {form}?", "Tell me a {form}.", "Who is {person}?",
    "What is {thing}?",
    # how-to questions about something else than Python, shaped like the how-to family's (text/howto.py): SFT on
    # that family alone answered "What's the best way to ...?" about anything with a Python function
    "How do I {chore}?", "What's the best way to {chore}?", "Can you tell me how to {chore}?",
    "How do I {code} in {language}?", "What should I use to {code} in {language}?",
)
UNKNOWN_FILL = {
    "place": ("France", "Peru", "Japan", "Kenya", "Norway", "Canada", "Egypt", "Chile", "India", "Spain"),
    "dish": ("pancakes", "risotto", "dumplings", "paella", "curry", "lasagne"),
    "year": ("1966", "1998", "2010", "1930", "2014"),
    "topic": ("whales", "the moon", "volcanoes", "ancient Rome", "jazz", "bees"),
    "plant": ("tomatoes", "basil", "orchids", "lemons"),
    "a": ("2", "3", "7", "12", "40", "99"), "b": ("2", "5", "8", "11", "30", "64"),
    "form": ("poem", "joke", "story", "song", "riddle", "haiku", "limerick"),
    "person": ("Taylor Swift", "Albert Einstein", "Napoleon", "Lionel Messi", "Shakespeare", "Cleopatra"),
    "thing": ("love", "gravity", "democracy", "inflation", "a black hole", "photosynthesis"),
    "chore": ("bake bread", "change a flat tyre", "learn to swim", "fix a leaking tap", "tie a tie",
              "train for a marathon", "save money for a holiday", "paint a room", "improve my handwriting",
              "fall asleep faster"),
    "code": ("read a file", "sort a list", "reverse a string", "parse JSON", "split a string", "make an HTTP request"),
    "language": ("JavaScript", "Java", "C", "Rust", "Go", "C#", "PHP", "Ruby"),
}
UNKNOWN_ANSWER = "I don't know that. I only know about Python's standard library."
UNKNOWN_ANSWER_ZH = "我不知道。我只了解 Python 标准库。"


def unknown_records(fresh: bool = False) -> list[dict[str, Any]]:
    """Out-of-world questions: 6 distinct fillings of each template, picked from all of its fillings by a hash
    (`fresh`: up to 6 others, all training ones: RL's; a template with few fillings has none left), then the
    blind-written ones (`_written_unknown`: SFT's or RL's share of the training writer's, or, for SFT, the
    held-out test writer's)."""
    out = []
    for template in UNKNOWN_TEMPLATES:
        for q in fillings(template)[6:12] if fresh else fillings(template)[:6]:
            out.append({"family": "unknown", "split": "train" if fresh else phrasing_split(q),
                        "messages": [user_turn(casual(q, q)), assistant_turn(UNKNOWN_ANSWER)]})
    return out + [{"family": "unknown", "messages": [user_turn(q), assistant_turn(decline(q))], **extra}
                  for q, extra in _written_unknown()["rl" if fresh else "sft"]]


@functools.lru_cache(maxsize=None)
def fillings(template: str) -> list[str]:
    """Every filling of a template, in an order picked by a hash."""
    keys = re.findall(r"{(\w+)}", template)
    return sorted((template.format(**dict(zip(keys, values)))
                   for values in itertools.product(*(UNKNOWN_FILL[k] for k in keys))), key=lambda q: hash_byte(q, 5))


def decline(question: str) -> str:
    return UNKNOWN_ANSWER_ZH if is_chinese(question) else UNKNOWN_ANSWER


@functools.lru_cache(maxsize=None)
def _written_unknown() -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """stage -> (question, record fields) of the blind-written out-of-world questions. The test writer's
    (`OUT_OF_WORLD_TEST`) are all held out (`"blind": 3`, SFT's call carries them), but those `near` any filling of
    a template or an earlier test one; the training writers' (`WRITTEN_FOR_TRAINING`) are split like the identity
    paraphrases (1 in PARAPHRASE_RL_ONE_IN RL's), but those near a template's filling (asked already) or a test
    question."""
    tests, filled = [], [q for t in UNKNOWN_TEMPLATES for q in fillings(t)]
    for q in OUT_OF_WORLD_TEST:
        if not any(near(q, t) for t in tests + filled):
            tests.append(q)
    out: dict[str, list] = {"sft": [(q, {"split": "val", "blind": 3, "phrasing": q}) for q in tests], "rl": []}
    for q in dict.fromkeys(q for writer in WRITTEN_FOR_TRAINING for q in writer):
        if not any(near(q, h) for h in tests + filled):
            stage = "rl" if hash_byte(q, 4) % PARAPHRASE_RL_ONE_IN == 0 else "sft"
            out[stage].append((q, {"split": "train", "paraphrase": True}))
    return out
