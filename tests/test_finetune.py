"""SFT, reward model, DPO and RL: the losses by hand, the data checks, and every stage resuming exactly."""
from __future__ import annotations

import json
import math
import os
import re
import signal

import pytest
import torch
from safetensors.torch import load_file

from minigpt.text.chat_data import RowBatches, load_conversations, load_preferences, pair_collate, window
from minigpt.checkpoint import load_checkpoint, resolve_step
from minigpt.common import MinigptError
from minigpt.train.objectives import bradley_terry_loss, dpo_loss, policy_gradient_loss, sequence_logprobs
from minigpt.train.rewards import f1, task_reward, token_f1
from minigpt.text.tokenizer import train_char

from conftest import stage_run as _stage


# ---------------------------------------------------------------------------------------------- losses by hand


def test_dpo_loss_is_ln2_when_policy_equals_reference_and_matches_hand_values():
    lp = torch.tensor([-3.0, -7.5])
    loss, _ = dpo_loss(lp, lp - 1, lp, lp - 1, beta=0.1)
    assert float(loss) == pytest.approx(math.log(2))
    # chosen: beta*(-1 - -1.5) = 0.05, rejected: beta*(-2 - -1.5) = -0.05 -> -log sigmoid(0.1) = log(1 + e^-0.1)
    loss, r = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5]), 0.1)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-0.1)))
    assert float(r["chosen_reward"]) == pytest.approx(0.05) and float(r["rejected_reward"]) == pytest.approx(-0.05)


def test_bradley_terry_loss_by_hand():
    loss = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.5, 1.0]))
    expected = (math.log(1 + math.exp(-1.5)) + math.log(1 + math.exp(1.0))) / 2
    assert float(loss) == pytest.approx(expected)


def test_sequence_logprobs_sum_only_the_reply():
    logits = torch.randn(1, 4, 5)

    class Fixed(torch.nn.Module):
        def forward(self, x, y, reduction="mean", only_targets=False):
            return torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, ignore_index=-1, reduction="none")

    y = torch.tensor([[-1, 2, 4, -1]])
    logp = torch.log_softmax(logits, -1)
    assert float(sequence_logprobs(Fixed(), torch.zeros(1, 4, dtype=torch.long), y)) == \
        pytest.approx(float(logp[0, 1, 2] + logp[0, 2, 4]), abs=1e-5)


def test_policy_gradient_raises_the_probability_of_the_rewarded_token():
    """A 4-armed bandit: arm 2 pays 1, others 0. REINFORCE with a group-mean baseline learns to pull it."""
    torch.manual_seed(0)
    logits = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.5)
    for _ in range(60):
        arms = torch.multinomial(torch.softmax(logits.detach(), -1), 8, replacement=True)
        rewards = (arms == 2).float()
        logp = torch.log_softmax(logits, -1)[arms][:, None]  # (8, 1): one "token" per rollout
        loss, kl = policy_gradient_loss(logp, logp.detach(), rewards - rewards.mean(), torch.ones(8, 1), kl_coef=0.1)
        assert float(kl) == pytest.approx(0.0)  # policy == reference: the k3 estimator is exactly 0
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(torch.softmax(logits.detach(), -1)[2]) > 0.9


def test_rl_anchor_term_is_the_sft_loss_of_the_anchor_rows(tmp_path):
    """RL's anchor term (InstructGPT's ptx, aimed at identity and out-of-world turns): the loss is the policy
    gradient loss plus anchor_coef times the anchor rows' mean reply NLL (computed here with cross-entropy); the
    rollouts draw anchor rows from their own shuffled stream, which resumes exactly."""
    import copy

    import torch.nn.functional as F

    from conftest import make_checkpoint
    from minigpt.train import rl
    from minigpt.train.objectives import PolicyGradient

    ckpt = load_checkpoint(make_checkpoint(tmp_path / "sft", "sft"))
    tok, model = ckpt.tokenizer, ckpt.model
    talk = [{"messages": [{"role": "user", "content": f"who is {n}?"}, {"role": "assistant", "content": f"I am {n}."}],
             "split": "train"} for n in ("ann", "bob", "cy", "dee", "eve")]
    anchors = load_conversations(talk, tok).train
    rows = [(tok.encode("hi"), {"prompt": "hi", "reference": "x"}) for _ in range(4)]
    cfg = rl.RLConfig(group_size=2, max_new_tokens=3, anchor_rows=2, anchor_coef=0.5)
    rollouts = rl.Rollouts(model, tok, rows, lambda p, c, r: float(len(c)), cfg, prompts_per_step=2, seed=0,
                           anchors=anchors)
    next(rollouts)
    state = copy.deepcopy(rollouts.state_dict())
    batch = next(rollouts)
    rollouts.load_state_dict(state)
    again = next(rollouts)
    assert all(torch.equal(a, b) for a, b in zip(batch["anchor"], again["anchor"]))
    assert torch.equal(batch["x"], again["x"])
    objective = PolicyGradient(lambda *a: iter(()), copy.deepcopy(model), kl_coef=0.1, seed=0, evaluate=None,
                               anchor_coef=0.5)
    with_anchor, metrics = objective.loss(model, batch)
    without, _ = objective.loss(model, {k: v for k, v in batch.items() if k != "anchor"})
    ax, ay = batch["anchor"]
    with torch.no_grad():
        nll = F.cross_entropy(model(ax).reshape(-1, model.config.vocab_size), ay.reshape(-1), ignore_index=-1)
    assert float(metrics["anchor_nll"]) == pytest.approx(float(nll), rel=1e-5)
    assert with_anchor.item() == pytest.approx(without.item() + 0.5 * float(nll), rel=1e-5)


def test_kl_penalty_pulls_back_to_the_reference():
    logp = torch.log(torch.tensor([[0.9]])).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.5]]))
    _, kl = policy_gradient_loss(logp, ref, torch.zeros(1), torch.ones(1, 1), kl_coef=1.0)
    r = math.log(0.5) - math.log(0.9)
    assert float(kl) == pytest.approx(math.exp(r) - r - 1)


def test_token_f1():
    assert f1("Return the sum of a and b.", "Return the sum of a and b") == 1.0
    assert f1("the cat", "a dog") == 0.0
    # pred {return, a, list}, ref {return, a, tuple, of, items}: 2 common -> P 2/3, R 2/5 -> F1 0.5
    assert f1("Return a list", "Return a tuple of items") == pytest.approx(0.5)
    assert token_f1([], "x y", {"reference": "x y"}) == 1.0


def test_task_reward_is_not_gamed_by_a_generic_self_description():
    """Token F1 alone scores a wrong identity answer that shares words with the right one highly; the default
    reward pays an identity or out-of-world reply only when it states the fact (or declines): then half for that
    and half its F1, and nothing otherwise, so no wrong answer of a group is ever the one RL raises."""
    from minigpt.text import chat_tasks, out_of_world

    facts = chat_tasks.Facts(params=3_342_336)
    records = {r["messages"][0]["content"]: r for r in chat_tasks.identity_records(facts)}
    who = {**records["Who are you?"], "reference": records["Who are you?"]["messages"][1]["content"]}
    generic = f"I was trained on {facts.trained_on}."  # the "training" answer
    assert token_f1([], generic, who) > 0.25  # shares "the", "python", "standard", "library" ...
    assert task_reward([], generic, who) == 0.0
    assert task_reward([], who["reference"], who) == 1.0
    terse = "I am minigpt."
    assert task_reward([], terse, who) == pytest.approx(0.5 + 0.5 * token_f1([], terse, who))
    unknown = {"family": "unknown", "reference": out_of_world.UNKNOWN_ANSWER}
    decline = 0.5 + 0.5 * f1("I don't know.", out_of_world.UNKNOWN_ANSWER)
    assert task_reward([], "I don't know.", unknown) == pytest.approx(decline)
    assert task_reward([], "It takes `x`.", unknown) == 0.0
    plain = {"reference": "Return the sum."}  # user data: no family, plain F1
    assert task_reward([], "Return the sum.", plain) == token_f1([], "Return the sum.", plain) == 1.0


