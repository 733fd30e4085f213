"""The UTF-8 guard's automaton against Python's own UTF-8 decoder, and its per-token tables."""
from __future__ import annotations

import itertools

import torch

from minigpt.infer.utf8 import REJECT, STATES, Utf8Guard, run
from minigpt.text.tokenizer import Tokenizer

# byte values at the edges of the automaton's ranges (and just outside them) for the 3- and 4-byte sequences
PROBES = (0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4,
          0xF5, 0xFF)


def python_says(data: bytes) -> tuple[bool, bool]:
    """(valid UTF-8, or a valid start that more bytes could finish), as Python's own decoder reports it."""
    try:
        data.decode("utf-8")
        return True, True
    except UnicodeDecodeError as e:
        return False, e.reason == "unexpected end of data"


def test_the_automaton_accepts_exactly_what_pythons_decoder_accepts():
    sequences = [bytes([a]) for a in range(256)] + [bytes([a, b]) for a in range(256) for b in range(256)]
    sequences += [bytes([a, *rest]) for a in range(0xC0, 256) for rest in itertools.product(PROBES, repeat=2)]
    leads = (0xE0, 0xE1, 0xED, 0xEE, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5)  # each 3- and 4-byte lead rule, and one past
    sequences += [bytes([a, *rest]) for a in leads for rest in itertools.product(PROBES, repeat=3)]
    for data in sequences:
        state = run(0, data)
        assert ((state == 0), (state != REJECT)) == python_says(data), data


def test_the_tables_follow_each_token_and_never_block_valid_text():
    # bytes, then tokens that cut characters: a lead pair, a continuation-then-lead, a 4-byte emoji in halves
    tok = Tokenizer([bytes([i]) for i in range(256)] + [b"\xe4\xbd", b"\xa0\xe5", b"\xf0\x9f", b"\x99\x82"])
    guard = Utf8Guard([tok.token_bytes(i) for i in range(tok.vocab_size)])
    assert guard.next.shape == guard.blocked.shape == (STATES, tok.vocab_size)
    for state in range(STATES):
        for t in range(tok.vocab_size):
            expected = run(state, tok.token_bytes(t))
            assert bool(guard.blocked[state, t]) == (expected == REJECT)
            assert expected == REJECT or int(guard.next[state, t]) == expected
    end = tok.specials["<|end|>"]
    assert not guard.blocked[0, end] and guard.blocked[1:, end].all()  # a stop token never cuts a character
    text = "naïve 你好 🙂 ok"
    ids = [tok.ranks[b] for b in (b"n", b"a", b"\xc3", b"\xaf", b"v", b"e", b" ", b"\xe4\xbd", b"\xa0\xe5", b"\xa5",
                                   b"\xbd", b" ", b"\xf0\x9f", b"\x99\x82", b" ", b"o", b"k")]
    assert tok.decode(ids) == text
    state = torch.tensor([0])
    for t in ids:
        assert not guard.blocked[state, t].any()
        state = guard.advance(state, torch.tensor([t]))
    assert state.item() == 0
    # mid-character after "\xe4\xbd", at a boundary, a stray continuation byte restarts, mid-emoji two to go
    prompts = [ids[:8], ids, [tok.ranks[b"\xbf"]], [tok.ranks[b"a"], tok.ranks[b"\xf0\x9f"]]]
    assert guard.start(prompts).tolist() == [1, 0, 0, 2]


def test_a_vocabulary_without_some_bytes_never_leaves_a_state_empty():
    guard = Utf8Guard([b"a", b"\xe4", b"\xbd\xa0"])  # after "\xe4" only "\xbd\xa0"; after "\xe4\xbd" nothing
    assert guard.blocked[2].tolist() == [True, True, False]
    assert not guard.blocked[1].any() and guard.advance(torch.tensor([1]), torch.tensor([0])).item() == 0
