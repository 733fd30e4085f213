"""What the SFT stage's settings are worth: SFT variants from one pretrained model, each scored on the report
card's held-out prompts, with paired 95% bootstrap intervals against the first variant (a script, not a test).

Every variant trains for the same number of SFT steps (not seconds, so a busy machine changes nothing) on the
built-in conversations with the SFT defaults plus its own changes, into <out>/<variant>; then every variant
answers the same held-out prompts greedily (`scripts/ablate_rl.py`'s scoring and table).

    python scripts/ablate_sft.py --base checkpoints/speedrun/pretrain/best --steps 1403
    python scripts/ablate_sft.py --base checkpoints/speedrun/pretrain/best --variants default,lr-5e-4,neftune-5

Variants (`VARIANTS`): the peak learning rate (`lr-X`, the floor a tenth of it; `default` is
`finetune.STAGE_DEFAULTS["sft"]`), NEFTune (noise of norm alpha / sqrt(T * C) added to the token embeddings while
training, Jain et al. 2023), dropout 0.1 in every block, the identity paraphrases once instead of
`chat_tasks.PARAPHRASE_REPEATS` times (`identity-x1`), once and a copy after all the rows (`identity-x2`: the
default's rows in another order, as measured), once and a noisy copy (`identity-noise`, `noisy`) or three times
(`identity-x3`), without the reading questions (`no-reading`: `chat_tasks.reading_records`), the sixth writer's
identity training questions (`no-writer-6`: identity_blind_3.py), the eleventh writer's thanks and goodbyes
(`no-writer-11`: social_blind_2.py), the twelfth writer's how-to questions (`no-writer-12`: howto_blind_2.py) or
the thirteenth writer's Chinese out-of-world requests (`no-writer-13`: out_of_world_zh.py), with the questions a
user asks first drawn into the held-out phrasings like the rest, as before sr51 (`asked-first-held`: the held-out
prompts scored stay today's, so compare on the prompts both sets hold) or trained three times as often as the other
hand-written turns, as tried in sr53 (`asked-first-x3`: `chat_tasks._times`), with every conversation
alone instead of chained into chat sessions (`no-sessions`: `chat_tasks.sessions`), with the functions as they were
before `chat_tasks.as_asked` (`names-before`: source names, markup left in, so those entries are rejected) or with
it but no full stop added (`no-full-stop`), without the functions written in C (`no-compiled`:
`pydocs.compiled_entries`), without the questions about arguments and return values asked from memory
(`no-details`: `chat_tasks.detail_records`) or with the functions asked in the first four phrasings only, as before
"What is X?", "Tell me about X." and "Can you explain X?" (`four-questions`: `chat_tasks.QUESTIONS`), or with none
of the training thanks, goodbyes and blind-written out-of-world requests, as before text/social_blind.py
(`no-social`: the held-out ones are still asked) or none of the training how-to questions, as before text/howto.py
(`no-howto`: the held-out ones are still asked), and the defaults with another seed (`seed-2`, and `-seed-2` after
a variant; the others use 1337).
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS: dict[str, dict] = {
    "default": {},
    **{f"lr-{lr}": {"lr": float(lr), "min_lr": float(lr) / 10}
       for lr in ("2.5e-4", "5e-4", "1e-3", "1.5e-3", "2e-3", "3e-3", "4e-3")},
    "neftune-5": {"neftune": 5.0},
    "dropout-0.1": {"dropout": 0.1},
    "seed-2": {"seed": 2},
    **{f"identity-{how}{seed}": {"identity": how, **({"seed": 2} if seed else {})}
       for how in ("x1", "x2", "noise", "x3") for seed in ("", "-seed-2")},
    "no-reading": {"reading": False},
    "no-reading-seed-2": {"reading": False, "seed": 2},
    "no-writer-6": {"unwritten": "BLIND_TRAIN_3"},
    "no-writer-6-seed-2": {"unwritten": "BLIND_TRAIN_3", "seed": 2},
    "no-writer-11": {"unwritten": "SOCIAL_TRAIN_2"},
    "no-writer-12": {"unwritten": "HOWTO_TRAIN_2"},
    "no-writer-12-seed-2": {"unwritten": "HOWTO_TRAIN_2", "seed": 2},
    "no-writer-13": {"unwritten": "OUT_OF_WORLD_TRAIN_ZH"},
    "no-writer-13-seed-2": {"unwritten": "OUT_OF_WORLD_TRAIN_ZH", "seed": 2},
    "asked-first-held": {"asked_first": False},
    "asked-first-held-seed-2": {"asked_first": False, "seed": 2},
    "asked-first-x3": {"asked_first_weight": 3},
    "asked-first-x3-seed-2": {"asked_first_weight": 3, "seed": 2},
    "no-sessions": {"sessions": False},
    "no-sessions-seed-2": {"sessions": False, "seed": 2},
    "names-before": {"names": "before"},
    "no-full-stop": {"names": "no-full-stop"},
    "no-compiled": {"compiled": False},
    "no-details": {"details": False},
    "four-questions": {"questions": 4},
    "no-social": {"social": False},
    "no-howto": {"howto": False},
}


def noisy(question: str, pool: list[str]) -> str:
    """An English question changed by one edit picked by a hash (EDA without synonyms, Wei & Zou 2019): a word
    from `pool` inserted, a word deleted, two neighbours swapped, or one of identity.VARIANTS' wrappers."""
    from minigpt.text import identity

    rng = random.Random(hashlib.sha256(question.encode()).digest())
    words = question.split()
    op = rng.randrange(4)
    if op == 0:
        words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
    elif op == 1 and len(words) > 3:
        del words[rng.randrange(len(words))]
    elif op == 2 and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        return rng.choice(identity.VARIANTS[1:]).format(q=question, lower=question[0].lower() + question[1:])
    return " ".join(words)