def test_identity_keys_belong_to_their_intent():
    """A reply passes an identity question only by stating that intent's fact: the stock self-description RL
    once collapsed onto ("I am minigpt, ... Python's standard library") passes "Who are you?" and nothing else.
    The one overlap is by design: a greeting says its name, so it also answers "Who are you?"."""
    from minigpt.text import chat_tasks

    facts = chat_tasks.Facts(params=1_840_000)
    records = chat_tasks.identity_records(facts)
    answers: dict[str, set[str]] = {}
    for r in records:
        answers.setdefault(r["intent"], set()).add(r["messages"][-1]["content"])
    for r in records:
        assert chat_tasks.correct(r, r["messages"][-1]["content"], facts), r
        for intent, said in answers.items():
            if intent != r["intent"] and (r["intent"], intent) != ("name", "greeting"):
                assert not any(chat_tasks.correct(r, a, facts) for a in said), (r["intent"], intent)
    stock = "I am minigpt, a small language model that answers questions about Python's standard library."
    passed = {r["intent"] for r in records if chat_tasks.correct(r, stock, facts)}
    assert passed == {"name"}


def test_preference_pairs_reject_the_right_kind_of_wrong_answer():
    """DPO's negatives are the mistakes a small model makes: another intent's answer to an identity question,
    another function's arguments or module for a question about this one; never the chosen reply itself."""
    import re

    from minigpt.text import chat_pairs, chat_tasks

    facts = chat_tasks.Facts(params=1_840_000)
    pairs = chat_pairs.preference_records(facts)
    identity = {r["messages"][-1]["content"]: r["intent"] for r in chat_tasks.identity_records(facts)}
    asked = {(json.dumps(p["prompt"]), p["reference"]): p for p in chat_tasks.prompts(facts)}
    kinds = set()
    for pair in pairs:
        assert pair["chosen"] != pair["rejected"]
        p = asked[(json.dumps(pair["prompt"]), pair["chosen"])]
        if p["family"] == "identity":
            assert identity[pair["rejected"]] != p["intent"]
            kinds.add("identity")
        elif p.get("ask") == "module":
            other = re.fullmatch(r"It is in the `([\w.]+)` module\.", pair["rejected"])
            assert other and other.group(1) != p["module"]
            kinds.add("module")
        elif p.get("ask") == "args":
            assert pair["rejected"].startswith("It takes ")
            kinds.add("args")
    assert kinds == {"identity", "module", "args"}


def test_sft_repeats_the_identity_and_out_of_world_turns():
    """SFT trains on the hand-written identity and out-of-world turns 3 times, on the generated and blind-written
    identity questions and the how-to questions twice, on every other training record once, and keeps each
    held-out record once."""
    from collections import Counter

    from minigpt.text import chat_tasks

    facts = chat_tasks.Facts(params=1_840_000)
    key = lambda r: json.dumps(r["messages"], ensure_ascii=False)  # noqa: E731
    want = Counter()
    for r in chat_tasks.conversations(facts):
        small = r["family"] in ("identity", "unknown", "howto") and r["split"] == "train"
        assert r.get("paraphrase") or r["family"] != "howto" or r["split"] == "val"
        want[key(r)] += (2 if r.get("paraphrase") else 3) if small else 1
    got = Counter(key(r) for r in chat_tasks.sft_records(facts))
    assert got == want
    assert {2, 3} <= set(got.values())


def test_sft_chains_its_training_conversations_into_chat_sessions():
    """Every training conversation is in exactly one session, whole and in order, sessions hold 1 to SESSION_MAX
    of them and never more than fits, many hold more than one, and the held-out records stay alone."""
    from collections import Counter

    from minigpt.text import chat_tasks

    turn = lambda i, k, role: {"role": role, "content": f"{i}:{k}:" + "x" * (i % 7 * 20)}  # noqa: E731
    records = [{"messages": [turn(i, k, role) for k in range(1 + i % 2) for role in ("user", "assistant")],
                "split": "val" if i % 10 == 0 else "train", "family": "recall"} for i in range(600)]
    fits = lambda messages: sum(len(m["content"]) for m in messages) <= 300  # noqa: E731
    out = chat_tasks.sessions(records, fits, seed=3)
    assert out == chat_tasks.sessions(records, fits, seed=3) != chat_tasks.sessions(records, fits, seed=4)
    assert [r for r in out if r["split"] != "train"] == [r for r in records if r["split"] != "train"]
    found, sizes = Counter(), Counter()
    for session in (r for r in out if r["split"] == "train"):
        ids = [int(m["content"].split(":")[0]) for m in session["messages"]]
        parts = [i for n, i in enumerate(ids) if n == 0 or ids[n - 1] != i]
        for i in parts:  # each conversation whole and unchanged
            assert [m for m in session["messages"] if m["content"].startswith(f"{i}:")] == records[i]["messages"]
        found.update(parts)
        sizes[len(parts)] += 1
        assert len(parts) == 1 or fits(session["messages"])
        assert session["family"] == ("recall" if len(parts) == 1 else "session")
    assert found == Counter(i for i, r in enumerate(records) if r["split"] == "train")  # each exactly once
    assert set(sizes) == set(range(1, chat_tasks.SESSION_MAX + 1))
    assert sum(n * k for n, k in sizes.items() if n > 1) > sum(found.values()) / 3  # a real share is in a chat


def test_heldout_prompts_asked_second_in_a_chat_follow_a_training_exchange():
    from minigpt.runs.heldout import heldout_prompts, in_conversation
    from minigpt.text import chat_tasks

    facts = chat_tasks.Facts(params=1_840_000)
    prompts = heldout_prompts(facts)
    second = in_conversation(prompts, facts)
    assert second == in_conversation(prompts, facts)
    train = {json.dumps(r["messages"]) for r in chat_tasks.conversations(facts, 1) if r["split"] == "train"}
    for p, q in zip(prompts, second):
        assert q["prompt"][2:] == p["prompt"] and {**q, "prompt": p["prompt"]} == p
        assert json.dumps(q["prompt"][:2]) in train and q["prompt"][1]["role"] == "assistant"
    assert len({json.dumps(q["prompt"][:2]) for q in second}) > len(second) / 2  # not one exchange for all


