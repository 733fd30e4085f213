"""The inference engine: token ids in, a stream of sampled tokens out, for every model kind.

One path serves `minigpt sample`, `chat`, `inspect`, `serve`, the report cards and RL rollouts (DESIGN section 3).
`Engine.stream` prefills the prompt once (one forward over it, logits of the last position only), then decodes one
token per step, passing the model's explicit decoding state (`models.base.DecodeState`) back in: a preallocated KV
cache for the GPT (sized
min(prompt + max_new_tokens, block_size)), the hidden state for RNN/LSTM/GRU. n samples share one prefill:
the state is repeated n times and the rows decode as one batch; a row that finishes is dropped from the batch.
Models without a state (MLP, CNN, bigram: `new_cache` returns None) recompute over their last block_size
tokens each step, which for their small windows is cheap.

`use_cache=False` is nanoGPT's method, kept as the reference and for teaching: a full forward over the whole
window for every new token. Its windows are the fast path's, so tests hold the two equal token for token.
scripts/bench_generate.py, tiny GPT (4x4x128, block 512, vocab 4096), 500 tokens on 2 shared CPU cores (load
average ~5): 264 tokens/s with the cache, flat at 1.7-1.9 ms per token from token 50 to 500, against 7.0 tokens/s
recomputing (17 ms per token at token 50, 207 ms at 500); 38x. The recompute side suffers more from a busy
machine (its forwards use both threads), so expect a smaller but still large ratio on an idle one.

Each event carries the text that became complete with its token: one UTF-8 stream decoder per sample, so a
Chinese character or an emoji split over several byte-level tokens is emitted whole, once; and the UTF-8 guard
(infer/utf8.py, one automaton state per row) keeps the sampled bytes well-formed, so none is broken either.
Stop conditions: stop tokens (default `<|end|>` and `<|bos|>`), stop strings (cut exactly: text that could still
begin a stop string is held back until it is decided; the stop string and anything after it never reach the
caller) and `max_new_tokens`.

Context overflow is a policy, never a crash. A GPT attends to at most block_size tokens (learned positions stop
there, and rope models were trained on it): when the next token would not fit, the engine slides the window,
re-prefilling the last 3/4 block into a fresh cache (one prefill per quarter block of new tokens, not a full
forward per token), and flags the events and the Generation (`slid`). Windowed baselines keep their last
block_size tokens; recurrent models carry their state and never slide.
"""
from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from ..common import MinigptError
from .sampling import SamplingConfig, make_generators, nth_seed, sample_next
from .utf8 import guard_for

DEFAULT_STOP_TOKENS = ("<|end|>", "<|bos|>")
SLIDE_KEEP = 0.75  # after a slide the model sees the last 3/4 of its block
# A CPU step doing less than this many (token x parameter) multiply-adds runs on one thread: a decode step of
# the tiny GPT is ~1.8M, and its 40-odd small ops cost less than waking OpenMP's threads for each; with two
# threads the idle one also spins after every op, doubling the CPU time for nothing. Measured on 2 busy cores
# (load ~6): the model step 1.75 ms on one thread vs 92 ms on two; the whole decode step 2.5 ms of wall clock
# either way when the machine is quiet, but 2.7 ms of CPU time instead of 5.0.
SERIAL_WORK = 1 << 23


@dataclass
class TokenEvent:
    """One sampled token of one sample."""

    sample: int  # which of the n samples (0 .. n-1)
    index: int  # position of the token in this sample's output (0-based)
    token_id: int
    text: str  # the text that became complete with this token ("" while a character or a stop string is pending)
    logprob: float  # log p(token) under the model's own distribution (raw logits, before any processor)
    attention: list[torch.Tensor] | None = None  # per layer (n_head, T_k): the new token's query row; GPT only
    slid: bool = False  # the model no longer sees the start of the text (its window slid)
    finish_reason: str | None = None  # on the sample's last event: "stop" (token or string) or "length"


@dataclass
class Timings:
    ttft_s: float  # from the call to the first token: prefill + first draw
    total_s: float
    tokens: int  # generated tokens, all samples together
    samples: int = 1

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after each sample's first, over the time after the first token."""
        decode = self.total_s - self.ttft_s
        if self.tokens <= self.samples or decode <= 0:
            return self.tokens / self.total_s if self.total_s > 0 else 0.0
        return (self.tokens - self.samples) / decode


