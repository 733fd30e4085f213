"""Whole characters only: a mask that keeps the sampled bytes valid UTF-8.

A byte-level BPE has a token for every byte, so a model can emit the first byte of a Chinese character and then
an ASCII token, or a continuation byte with nothing before it: the reply shows U+FFFD (the replacement
character) where a character should be. Small models do this often in Chinese, which takes three bytes a
character. The guard runs UTF-8's automaton (the well-formed byte sequences of the Unicode standard, Table 3-7:
eight states, `RULES`) over each token's bytes, and precomputes for every state which tokens may come next and
the state after each (`Utf8Guard.next`). A decoding step then costs a row lookup, a masked fill and a gather
(about 25 us on a CPU): the tokens that would break a character get -inf before the sampler's chain, greedy
decoding included. The length limit may still stop a reply inside a character: the engine then leaves that
character's bytes out of the reply's text (`engine.TextStream`), so the text ends on the last whole character
and the tokens stay the model's own choices (its finish reason "length", as it is).

What it changes: a reply's text never holds an invalid byte sequence (a stop token cannot cut a character either:
special tokens are ASCII, so they are masked inside one).
What it does not: the log-probabilities reported with each token stay the model's own, and a character
tokenizer's tokens are whole characters, so nothing is ever masked there. `SamplingConfig.valid_utf8 = False`
samples the model's raw choices (the export parity tests compare those with other runtimes').
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch

# state -> ((first byte, last byte, next state), ...). State 0 is a character boundary; the others wait for
# continuation bytes, some with a narrower first range (no overlong forms, no surrogates, nothing past U+10FFFF).
RULES: dict[int, tuple[tuple[int, int, int], ...]] = {
    0: ((0x00, 0x7F, 0), (0xC2, 0xDF, 1), (0xE0, 0xE0, 3), (0xE1, 0xEC, 2), (0xED, 0xED, 4), (0xEE, 0xEF, 2),
        (0xF0, 0xF0, 6), (0xF1, 0xF3, 5), (0xF4, 0xF4, 7)),
    1: ((0x80, 0xBF, 0),),  # one continuation byte to go
    2: ((0x80, 0xBF, 1),),  # two to go
    3: ((0xA0, 0xBF, 1),),  # after E0
    4: ((0x80, 0x9F, 1),),  # after ED
    5: ((0x80, 0xBF, 2),),  # three to go
    6: ((0x90, 0xBF, 2),),  # after F0
    7: ((0x80, 0x8F, 2),),  # after F4
}
STATES = len(RULES)
REJECT = -1


@functools.lru_cache(maxsize=1)
def byte_table() -> tuple[tuple[int, ...], ...]:
    """[state][byte] -> next state, or REJECT."""
    table = [[REJECT] * 256 for _ in range(STATES)]
    for state, spans in RULES.items():
        for lo, hi, to in spans:
            table[state][lo:hi + 1] = [to] * (hi - lo + 1)
    return tuple(tuple(row) for row in table)


def run(state: int, data: bytes) -> int:
    """The state after `data` from `state`, or REJECT."""
    table = byte_table()
    for b in data:
        state = table[state][b]
        if state == REJECT:
            return REJECT
    return state


class Utf8Guard:
    """The automaton's tables for one vocabulary: `next` (STATES, V), the state after each token; `blocked`
    (STATES, V), the tokens masked in each state."""

    def __init__(self, token_bytes: Sequence[bytes], device: torch.device | str = "cpu"):
        table = byte_table()
        rows = [[REJECT] * len(token_bytes) for _ in range(STATES)]
        for t, data in enumerate(token_bytes):
            tails: dict[int, int] = {}  # the state after the first byte decides the rest: run each tail once
            for state in range(STATES):
                after = table[state][data[0]] if data else state
                if after == REJECT:
                    continue
                if after not in tails:
                    tails[after] = run(after, data[1:])
                rows[state][t] = tails[after]
        self._next = rows
        nxt = torch.tensor(rows, dtype=torch.long, device=device)
        blocked = nxt == REJECT
        blocked[blocked.all(dim=1)] = False  # a vocabulary missing some bytes: never leave a state without a token
        self.blocked = blocked
        self.next = nxt.clamp(min=0)  # a token drawn where nothing fitted: start again at a character boundary

    def start(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B,) each prompt's state after its last token (invalid bytes in a prompt restart at a boundary)."""
        states = []
        for prompt in prompts:
            state = 0
            for t in prompt:
                state = max(self._next[state][t], 0)
            states.append(state)
        return torch.tensor(states, dtype=torch.long, device=self.next.device)

    def advance(self, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B,) the states after each row drew ids[r]."""
        return self.next[states, ids]


@functools.lru_cache(maxsize=8)
def guard_for(tokenizer, vocab_size: int, device: str) -> Utf8Guard:
    """One guard per tokenizer, vocabulary size and device (RL builds an engine every step: the tables once)."""
    return Utf8Guard([tokenizer.token_bytes(i) for i in range(vocab_size)], device)