def copied(sft_records, noise: bool):
    """`sft_records` (called with each identity paraphrase once) and then a copy of each paraphrase, `noisy` if
    `noise` and it is English: as many rows as the default's two copies, so x1, x2 and noise tell the noise from
    the share. The noise words are the recall and out-of-world turns' words but those an identity question uses
    in lower case (so "What" may be inserted, "what" not: as measured)."""
    from minigpt.text import chat_tasks, identity

    talk = chat_tasks.conversations()
    said = {w.lower() for r in talk if r["family"] == "identity"
            for w in re.findall(r"[A-Za-z']+", r["messages"][0]["content"])}
    pool = sorted({w for r in talk if r["family"] in ("recall", "unknown") for m in r["messages"]
                   for w in re.findall(r"[A-Za-z]{3,}", m["content"]) if w not in said})

    def edit(q: str) -> str:
        return noisy(q, pool) if noise and not identity.is_chinese(q) else q

    def records(facts=None, phrasings=2):
        return sft_records(facts, phrasings) + [
            {"messages": [identity.user_turn(edit(r["messages"][0]["content"])), r["messages"][1]], "split": "train",
             "family": "identity"} for r in chat_tasks.conversations(facts, phrasings) if r.get("paraphrase")]

    return records


def neftune(model, alpha: float) -> None:
    """Uniform noise in [-1, 1] scaled by alpha / sqrt(T * C) on the token embeddings, in training only."""
    def add_noise(module, inputs, out):
        if module.training:
            return out + out.new_empty(out.shape).uniform_(-1, 1) * (alpha / (out.size(1) * out.size(2)) ** 0.5)
    model.transformer.wte.register_forward_hook(add_noise)


def dropout(model, p: float) -> None:
    for block in model.transformer.h:
        block.attn.dropout = block.mlp.dropout = p


