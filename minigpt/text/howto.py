"""The `howto` chat family: "How do I read a file in Python?" answered with what to use ("Use `open(path)` in a
`with` block and call `f.read()` ...").

Until sr46 no record asked how to do something, so a how-to question got whatever its words recalled: sr44's
final model answered "How do I read a file in Python?" and "How do I sort a dictionary by value?" with "I don't
know that" and "what is a list comprehension" with its name. 135 common tasks (files and paths, strings, lists and
dictionaries, dates, JSON and CSV, regular expressions, the system, the web, hashing, concurrency) are answered
here, each by one or two sentences naming the standard-library function, built-in or statement to use.

Two writers (helper agents that opened no file of minigpt) wrote the data in howto_data.py from one list of task
descriptions: a ninth writer each task's answer, the `key` a right reply must contain (its own: no other task's
answer contains it) and ten questions (eight English, two Chinese); a tenth writer, shown only the descriptions,
three test questions per task (two English, one Chinese), all held out (`"blind": 4`). A twelfth writer
(howto_blind_2.py, since sr49) wrote ten more training questions a task around the ninth writer's. The training
writers' questions and each task asked in frames around its description (`ASKS`, `ASKS_ZH`) are split between SFT
and RL like the identity paraphrases, and dropped where `near` a test question.
The tasks are the same on both sides: the held-out figure is how often a task asked in words never trained on
gets its answer, not whether the model can find the function for a task it was never taught.
"""
from __future__ import annotations

import functools
from typing import Any

from .howto_blind_2 import HOWTO_TRAIN_2
from .howto_data import DESCRIPTIONS_ZH, HOWTO, HOWTO_TEST
from .identity import PARAPHRASE_RL_ONE_IN, assistant_turn, hash_byte, near, user_turn

TEST_WRITER = 4  # a held-out question's "blind": the tenth writer (the identity and out-of-world ones are 1-3)
# training questions beside the ninth writer's: the twelfth writer's (howto_blind_2.py), task -> questions
WRITTEN_FOR_TRAINING = (HOWTO_TRAIN_2,)
# Each task asked in these, {d} its description (`HOWTO`, `DESCRIPTIONS_ZH`), on the training side: with the ninth
# writer's ten questions a task alone, SFT from sr42's base answered 8% of the held-out questions right and 270 of
# the 404 with another task's answer (README "What changed since").
ASKS = ("How do I {d}?", "How can I {d} in Python?", "how to {d} in python", "python {d}",
        "What's the best way to {d}?", "Is there a function to {d}?", "I need to {d}. Which function should I use?",
        "In Python, how do you {d}?", "Which function lets me {d}?", "What should I use to {d}?",
        "Can you tell me how to {d}?", "What is the easiest way to {d} in Python?")
ASKS_ZH = ("怎么{d}？", "Python 里怎么{d}？", "我想{d}，该用哪个函数？", "如何用 Python {d}", "{d}用什么方法？")


def answer(task: str) -> str:
    return HOWTO[task][1]


def key(task: str) -> str:
    """What a right reply must contain: the function (or statement) that does the task."""
    return HOWTO[task][2]


def howto_records(fresh: bool = False) -> list[dict[str, Any]]:
    """SFT's how-to questions (its share of the ninth writer's, and every held-out test question), or with
    `fresh` RL's share; each {"family": "howto", "task", "key", "split", "messages"}."""
    return [{"family": "howto", "task": task, "key": key(task), **extra,
             "messages": [user_turn(q), assistant_turn(answer(task))]}
            for task, q, extra in _questions()["rl" if fresh else "sft"]]


@functools.lru_cache(maxsize=None)
def _questions() -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    """stage -> (task, question, record fields): the test writer's all held out (but those near an earlier test
    question); the training writer's and the generated ones (`ASKS`) split 1 in PARAPHRASE_RL_ONE_IN to RL by a
    hash, but those near a test question."""
    tests: list[str] = []
    out: dict[str, list] = {"sft": [], "rl": []}
    for task, questions in HOWTO_TEST.items():
        for q in questions:
            if not any(near(q, t) for t in tests):
                tests.append(q)
                out["sft"].append((task, q, {"split": "val", "blind": TEST_WRITER}))
    for task, (description, _, _, written) in HOWTO.items():
        written = [*written, *(q for writer in WRITTEN_FOR_TRAINING for q in writer.get(task, ()))]
        generated = [a.format(d=description) for a in ASKS] + [a.format(d=DESCRIPTIONS_ZH[task]) for a in ASKS_ZH]
        for q in dict.fromkeys([*written, *generated]):  # a generated question the writer wrote too: once
            if not any(near(q, t) for t in tests):
                stage = "rl" if hash_byte(f"howto:{q}", 4) % PARAPHRASE_RL_ONE_IN == 0 else "sft"
                out[stage].append((task, q, {"split": "train", "paraphrase": True}))
    return out
