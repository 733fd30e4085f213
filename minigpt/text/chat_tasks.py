"""The built-in chat data: SFT conversations, preference pairs and RL prompts about Python's standard library.

Five families, each a record with a `family` and a `split`:

- `recall`: "What does `json.dumps` do?" answered with the first sentence of its docstring. The model has read
  the docstring during pretraining (stdlib source and pydocs); SFT teaches it to answer from memory.
- `context`: the user pastes a function (its `def` line and docstring) and asks what it does, what its
  arguments are or what it returns; the answer is in the prompt.
- `followup`: two turns: what a function does, then its arguments or its module ("What are its arguments?"),
  which needs the earlier turn.
- `identity`: who the model is, what it was trained on, how big it is, what it knows; each intent asked in many
  phrasings, some held out, answered with fixed facts (`Facts`, filled in from the model being fine-tuned).
- `unknown`: questions outside its world (cooking, geography, sport...) answered with a polite "I don't know".

Held out: 1 function in 10 (by a hash of its qualified name) never appears in any SFT, DPO or RL training
record, in any family; 1 phrasing in 4 of the identity and unknown questions is held out the same way. Only
functions of pretraining-train modules are used, so the held-out figures measure what the model recalls and
generalises, not what it was shown. `correct(record, reply)` is the per-family pass/fail rule the report card
uses beside token F1.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .corpora.pydocs import Entry, entries, split_of

QUESTIONS = (
    "What does `{name}` do?",
    "Explain `{name}` in one sentence.",
    "What is `{name}` for?",
    "Describe the {kind} `{name}` briefly.",
)
CONTEXT_ASKS = {
    "does": ("What does this {kind} do?", "In one sentence, what does it do?", "Summarise what this does."),
    "args": ("What arguments does it take?", "Which parameters does this {kind} have?"),
    "returns": ("What does it return?", "What is the return value?"),
}
FOLLOWUPS = {
    "args": ("What are its arguments?", "Which parameters does it take?"),
    "module": ("Which module is it in?", "Where is it defined?"),
}
HELDOUT_ONE_IN = 10
PHRASING_HELDOUT_ONE_IN = 4


@dataclass(frozen=True)
class Facts:
    """What the model says about itself."""

    name: str = "minigpt"
    params: int | None = None  # filled in from the model being fine-tuned
    trained_on: str = "the source code and documentation of the Python standard library"

    @property
    def size(self) -> str:
        if not self.params:
            return "a small model"
        if self.params < 1e5:
            return f"{self.params:,} parameters"
        return f"about {self.params / 1e6:.1f} million parameters"

    def fill(self, template: str) -> str:
        """An IDENTITY answer or key with these facts filled in."""
        return template.format(name=self.name, trained_on=self.trained_on, size=self.size)


# intent -> (phrasings, answer template, what a correct reply must contain). Each key belongs to its intent
# alone (no other intent's answer contains it), so a reply that recites one stock self-description cannot pass
# every intent at once.
IDENTITY: dict[str, tuple[tuple[str, ...], str, str]] = {
    "name": (("Who are you?", "What is your name?", "What are you called?", "Tell me your name.",
              "What should I call you?", "Introduce yourself.", "Who am I talking to?", "Are you a person?",
              "What are you?", "Do you have a name?", "What's your name?", "May I know your name?", "Who is this?",
              "What do people call you?", "Can you tell me who you are?", "Please introduce yourself.",
              "Are you a chatbot?", "Are you human?", "Tell me about yourself.", "What is your name, please?",
              "How should I address you?", "Which model are you?", "Say your name.", "Who are you, exactly?",
              "What are you called, then?", "Who am I chatting with?", "Identify yourself.",
              "What name do you go by?", "Are you an AI?", "Give me your name.", "Who or what are you?",
              "Describe yourself.", "你是谁？", "你叫什么名字？",
              "你是什么？", "请介绍一下你自己。", "我该怎么称呼你？"),
             "I am {name}, a small language model that answers questions about Python's standard library.",
             "I am {name}"),
    "training": (("What were you trained on?", "What data did you learn from?",
                  "Where does your knowledge come from?", "How were you trained?",
                  "What did you read during training?", "What is your training data?",
                  "Which texts were you trained with?", "What did you learn from?", "What was your training data?",
                  "What corpus were you trained on?", "What have you read?", "What text did you learn from?",
                  "Where did you learn what you know?", "What did your training data contain?",
                  "What kind of data trained you?", "What were you trained with?", "What data were you trained on?",
                  "Which data did you see in training?", "What did you study?", "What is your knowledge based on?",
                  "What sources did you learn from?", "Tell me about your training data.",
                  "What was in your training set?", "Which corpus did you learn from?", "How did you learn?"),
                 "I was trained on {trained_on}.",
                 "{trained_on}"),
    "size": (("How big are you?", "How many parameters do you have?", "What is your size?",
              "How large is your model?", "Are you a big model?", "What is your parameter count?",
              "How many weights do you have?", "How small are you?", "How many parameters are in you?",
              "What size are you?", "How big is your network?", "How many parameters does your model have?",
              "Is your model large?", "What is your model size?", "Tell me your size.", "How many parameters?",
              "What is your number of parameters?", "How big is your model?", "Are you large or small?",
              "How much do you weigh in parameters?", "How large are you?", "Tell me how big you are.",
              "How many weights are in your network?", "What size is your network?"),
             "I have {size}: a small model that runs on a laptop.",
             "{size}"),
    "scope": (("What can you do?", "What do you know about?", "What topics can you help with?",
               "What are you good at?", "What questions can I ask you?", "What do you know?",
               "How can you help me?", "What is your speciality?", "What can I ask you about?",
               "What do you help with?", "What are your skills?", "What subjects do you know?",
               "What kind of questions do you answer?", "What are you for?", "What can you help me with?",
               "What do you do?", "What should I ask you?", "What are you able to do?", "Which topics do you cover?",
               "What is your area of knowledge?", "What can you answer?", "What do you specialise in?",
               "Can you help me with Python?", "What are you useful for?", "What kind of help do you offer?"),
              ("I know Python's standard library: ask me what a function or class does, or paste one and ask "
               "about it. I do not know much else."),
              "I know Python's standard library"),
    "maker": (("Who made you?", "Who trained you?", "Who built you?", "Who created you?", "Where do you come from?",
               "Which tool trained you?", "Who developed you?", "Who is your creator?", "Who wrote you?",
               "What made you?", "Which software built you?", "Who is behind you?", "Which toolkit made you?",
               "Who is your maker?", "How were you made?", "What tool were you made with?", "Who programmed you?",
               "Who designed you?", "What trained you?", "Who is responsible for you?", "Which program trained you?",
               "Who put you together?"),
              "I was trained with minigpt, a toolkit that takes text all the way to a chat model on a laptop.",
              "trained with {name}"),
    "greeting": (("Hello!", "Hi there.", "Hey, how are you?", "Good morning!", "Hello, can you help me?", "Hi!",
                  "Hey!", "Good evening.", "Greetings!", "Hello there!", "Good afternoon!", "Howdy!",
                  "Hi, can you help?", "Hello, anyone there?", "Hi, how are you?", "Hey there!", "Good day!",
                  "Hello, nice to meet you.", "Hi, I have a question.", "Hello again!", "Yo!", "Morning!", "你好！",
                  "您好！", "嗨！", "早上好！"),
                 "Hello! I am {name}. Ask me what a Python function or class does.",
                 "Hello"),
}
UNKNOWN_TEMPLATES = (
    "What is the capital of {place}?", "How do I cook {dish}?", "Who won the football World Cup in {year}?",
    "What is the weather like in {place} today?", "Can you recommend a good book about {topic}?",
    "How tall is the highest mountain in {place}?", "What is the best recipe for {dish}?",
    "Who was the first king of {place}?", "Tell me a fun fact about {topic}.", "How do I grow {plant} at home?",
    "What did people eat in {place} in {year}?", "Write a poem about {topic}.",
)
UNKNOWN_FILL = {
    "place": ("France", "Peru", "Japan", "Kenya", "Norway", "Canada", "Egypt", "Chile", "India", "Spain"),
    "dish": ("pancakes", "risotto", "dumplings", "paella", "curry", "lasagne"),
    "year": ("1966", "1998", "2010", "1930", "2014"),
    "topic": ("whales", "the moon", "volcanoes", "ancient Rome", "jazz", "bees"),
    "plant": ("tomatoes", "basil", "orchids", "lemons"),
}
UNKNOWN_ANSWER = "I don't know that. I only know about Python's standard library."


def _hash(text: str, byte: int = 0) -> int:
    return hashlib.sha256(text.encode()).digest()[byte]


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
    return "val" if _hash(e.name, 1) % HELDOUT_ONE_IN == 0 else "train"


def phrasing_split(text: str) -> str:
    return "val" if _hash(text, 2) % PHRASING_HELDOUT_ONE_IN == 0 else "train"


def _pick(e: Entry, salt: str, n: int) -> int:
    return _hash(f"{salt}:{e.name}") % n


def _kind(e: Entry) -> str:
    return "class" if e.kind == "class" else "function"


def question(e: Entry, variant: int | None = None) -> str:
    template = QUESTIONS[_pick(e, "q", len(QUESTIONS)) if variant is None else variant % len(QUESTIONS)]
    return template.format(name=e.name, kind=_kind(e))


# ---------------------------------------------------------------------------------------------- answers


def arguments(e: Entry) -> list[str]:
    """Parameter names from the entry's signature ('(obj, *, skipkeys=False)' -> ['obj', 'skipkeys'])."""
    if not e.signature:
        return []
    try:
        node = ast.parse(f"def f{e.signature}: pass").body[0]
    except SyntaxError:
        return []
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return names