def test_rl_prompts_are_questions_sft_never_trained_on():
    """RL trains on the training functions and intents asked in ways SFT never saw (on a memorised question every
    sampled reply is the same and RL learns nothing), never on a held-out function or phrasing; it is evaluated
    on the report card's held-out prompts; identity and out-of-world prompts come RL_SMALL_FAMILY_REPEATS times."""
    from collections import Counter

    from minigpt.text import chat_tasks

    facts = chat_tasks.Facts(params=1_840_000)
    key = lambda r: json.dumps(r["prompt"] if "prompt" in r else r["messages"][:-1])  # noqa: E731
    sft = {key(r) for r in chat_tasks.conversations(facts) if r["split"] == "train"}
    held = {key(r) for r in chat_tasks.conversations(facts) if r["split"] == "val"}
    heldout_functions = {r["entry"] for r in chat_tasks.conversations(facts) if r["split"] == "val" and "entry" in r}
    rl = chat_tasks.rl_prompts(facts)
    train = [p for p in rl if p["split"] == "train"]
    assert {p["family"] for p in train} == {"recall", "context", "details", "followup", "identity", "unknown", "howto"}
    assert not {key(p) for p in train} & (sft | held)
    assert not {p.get("entry") for p in train} & heldout_functions
    assert {key(p) for p in rl if p["split"] == "val"} == held
    counts = Counter(key(p) for p in train)
    for p in train:
        small = p["family"] in ("identity", "unknown")
        assert counts[key(p)] == (chat_tasks.RL_SMALL_FAMILY_REPEATS if small else 1), p
    for family in ("context", "details"):  # the other ask than SFT's for the same function (context: the same paste)
        sft_asks = {(r["entry"], r["ask"]) for r in chat_tasks.conversations(facts) if r["family"] == family}
        fresh_asks = {(p["entry"], p["ask"]) for p in train if p["family"] == family}
        assert fresh_asks and not fresh_asks & sft_asks, family


def test_heldout_and_out_of_world_questions_are_distinct():
    """Each held-out prompt is asked once (a repeated one would count its answer several times in the report
    card's figures and narrow their intervals falsely), and every out-of-world question is a different filling."""
    from collections import Counter

    from minigpt.runs.heldout import heldout_prompts
    from minigpt.text import chat_tasks

    prompts = heldout_prompts(chat_tasks.Facts(params=1_840_000))
    assert max(Counter(json.dumps(p["prompt"]) for p in prompts).values()) == 1
    assert sum(p["family"] == "unknown" for p in prompts) >= 12
    for fresh in (False, True):
        questions = [r["messages"][0]["content"] for r in chat_tasks.unknown_records(fresh)]
        assert len(questions) == len(set(questions)) > 12
    sft = {r["messages"][0]["content"] for r in chat_tasks.unknown_records()}
    assert not sft & {r["messages"][0]["content"] for r in chat_tasks.unknown_records(fresh=True)}


def test_out_of_world_requests_written_blind_are_a_heldout_set_of_their_own():
    """The eighth writer's out-of-world requests are all held out (`"blind": 3`, each its own cluster), none near a
    template's filling or an earlier test request; the seventh and the thirteenth (Chinese) writers' train SFT and
    RL apart, none near any held-out one; a request in Chinese is declined in Chinese, and both declines pass the
    report card's rule."""
    from minigpt.runs.heldout import cluster_of, heldout_prompts
    from minigpt.text import chat_tasks, identity, out_of_world, out_of_world_zh, social_blind

    sft, rl = out_of_world.unknown_records(), out_of_world.unknown_records(fresh=True)
    held = [r for r in sft if r["split"] == "val"]
    tests = [r for r in held if r.get("blind") == 3]
    assert len(tests) > 100 and {r["messages"][0]["content"] for r in tests} <= set(social_blind.OUT_OF_WORLD_TEST)
    assert not [(a, b) for i, a in enumerate(tests) for b in tests[i + 1:]
                if identity.near(a["messages"][0]["content"], b["messages"][0]["content"])]
    filled = [q for t in out_of_world.UNKNOWN_TEMPLATES for q in out_of_world.fillings(t)]
    assert "What is 40 plus 64?" in filled and len(filled) == len(set(filled))
    assert not [r for r in tests if any(identity.near(r["messages"][0]["content"], q) for q in filled)]
    written = set(social_blind.OUT_OF_WORLD_TRAIN) | set(out_of_world_zh.OUT_OF_WORLD_TRAIN_ZH)
    trained = {stage: {r["messages"][0]["content"] for r in rs if r["split"] == "train"} & written
               for stage, rs in (("sft", sft), ("rl", rl))}
    assert len(trained["sft"]) > 300 and len(trained["rl"]) > 150 and not trained["sft"] & trained["rl"]
    chinese = {stage: {q for q in qs if identity.is_chinese(q)} for stage, qs in trained.items()}
    assert len(chinese["sft"]) > 120 and len(chinese["rl"]) > 60  # the thirteenth writer's, mostly
    assert not [(q, h["messages"][0]["content"]) for q in trained["sft"] | trained["rl"] for h in held
                if identity.near(q, h["messages"][0]["content"])]
    for r in sft + rl:
        question, reply = (m["content"] for m in r["messages"])
        zh = identity.is_chinese(question)
        assert reply == (out_of_world.UNKNOWN_ANSWER_ZH if zh else out_of_world.UNKNOWN_ANSWER)
        assert chat_tasks.correct(r, reply) and not chat_tasks.correct(r, "Return a list of the words.")
    assert any(identity.is_chinese(r["messages"][0]["content"]) for r in tests)
    prompts = [p for p in heldout_prompts(chat_tasks.Facts(params=1_840_000)) if p.get("blind") == 3]
    assert len({cluster_of(p) for p in prompts}) == len(prompts)


def test_thanks_and_goodbyes_are_answered_in_kind():
    """"Thanks!" and "Bye!" got the greeting until sr43: they are intents of their own, asked as written (no
    "Quick question: Thanks!"), with the seventh and eleventh writers' messages to train on and the eighth writer's
    held out; DPO pairs an out-of-world request with a confident docstring, an identity answer or a how-to answer."""
    from minigpt.text import chat_pairs, chat_tasks, howto, identity, social_blind, social_blind_2

    facts = chat_tasks.Facts(params=1_840_000)
    records = [r for r in identity.identity_records(facts) if r["intent"] in ("thanks", "goodbye")]
    for intent, key in (("thanks", "You're welcome"), ("goodbye", "Goodbye")):
        mine = [r for r in records if r["intent"] == intent]
        assert {r["messages"][0]["content"] for r in mine} == {r["phrasing"] for r in mine}  # asked as written
        assert {r["split"] for r in mine if not r.get("blind")} == {"train", "val"}
        tests = {r["messages"][0]["content"] for r in mine if r.get("blind") == 3}
        assert tests and tests <= set(social_blind.SOCIAL_TEST[intent])
        for r in mine:
            zh = identity.is_chinese(r["messages"][0]["content"])
            assert (r["key"] in r["messages"][1]["content"]) and (zh or r["messages"][1]["content"].startswith(key))
        sft = {r["messages"][0]["content"] for r in identity.paraphrase_records(facts, "sft") if r["intent"] == intent}
        assert len(sft & set(social_blind.SOCIAL_TRAIN[intent])) > 30
        assert len(sft & set(social_blind_2.SOCIAL_TRAIN_2[intent])) > 60  # the eleventh writer's
    pairs = [p for p in chat_pairs.preference_records(facts) if p["family"] == "unknown"]
    said = {r["messages"][-1]["content"] for r in identity.identity_records(facts)}
    uses = {howto.answer(t) for t in howto.HOWTO}
    for kind in (said, uses):  # an identity answer, a how-to answer or a docstring, a third each
        assert 0.2 < sum(p["rejected"] in kind for p in pairs) / len(pairs) < 0.47
    assert all(identity.is_chinese(p["rejected"]) == identity.is_chinese(p["chosen"])
               for p in pairs if p["rejected"] in said)