@dataclass
class Generation:
    ids: list[int]  # every sampled token in order; a stop token that ended the sample is the last one
    text: str  # what the caller sees: complete characters, stop strings and stop tokens excluded
    logprobs: list[float]  # aligned with ids
    finish_reason: str  # "stop" or "length"
    prompt_ids: list[int]
    seed: int | None  # reproduces this sample alone: generate(prompt_ids, seed=g.seed, ...); None when greedy
    slid: bool = False
    timings: Timings | None = None
    attention: list[list[torch.Tensor]] | None = None  # per token, when capture_attention


class Stream:
    """An iterator of TokenEvent, with the run's facts as attributes: `seed`, `n` (samples in all), `prompts`
    (each sample's prompt ids), `prompt_ids` (the first prompt) and `config`."""

    def __init__(self, events: Iterator[TokenEvent], *, seed: int | None, prompts: list[list[int]],
                 config: SamplingConfig):
        self._events, self.seed, self.prompts, self.config = events, seed, prompts, config
        self.n, self.prompt_ids = len(prompts), prompts[0]

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> TokenEvent:
        return next(self._events)

    def close(self) -> None:
        self._events.close()

    def sample_seed(self, i: int) -> int | None:
        return None if self.seed is None else nth_seed(self.seed, i)


class TextStream:
    """One sample's text: complete characters only, stop strings cut exactly.

    `push(id) -> (text to emit now, stopped)`; `finish() -> the held-back rest` (an incomplete UTF-8 tail
    becomes U+FFFD there, or with `whole_chars` is left out: the bytes of a character the length limit cut off).
    Held back: the longest tail of the text that is the start of some stop string."""

    def __init__(self, decoder, stops: Sequence[str] = (), whole_chars: bool = False):
        self.decoder, self.stops, self.whole_chars = decoder, tuple(s for s in stops if s), whole_chars
        self.pending = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        delta = self.decoder.push(token_id)
        if not self.stops:
            return delta, False
        self.pending += delta
        return self._release(final=False)

    def finish(self) -> str:
        self.pending += self.decoder.flush(drop_incomplete=self.whole_chars)
        return self._release(final=True)[0]

    def _release(self, final: bool) -> tuple[str, bool]:
        text = self.pending
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return text[:min(hits)], True
        hold = 0 if final else self._held(text)
        self.pending = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold], False

    def _held(self, text: str) -> int:
        longest = max(len(s) for s in self.stops) - 1
        for k in range(min(longest, len(text)), 0, -1):
            if any(s.startswith(text[-k:]) for s in self.stops):
                return k
        return 0


