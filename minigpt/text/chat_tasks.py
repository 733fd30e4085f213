"""The built-in chat data: SFT conversations and RL prompts about Python's standard library (the preference pairs
built from them are chat_pairs.py's).

Seven families, each a record with a `family` and a `split`:

- `recall`: "What does `json.dumps` do?" answered with the first sentence of its docstring (in seven phrasings,
  "Tell me about json.dumps.", the name also bare or called, "what does json.dumps() do": `question`). The model
  has read the docstring during pretraining (stdlib source and pydocs); SFT teaches it to answer from memory.
- `context`: the user pastes a function (its `def` line and docstring) and asks what it does, what its
  arguments are or what it returns; the answer is in the prompt. Reading questions (`reading_records`) paste a
  training function with its docstring from the second sentence on, so that the answer must be read, not
  recalled by the function's name.
- `details`: a function's arguments or what it returns, asked from memory in one question ("What arguments does
  `len` take?", "What does sorted return?").
- `followup`: two turns: what a function does, then its arguments or its module ("What are its arguments?"),
  which needs the earlier turn.
- `identity`: who the model is, what it was trained on, how big it is, what it knows, and a greeting, thanks or
  a goodbye answered in kind; each intent asked in many phrasings, some held out, answered with fixed facts
  (`Facts`, filled in from the model being fine-tuned); the intents, their phrasings and the generated
  paraphrases live in text/identity.py.
- `unknown`: questions outside its world (cooking, geography, sums, poems...) answered with a polite "I don't
  know": templates with fillings, and requests written blind by two other writers (text/social_blind.py).
- `howto`: "How do I read a file in Python?" answered with what to use, for 135 common tasks (text/howto.py).

Held out: 1 function in 10 (by a hash of its qualified name) never appears in any SFT, DPO or RL training
record, in any family; 1 phrasing in 4 of the identity and unknown questions is held out the same way, and
writers of their own wrote the held-out identity, out-of-world and how-to questions besides. RL trains on its own
questions (`rl_conversations`: the same training functions and intents asked in ways SFT never
saw). Only functions of pretraining-train modules are used, so the held-out figures measure what the model
recalls and generalises, not what it was shown. `correct(record, reply)` is the per-family pass/fail rule the
report card uses beside token F1.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import random
import re
from typing import Any, Callable

from .corpora.pydocs import Entry, all_entries, first_sentence, split_of
from .howto import howto_records
from .identity import (IDENTITY, Facts, assistant_turn, casual, hash_byte, identity_records, paraphrase_records,
                       user_turn)
from .out_of_world import unknown_records

QUESTIONS = (
    "What does {name} do?",
    "Explain {name} in one sentence.",
    "What is {name} for?",
    "Describe the {kind} {name} briefly.",
    "What is {name}?",  # the last three as people ask in a chat: with only the first four, sr37's final model
    "Tell me about {name}.",  # answered "Can you explain functools.partial?" with its greeting, 39% of the
    "Can you explain {name}?",  # functions it knew so (README "What changed since")
)
NAME_FORMS = ("`{}`", "{}", "{}()")  # how people write a name in a chat: as code, bare, or called
CONTEXT_ASKS = {
    "does": ("What does this {kind} do?", "In one sentence, what does it do?", "Summarise what this does."),
    "args": ("What arguments does it take?", "Which parameters does this {kind} have?"),
    "returns": ("What does it return?", "What is the return value?"),
}
DETAIL_ASKS = {  # a function's arguments or return value asked from memory, with no earlier turn (`detail_records`)
    "args": ("What arguments does {name} take?", "Which parameters does {name} have?",
             "What are the arguments of {name}?"),
    "returns": ("What does {name} return?", "What is the return value of {name}?"),
}
FOLLOWUPS = {
    "args": ("What are its arguments?", "Which parameters does it take?"),
    "module": ("Which module is it in?", "Where is it defined?"),
}
HELDOUT_ONE_IN = 10


def task_entries() -> list[Entry]:
    """Functions and classes of train modules with a clean one-sentence summary, one entry per name, each as it is
    asked about (`as_asked`): those of the source files, then those written in C (`len`, `str.split`)."""
    seen, out = set(), []
    for e in all_entries():
        if e.kind == "module" or split_of(e.module) != "train":
            continue
        e = as_asked(e)
        if e.name not in seen and clean_sentence(e.summary):
            seen.add(e.name)
            out.append(e)
    return out


MARKUP = re.compile(r"(?::[\w.:-]+:)?``?~?([^`'\n]+?)(?:``?|')")  # ``obj``, `text`, :func:`~json.dumps`, `name'


def as_asked(e: Entry) -> Entry:
    """The entry under the name people call it by (`Entry.alias`: os.path.join, not posixpath.join), its docstring
    without reST markup (``obj`` -> obj) and its first paragraph ended with a full stop where it is one sentence
    without one ("Class decorator that fills in missing ordering methods"). Without these the functions users ask
    about first (json.dumps, os.path.join, random.randint, functools.wraps) were in no chat record."""
    module, qualname = e.alias.rsplit(".", 1) if e.alias else (e.module, e.qualname)
    doc = MARKUP.sub(r"\1", e.doc).strip()
    first, sep, rest = doc.partition("\n\n")
    if (first[:1].isupper() and (first[-1].isalnum() or first[-1] in ")]'\"") and not re.search(r"[.!?]\s|->", first)
            and not re.match(r"[\w.]+\(", first)):  # not a signature line: "Popen(args, ...) -> Popen"
        doc = f"{first}.{sep}{rest}"
    return dataclasses.replace(e, module=module, qualname=qualname, doc=doc, alias="")


def clean_sentence(s: str) -> bool:
    """A docstring sentence fit to be an answer: 24-160 characters, ends with a full stop, no doctest or markup,
    not a deprecation notice."""
    return (24 <= len(s) <= 160 and s.endswith(".") and ">>>" not in s and "`" not in s
            and not s.lower().startswith(("deprecated", "internal")))


def task_split(e: Entry) -> str:
    """'val' for held-out entries (by a hash of the qualified name), else 'train'. The builtins (`len`, `sorted`,
    `str.split`) are never held out: they are what people ask first, and the hash would keep 20 of them from SFT."""
    return "val" if e.module != "builtins" and hash_byte(e.name, 1) % HELDOUT_ONE_IN == 0 else "train"


def _pick(e: Entry, salt: str, n: int) -> int:
    return hash_byte(f"{salt}:{e.name}") % n


def _kind(e: Entry) -> str:
    return "class" if e.kind == "class" else "function"


def question(e: Entry, variant: int | None = None) -> str:
    """The entry asked in one of the QUESTIONS (its own, picked by a hash, or `variant`), its name written in one
    of the NAME_FORMS and the question sometimes typed casually, each picked by a hash of the name and variant.
    With the name always in backticks, sr33's models answered "What does json.dumps do?" with their scope and
    "what does json.dumps do" with "I don't know" (README "What changed since")."""
    variant = _pick(e, "q", len(QUESTIONS)) if variant is None else variant
    forms = NAME_FORMS[:2] if e.kind == "class" else NAME_FORMS  # "the class calendar.TextCalendar()": no
    form = forms[hash_byte(f"form:{e.name}:{variant}") % len(forms)]
    text = QUESTIONS[variant % len(QUESTIONS)].format(name=form.format(e.name), kind=_kind(e))
    return casual(text, f"{e.name}:{variant}")


# ---------------------------------------------------------------------------------------------- answers


def arguments(e: Entry) -> list[str]:
    """Parameter names from the entry's signature ('(obj, *, skipkeys=False)' -> ['obj', 'skipkeys']), without
    the private ones a caller leaves to their default (`copy.deepcopy(x, memo=None, _nil=[])` takes x and memo)."""
    if not e.signature:
        return []
    try:
        node = ast.parse(f"def f{e.signature}: pass").body[0]
    except SyntaxError:
        return []
    a = node.args
    positional = a.posonlyargs + a.args
    defaulted = {x.arg for x in positional[len(positional) - len(a.defaults):]}
    defaulted |= {x.arg for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None}
    names = [x.arg for x in positional + a.kwonlyargs if not (x.arg.startswith("_") and x.arg in defaulted)]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return names


def knows_arguments(e: Entry) -> bool:
    """Whether the entry's arguments are known. A class with no signature of its own is never asked for them
    (`argparse.RawTextHelpFormatter` takes its base class's, a class written in C may take any): until sr41, SFT
    taught "It takes no arguments." for 286 such classes."""
    return e.kind != "class" or bool(e.signature)


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


def answer_to(e: Entry, ask: str) -> str | None:
    """The reference reply to a question about the entry: its arguments ("args"), what it returns ("returns": None
    where its docstring does not say) or else what it does (its summary)."""
    if ask == "args":
        return arguments_answer(e)
    return returns_answer(e) if ask == "returns" else e.summary


def _asks(e: Entry, salt: str, asks: list[str], fresh: bool) -> list[str]:
    """The ask picked for the entry by a hash of `salt` (SFT's), or with `fresh` every other one (RL's)."""
    picked = asks[_pick(e, salt, len(asks))] if asks else None
    return [a for a in asks if (a == picked) != fresh]


def pasted(e: Entry, limit: int = 320) -> str:
    """The function as a user would paste it: its def (or class) line and the docstring's first paragraph."""
    short = e.name.rsplit(".", 1)[-1]
    head = f"class {short}{e.signature}:" if e.kind == "class" else f"def {short}{e.signature}:"
    para = e.doc.strip().split("\n\n")[0].strip()
    if len(para) > limit:
        para = para[:limit].rsplit(" ", 1)[0] + " ..."
    body = "\n".join("    " + ln for ln in para.splitlines())
    return f"```\n{head}\n    \"\"\"{body.strip()}\n    \"\"\"\n```"


# ---------------------------------------------------------------------------------------------- families


def recall_records(e: Entry, phrasings: int, first: int = 0) -> list[dict[str, Any]]:
    """The entry asked from memory in `phrasings` of the QUESTIONS, starting `first` after its own one."""
    start = _pick(e, "q", len(QUESTIONS)) + first
    return [{"family": "recall", "messages": [user_turn(question(e, start + k)), assistant_turn(e.summary)]}
            for k in range(phrasings)]


def _detail_asks(e: Entry) -> list[str]:
    """Beside what it does: its arguments where known, what it returns where its docstring says."""
    return ["args"] * knows_arguments(e) + ["returns"] * bool(returns_answer(e))


def context_records(e: Entry, fresh: bool = False) -> list[dict[str, Any]]:
    """One pasted-function question per entry, asking what it does, its arguments or what it returns (picked by a
    hash); `fresh`: one question for each of the other asks instead (RL's)."""
    out = []
    for ask in _asks(e, "ctx", ["does"] + _detail_asks(e), fresh):
        phrasings = CONTEXT_ASKS[ask]
        q = phrasings[_pick(e, f"ctxq{fresh}", len(phrasings))].format(kind=_kind(e))
        messages = [user_turn(f"{pasted(e)}\n{q}"), assistant_turn(answer_to(e, ask))]
        out.append({"family": "context", "ask": ask, "messages": messages})
    return out


@functools.cache
def _sentence_answers() -> frozenset[str]:
    """Every summary and return sentence that a recall, context or follow-up record answers with."""
    return frozenset(a for e in task_entries() for a in (e.summary, returns_answer(e)) if a)


def reading_records(e: Entry) -> list[dict[str, Any]]:
    """The entry pasted with its docstring from the second sentence on (flattened to one paragraph), asked what
    it does: the answer is that sentence, which no other record has as an answer. A training function's own
    summary can be recalled from its name, so on context questions alone SFT learnt to answer pasted functions
    from memory and garbled a new one's summary; with these it reads the paste (README "What changed since")."""
    flat = " ".join(e.doc.split())
    rest = flat[len(e.summary):].strip() if flat.startswith(e.summary) else ""
    answer = first_sentence(rest)
    if not clean_sentence(answer) or answer in _sentence_answers():  # first_sentence('') is ''
        return []
    q = CONTEXT_ASKS["does"][_pick(e, "cfq", len(CONTEXT_ASKS["does"]))].format(kind=_kind(e))
    pasted_text = pasted(dataclasses.replace(e, doc=rest))
    return [{"family": "context", "ask": "reads",
             "messages": [user_turn(f"{pasted_text}\n{q}"), assistant_turn(answer)]}]


def detail_records(e: Entry, fresh: bool = False) -> list[dict[str, Any]]:
    """Its arguments or what it returns, asked from memory in one question ("What arguments does `len` take?"),
    picked by a hash; `fresh`: the other ask instead (RL's). Until these, the model had learnt arguments only from
    a pasted function or after a first question about it, and "What does sorted return?" got garbage."""
    out = []
    for ask in _asks(e, "det", _detail_asks(e), fresh):
        phrasings = DETAIL_ASKS[ask]
        variant = _pick(e, f"detq:{ask}", len(phrasings))
        form = NAME_FORMS[hash_byte(f"detform:{e.name}:{ask}") % (2 if e.kind == "class" else len(NAME_FORMS))]
        q = casual(phrasings[variant].format(name=form.format(e.name)), f"det:{e.name}:{ask}")
        out.append({"family": "details", "ask": ask, "messages": [user_turn(q), assistant_turn(answer_to(e, ask))]})
    return out


def followup_records(e: Entry, fresh: bool = False) -> list[dict[str, Any]]:
    """What the entry does, then its arguments or its module (picked by a hash; `fresh`: the other one; always its
    module where its arguments are not known)."""
    ask = ("args", "module")[(_pick(e, "fu", 2) + fresh) % 2] if knows_arguments(e) else "module"
    q = FOLLOWUPS[ask][_pick(e, "fuq", len(FOLLOWUPS[ask]))]
    answer = arguments_answer(e) if ask == "args" else f"It is in the `{e.module}` module."
    messages = [user_turn(question(e)), assistant_turn(e.summary), user_turn(q), assistant_turn(answer)]
    return [{"family": "followup", "ask": ask, "messages": messages}]


def correct(record: dict[str, Any], reply: str, facts: Facts | None = None) -> bool:
    """The report card's pass/fail rule: identity replies must state the fact asked for, unknown questions
    must be declined, how-to answers must name what to use (the task's `key`), and every other family must match
    the reference exactly (case and spacing aside)."""
    family = record.get("family")
    if family == "howto":
        return record["key"] in reply
    if family == "identity":
        facts = facts or Facts()
        key = record.get("key") or facts.fill(IDENTITY[record["intent"]][2])
        return key.lower() in reply.lower()
    if family == "unknown":
        return any(no in reply.lower() for no in ("don't know", "do not know", "不知道"))
    return exact_match(reply, record["reference"])


def exact_match(reply: str, reference: str) -> bool:
    """The same text, case and spacing aside."""
    return " ".join(reply.lower().split()) == " ".join(reference.lower().split())


# ---------------------------------------------------------------------------------------------- datasets


def conversations(facts: Facts | None = None, phrasings: int = 2) -> list[dict[str, Any]]:
    """SFT's records of every family and the held-out ones, each {"family", "split", "messages", ...};
    held-out functions are in 'val' (asked once per family) and take part in no training record."""
    facts = facts or Facts()
    records = []
    for e in task_entries():
        split = task_split(e)
        for r in (recall_records(e, phrasings if split == "train" else 1) + context_records(e)
                  + detail_records(e) + followup_records(e) + (reading_records(e) if split == "train" else [])):
            records.append({**r, "split": split, "entry": e.name, "module": e.module})
    return (records + identity_records(facts) + paraphrase_records(facts, "sft") + unknown_records()
            + howto_records())


def rl_conversations(facts: Facts | None = None) -> list[dict[str, Any]]:
    """RL's training records: the same training functions and intents as SFT's, asked in ways SFT never trained
    on (another recall phrasing, the other context, details and follow-up questions, RL's share of the generated
    identity paraphrases, other out-of-world and how-to questions). On a question the SFT model has learned by
    heart every sampled reply is the same, the group's advantages are all 0, and RL learns nothing from it."""
    facts = facts or Facts()
    records = []
    for e in task_entries():
        if task_split(e) == "train":
            for r in (recall_records(e, 1, first=2) + context_records(e, fresh=True) + detail_records(e, fresh=True)
                      + followup_records(e, fresh=True)):
                records.append({**r, "split": "train", "entry": e.name, "module": e.module})
    records += paraphrase_records(facts, "rl") + unknown_records(fresh=True) + howto_records(fresh=True)
    seen, out = {repr(r["messages"][:-1]) for r in conversations(facts)}, []
    for r in records:  # two methods may share a pasted text: each question once, none of SFT's
        if repr(r["messages"][:-1]) not in seen:
            seen.add(repr(r["messages"][:-1]))
            out.append(r)
    return out


SMALL_FAMILIES = ("identity", "unknown")
# families answered with a fixed reply that passes by what it says (`correct`), not by its words: RL's reward is
# gated on it, and SFT repeats their training turns (`_times`)
KEYED_FAMILIES = (*SMALL_FAMILIES, "howto")
SMALL_FAMILY_REPEATS = 3  # identity and unknown training turns are few and their answers must be exact
PARAPHRASE_REPEATS = 2  # the generated and blind-written identity questions (README "What changed since")
RL_SMALL_FAMILY_REPEATS = 12  # RL's identity and unknown prompts (47% of its prompts since sr50; README history)


def _times(r: dict[str, Any]) -> int:
    """How often SFT trains on a record: hand-written identity and out-of-world training turns
    SMALL_FAMILY_REPEATS times, the identity paraphrases and how-to questions PARAPHRASE_REPEATS times, everything
    else once."""
    if r["family"] not in KEYED_FAMILIES or r["split"] != "train":
        return 1
    return PARAPHRASE_REPEATS if r.get("paraphrase") else SMALL_FAMILY_REPEATS


def sft_records(facts: Facts | None = None, phrasings: int = 2) -> list[dict[str, Any]]:
    """{"messages", "split", "family"}: training conversations (hand-written identity and unknown ones repeated,
    `_times`) and the held-out ones (the SFT val loss)."""
    return [{"messages": r["messages"], "split": r["split"], "family": r["family"]}
            for r in conversations(facts, phrasings) for _ in range(_times(r))]


SESSION_MAX = 3  # SFT chains up to this many training conversations into one chat session (`sessions`)


def sessions(records: list[dict[str, Any]], fits: Callable[[list[dict[str, str]]], bool],
             seed: int = 0) -> list[dict[str, Any]]:
    """SFT's training conversations chained into chat sessions, as a user asks unrelated things one after another
    in one chat: in a shuffled order, each session aims at 1 to SESSION_MAX conversations (a seeded draw) and
    grows only while `fits(messages)` (the model's context). Every conversation is kept once, unchanged, so the
    mix is the same; held-out records stay alone. Trained on lone conversations, a model took every second
    question for a follow-up to the first: asked after one earlier exchange (`heldout.in_conversation`), sr26's
    SFT model answered held-out questions at F1 0.592 instead of 0.733, its identity 46% instead of 93%, and
    declined no out-of-world question (README "What changed since")."""
    rng = random.Random(seed)
    train = [r for r in records if r["split"] == "train"]
    rng.shuffle(train)
    out, i = [], 0
    while i < len(train):
        session, room = [train[i]], rng.randint(1, SESSION_MAX) - 1
        i += 1
        while room and i < len(train) and fits([m for r in session + [train[i]] for m in r["messages"]]):
            session.append(train[i])
            i, room = i + 1, room - 1
        out.append({"messages": [m for r in session for m in r["messages"]], "split": "train",
                    "family": session[0]["family"] if len(session) == 1 else "session"})
    return out + [r for r in records if r["split"] != "train"]


def anchor_records(facts: Facts | None = None, families: tuple[str, ...] = KEYED_FAMILIES) -> list[dict[str, Any]]:
    """RL's anchor conversations: SFT's training turns of `families` (its identity, out-of-world and how-to ones),
    whose exact answers RL keeps likely with an SFT term (`rl.RLConfig.anchor_rows`). Without the how-to turns
    (through sr46) RL moved the how-to answers to "I don't know that" (README "What changed since")."""
    return [{"messages": r["messages"], "split": "train", "family": r["family"]}
            for r in conversations(facts) if r["family"] in families and r["split"] == "train"]


def _prompt(r: dict[str, Any]) -> dict[str, Any]:
    """A conversation as a prompt (all but its last reply) with that reply as the `reference`."""
    return {"prompt": r["messages"][:-1], "reference": r["messages"][-1]["content"], "split": r["split"],
            **{k: v for k, v in r.items() if k not in ("messages", "split")}}


def prompts(facts: Facts | None = None) -> list[dict[str, Any]]:
    """Every SFT and held-out conversation as a prompt with its `reference` reply (DPO's pairs, the report card)."""
    return [_prompt(r) for r in conversations(facts, 1)]


def rl_prompts(facts: Facts | None = None) -> list[dict[str, Any]]:
    """{"prompt", "reference", "split", "family", ...}: RL's training prompts (`rl_conversations`, identity and
    out-of-world ones RL_SMALL_FAMILY_REPEATS times: at their natural share of the batches RL drifted the held-out
    identity answers unchecked) and the held-out prompts it is evaluated on."""
    train = [_prompt(r) for r in rl_conversations(facts)]
    return ([p for p in train for _ in range(RL_SMALL_FAMILY_REPEATS if p["family"] in SMALL_FAMILIES else 1)]
            + [p for p in prompts(facts) if p["split"] == "val"])