def _resolve(name: str):
    """The object a dotted name in an answer stands for (`os.path.exists`, `urllib.parse.urlencode`, `len`), or
    None for a name that starts with a variable or a keyword (`f.read`, `items.sort`, `except`); AttributeError
    where a module lacks the name."""
    import builtins
    import importlib
    import sys

    def module(dotted: str):
        try:
            return importlib.import_module(dotted)
        except ImportError:
            return None

    parts = name.split(".")
    if hasattr(builtins, parts[0]):
        obj, rest = builtins, parts
    elif parts[0] in sys.stdlib_module_names:
        n = max(i for i in range(1, len(parts) + 1) if module(".".join(parts[:i])))
        obj, rest = module(".".join(parts[:n])), parts[n:]
    else:
        return None
    for part in rest:
        obj = getattr(obj, part)
    return obj


def test_howto_questions_are_answered_with_what_to_use():
    """Each how-to task's answer names what to use (its key), which no other task's answer contains, so the report
    card's rule passes it and fails a neighbouring task's (DPO's rejected reply), and RL's reward pays only the
    right one; every module function an answer names exists; the tenth writer's questions are all held out, one
    cluster per task, none near a training question; SFT and RL train on the ninth and twelfth writers' apart."""
    from minigpt.runs.heldout import cluster_of, heldout_prompts
    from minigpt.text import chat_pairs, chat_tasks, howto, identity
    from minigpt.train.rewards import task_reward

    answers, names = {t: howto.answer(t) for t in howto.HOWTO}, []
    assert len(answers) == 135 and len(set(answers.values())) == 135
    for t, a in answers.items():
        assert howto.key(t) in a and not [o for o, b in answers.items() if o != t and howto.key(t) in b]
        assert a.startswith("Use ") and len(a.split()) <= 30 and "\n" not in a
        for span in re.findall(r"`([^`]+)`", a):  # `os.path.exists(path)`, `@functools.lru_cache`, `math.pi`
            names += [n for n in re.findall(r"(?<![\w.'\"])[A-Za-z_]\w*(?:\.\w+)*", span) if _resolve(n)]
    assert {"os.path.exists", "urllib.parse.urlencode", "functools.lru_cache", "math.pi", "sorted"} <= set(names)
    sft, rl = howto.howto_records(), howto.howto_records(fresh=True)
    tests = [r for r in sft if r["split"] == "val"]
    asked = lambda rs: {r["messages"][0]["content"] for r in rs}  # noqa: E731
    assert len(tests) > 350 and {r["blind"] for r in tests} == {howto.TEST_WRITER}
    assert asked(tests) <= {q for qs in howto.HOWTO_TEST.values() for q in qs}
    trained = {"sft": asked(r for r in sft if r["split"] == "train"), "rl": asked(rl)}
    assert len(trained["sft"]) > 700 and len(trained["rl"]) > 300 and not trained["sft"] & trained["rl"]
    twelfth = {q for qs in howto.HOWTO_TRAIN_2.values() for q in qs}  # the second training writer's, both sides
    assert len(trained["sft"] & twelfth) > 800 and len(trained["rl"] & twelfth) > 350
    assert {r["split"] for r in rl} == {"train"}
    assert not [(q, h) for q in trained["sft"] | trained["rl"] for h in asked(tests) if identity.near(q, h)]
    assert all(any(identity.is_chinese(q) for q in qs) for qs in (asked(tests), trained["sft"], trained["rl"]))
    assert asked(tests) <= asked(r for r in chat_tasks.conversations() if r["family"] == "howto")
    assert trained["rl"] <= asked(r for r in chat_tasks.rl_conversations() if r["family"] == "howto")
    facts = chat_tasks.Facts(params=1_840_000)
    prompts = [p for p in heldout_prompts(facts) if p["family"] == "howto"]
    assert len({cluster_of(p) for p in prompts}) == 135
    assert asked(tests) == {p["prompt"][-1]["content"] for p in prompts}
    record = {r["messages"][0]["content"]: r for r in sft + rl}
    pairs = [p for p in chat_pairs.preference_records(facts) if p["family"] == "howto"]
    assert len(pairs) == len(trained["sft"]) + len(tests)
    for p in pairs:
        r = {**record[p["prompt"][-1]["content"]], "reference": p["chosen"]}
        assert p["chosen"] == answers[r["task"]] and p["rejected"] in answers.values()
        assert chat_tasks.correct(r, p["chosen"]) and not chat_tasks.correct(r, p["rejected"])
        assert task_reward(p["prompt"], p["chosen"], r) == 1.0 and task_reward(p["prompt"], p["rejected"], r) == 0.0
    apart = [(list(answers).index(record[p["prompt"][-1]["content"]]["task"])
              - list(answers.values()).index(p["rejected"])) % 135 for p in pairs]
    assert set(apart) == {1, 2, 133, 134}  # the rejected reply is a task up to two away (in a circle)


def test_function_questions_write_the_name_as_people_type_it():
    """Every name in backticks taught the model that a bare `json.dumps` is not a function question (sr33's
    models answered "What does json.dumps do?" with their scope): training and held-out questions now write it in
    backticks, bare and called (never a class), some typed casually, and so do the out-of-world questions."""
    import re

    from minigpt.text import chat_tasks

    records = chat_tasks.conversations(chat_tasks.Facts(params=1_840_000))
    for split in ("train", "val"):
        asked = [(r["entry"], r["messages"][0]["content"]) for r in records
                 if r["family"] == "recall" and r["split"] == split]
        forms = {next(f for f, pat in (("code", f"`{re.escape(n)}`"), ("called", rf"{re.escape(n)}\(\)"),
                                       ("bare", re.escape(n))) if re.search(pat, q)) for n, q in asked}
        assert forms == {"code", "called", "bare"}, split
        casual = [q for _, q in asked if q[:1].islower() and not q.endswith(("?", "."))]
        assert 0.1 < len(casual) / len(asked) < 0.4, split
    classes = {e.name for e in chat_tasks.task_entries() if e.kind == "class"}
    assert not any(r["entry"] in classes and f"{r['entry']}()" in r["messages"][0]["content"] for r in records
                   if r["family"] == "recall")
    unknown = [r["messages"][0]["content"] for r in chat_tasks.unknown_records()]
    assert any(q[:1].islower() for q in unknown) and any(q.endswith("?") for q in unknown)