class Engine:
    """Generation for one model and tokenizer. `device` moves the model there (default: where it is)."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device | str | None = None):
        model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper: decode through the module itself
        if device is not None:
            model.to(device)
        ref = next(model.parameters())
        self.model, self.tokenizer, self.device, self.dtype = model, tokenizer, ref.device, ref.dtype
        self.vocab_size = min(tokenizer.vocab_size, getattr(model.config, "vocab_size", tokenizer.vocab_size))
        probe = model.new_cache(1, 1, self.device, self.dtype)
        # "kv": a bounded cache (one entry per token); "state": a recurrent state; None: recompute windows
        self.cache_kind = None if probe is None else ("kv" if probe.bounded else "state")
        self.block_size = int(model.block_size)
        self.params = sum(p.numel() for p in model.parameters())

    # ------------------------------------------------------------------------------------------ facts

    @property
    def context_limit(self) -> int | None:
        """The most tokens the model sees at once (None: a recurrent state, unbounded)."""
        return None if self.cache_kind == "state" else self.block_size

    @property
    def slide_keep(self) -> int:
        """Tokens kept when a GPT's window slides (3/4 of the block)."""
        return max(1, int(self.block_size * SLIDE_KEEP))

    def default_stop_ids(self) -> set[int]:
        return {self.tokenizer.special_id(s) for s in DEFAULT_STOP_TOKENS if s in self.tokenizer.specials}

    # ------------------------------------------------------------------------------------------ API

    def stream(self, prompt_ids: Sequence[int], config: SamplingConfig | None = None, *, n: int = 1,
               capture_attention: bool = False, use_cache: bool = True, stop_ids: Iterable[int] | None = None,
               **overrides: Any) -> Stream:
        """Events for n samples of the continuation of `prompt_ids`, one per sampled token (interleaved: each
        step yields one event per unfinished sample). `overrides` are SamplingConfig fields."""
        return self.stream_batch([prompt_ids], config, n=n, capture_attention=capture_attention,
                                 use_cache=use_cache, stop_ids=stop_ids, **overrides)

    def stream_batch(self, prompts: Sequence[Sequence[int]], config: SamplingConfig | None = None, *, n: int = 1,
                     capture_attention: bool = False, use_cache: bool = True,
                     stop_ids: Iterable[int] | None = None, **overrides: Any) -> Stream:
        """n samples of each of several prompts, decoded as one batch (sample j*n + i is prompt j's i-th, seeded
        seed + j*n + i). With a KV cache the prompts are left-padded to one length and each row computes what it
        would alone (`KVCache.pad`); models without one (RNN state, recomputed windows) decode the prompts one
        after another through the same path."""
        cfg = (config or SamplingConfig()).with_overrides(**overrides)
        rows = [self._check_prompt(p) for p in prompts]
        if not rows:
            raise MinigptError("no prompts to continue")
        if not isinstance(n, int) or n < 1:
            raise MinigptError(f"n must be a positive number of samples, got {n!r}")
        seed = None if cfg.greedy else (cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31))
        stops = self.default_stop_ids() if stop_ids is None else {int(i) for i in stop_ids}
        together = len(rows) == 1 or (use_cache and self.cache_kind == "kv")
        groups = [rows] if together else [[r] for r in rows]
        events = self._each(groups, cfg, n, seed, capture_attention, use_cache, stops)
        return Stream(events, seed=seed, prompts=[r for r in rows for _ in range(n)], config=cfg)

    def generate(self, prompt_ids: Sequence[int], config: SamplingConfig | None = None, **kwargs: Any) -> Generation:
        """One sample, collected: ids, text, logprobs, finish_reason, timings. kwargs as for `stream`."""
        return collect(self.stream(prompt_ids, config, n=1, **kwargs))[0]

    def generate_many(self, prompt_ids: Sequence[int], n: int, config: SamplingConfig | None = None,
                      **kwargs: Any) -> list[Generation]:
        """n samples decoded as one batch from one shared prefill; sample i uses seed + i."""
        return collect(self.stream(prompt_ids, config, n=n, **kwargs))

    def generate_batch(self, prompts: Sequence[Sequence[int]], config: SamplingConfig | None = None, *, n: int = 1,
                       **kwargs: Any) -> list[Generation]:
        """n samples of every prompt as one batch (RL rollouts, evaluations): prompt j's are [j*n, (j+1)*n)."""
        return collect(self.stream_batch(prompts, config, n=n, **kwargs))

    def _check_prompt(self, prompt_ids: Sequence[int]) -> list[int]:
        prompt = [int(i) for i in (prompt_ids.tolist() if hasattr(prompt_ids, "tolist") else prompt_ids)]
        if not prompt:
            raise MinigptError("the prompt is empty; give at least one token (e.g. the tokenizer's bos_id)")
        bad = next((i for i in prompt if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise MinigptError(f"prompt token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        return prompt

    def _each(self, groups: list[list[list[int]]], cfg: SamplingConfig, n: int, seed: int | None, capture: bool,
              use_cache: bool, stops: set[int]) -> Iterator[TokenEvent]:
        """Run the groups of prompts one after another, numbering samples and seeds across them."""
        first = 0
        for group in groups:
            for ev in self._run(group, cfg, n, None if seed is None else seed + first, capture, use_cache, stops):
                ev.sample += first
                yield ev
            first += len(group) * n

    # ------------------------------------------------------------------------------------------ decoding

    def _window(self, origin: list[int], length: int) -> list[int]:
        """Where each row's view of its text starts, as a column of a `length`-column batch: unchanged while the
        row's text (from its origin) fits the limit; a GPT then jumps to keep the last 3/4 block (one re-prefill
        per quarter block), a windowed baseline keeps exactly its last block_size tokens. Each row slides
        exactly when it would alone."""
        limit = self.context_limit
        if limit is None:
            return origin
        keep = self.slide_keep if self.cache_kind == "kv" else limit
        return [o if length - o <= limit else length - keep for o in origin]

    def _forward(self, idx: torch.Tensor, cache: Any, capture: bool) -> tuple[torch.Tensor, list | None]:
        """Logits (B, V) of the last position of idx (B, T), and the attention list when captured."""
        attention = [] if capture else None
        with self._threads(idx.numel()):
            h = self.model.features(idx, cache=cache, attention=attention)
            logits = self.model.logits(h[:, -1:])[:, 0, :self.vocab_size]  # (B, V): the head on the last position
        return logits, attention

    @contextlib.contextmanager
    def _threads(self, tokens: int) -> Iterator[None]:
        """One intra-op thread for small CPU work (see SERIAL_WORK); the caller's setting is restored after."""
        threads = torch.get_num_threads()
        serial = self.device.type == "cpu" and threads > 1 and tokens * self.params < SERIAL_WORK
        if serial:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            if serial:
                torch.set_num_threads(threads)

    def _new_cache(self, origin: list[int], length: int, remaining: int) -> tuple[Any, int]:
        """A decoding state for the rows' text from their origins to column `length`, plus `remaining` tokens
        to come (within the context), and the first column it holds. Rows starting later are left-padded."""
        first = min(origin)
        size = length - first + remaining
        if self.context_limit is not None:
            size = min(size, self.context_limit)
        cache = self.model.new_cache(len(origin), size, self.device, self.dtype)
        if any(o != first for o in origin):
            cache.pad = torch.tensor([o - first for o in origin], device=self.device)
        return cache, first

    def _run(self, prompts: list[list[int]], cfg: SamplingConfig, n: int, seed: int | None, capture: bool,
             use_cache: bool, stops: set[int]) -> Iterator[TokenEvent]:
        """Decode n samples of each prompt as one batch. The rows are column-aligned: shorter prompts are
        left-padded (with the row's own first token, so the repetition penalty sees what it would alone), and
        `origin[r]` is the column where row r's view of its text starts (its padding, then its window)."""
        model, dev, M = self.model, self.device, cfg.max_new_tokens
        fast = use_cache and self.cache_kind is not None
        P = max(len(p) for p in prompts)
        pads = [P - len(p) for p in prompts for _ in range(n)]
        texts = [TextStream(self.tokenizer.stream_decoder(), cfg.stop, cfg.valid_utf8) for _ in pads]
        guard = guard_for(self.tokenizer, self.vocab_size, str(dev)) if cfg.valid_utf8 else None
        utf8 = None if guard is None else guard.start(prompts).repeat_interleave(n)  # (B,) automaton states
        samples = list(range(len(pads)))  # batch row -> sample index (rows leave as samples finish)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                seq = torch.empty(len(pads), P + M, dtype=torch.long, device=dev)  # each row: prompt + output
                seq[:, :P] = torch.tensor([[p[0]] * (P - len(p)) + p for p in prompts for _ in range(n)], device=dev)
                generators = None if seed is None else make_generators(seed, len(pads), dev)
                origin = self._window(pads, P)
                first = min(origin)
                cache = None
                if fast:  # prefill each prompt once, then repeat its state for its n samples
                    cache, first = self._new_cache(origin[::n], P, M)
                logits, attention = self._forward(seq[::n, first:P], cache, capture)
                if n > 1:
                    logits = logits.repeat_interleave(n, 0)
                    cache = cache.repeat(n) if cache is not None else None
            L = P
            for step in range(M):
                with torch.inference_mode(), self._threads(len(samples)):  # the sampler's small ops too
                    recent = None
                    if cfg.repetition_penalty != 1.0 and cfg.repetition_window > 0:
                        recent = seq[:, max(0, L - cfg.repetition_window):L]
                    blocked = None if guard is None else guard.blocked[utf8]
                    ids_t, logp_t = sample_next(logits, cfg, generators, recent, blocked)
                    utf8 = None if guard is None else guard.advance(utf8, ids_t)
                    seq[:, L] = ids_t
                    L += 1
                    rows_att = None if not attention else [a[:, :, -1, :] for a in attention]  # (B, nh, T_k)
                slid = [o > p for o, p in zip(origin, pads)]
                events = self._events(samples, ids_t.tolist(), logp_t.tolist(), texts, rows_att, step,
                                      step == M - 1, stops, slid)
                done = [r for r, ev in enumerate(events) if ev.finish_reason]
                yield from events
                if len(done) == len(samples) or step == M - 1:
                    return
                with torch.inference_mode():
                    if done:  # finished rows stop contributing: drop them from the batch
                        keep = [r for r in range(len(samples)) if r not in done]
                        rows = torch.tensor(keep, device=dev)
                        seq = seq.index_select(0, rows)
                        utf8 = None if utf8 is None else utf8.index_select(0, rows)
                        cache = cache.select(rows) if cache is not None else None
                        samples, pads, origin = ([x[r] for r in keep] for x in (samples, pads, origin))
                        generators = None if generators is None else [generators[r] for r in keep]
                    moved = self._window(origin, L)
                    room = self.context_limit is None or L - first <= self.context_limit  # rows may have left
                    if fast and moved == origin and room:
                        logits, attention = self._forward(seq[:, L - 1:L], cache, capture)  # one new token
                    else:
                        origin = moved
                        if fast:  # a window slid (or the rows that left held the start): re-prefill
                            cache, first = self._new_cache(origin, L, M - step - 1)
                        else:
                            first = min(origin)  # recomputed windows: every row's origin is the same
                        logits, attention = self._forward(seq[:, first:L], cache, capture)
        finally:
            model.train(was_training)

    @staticmethod
    def _events(samples: list[int], ids: list[int], logps: list[float], texts: list[TextStream],
                rows_att: list[torch.Tensor] | None, step: int, last: bool, stops: set[int],
                slid: list[bool]) -> list[TokenEvent]:
        """One event per batch row for this step's tokens: text deltas, stops, and each row's attention."""
        events = []
        for r, (s, t, lp) in enumerate(zip(samples, ids, logps)):
            if t in stops:
                text, reason = texts[s].finish(), "stop"
            else:
                text, hit = texts[s].push(t)
                reason = "stop" if hit else ("length" if last else None)
                if reason == "length":
                    text += texts[s].finish()
            att = None if rows_att is None else [a[min(r, a.size(0) - 1)] for a in rows_att]  # prefill: 1 row
            events.append(TokenEvent(s, step, t, text, lp, att, slid[r], reason))
        return events


def collect(stream: Stream, on_event: Callable[[TokenEvent], None] | None = None) -> list[Generation]:
    """Run a stream to the end and gather one Generation per sample, with timings; `on_event` sees each
    event as it arrives (e.g. to print the text while collecting)."""
    n = stream.n
    ids: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    texts: list[list[str]] = [[] for _ in range(n)]
    attention: list[list] = [[] for _ in range(n)]
    reasons: list[str] = ["length"] * n
    slid = [False] * n
    t0 = time.perf_counter()
    first = None
    count = 0
    for ev in stream:
        if first is None:
            first = time.perf_counter()
        count += 1
        ids[ev.sample].append(ev.token_id)
        logprobs[ev.sample].append(ev.logprob)
        texts[ev.sample].append(ev.text)
        slid[ev.sample] |= ev.slid
        if ev.attention is not None:
            attention[ev.sample].append(ev.attention)
        if ev.finish_reason:
            reasons[ev.sample] = ev.finish_reason
        if on_event is not None:
            on_event(ev)
    end = time.perf_counter()
    timings = Timings(ttft_s=(first or end) - t0, total_s=end - t0, tokens=count, samples=n)
    return [Generation(ids[i], "".join(texts[i]), logprobs[i], reasons[i], list(stream.prompts[i]),
                       stream.sample_seed(i), slid[i], timings, attention[i] or None) for i in range(n)]
