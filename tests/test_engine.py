"""The engine: cache == full forward, fast path == reference path, seeds, batched samples, stop conditions,
streaming of multi-token characters, sliding windows, every model kind."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from minigpt.common import MinigptError
from minigpt.infer.engine import Engine, TextStream
from minigpt.models import build_model, config_from_dict, kinds
from minigpt.models.base import LanguageModel
from minigpt.models.gpt import GPT, GPTConfig
from minigpt.infer.sampling import SamplingConfig
from minigpt.infer.utf8 import REJECT, run
from minigpt.text.tokenizer import Tokenizer, train_char

TEXT = "the quick brown fox jumps over the lazy dog. THE END!#\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return train_char(TEXT)


def perturb_(model: nn.Module, seed: int = 3, scale: float = 0.3) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def gpt(tok, block_size: int = 32, seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return perturb_(GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                                  **kw)))


def model_of(kind: str, tok, block_size: int = 32):
    if kind == "gpt":
        return gpt(tok, block_size)
    small = {"rnn": dict(n_hidden=32, n_embd=16), "lstm": dict(n_hidden=32, n_embd=16),
             "gru": dict(n_hidden=32, n_embd=16), "mlp": dict(context=4, n_hidden=32),
             "cnn": dict(n_embd=16, n_layer=3), "bigram": {}}.get(kind, {})
    torch.manual_seed(0)
    return perturb_(build_model(config_from_dict({"kind": kind, "vocab_size": tok.vocab_size,
                                                  "block_size": block_size, **small})), scale=0.1)


def prompt_of(tok, text: str = "the fox") -> list[int]:
    return [tok.bos_id] + tok.encode(text)


# ---------------------------------------------------------------------------------------------- a scripted model


@dataclass
class Position:
    """A DecodeState that only counts tokens (unbounded, like a recurrent state)."""

    pos: int = 0
    bounded = False

    @property
    def max_len(self) -> int:
        return sys.maxsize

    def repeat(self, n: int) -> "Position":
        return Position(self.pos)

    def select(self, rows) -> "Position":
        return Position(self.pos)


class Scripted(LanguageModel):
    """Logits that force a fixed continuation: after the prompt, position k predicts script[k]."""

    def __init__(self, vocab_size: int, prompt_len: int, script: list[int], cached: bool = True):
        super().__init__()
        self.config = SimpleNamespace(kind="scripted", vocab_size=vocab_size, block_size=4096)
        self.weight = nn.Parameter(torch.zeros(1))
        self.prompt_len, self.script, self.cached = prompt_len, script, cached

    def new_cache(self, batch, max_len, device, dtype):
        return Position() if self.cached else None

    def features(self, idx, *, cache=None, attention=None):
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if cache is not None:
            cache.pos += T
        k = (torch.arange(start, start + T) + 1 - self.prompt_len).clamp(0, len(self.script) - 1)
        out = torch.full((B, T, self.config.vocab_size), -10.0)
        out[:, torch.arange(T), torch.tensor(self.script)[k]] = 10.0
        return out

    def logits(self, h):
        return h


def scripted_engine(tokenizer, prompt: list[int], script: list[int], cached: bool = True) -> Engine:
    return Engine(Scripted(tokenizer.vocab_size, len(prompt), script, cached), tokenizer)


# ---------------------------------------------------------------------------------------------- cache and paths


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_cached_logits_equal_full_forward_at_every_position(tok, positions):
    model = gpt(tok, block_size=24, positions=positions)
    idx = torch.randint(0, tok.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    full = model(idx)
    with torch.inference_mode():
        cache = model.new_cache(2, 24, "cpu", torch.float32)
        parts = [model(idx[:, :7], cache=cache)]  # a prefill, then one token at a time
        parts += [model(idx[:, t:t + 1], cache=cache) for t in range(7, 24)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def naive_greedy(model, prompt: list[int], n: int, window: int | None) -> list[int]:
    """The textbook loop: a full forward over the (cropped) sequence for every token, argmax of the last."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ctx = ids[-window:] if window else ids
            ids.append(int(model(torch.tensor([ctx]))[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("kind, window", [("gpt", None), ("lstm", None), ("gru", None), ("mlp", 32),
                                          ("cnn", 32), ("bigram", 32)])
def test_greedy_equals_a_naive_full_recompute_loop(tok, kind, window):
    model = model_of(kind, tok, block_size=32)
    prompt = prompt_of(tok)
    n = 24 if kind == "gpt" else 60  # GPT inside its block; the others run past it
    expected = naive_greedy(model, prompt, n, window)
    engine = Engine(model, tok)
    for use_cache in (True, False):
        got = engine.generate(prompt, temperature=0, max_new_tokens=n, stop_ids=(), use_cache=use_cache)
        assert got.ids == expected, (kind, use_cache)
        assert got.finish_reason == "length" and got.seed is None


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_fast_path_equals_reference_path_through_window_slides(tok, positions):
    engine = Engine(gpt(tok, block_size=16, positions=positions), tok)
    prompt = prompt_of(tok, "the lazy dog")
    for cfg in (SamplingConfig(temperature=0, max_new_tokens=70),
                SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, seed=5, max_new_tokens=70, repetition_penalty=1.3)):
        fast = engine.generate(prompt, cfg, stop_ids=())
        slow = engine.generate(prompt, cfg, stop_ids=(), use_cache=False)
        assert fast.ids == slow.ids and len(fast.ids) == 70
        torch.testing.assert_close(torch.tensor(fast.logprobs), torch.tensor(slow.logprobs), atol=1e-4, rtol=0)
        assert fast.slid and slow.slid


def test_sliding_window_is_flagged_from_the_token_that_needs_it(tok):
    engine = Engine(gpt(tok, block_size=16, positions="learned"), tok)
    prompt = prompt_of(tok, "fox")  # 4 tokens: tokens 1..12 fit in 16, the 13th needs a slide
    events = list(engine.stream(prompt, temperature=0, max_new_tokens=40, stop_ids=()))
    slid = [ev.slid for ev in events]
    assert slid == [False] * 13 + [True] * 27
    assert engine.slide_keep == 12
    long_prompt = prompt_of(tok, TEXT)  # longer than the block: slid from the first token
    gen = engine.generate(long_prompt, temperature=0, max_new_tokens=5, stop_ids=())
    assert gen.slid and len(gen.ids) == 5
    rnn = Engine(model_of("gru", tok, block_size=16), tok)  # a recurrent state never slides
    assert rnn.context_limit is None and not rnn.generate(long_prompt, max_new_tokens=30, stop_ids=()).slid


def test_seeds_reproduce_and_differ(tok):
    engine = Engine(gpt(tok), tok)
    prompt = prompt_of(tok)
    a = engine.generate(prompt, temperature=1.0, seed=1, max_new_tokens=20, stop_ids=())
    b = engine.generate(prompt, temperature=1.0, seed=1, max_new_tokens=20, stop_ids=())
    c = engine.generate(prompt, temperature=1.0, seed=2, max_new_tokens=20, stop_ids=())
    assert a.ids == b.ids and a.text == b.text and a.ids != c.ids and a.seed == 1
    r = engine.generate(prompt, temperature=1.0, max_new_tokens=20, stop_ids=())  # a random seed, reported
    assert r.seed is not None and engine.generate(prompt, temperature=1.0, seed=r.seed, max_new_tokens=20,
                                                  stop_ids=()).ids == r.ids


@pytest.mark.parametrize("kind", ["gpt", "lstm", "mlp"])
def test_samples_sharing_a_prefill_equal_separate_runs(tok, kind):
    """Sample i of a batch equals a lone run seeded seed + i; rows that stop early leave the batch."""
    engine = Engine(model_of(kind, tok, block_size=32), tok)
    prompt = prompt_of(tok)
    cfg = SamplingConfig(temperature=1.5, top_k=0, top_p=1.0, seed=10, max_new_tokens=40)
    stop = {tok.specials["<|end|>"], tok.encode("!")[0], tok.encode(".")[0]}
    many = engine.generate_many(prompt, 6, cfg, stop_ids=stop)
    lengths = set()
    for i, g in enumerate(many):
        alone = engine.generate(prompt, cfg.with_overrides(seed=10 + i), stop_ids=stop)
        assert (g.ids, g.text, g.finish_reason, g.seed) == (alone.ids, alone.text, alone.finish_reason, 10 + i)
        torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(alone.logprobs), atol=1e-4, rtol=0)
        lengths.add(len(g.ids))
    assert len(lengths) > 1, "some samples should stop earlier than others"
    assert many[0].timings.samples == 6 and many[0].timings.tokens == sum(len(g.ids) for g in many)


@pytest.mark.parametrize("kind, positions", [("gpt", "rope"), ("gpt", "learned"), ("lstm", None), ("mlp", None)])
def test_a_batch_of_prompts_equals_each_prompt_alone(tok, kind, positions):
    """Prompts of different lengths decoded as one batch (left-padded in the KV cache; one after another for
    models without one) give each prompt's lone samples token for token, through window slides and with the
    repetition penalty on, and sample j*n + i is seeded seed + j*n + i."""
    model = gpt(tok, 24, positions=positions) if kind == "gpt" else model_of(kind, tok, block_size=24)
    engine = Engine(model, tok)
    prompts = [prompt_of(tok, t) for t in ("the fox", "a", "the quick brown fox jumps over")]
    stop = {tok.specials["<|end|>"], tok.encode("!")[0]}
    cfg = SamplingConfig(temperature=1.2, top_k=8, top_p=0.9, repetition_penalty=1.3, seed=5, max_new_tokens=30)
    for n, config in ((2, cfg), (1, cfg.with_overrides(temperature=0.0))):
        batch = engine.generate_batch(prompts, config, n=n, stop_ids=stop)
        assert len(batch) == len(prompts) * n
        for j, prompt in enumerate(prompts):
            alone = engine.generate_many(prompt, n, config.with_overrides(seed=5 + j * n), stop_ids=stop)
            for i, a in enumerate(alone):
                g = batch[j * n + i]
                assert (g.ids, g.text, g.finish_reason, g.slid, g.prompt_ids) == (a.ids, a.text, a.finish_reason,
                                                                                  a.slid, prompt)
                torch.testing.assert_close(torch.tensor(g.logprobs), torch.tensor(a.logprobs), atol=1e-4, rtol=0)
    assert any(g.slid for g in batch) == (kind != "lstm"), "the long prompt slides a bounded window only"


def test_stream_interleaves_samples_and_marks_each_end(tok):
    engine = Engine(gpt(tok), tok)
    events = list(engine.stream(prompt_of(tok), n=3, seed=0, max_new_tokens=5, stop_ids=()))
    assert [ev.sample for ev in events] == [0, 1, 2] * 5
    assert [ev.index for ev in events] == [i for i in range(5) for _ in range(3)]
    assert [ev.finish_reason for ev in events] == [None] * 12 + ["length"] * 3


# ---------------------------------------------------------------------------------------------- stops and text


def test_stop_token_ends_the_sample_and_is_the_last_id(tok):
    prompt = prompt_of(tok)
    script = tok.encode("over") + [tok.specials["<|end|>"]] + tok.encode("the dog")
    gen = scripted_engine(tok, prompt, script).generate(prompt, temperature=0)
    assert gen.text == "over" and gen.finish_reason == "stop" and gen.ids == script[:5]
    gen = scripted_engine(tok, prompt, script).generate(prompt, temperature=0, stop_ids=())
    assert gen.text.startswith("over<|end|>the dog")  # with no stop tokens a special token is ordinary text
    gen = scripted_engine(tok, prompt, script).generate(prompt, temperature=0, max_new_tokens=3)
    assert gen.text == "ove" and gen.finish_reason == "length"


@pytest.mark.parametrize("cached", [True, False])
def test_stop_strings_are_cut_exactly(tok, cached):
    prompt = prompt_of(tok)
    text = "the fox#jumps##over## the dog"
    engine = scripted_engine(tok, prompt, tok.encode(text), cached)
    events = list(engine.stream(prompt, temperature=0, stop=("##", "dog")))
    assert "".join(ev.text for ev in events) == "the fox#jumps"
    assert events[-1].finish_reason == "stop" and len(events) == len("the fox#jumps##")
    # held back while undecided: the '#' after "fox" is released only once the next token rules out "##"
    texts = [ev.text for ev in events]
    assert texts[7] == "" and texts[8] == "#j"
    gen = engine.generate(prompt, temperature=0, stop=("over##", "o"))  # the earliest occurrence wins
    assert gen.text == "the f"
    gen = engine.generate(prompt, temperature=0, max_new_tokens=8, stop=("#x",))  # undecided at the end: released
    assert gen.text == "the fox#" and gen.finish_reason == "length"


def test_text_stream_holds_back_only_possible_stop_prefixes(tok):
    s = TextStream(tok.stream_decoder(), ("end!",))
    out = [s.push(i) for i in tok.encode("the en")]
    assert "".join(t for t, _ in out) == "the " and s.pending == "en"
    assert s.push(tok.encode("o")[0]) == ("eno", False)
    assert s.finish() == ""


def cjk_tokenizer() -> Tokenizer:
    """Bytes plus tokens that split CJK characters and an emoji mid-character (one even spans two characters)."""
    extra = [b"\xe4\xbd", b"\xa0\xe5", b"\xbd\xe4\xb8", b"\xe7\x95\x8c", b"\xf0\x9f", b"\x99\x82"]
    return Tokenizer([bytes([i]) for i in range(256)] + extra)


def test_streaming_multi_token_characters_yields_only_complete_characters():
    tok = cjk_tokenizer()
    text = "你好世界🙂!"
    ids = [tok.ranks[t] for t in [b"\xe4\xbd", b"\xa0\xe5", b"\xa5", b"\xbd\xe4\xb8", b"\x96", b"\xe7\x95\x8c",
                                  b"\xf0\x9f", b"\x99\x82", b"!"]]
    assert tok.decode(ids) == text
    prompt = [tok.bos_id]
    for cached in (True, False):
        events = list(scripted_engine(tok, prompt, ids + [tok.specials["<|end|>"]], cached).stream(prompt, temperature=0))
        assert [ev.text for ev in events] == ["", "你", "", "好", "世", "界", "", "🙂", "!", ""]
        assert all("\ufffd" not in ev.text for ev in events)
        assert events[-1].finish_reason == "stop"


def test_the_utf8_guard_keeps_samples_well_formed_with_the_models_own_logprobs():
    tok = cjk_tokenizer()
    model = gpt(tok)
    prompt = [tok.bos_id] + tok.encode("你")
    settings = dict(temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=12, seed=1)
    raw = Engine(model, tok).generate_many(prompt, 32, valid_utf8=False, **settings)
    guarded = Engine(model, tok).generate_many(prompt, 32, **settings)

    def state(g, prompt_ids=()) -> int:  # UTF-8's automaton after the text's bytes; REJECT: a broken character
        return run(0, tok.decode_bytes([i for i in [*prompt_ids, *g.ids] if not tok.is_special(i)]))

    assert sum(state(g) == REJECT for g in raw) > 16  # the model alone breaks characters in most samples
    assert all(state(g) != REJECT and "\ufffd" not in g.text for g in guarded)
    assert all(state(g) == 0 for g in guarded if g.finish_reason == "stop")
    inside = [tok.bos_id, tok.ranks[b"\xe4\xbd"]]  # a prompt that ends inside 你: each row keeps its own state
    batch = Engine(model, tok).generate_batch([inside, prompt], n=3, **settings)
    assert all(state(g, g.prompt_ids) != REJECT for g in batch)
    assert all(0x80 <= tok.token_bytes(g.ids[0])[0] < 0xC0 for g in batch[:3])  # each finishes 你 first
    with torch.inference_mode():
        first = model(torch.tensor([prompt]))[0, -1].log_softmax(-1)
    assert [g.logprobs[0] for g in guarded] == pytest.approx([first[g.ids[0]].item() for g in guarded], abs=1e-5)


def test_the_length_limit_never_cuts_a_character_or_calls_itself_a_stop():
    tok = cjk_tokenizer()
    lead, end = tok.ranks[b"\xe4\xbd"], tok.specials["<|end|>"]  # the model wants a character, then to stop
    engine = scripted_engine(tok, [tok.bos_id], [lead, tok.ranks[b"\xa0"], end])
    whole = engine.generate([tok.bos_id], temperature=0, max_new_tokens=3)
    assert (whole.text, whole.finish_reason) == ("你", "stop")
    cut = engine.generate([tok.bos_id], temperature=0, max_new_tokens=1)  # the limit falls inside the character
    assert (cut.ids, cut.text, cut.finish_reason) == ([lead], "", "length")  # its bytes left out, not U+FFFD
    assert engine.generate([tok.bos_id], temperature=0, max_new_tokens=1, valid_utf8=False).text == "\ufffd"
    # one byte a token (the default tokenizer's Chinese): "好你" then the end; every limit inside 你 ends on 好
    tok = Tokenizer([bytes([i]) for i in range(256)])
    script = [tok.ranks[bytes([b])] for b in "好你".encode()] + [tok.specials["<|end|>"]]
    engine = scripted_engine(tok, [tok.bos_id], script)
    for limit in (4, 5):
        g = engine.generate([tok.bos_id], temperature=0, max_new_tokens=limit)
        assert (g.ids, g.text, g.finish_reason) == (script[:limit], "好", "length"), limit  # the model's own tokens
        streamed = list(engine.stream([tok.bos_id], temperature=0, max_new_tokens=limit))
        assert "".join(ev.text for ev in streamed) == "好" and streamed[-1].finish_reason == "length"
        assert engine.generate([tok.bos_id], temperature=0, max_new_tokens=limit, valid_utf8=False).text == "好\ufffd"
    assert engine.generate([tok.bos_id], temperature=0, max_new_tokens=6).finish_reason == "length"
    assert engine.generate([tok.bos_id], temperature=0, max_new_tokens=7).finish_reason == "stop"


def test_stop_string_in_chinese_text():
    tok = cjk_tokenizer()
    ids = tok.encode("你好。世界")
    gen = scripted_engine(tok, [tok.bos_id], ids).generate([tok.bos_id], temperature=0, stop=("。",))
    assert gen.text == "你好" and gen.finish_reason == "stop"


# ---------------------------------------------------------------------------------------------- the rest


def test_attention_capture(tok):
    engine = Engine(gpt(tok), tok)
    prompt = prompt_of(tok)
    events = list(engine.stream(prompt, temperature=0, max_new_tokens=4, stop_ids=(), capture_attention=True))
    slow = list(engine.stream(prompt, temperature=0, max_new_tokens=4, stop_ids=(), capture_attention=True,
                              use_cache=False))
    for step, (ev, ref) in enumerate(zip(events, slow)):
        assert len(ev.attention) == 2 and ev.attention[0].shape == (2, len(prompt) + step)
        torch.testing.assert_close(ev.attention[0].sum(-1), torch.ones(2))
        for a, b in zip(ev.attention, ref.attention):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert Engine(model_of("lstm", tok), tok).generate(prompt, max_new_tokens=3, capture_attention=True).attention is None


@pytest.mark.parametrize("kind", kinds())
def test_every_kind_samples_past_its_block(tok, kind):
    engine = Engine(model_of(kind, tok, block_size=16), tok)
    gen = engine.generate(prompt_of(tok), max_new_tokens=40, seed=0, stop_ids=())
    assert len(gen.ids) == 40 and isinstance(gen.text, str) and all(lp <= 0 for lp in gen.logprobs)
    assert gen.timings.tokens == 40 and gen.timings.tokens_per_s > 0


def test_pretrain_sample_call_and_training_mode_restored(tok):
    model = gpt(tok).train()
    text = Engine(model, tok).generate([tok.bos_id] + tok.encode("the"), max_new_tokens=64, temperature=0.8,
                                       top_k=50, seed=0).text
    assert isinstance(text, str) and model.training
    stream = Engine(model, tok).stream([tok.bos_id], max_new_tokens=50, stop_ids=())
    next(stream)
    assert not model.training  # eval while decoding (no dropout) ...
    stream.close()
    assert model.training  # ... and back when the stream ends, even early


def test_padded_vocabulary_never_yields_ids_beyond_the_tokenizer(tok):
    torch.manual_seed(0)
    model = perturb_(GPT(GPTConfig(vocab_size=tok.vocab_size + 40, block_size=32, n_layer=1, n_head=2, n_embd=16)))
    with torch.no_grad():
        model.lm_head.weight[tok.vocab_size:] = 0
        model.lm_head.weight[tok.vocab_size:, 0] = 100.0  # padding rows would win by far
    gen = Engine(model, tok).generate([tok.bos_id], temperature=1.0, max_new_tokens=30, seed=0, stop_ids=())
    assert max(gen.ids) < tok.vocab_size


def test_bad_inputs_are_one_line_errors(tok):
    engine = Engine(gpt(tok), tok)
    with pytest.raises(MinigptError, match="empty"):
        engine.generate([])
    with pytest.raises(MinigptError, match="outside the vocabulary"):
        engine.generate([tok.vocab_size + 5])
    with pytest.raises(MinigptError, match="--top-p"):
        engine.generate([tok.bos_id], top_p=0)
    with pytest.raises(MinigptError, match="unknown sampling option"):
        engine.generate([tok.bos_id], temprature=0)
    with pytest.raises(MinigptError, match="n must be"):
        engine.generate_many([tok.bos_id], 0)