def test_identity_paraphrases_stay_off_the_heldout_phrasings():
    """The generated identity questions teach each intent in hundreds of phrasings: none contains a held-out
    hand-written phrasing or variant (case and punctuation aside), SFT's and RL's are disjoint, and each is
    answered with its intent's answer, which passes its own key."""
    from minigpt.text import chat_tasks, identity

    facts = chat_tasks.Facts(params=1_840_000)
    norm = identity._normal
    held = {norm(r["messages"][0]["content"]) for r in identity.identity_records(facts) if r["split"] == "val"}
    assert len(held) > 100
    answer = {r["intent"]: r["messages"][-1]["content"] for r in identity.identity_records(facts)
              if r["split"] == "train" and not identity.is_chinese(r["messages"][0]["content"])}
    by_stage = {stage: identity.paraphrase_records(facts, stage) for stage in ("sft", "rl")}
    asked = {stage: {norm(r["messages"][0]["content"]) for r in rs} for stage, rs in by_stage.items()}
    assert not asked["sft"] & asked["rl"]
    assert not [(q, h) for q in asked["sft"] | asked["rl"] for h in held if f" {h} " in f" {q} "]
    phrasings = {r["phrasing"] for r in identity.identity_records(facts) if r["split"] == "val"}
    assert not [(r["messages"][0]["content"], h) for rs in by_stage.values() for r in rs for h in phrasings
                if identity.near(r["messages"][0]["content"], h)]
    asked_any = {r["messages"][0]["content"] for rs in by_stage.values() for r in rs}
    for frame in identity.ABOUT:  # each frame asked of every intent, so its words are no cue for one of them
        uses = {intent for intent, topics in identity.TOPICS.items() for t in topics if frame.format(t=t) in asked_any}
        assert uses == set(identity.TOPICS), (frame, uses)
    for stage, records in by_stage.items():
        per_intent = {intent: sum(r["intent"] == intent for r in records) for intent in chat_tasks.IDENTITY}
        assert min(per_intent.values()) >= (20 if stage == "sft" else 10), (stage, per_intent)
        for r in records:
            assert r["split"] == "train" and chat_tasks.correct(r, r["messages"][-1]["content"], facts)
            if not identity.is_chinese(r["messages"][0]["content"]):
                assert r["messages"][-1]["content"] == answer[r["intent"]]


def test_the_questions_asked_first_are_trained_in_every_variant_and_never_tested():
    """"Who are you?", "Hello!" and the rest of `ASKED_FIRST` are SFT's, each in all its variants and answered by
    its own intent; no held-out question is one of them (the held-out share of each intent stays 1 in 4)."""
    from minigpt.text import chat_tasks, identity

    facts = chat_tasks.Facts(params=1_840_000)
    records = identity.identity_records(facts)
    sft = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in chat_tasks.sft_records(facts)
           if r["split"] == "train" and r["family"] == "identity"}
    for q in identity.ASKED_FIRST:
        mine = [r for r in records if r.get("phrasing") == q]
        intent = next(i for i, (phrasings, _, _) in identity.IDENTITY.items() if q in phrasings)
        assert len(mine) == (1 if identity.is_chinese(q) or intent in identity.ASKED_AS_WRITTEN else 4), q
        for r in mine:
            reply = sft[r["messages"][0]["content"]]  # SFT trains on it, with its intent's answer
            assert r["split"] == "train" and r["intent"] == intent and chat_tasks.correct(r, reply, facts), q
    held = [r for r in records if r["split"] == "val"]
    first = {identity._normal(q) for q in identity.ASKED_FIRST}
    assert not [r["messages"][0]["content"] for r in held if identity._normal(r["messages"][0]["content"]) in first]
    for intent, (phrasings, _, _) in identity.IDENTITY.items():
        assert len({r["phrasing"] for r in held if r["intent"] == intent and "blind" not in r}) == len(phrasings) // 4


def test_blind_written_identity_questions_are_a_second_heldout_set():
    """The blind-written test questions are held out like the hand-written ones: each its own phrasing, none
    near a training question (hand-written, generated or blind-written, SFT's or RL's), and more of them than
    the hand-written held-out phrasings; the blind-written training questions reach SFT and RL. `near`: one
    question contains the other, case and punctuation aside, or they share 70% of their words."""
    from minigpt.text import chat_tasks, identity

    assert identity.near("So, who made you?", "Who made you?") and identity.near("WHO MADE YOU", "who made you?")
    assert identity.near("What's the size of your neural network?", "What is the size of your neural network?")
    assert not identity.near("Who made you?", "Who built you?")  # 2 of 4 words
    assert identity.near("Who's your maker?", "Who is your maker?") and identity.near("You can't", "you can not")
    # Chinese has no spaces: each character is a word ("你好啊" contains "你好"; 1 of 4 characters shared)
    assert identity.near("你好啊！", "你好！") and identity.near("请问怎么称呼你？", "怎么称呼你")
    assert not identity.near("你好！", "早上好！") and not identity.near("你好", "您好")
    facts = chat_tasks.Facts(params=1_840_000)
    records = identity.identity_records(facts)
    blind = [r for r in records if r.get("blind")]
    hand_held = {r["phrasing"] for r in records if r["split"] == "val" and not r.get("blind")}
    assert len(blind) > len(hand_held) and all(r["split"] == "val" for r in blind)
    assert len({r["phrasing"] for r in blind}) == len(blind)
    assert not [(a["phrasing"], b["phrasing"]) for i, a in enumerate(blind) for b in blind[i + 1:]
                if identity.near(a["phrasing"], b["phrasing"])]  # independent questions: none near another
    later = {q for qs in identity.BLIND_TEST_2.values() for q in qs}
    assert len([r for r in blind if r["phrasing"] in later]) > 38
    assert {r["intent"] for r in blind} == set(identity.IDENTITY)
    training = [r["messages"][0]["content"] for r in records if r["split"] == "train"]
    training += [r["messages"][0]["content"] for stage in ("sft", "rl")
                 for r in identity.paraphrase_records(facts, stage)]
    assert not [(r["phrasing"], t) for r in blind for t in training if identity.near(r["phrasing"], t)]
    # each writer's training questions are used
    assert identity.BLIND_TRAIN_3 in identity.WRITTEN_FOR_TRAINING
    for lists in identity.WRITTEN_FOR_TRAINING:
        written = {q for qs in lists.values() for q in qs}
        assert len(written & set(training)) > 100
    for r in blind:
        assert chat_tasks.correct(r, r["messages"][-1]["content"], facts)
        assert not chat_tasks.correct(r, "I don't know that. I only know about Python's standard library.", facts)


# ---------------------------------------------------------------------------------------------- data


def test_malformed_jsonl_names_file_and_line(tmp_path):
    tok = train_char("abc")
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}]}) + "\n\n{oops\n")
    with pytest.raises(MinigptError, match=r"bad\.jsonl:3: not valid JSON"):
        load_conversations(path, tok)
    path.write_bytes(json.dumps({"messages": [{"role": "user", "content": "a"}]}).encode() + b'\n{"x": "\xff"}\n')
    with pytest.raises(MinigptError, match=r"bad\.jsonl:2: not UTF-8 \(bad byte at column 8\)"):
        load_conversations(path, tok)
    path.write_text(json.dumps({"prompt": "a", "chosen": "b"}) + "\n")
    with pytest.raises(MinigptError, match=r"bad\.jsonl:1: missing 'rejected'"):
        load_preferences(path, tok)
    path.write_text(json.dumps({"messages": [{"role": "robot", "content": "a"}]}) + "\n")
    with pytest.raises(MinigptError, match=r"bad\.jsonl:1: message 0 has role 'robot'"):
        load_conversations(path, tok)


def test_data_without_assistant_turns_is_refused(tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n" for _ in range(3)))
    with pytest.raises(MinigptError, match="no conversations with an assistant turn"):
        load_conversations(path, train_char("hi"))


def test_a_conversation_without_a_reply_is_left_out_and_an_empty_split_is_named(tmp_path, capsys):
    tok = train_char("hi there, ok")
    talk = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "ok"}]}
            for i in range(40)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in talk + [{"messages": [{"role": "user", "content": "hi"}]}]))
    rows = load_conversations(path, tok)
    assert len(rows.train) + len(rows.val) == 40 and all(any(m) for _, m in rows.train + rows.val)  # none silent
    assert "1 of 41 conversations have no assistant reply" in capsys.readouterr().out
    with pytest.raises(MinigptError, match="the val split has no preference pairs .1 in all.; give at least 2"):
        load_preferences([{"prompt": "hi", "chosen": "ok", "rejected": "no"}], tok)
    with pytest.raises(MinigptError, match="record 1: 'chosen' and 'rejected' are the same reply"):
        load_preferences([{"prompt": "hi", "chosen": "ok", "rejected": "no"}, {"prompt": "hi", "chosen": "ok",
                                                                             "rejected": "ok"}], tok)