def arguments_answer(e: Entry) -> str:
    names = [f"`{n}`" for n in arguments(e)]
    if not names:
        return "It takes no arguments."
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"It takes {listed}."


def returns_answer(e: Entry) -> str | None:
    """The docstring's first sentence that says what comes back ('Return ...'), or None."""
    para = " ".join(e.doc.strip().split("\n\n")[0].split())
    for sentence in re.split(r"(?<=[.!?])\s+", para):
        if re.match(r"Returns?\b", sentence) and 12 <= len(sentence) <= 200:
            return sentence if sentence.endswith(".") else sentence + "."
    return None


def pasted(e: Entry, limit: int = 320) -> str:
    """The function as a user would paste it: its def (or class) line and the docstring's first paragraph."""
    short = e.name.rsplit(".", 1)[-1]
    head = f"class {short}{e.signature}:" if e.kind == "class" else f"def {short}{e.signature}:"
    para = e.doc.strip().split("\n\n")[0].strip()
    if len(para) > limit:
        para = para[:limit].rsplit(" ", 1)[0] + " ..."
    body = "\n".join("    " + ln for ln in para.splitlines())
    return f"```\n{head}\n    \"\"\"{body.strip()}\n    \"\"\"\n```"


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# ---------------------------------------------------------------------------------------------- families


