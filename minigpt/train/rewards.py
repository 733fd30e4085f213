"""Reward functions for RL: a Python function or a trained reward model, behind one signature.

A reward function takes `(prompt, completion, record)` and returns a float: `prompt` is the list of messages,
`completion` the generated reply text, `record` the whole prompt record (e.g. its `reference`). `--reward`
accepts `python:module:function` (any importable function of that signature, such as this module's
`task_reward`, the default, or `token_f1`) or `rm:RUN` (a reward model checkpoint trained by `minigpt reward`).

`python:` is code execution: importing the module runs it, with your rights (and under `python -m minigpt` the
current folder is first on the import path, so a `mod.py` there is what `python:mod:f` imports). So a spec is
only ever taken from you: `--resume` of a run whose run.json names a reward other than the built-in one asks
for `--reward` again (`reward_spec`) rather than import what a shared run folder says.
"""
from __future__ import annotations

import importlib
import math
import re
from collections import Counter
from typing import Callable

import torch

from ..common import MinigptError, print0

RewardFn = Callable[[list, str, dict], float]
DEFAULT_REWARD = "python:minigpt.train.rewards:task_reward"
BUILT_IN_REWARDS = (DEFAULT_REWARD, "python:minigpt.train.rewards:token_f1")
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def f1(prediction: str, reference: str) -> float:
    """Token-level F1 between two texts: the harmonic mean of word precision and recall, SQuAD's formula over
    other words: a word is a run of letters, digits or underscores (`\\w+`), lower-cased, so "os.path.join" is
    three words and "3.14" two, articles count (SQuAD drops them and deletes punctuation), two empty texts score 0,
    and a run of Chinese characters is one word (a Chinese reply scores near exact match, clause by clause)."""
    pred, ref = words(prediction), words(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prompt: list, completion: str, record: dict) -> float:
    """The built-in reward: F1 of the reply against the record's `reference` answer."""
    if "reference" not in record:
        raise MinigptError("the token_f1 reward needs a 'reference' field in each prompt record")
    return f1(completion, record["reference"])


def task_reward(prompt: list, completion: str, record: dict) -> float:
    """The default reward: token F1 against the `reference`. For the built-in identity, out-of-world and how-to
    questions a reply scores only if it says what it must (`chat_tasks.correct`: the fact asked for, "I don't
    know", or the function to use), then half for that and half its F1; a wrong one scores 0: another intent's
    answer shares many words with the right one ("a small ... model", "Python's standard library"), and F1 would
    pay it for them (F1 alone was gamed outright: RL answered "Who are you?" with what it was trained on). Each
    intent's key is its own (`chat_tasks.IDENTITY`), as each how-to task's is, so one stock reply cannot pass them
    all. The reward alone does not keep RL from moving the identity answers; the anchor term does (rl.py; README
    "What RL needed")."""
    from ..text import chat_tasks

    score = token_f1(prompt, completion, record)
    if record.get("family") in chat_tasks.KEYED_FAMILIES:
        return 0.5 + 0.5 * score if chat_tasks.correct(record, completion) else 0.0
    return score


def reward_spec(flag: str | None, stored: str | None, run_dir=None) -> str:
    """The reward to use: the flag when given (it wins over run.json); else the run's own when it is the
    built-in one; else refused, asking for the flag, since a run folder alone must never pick code to run."""
    if flag is not None:
        if stored is not None and flag != stored:
            print0(f"note: --reward {flag} replaces this run's {stored}", markup=False)
        return flag
    if stored is None or stored in BUILT_IN_REWARDS:
        return stored or DEFAULT_REWARD
    raise MinigptError(f"--resume: {run_dir} was trained with --reward {stored}; give --reward {stored} to resume "
                       "with it (minigpt never imports a module because run.json names it)")


def load_reward(spec: str, device: str | torch.device = "cpu") -> RewardFn:
    """`python:module:function` or `rm:RUN_DIR` -> a reward function."""
    kind, _, rest = spec.partition(":")
    if kind == "python":
        module, _, name = rest.rpartition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as e:
            raise MinigptError(f"--reward {spec}: cannot import ({e}); give python:package.module:function") from None
        return _checked(fn, spec)
    if kind == "rm":
        try:
            return reward_model_fn(rest, device)
        except MinigptError as e:  # the checkpoint's own message, said about the flag that named it
            raise MinigptError(f"--reward {spec}: {str(e).removeprefix(f'--checkpoint {rest}: ')}") from None
    raise MinigptError(f"--reward {spec}: unknown; use python:module:function or rm:RUN_DIR")


def _checked(fn: Callable, spec: str) -> RewardFn:
    """A user's reward function, whose failures (a wrong signature, a non-number) name the flag and the contract
    rather than ending RL with a traceback from inside the rollout."""
    def reward(prompt: list, completion: str, record: dict) -> float:
        try:
            value = float(fn(prompt, completion, record))
        except Exception as e:  # noqa: BLE001 - the user's code: say what was expected of it
            raise MinigptError(f"--reward {spec} failed ({type(e).__name__}: {e}); it must be "
                               "f(prompt_messages, completion, record) -> a number") from None
        if not math.isfinite(value):
            raise MinigptError(f"--reward {spec} returned {value}; a reward must be a finite number")
        return value
    return reward


def reward_model_fn(run: str, device: str | torch.device = "cpu") -> RewardFn:
    """Score (prompt, completion) with a reward model checkpoint (same chat template as its training)."""
    from ..text.chat_data import lm_collate
    from ..text.chat_format import render_completion
    from ..checkpoint import load_checkpoint

    ckpt = load_checkpoint(run, device=device)
    if ckpt.config.get("model", {}).get("kind") != "reward":
        raise MinigptError(f"--reward rm:{run}: not a reward model checkpoint; train one with `minigpt reward`")
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    collate = lm_collate(model.config.block_size, tok.special_id("<|end|>"))

    @torch.no_grad()
    def score(prompt: list, completion: str, record: dict) -> float:
        x, y = collate([render_completion(tok, prompt, completion)])
        return float(model(x.to(device), y.to(device))[0])

    return score