def test_window_keeps_the_question_and_the_start_of_the_reply():
    # a 20-token prompt (ids 0-19) and a 10-token reply in 16: the prompt keeps its last 8 (half), the reply its
    # first 8
    ids, mask = list(range(30)), [0] * 20 + [1] * 10
    assert window(ids, mask, 15) == (list(range(12, 28)), [0] * 8 + [1] * 8)
    # a short prompt stays whole and the reply takes the rest (it used to push out all but the prompt's last token)
    ids, mask = list(range(30)), [0] * 5 + [1] * 25
    assert window(ids, mask, 10) == (list(range(11)), [0] * 5 + [1] * 6)
    # a long prompt with a short reply: the reply stays whole and the prompt keeps its end
    ids, mask = list(range(30)), [0] * 27 + [1] * 3
    assert window(ids, mask, 10) == (list(range(19, 30)), [0] * 8 + [1] * 3)
    assert window(ids[:11], mask[:11], 10) == (ids[:11], mask[:11])  # fits: unchanged


def test_both_replies_of_a_pair_follow_the_same_prompt_tokens():
    prompt, chosen, rejected = list(range(100, 112)), [1, 2], list(range(200, 210))
    rows = [((prompt + chosen, [0] * 12 + [1] * 2), (prompt + rejected, [0] * 12 + [1] * 10))]
    x, y = pair_collate(15, 0)(rows)  # 16 tokens: both prompts keep their last 8 (half), the chosen reply fits
    assert x[0, :8].tolist() == x[1, :8].tolist() == prompt[-8:]
    assert y[0, 7:9].tolist() == chosen and y[1, 7:15].tolist() == rejected[:8]


def test_row_batches_resume_exactly():
    rows = list(range(10))
    a = RowBatches(rows, 3, list, seed=1)
    for _ in range(4):
        next(a)  # crosses an epoch boundary
    state = a.state_dict()
    expected = [next(a) for _ in range(5)]
    b = RowBatches(rows, 3, list, seed=7)
    b.load_state_dict(state)
    assert [next(b) for _ in range(5)] == expected
    seen = [r for _ in range(10) for r in next(RowBatches(rows, 10, list, seed=2))]
    assert sorted(seen[:10]) == rows


# ---------------------------------------------------------------------------------------------- stages


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "reward", "dpo", "rl"])
def test_every_stage_trains_and_resumes_bit_exactly(stage, base_run, tmp_path, monkeypatch):
    straight = _stage(stage, base_run, tmp_path / "straight")
    assert not straight.interrupted and straight.step == 6
    info = json.loads((tmp_path / "straight" / "run.json").read_text())
    assert info["stage"] == stage and info["parent"].endswith("step_000010")
    # Interrupt the second run with a real SIGINT from inside its 4th batch draw; the trainer finishes that
    # step, saves and returns. Then resume and compare the final weights with the straight run.
    calls, original = {"n": 0}, RowBatches.__next__

    def next_then_interrupt(self):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self)

    monkeypatch.setattr(RowBatches, "__next__", next_then_interrupt)
    first = _stage(stage, base_run, tmp_path / "resumed")
    monkeypatch.setattr(RowBatches, "__next__", original)
    assert first.interrupted and 0 < first.step < 6
    second = _stage(stage, base_run, tmp_path / "resumed", resume=True)
    assert second.step == 6 and not second.interrupted
    a = load_file(str(resolve_step(tmp_path / "straight") / "model.safetensors"))
    b = load_file(str(resolve_step(tmp_path / "resumed") / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "resumed").config["stage"] == stage


def test_sft_loss_goes_down(base_run, tmp_path):
    result = _stage("sft", base_run, tmp_path / "sft", max_iters=30)
    rows = [json.loads(l) for l in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals[-1]["train/loss"] < evals[0]["train/loss"]
    assert result.metrics["val/loss"] == pytest.approx(evals[-1]["val/loss"], abs=1e-5)


def test_rl_picks_its_best_step_by_held_out_reward(base_run, tmp_path):
    from minigpt.checkpoint import resolve_step

    result = _stage("rl", base_run, tmp_path / "rl", eval_interval=2)
    rows = [json.loads(l) for l in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    rewards = {r["step"]: r["val/reward"] for r in rows if r["kind"] == "eval"}
    assert result.best_by == "val/reward" and result.best_val == max(rewards.values())  # not inf, as before
    top = max(rewards, key=lambda step: (rewards[step], -step))
    if top > 0:  # a best that beats the parent's own reward (step 0 is not saved) is the `best` pointer
        assert resolve_step(tmp_path / "rl" / "best").name == f"step_{top:06d}"
    else:  # nothing beat the parent: no step is called best
        assert not (tmp_path / "rl" / "best").exists()


def test_sft_dpo_and_reward_say_how_many_rows_the_context_cuts(base_run, tmp_path, capsys):
    long = "red " * 12  # over the 48-token block with its prompt
    for stage, record in (("sft", {"messages": [{"role": "user", "content": "what is red?"},
                                                {"role": "assistant", "content": long}]}),
                          ("dpo", {"prompt": "what is red?", "chosen": long, "rejected": "blue."}),
                          ("reward", {"prompt": "what is red?", "chosen": "red.", "rejected": long})):
        path = tmp_path / f"{stage}.jsonl"
        short = [json.loads(line) for line in base_run[stage].read_text().splitlines()]
        path.write_text("".join(json.dumps(r) + "\n" for r in short + [record]))
        _stage(stage, {**base_run, stage: path}, tmp_path / stage, max_iters=1)
        out = " ".join(capsys.readouterr().out.split())
        assert "; 1 longer than the 48-token context, cut to fit it (the end of the prompt" in out, stage


def test_rl_leaves_out_prompts_a_reply_would_push_out_of_the_context(base_run, tmp_path, capsys):
    """A prompt longer than the context less max_new_tokens would be sampled in a window the engine slides and
    scored in another: such prompts are left out with a note, and data with none that fit is refused."""
    from conftest import FACTS
    from minigpt.train import rl

    prompts = [{"prompt": f"what is {c}?", "reference": a, "split": "val" if i < 2 else "train"}
               for i, (c, a) in enumerate(FACTS)]
    prompts += [{"prompt": f"what is {c} " + "red " * 10 + "?", "reference": "red.", "split": "train"}
                for c, _ in FACTS[:3]]  # over 42 tokens: the block is 48, max_new_tokens 6
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in prompts))
    cfg = dict(train_config=_cfg(), rl_config=rl.RLConfig(group_size=2, max_new_tokens=6, eval_prompts=2))
    rl.rl(base_run["base"], str(path), out=tmp_path / "rl", **cfg)
    out = " ".join(capsys.readouterr().out.split())
    assert "3 of 11 prompts are longer than 42 tokens and are left out" in out
    train, val = map(int, re.search(r"rl (\d+) train / (\d+) val prompts", out).groups())
    assert (train, val) == (6, 2)
    path.write_text("".join(json.dumps(r) + "\n" for r in prompts[:2] + prompts[-3:]))
    with pytest.raises(MinigptError, match="no train prompt is 42 tokens or shorter, which a 6-token reply needs in "
                                           "the model's 48-token context; give shorter prompts or a smaller "
                                           "--max-new-tokens"):
        rl.rl(base_run["base"], str(path), out=tmp_path / "rl2", **cfg)


def _cfg():
    from minigpt.train import finetune

    return finetune.stage_train_config("rl", max_iters=2, batch_size=2, eval_interval=2, eval_iters=1,
                                       device="cpu", warmup_iters=1)


def nan_reward(prompt, completion, record) -> float:
    return float("nan")


def test_a_reward_spec_that_cannot_work_names_the_flag():
    from minigpt.train.rewards import load_reward

    wrong = load_reward("python:json:dumps")  # imports fine; called as reward(prompt, completion, record)
    with pytest.raises(MinigptError, match=r"--reward python:json:dumps failed \(TypeError.*f\(prompt_messages"):
        wrong([{"role": "user", "content": "hi"}], "hello", {})
    with pytest.raises(MinigptError, match="returned nan; a reward must be a finite number"):
        load_reward("python:test_finetune:nan_reward")([], "", {})
    assert load_reward("python:minigpt.train.rewards:task_reward")([], "a b", {"reference": "a b"}) == 1.0
    with pytest.raises(MinigptError, match="^--reward rm:no/such/run: no such checkpoint folder"):
        load_reward("rm:no/such/run")


def test_win_rate_counts_ties_half():
    from minigpt.train.objectives import win_rate

    assert win_rate(torch.tensor([1.0, 0.0, 2.0, 5.0]), torch.tensor([0.0, 0.0, 3.0, 1.0])) == pytest.approx(0.625)


def test_rpo_adds_the_chosen_replies_nll_per_token():
    """DPO with sft_weight a: at policy == reference the DPO part is ln 2, and the SFT part is the chosen rows'
    mean token NLL (computed here directly with cross-entropy), so the loss is ln 2 + a * NLL."""
    import copy
    import math

    import torch.nn.functional as F

    from minigpt.models.gpt import GPT, GPTConfig
    from minigpt.train.objectives import DPO

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))
    x = torch.randint(0, 32, (4, 8))
    y = torch.randint(0, 32, (4, 8))
    y[:, :3] = -1  # the prompt part is not scored
    objective = DPO(lambda *a: iter(()), copy.deepcopy(model), beta=0.1, seed=0, eval_iters=1, sft_weight=0.5)
    loss, metrics = objective.loss(model, (x, y))
    logits = model(x[:2])
    nll = F.cross_entropy(logits.reshape(-1, 32), y[:2].reshape(-1), ignore_index=-1)
    assert float(metrics["chosen_nll"]) == pytest.approx(nll.item(), rel=1e-5)
    assert loss.item() == pytest.approx(math.log(2) + 0.5 * nll.item(), rel=1e-5)