def recall_records(e: Entry, phrasings: int) -> list[dict[str, Any]]:
    first = _pick(e, "q", len(QUESTIONS))
    return [{"family": "recall", "messages": [_user(question(e, first + k)), _assistant(e.summary)]}
            for k in range(phrasings)]


def context_records(e: Entry) -> list[dict[str, Any]]:
    """One pasted-function question per entry, asking what it does, its arguments or what it returns."""
    asks = ["does", "args"] + (["returns"] if returns_answer(e) else [])
    ask = asks[_pick(e, "ctx", len(asks))]
    phrasings = CONTEXT_ASKS[ask]
    q = phrasings[_pick(e, "ctxq", len(phrasings))].format(kind=_kind(e))
    answer = {"does": e.summary, "args": arguments_answer(e), "returns": returns_answer(e)}[ask]
    return [{"family": "context", "ask": ask, "messages": [_user(f"{pasted(e)}\n{q}"), _assistant(answer)]}]


def followup_records(e: Entry) -> list[dict[str, Any]]:
    ask = ("args", "module")[_pick(e, "fu", 2)]
    q = FOLLOWUPS[ask][_pick(e, "fuq", len(FOLLOWUPS[ask]))]
    answer = arguments_answer(e) if ask == "args" else f"It is in the `{e.module}` module."
    messages = [_user(question(e)), _assistant(e.summary), _user(q), _assistant(answer)]
    return [{"family": "followup", "ask": ask, "messages": messages}]


