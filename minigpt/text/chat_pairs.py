"""The built-in preference pairs (reward model, DPO): each prompt of the built-in chat data (`chat_tasks.prompts`)
with its reference reply as the chosen one and, as the rejected one, the mistake a small model actually makes: the
right kind of answer about the wrong thing."""
from __future__ import annotations

import functools
from typing import Any

from .chat_tasks import answer_to, prompts, task_entries
from .corpora.pydocs import Entry
from . import howto
from .identity import Facts, hash_byte, is_chinese


def preference_records(facts: Facts | None = None) -> list[dict[str, Any]]:
    """{"prompt", "chosen", "rejected", "split"}: chosen = the reference reply; rejected = the mistake a small
    model actually makes, the right kind of answer about the wrong thing: for a function, the same answer for
    another function of its module (its summary, its arguments, its module) or, for half of the summaries, the
    right one cut short; for an identity question, another intent's answer (asked its name, it states its
    training data); an out-of-world question is paired with a confident docstring, an identity answer or a how-to
    answer; a how-to question with a neighbouring task's answer (asked to read a file line by line, it reads the
    whole file)."""
    facts = facts or Facts()
    by_module: dict[str, list[Entry]] = {}
    for e in task_entries():
        by_module.setdefault(e.module, []).append(e)
    modules = sorted(by_module)

    @functools.cache
    def siblings(module: str, ask: str) -> list[tuple[str, str]]:
        """(name, answer) of every function of the module for that kind of question."""
        return [(o.name, answer_to(o, ask) or o.summary) for o in by_module[module]]

    asked = prompts(facts)
    identity: dict[str, set[str]] = {}
    for p in asked:
        if p["family"] == "identity":
            identity.setdefault(p["intent"], set()).add(p["reference"])
    # every identity answer in each language: an out-of-world request's stand-in self-description
    stock = {zh: sorted(a for said in identity.values() for a in said if is_chinese(a) == zh) for zh in (False, True)}
    tasks = list(howto.HOWTO)  # in the writers' order: neighbours are tasks of one kind (files, strings, lists, ...)
    out = []
    for p in asked:
        chosen, rejected, family = p["reference"], None, p["family"]
        if family == "identity":
            others = sorted(a for intent, said in identity.items() if intent != p["intent"] for a in said
                            if is_chinese(a) == is_chinese(chosen))
            rejected = others[hash_byte(f"id:{p['prompt'][-1]['content']}") % len(others)]
        elif family == "unknown":  # a confident docstring, what it says about itself (until sr43 "What is 2+2?"
            # got its greeting and "Can you write me a poem?" its size) or a how-to answer (SFT with the how-to
            # family answered "How do I tie a tie?" with `timeit`), a third each
            said, key = stock[is_chinese(chosen)], f"oow:{p['prompt'][-1]['content']}"
            rejected = (said[hash_byte(key, 1) % len(said)], howto.answer(tasks[hash_byte(key, 1) % len(tasks)]),
                        "Return a list of the lines in the string, breaking at line boundaries.")[hash_byte(key) % 3]
        elif family == "howto":
            i, step = tasks.index(p["task"]), hash_byte(f"howto:{p['prompt'][-1]['content']}") % 4 - 2
            rejected = howto.answer(tasks[(i + step + (step >= 0)) % len(tasks)])  # 2 back .. 2 on, not itself
        else:
            name, ask = p["entry"], p.get("ask", "does")
            if family == "followup" and ask == "module":
                other = modules[hash_byte(f"mod:{name}") % len(modules)]
                rejected = f"It is in the `{other}` module." if other != p["module"] else None
            else:
                others = [a for o, a in siblings(p["module"], ask) if o != name and a != chosen]
                words = chosen.split()
                if others and (ask != "does" or hash_byte(f"neg:{name}:{family}") % 2 == 0):
                    rejected = others[hash_byte(f"other:{name}:{family}") % len(others)]
                elif len(words) >= 6:
                    rejected = " ".join(words[: len(words) // 2])
        if rejected and rejected != chosen:
            out.append({"prompt": p["prompt"], "chosen": chosen, "rejected": rejected, "split": p["split"],
                        "family": family})
    return out