def train_variant(base: str, out: Path, steps: int, change: dict) -> Path:
    from minigpt.text import chat_tasks, howto, identity, out_of_world
    from minigpt.text.corpora import pydocs
    from minigpt.train import finetune

    if (out / "latest").is_file():
        return out
    change = dict(change)
    seed = change.pop("seed", 1337)
    tweaks = [(fn, change.pop(name)) for name, fn in (("neftune", neftune), ("dropout", dropout)) if name in change]
    parent = finetune._parent
    how, repeats, records = change.pop("identity", None), chat_tasks.PARAPHRASE_REPEATS, chat_tasks.sft_records
    if how:  # "x1", "x2", "noise" or "x3"
        chat_tasks.PARAPHRASE_REPEATS = 3 if how == "x3" else 1
        chat_tasks.sft_records = copied(records, noise=how == "noise") if how in ("x2", "noise") else records
    if not change.pop("social", True):  # no training thanks, goodbye or blind-written out-of-world turn
        social = {out_of_world.UNKNOWN_ANSWER_ZH, *(identity._answer(chat_tasks.Facts(), intent, q)[0]
                                                    for intent in identity.ASKED_AS_WRITTEN for q in ("Hi", "你好"))}
        asked = {q for written in out_of_world.WRITTEN_FOR_TRAINING for q in written}
        full = chat_tasks.sft_records
        chat_tasks.sft_records = lambda facts=None, phrasings=2: [
            r for r in full(facts, phrasings) if r["split"] != "train"
            or not (r["messages"][-1]["content"] in social or r["messages"][0]["content"] in asked)]
    if not change.pop("howto", True):  # no training how-to question
        with_howto = chat_tasks.sft_records
        chat_tasks.sft_records = lambda facts=None, phrasings=2: [
            r for r in with_howto(facts, phrasings) if r["split"] != "train" or r["family"] != "howto"]
    if not change.pop("reading", True):  # the conversations less the reading questions
        reads = {repr(r["messages"]) for r in chat_tasks.conversations() if r.get("ask") == "reads"}
        kept = chat_tasks.sft_records
        chat_tasks.sft_records = lambda facts=None, phrasings=2: [r for r in kept(facts, phrasings)
                                                                  if repr(r["messages"]) not in reads]

    as_asked, names = chat_tasks.as_asked, change.pop("names", None)
    if names == "before":
        chat_tasks.as_asked = lambda e: e
    elif names == "no-full-stop":  # an entry whose summary needed a full stop gets an empty docstring: left out
        def no_stop(e):
            e2 = as_asked(e)
            added = e2.doc.partition("\n\n")[0] != chat_tasks.MARKUP.sub(r"\1", e.doc).strip().partition("\n\n")[0]
            return dataclasses.replace(e2, doc="") if added else e2
        chat_tasks.as_asked = no_stop
    compiled = pydocs.compiled_entries
    if not change.pop("compiled", True):  # the functions of the source files alone, as before compiled_entries
        pydocs.compiled_entries = lambda: ()
    chat_tasks._sentence_answers.cache_clear()
    details = chat_tasks.detail_records
    if not change.pop("details", True):  # no arguments or return value asked from memory, as before detail_records
        chat_tasks.detail_records = lambda e, fresh=False: []
    questions = chat_tasks.QUESTIONS
    chat_tasks.QUESTIONS = questions[:change.pop("questions", len(questions))]
    sessions = chat_tasks.sessions
    if not change.pop("sessions", True):  # every conversation alone, as before chat_tasks.sessions
        chat_tasks.sessions = lambda records, fits, seed=0: records
    asked_first = identity.ASKED_FIRST
    if not change.pop("asked_first", True):  # the questions asked first drawn like the rest, as before sr51
        identity.ASKED_FIRST = ()
        written_caches_clear()
    times = chat_tasks._times
    weight = change.pop("asked_first_weight", 1)
    if weight != 1:  # the questions asked first (in every variant) trained `weight` times as often, tried in sr53
        chat_tasks._times = lambda r: times(r) * (weight if r.get("phrasing") in identity.ASKED_FIRST else 1)
    writers = {module: module.WRITTEN_FOR_TRAINING for module in (identity, howto, out_of_world)}
    unwritten = change.pop("unwritten", None)
    if unwritten:  # the training questions without one writer's, as before that writer
        for module, written in writers.items():
            module.WRITTEN_FOR_TRAINING = tuple(w for w in written if w is not getattr(module, unwritten, None))
        written_caches_clear()

    def tweaked(*args, **kwargs):  # the parent model as loaded, changed before training starts
        ckpt, folder, info = parent(*args, **kwargs)
        for fn, value in tweaks:
            fn(ckpt.model, value)
        return ckpt, folder, info

    finetune._parent = tweaked
    try:
        cfg = finetune.stage_train_config("sft", max_iters=steps, eval_interval=10**9, seed=seed, **change)
        finetune.sft(base, None, train_config=cfg, out=out)
    finally:
        finetune._parent = parent
        chat_tasks.PARAPHRASE_REPEATS, chat_tasks.sft_records, chat_tasks.sessions = repeats, records, sessions
        chat_tasks.QUESTIONS = questions
        chat_tasks.as_asked, pydocs.compiled_entries, chat_tasks.detail_records = as_asked, compiled, details
        chat_tasks._sentence_answers.cache_clear()
        for module, written in writers.items():
            module.WRITTEN_FOR_TRAINING = written
        identity.ASKED_FIRST, chat_tasks._times = asked_first, times
        written_caches_clear()
    return out


def written_caches_clear() -> None:
    """Forget the training questions built from the writers' lists (after `WRITTEN_FOR_TRAINING` or
    `identity.ASKED_FIRST` changed: the held-out phrasings decide which generated questions are kept)."""
    from minigpt.text import howto, identity, out_of_world

    identity._paraphrase_split.cache_clear()
    howto._questions.cache_clear()
    out_of_world._written_unknown.cache_clear()


def main(argv: list[str] | None = None) -> int:
    from ablate_rl import ablate

    # 1,403 steps: sr24's SFT share on an idle 2-core machine
    return ablate(argv, __doc__, "SFT", VARIANTS, train_variant, 1403, "lr-5e-4,lr-1e-3,default,lr-4e-3",
                  start="base", baseline=None)


if __name__ == "__main__":
    sys.exit(main())