# Ways to ask the same identity question; a held-out phrasing is held out with all its variants.
VARIANTS = ("{q}", "Hey, {lower}", "Quick question: {q}", "{q} Answer briefly, please.")


def _is_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def identity_records(facts: Facts) -> list[dict[str, Any]]:
    """Every intent's phrasings, each in its variants; Chinese questions are answered in Chinese."""
    chinese = {"name": (f"我是 {facts.name}，一个回答 Python 标准库问题的小型语言模型。", f"我是 {facts.name}"),
               "greeting": (f"你好！我是 {facts.name}。可以问我 Python 的函数或类是做什么的。", "你好")}
    out = []
    for intent, (phrasings, template, must_say) in IDENTITY.items():
        answer, key = facts.fill(template), facts.fill(must_say)
        held = set(sorted(phrasings, key=lambda q: _hash(q, 2))[:max(1, len(phrasings) // PHRASING_HELDOUT_ONE_IN)])
        for q in phrasings:
            is_zh = _is_chinese(q)
            asked = [q] if is_zh else [v.format(q=q, lower=q[0].lower() + q[1:]) for v in VARIANTS]
            for text in asked:
                said, must = chinese[intent] if is_zh else (answer, key)
                out.append({"family": "identity", "intent": intent, "key": must, "split": "val" if q in held else
                            "train", "messages": [_user(text), _assistant(said)]})
    return out


def unknown_records() -> list[dict[str, Any]]:
    out = []
    for i, template in enumerate(UNKNOWN_TEMPLATES):
        keys = re.findall(r"{(\w+)}", template)
        for j in range(6):
            values = {k: UNKNOWN_FILL[k][(i * 7 + j * 3 + n) % len(UNKNOWN_FILL[k])] for n, k in enumerate(keys)}
            q = template.format(**values)
            out.append({"family": "unknown", "split": phrasing_split(q),
                        "messages": [_user(q), _assistant(UNKNOWN_ANSWER)]})
    return out


def correct(record: dict[str, Any], reply: str, facts: Facts | None = None) -> bool:
    """The report card's pass/fail rule: identity replies must state the fact asked for, unknown questions
    must be declined, and every other family must match the reference exactly (case and spacing aside)."""
    family = record.get("family")
    if family == "identity":
        facts = facts or Facts()
        key = record.get("key") or facts.fill(IDENTITY[record["intent"]][2])
        return key.lower() in reply.lower()
    if family == "unknown":
        return "don't know" in reply.lower() or "do not know" in reply.lower()
    return exact_match(reply, record["reference"])


def exact_match(reply: str, reference: str) -> bool:
    """The same text, case and spacing aside."""
    return " ".join(reply.lower().split()) == " ".join(reference.lower().split())


# ---------------------------------------------------------------------------------------------- datasets


def conversations(facts: Facts | None = None, phrasings: int = 2) -> list[dict[str, Any]]:
    """Every family's records, each {"family", "split", "messages", ...}; held-out functions are in 'val'
    (asked once per family) and take part in no training record."""
    facts = facts or Facts()
    records = []
    for e in task_entries():
        split = task_split(e)
        for r in (recall_records(e, phrasings if split == "train" else 1) + context_records(e)
                  + followup_records(e)):
            records.append({**r, "split": split, "entry": e.name, "module": e.module})
    return records + identity_records(facts) + unknown_records()


SMALL_FAMILY_REPEATS = 3  # identity and unknown training turns are few and their answers must be exact


def _times(r: dict[str, Any]) -> int:
    """How often a record is trained on: identity and unknown training turns SMALL_FAMILY_REPEATS times."""
    return SMALL_FAMILY_REPEATS if r["family"] in ("identity", "unknown") and r["split"] == "train" else 1


def sft_records(facts: Facts | None = None, phrasings: int = 2) -> list[dict[str, Any]]:
    """{"messages", "split", "family"}: training conversations (identity and unknown ones repeated, `_times`)
    and the held-out ones (the SFT val loss)."""
    return [{"messages": r["messages"], "split": r["split"], "family": r["family"]}
            for r in conversations(facts, phrasings) for _ in range(_times(r))]


def prompts(facts: Facts | None = None) -> list[dict[str, Any]]:
    """Every conversation as a prompt (all but its last reply) with that reply as the `reference`."""
    return [{"prompt": r["messages"][:-1], "reference": r["messages"][-1]["content"], "split": r["split"],
             **{k: v for k, v in r.items() if k not in ("messages", "split")}} for r in conversations(facts, 1)]


def rl_prompts(facts: Facts | None = None) -> list[dict[str, Any]]:
    """{"prompt", "reference", "split", "family", ...}: the prompts RL trains on and is evaluated on, every
    family (out-of-world questions included: without them RL forgets how to decline), identity and unknown ones
    repeated as in SFT: at their natural 5% of the batches RL drifted the held-out identity answers unchecked."""
    return [p for p in prompts(facts) for _ in range(_times(p))]


def preference_records(facts: Facts | None = None) -> list[dict[str, Any]]:
    """{"prompt", "chosen", "rejected", "split"}: chosen = the reference reply; rejected = the mistake a small
    model actually makes, the right kind of answer about the wrong thing: for a function, the same answer for
    another function of its module (its summary, its arguments, its module) or, for half of the summaries, the
    right one cut short; for an identity question, another intent's answer (asked its name, it states its
    training data); an out-of-world question is paired with a confident docstring."""
    facts = facts or Facts()
    by_module: dict[str, list[Entry]] = {}
    for e in task_entries():
        by_module.setdefault(e.module, []).append(e)
    modules = sorted(by_module)
    answer_of = {"args": arguments_answer, "returns": returns_answer}

    @functools.cache
    def siblings(module: str, ask: str) -> list[tuple[str, str]]:
        """(name, answer) of every function of the module for that kind of question."""
        return [(o.name, (answer_of[ask](o) if ask in answer_of else None) or o.summary) for o in by_module[module]]

    asked = prompts(facts)
    identity: dict[str, set[str]] = {}
    for p in asked:
        if p["family"] == "identity":
            identity.setdefault(p["intent"], set()).add(p["reference"])
    out = []
    for p in asked:
        chosen, rejected, family = p["reference"], None, p["family"]
        if family == "identity":
            others = sorted(a for intent, said in identity.items() if intent != p["intent"] for a in said
                            if _is_chinese(a) == _is_chinese(chosen))
            rejected = others[_hash(f"id:{p['prompt'][-1]['content']}") % len(others)]
        elif family == "unknown":
            rejected = "Return a list of the lines in the string, breaking at line boundaries."
        else:
            name, ask = p["entry"], p.get("ask", "does")
            if family == "followup" and ask == "module":
                other = modules[_hash(f"mod:{name}") % len(modules)]
                rejected = f"It is in the `{other}` module." if other != p["module"] else None
            else:
                others = [a for o, a in siblings(p["module"], ask) if o != name and a != chosen]
                words = chosen.split()
                if others and (ask != "does" or _hash(f"neg:{name}:{family}") % 2 == 0):
                    rejected = others[_hash(f"other:{name}:{family}") % len(others)]
                elif len(words) >= 6:
                    rejected = " ".join(words[: len(words) // 2])
        if rejected and rejected != chosen:
            out.append({"prompt": p["prompt"], "chosen": chosen, "rejected": rejected, "split": p["split"],
                        "family": family})
    return out