def test_cluster_bootstrap_counts_a_repeated_answer_once():
    """Answers that stand or fall together (a phrasing in 4 variants) are one piece of evidence: the cluster
    bootstrap of values repeated 4 times per cluster gives exactly the interval of the values alone, while the
    prompt-by-prompt bootstrap narrows it about 2x (sqrt 4); and every held-out identity variant of a phrasing,
    every question about one held-out function, and a how-to task's three questions, share a cluster."""
    import numpy as np

    from minigpt.runs.heldout import cluster_of, heldout_prompts, mean_ci, paired_ci
    from minigpt.text import chat_tasks

    x = np.random.default_rng(1).random(40).round(3)
    alone = mean_ci(x)
    repeated = np.repeat(x, 4)
    assert mean_ci(repeated, np.repeat(np.arange(40), 4)) == pytest.approx(alone)
    narrow = mean_ci(repeated)
    assert (narrow[2] - narrow[1]) < 0.7 * (alone[2] - alone[1])
    assert paired_ci(np.zeros(160), repeated, np.repeat(np.arange(40), 4)) == pytest.approx(alone)

    prompts = heldout_prompts(chat_tasks.Facts(params=1_840_000))
    by = {}
    for p in prompts:
        by.setdefault(cluster_of(p), []).append(p)
    hand = [g for g in by.values() if g[0]["family"] == "identity" and not g[0].get("blind")]
    assert len(hand) == 50 and sum(map(len, hand)) == 149 + 12  # 12 thanks and goodbyes, asked as written
    assert all(len({p["prompt"][-1]["content"] for p in g}) == len(g) for g in hand)  # the variants
    blind = [g for g in by.values() if g[0].get("blind") and g[0]["family"] != "howto"]
    assert len(blind) > 38 and all(len(g) == 1 for g in blind)  # each blind-written question its own cluster
    howto = [g for g in by.values() if g[0]["family"] == "howto"]  # one answer to a task's questions
    assert len(howto) == 135 and all(len({p["task"] for p in g}) == 1 and 2 <= len(g) <= 3 for g in howto)
    functions = [g for g in by.values() if "entry" in g[0]]
    by_entry = {e.name: e for e in chat_tasks.task_entries()}
    for g in functions:  # recall, context, follow-up, and details where its arguments or return value are known
        e = by_entry[g[0]["entry"]]
        details = chat_tasks.knows_arguments(e) or chat_tasks.returns_answer(e) is not None
        assert sorted(p["family"] for p in g) == sorted(["recall", "context", "followup"] + ["details"] * details)
    # every held-out function is asked, not a sample of them (the intervals narrow with the clusters)
    assert len(functions) == sum(chat_tasks.task_split(e) == "val" for e in chat_tasks.task_entries())


def test_reading_records_are_answered_from_the_paste_alone():
    """The reading questions paste a training function with its docstring from the second sentence on: the answer
    is the first sentence of what is pasted, no other record answers with it (so it cannot be recalled by the
    function's name), and no held-out function is pasted."""
    from minigpt.text import chat_tasks
    from minigpt.text.corpora.pydocs import first_sentence

    conversations = chat_tasks.conversations(chat_tasks.Facts(params=1_840_000))
    reading = [r for r in conversations if r.get("ask") == "reads"]
    others = {r["messages"][-1]["content"] for r in conversations if r.get("ask") != "reads"}
    entries = {e.name: e for e in chat_tasks.task_entries()}
    assert len(reading) > 1000 and {r["split"] for r in reading} == {"train"}
    for r in reading:
        e, answer = entries[r["entry"]], r["messages"][-1]["content"]
        assert chat_tasks.task_split(e) == "train"
        doc = r["messages"][0]["content"].split('"""')[1]
        assert answer == first_sentence(doc) != e.summary and answer not in others
        assert " ".join(e.doc.split()).startswith(f"{e.summary} {answer}")


def test_functions_are_asked_by_the_names_people_use_with_their_markup_gone():
    """json.dumps (reST markup in its first sentence), os.path.join (posixpath.join in the source), random.randint
    (a bound method of random's module-level instance) and functools.wraps (no full stop) were in no chat record."""
    import dataclasses

    from minigpt.text import chat_tasks
    from minigpt.text.corpora.pydocs import Entry

    e = Entry("m", "f", "function", "(x)", "Serialize ``obj`` to :func:`~json.dumps` with `name' and `text`.\n\nMore.")
    assert chat_tasks.as_asked(e).summary == "Serialize obj to json.dumps with name and text."
    assert chat_tasks.as_asked(dataclasses.replace(e, doc="Class decorator that adds methods\n\nMore.")).doc == \
        "Class decorator that adds methods.\n\nMore."
    for doc in ("Popen(args) -> Popen object", "Locate the end given by index,", "Ask. Then answer"):
        assert chat_tasks.as_asked(dataclasses.replace(e, doc=doc)).doc == doc
    moved = chat_tasks.as_asked(dataclasses.replace(e, module="random", qualname="Random.randint",
                                                    alias="random.randint"))
    assert (moved.module, moved.qualname, moved.name, moved.alias) == ("random", "randint", "random.randint", "")
    by_name = {e.name: e for e in chat_tasks.task_entries()}
    assert by_name["json.dumps"].summary == "Serialize obj to a JSON formatted str."
    assert by_name["functools.wraps"].summary.endswith("to a wrapper function.")
    assert by_name["os.path.join"].module == "os.path" and "random.randint" in by_name
    assert not {"posixpath.join", "random.Random.randint"} & set(by_name)
    assert not [n for n, e in by_name.items() if "`" in e.summary or not chat_tasks.clean_sentence(e.summary)]
    assert {"math.sqrt", "time.time", "list.append"} <= set(by_name)  # written in C
    for name in ("len", "sorted", "str.split"):  # the hash would hold out all three: builtins never are
        assert chat_tasks.task_split(by_name[name]) == "train", name
    assert by_name["len"].summary == "Return the number of items in a container."
    assert {"len", "str.split"} <= {r["entry"] for r in chat_tasks.conversations() if r["family"] == "recall"}


def test_arguments_and_return_values_are_asked_from_memory_in_one_question():
    """'What arguments does sorted take?' with no function pasted and no earlier turn: until the `details` family
    the model had met arguments only after a paste or a first question, and answered such questions with garbage.
    Each function gets one such question in SFT (arguments, or what it returns where its docstring says), RL the
    other, and each held-out function one in the report card; the answers are the other families' own."""
    from collections import Counter

    from minigpt.text import chat_tasks

    records = chat_tasks.conversations(chat_tasks.Facts(params=1_840_000))
    details = [r for r in records if r["family"] == "details"]
    by_entry = {e.name: e for e in chat_tasks.task_entries()}
    askable = [e for e in by_entry.values() if chat_tasks.knows_arguments(e) or chat_tasks.returns_answer(e)]
    assert len(details) == len(askable) and len({r["entry"] for r in details}) == len(details)
    held_out = sum(chat_tasks.task_split(e) == "val" for e in askable)
    assert Counter(r["split"] for r in details)["val"] == held_out
    for r in details:
        e, (question, reply) = by_entry[r["entry"]], r["messages"]
        assert e.name in question["content"] and "```" not in question["content"]
        answer = chat_tasks.arguments_answer(e) if r["ask"] == "args" else chat_tasks.returns_answer(e)
        assert reply["content"] == answer
    sorted_q = next(r for r in details if r["entry"] == "sorted")
    rl = [p for p in chat_tasks.rl_prompts() if p["family"] == "details" and p["entry"] == "sorted"]
    assert [p["ask"] for p in rl] == [{"args": "returns", "returns": "args"}[sorted_q["ask"]]]
    args = sorted_q if sorted_q["ask"] == "args" else rl[0]
    assert (args["messages"][-1]["content"] if "messages" in args else args["reference"]) == \
        "It takes `iterable`, `key` and `reverse`."
    assert Counter(r["ask"] for r in details)["returns"] > len(details) / 10  # both asks occur


def test_no_record_says_what_arguments_an_unknown_signature_takes():
    """A class with no signature of its own takes its base class's arguments (or, written in C, any): SFT taught
    "It takes no arguments." for 286 of them until they were never asked; their follow-up asks the module.
    Private parameters a caller leaves to their default are not listed; required ones are."""
    from minigpt.text import chat_tasks

    by_entry = {e.name: e for e in chat_tasks.task_entries()}
    unknown = {n for n, e in by_entry.items() if not chat_tasks.knows_arguments(e)}
    assert "argparse.RawTextHelpFormatter" in unknown and len(unknown) > 100
    assert all(by_entry[n].kind == "class" and not by_entry[n].signature for n in unknown)
    facts = chat_tasks.Facts(params=1_840_000)
    records = chat_tasks.conversations(facts) + chat_tasks.rl_conversations(facts)
    assert records and not [r for r in records if r.get("entry") in unknown and r.get("ask") == "args"]
    followups = [r for r in records if r["family"] == "followup" and r["entry"] in unknown]
    assert followups and {r["ask"] for r in followups} == {"module"}
    assert {r["ask"] for r in records if r["family"] == "followup"} == {"args", "module"}
    assert chat_tasks.arguments(by_entry["copy.deepcopy"]) == ["x", "memo"]  # (x, memo=None, _nil=[])
    assert chat_tasks.arguments(by_entry["hashlib.file_digest"]) == ["fileobj", "digest"]  # *, _bufsize=2 ** 18
    assert chat_tasks.arguments(by_entry["email.message.Message.add_header"]) == ["_name", "_value", "**_params"]
    assert chat_tasks.arguments_answer(by_entry["asyncio.locks.Event"]) == "It takes no arguments."  # "()"


def test_functions_are_asked_in_every_phrasing_in_training_and_held_out():
    """"What is X?", "Tell me about X.", "Can you explain X?": trained on the first four phrasings alone, sr37's
    final model answered "Can you explain X?" with one of its identity answers for 39% of the functions it knew.
    Every phrasing now trains and is held out, each function's SFT phrasings are distinct, and RL's is a third."""
    from collections import Counter

    from minigpt.text import chat_tasks

    facts = chat_tasks.Facts(params=1_840_000)
    by_entry = {e.name: e for e in chat_tasks.task_entries()}

    def phrasing(entry: str, text: str) -> int:
        """Which of the QUESTIONS `text` asks, however the name is written and whether typed casually."""
        e, plain = by_entry[entry], text.lower().rstrip("?.")
        return next(i for i, q in enumerate(chat_tasks.QUESTIONS) for form in chat_tasks.NAME_FORMS
                    if q.format(name=form.format(e.name), kind=chat_tasks._kind(e)).lower().rstrip("?.") == plain)

    recall = [r for r in chat_tasks.conversations(facts) if r["family"] == "recall"]
    for split in ("train", "val"):
        used = Counter(phrasing(r["entry"], r["messages"][0]["content"]) for r in recall if r["split"] == split)
        assert set(used) == set(range(len(chat_tasks.QUESTIONS))), split
        assert min(used.values()) > sum(used.values()) / len(chat_tasks.QUESTIONS) / 2, split  # none rare
    per_entry: dict[str, list[int]] = {}
    for r in recall:
        if r["split"] == "train":
            per_entry.setdefault(r["entry"], []).append(phrasing(r["entry"], r["messages"][0]["content"]))
    assert all(len(set(v)) == len(v) == 2 for v in per_entry.values())
    rl = [p for p in chat_tasks.rl_prompts(facts) if p["family"] == "recall" and p["split"] == "train"]
    assert rl and all(phrasing(p["entry"], p["prompt"][0]["content"]) not in per_entry[p["entry"]] for p in rl)
