"""Text sources, prepared shards and batch iterators."""
from __future__ import annotations

import ast
import json
import os

import numpy as np
import pytest
import torch

from minigpt.text.corpora import pydocs
from minigpt.common import MinigptError
from minigpt.text.shards import TokenWindows, load_prepared, prepare, prepared_name
from minigpt.text.sources import open_source
from minigpt.text.tokenizer import train_bpe, train_char

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, 狐狸 {i * i}\n" for i in range(400))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_text_file_splits_partition_the_file_at_a_line(text_file):
    source = open_source(str(text_file))
    train, val = ("".join(source.dataset(s)["text"]) for s in ("train", "val"))
    assert train + val == TEXT
    assert train.endswith("\n") and 0.85 < len(train.encode()) / len(TEXT.encode()) < 0.95


def test_pydocs_is_deterministic_and_split_by_module():
    names = {split: [n for n, _ in pydocs.documents(split)] for split in ("train", "val")}
    assert names["train"] and names["val"] and not set(names["train"]) & set(names["val"])
    assert [t for _, t in pydocs.documents("val")] == [t for _, t in pydocs.documents("val")]
    total = sum(len(t.encode()) for split in ("train", "val") for _, t in pydocs.documents(split))
    assert 1_000_000 < total < 4_000_000


def test_stdlib_reads_the_library_source_but_not_its_tests_or_vendored_code(tmp_path, monkeypatch):
    from minigpt.text.corpora import stdlib

    files = ["os.py", "json/__init__.py", "email/mime/text.py", "_pydecimal.py", "test/test_os.py",
             "ctypes/test/test_cast.py", "idlelib/idle_test/test_run.py", "site-packages/pkg/mod.py",
             "__pycache__/os.py", "config-3.11-x86_64-linux-gnu/python-config.py"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x = 1\n")
    assert [m for m, _ in stdlib.source_files(str(tmp_path))] == ["_pydecimal", "email.mime.text", "json", "os"]
    monkeypatch.setattr(stdlib, "stdlib_dir", lambda: tmp_path)
    read = stdlib.source_files.__wrapped__
    monkeypatch.setattr(stdlib, "source_files", lambda: read(str(tmp_path)))
    monkeypatch.setattr(stdlib, "pydocs_documents", lambda split: iter(()))
    docs = {split: dict(stdlib.documents(split)) for split in ("train", "val")}
    assert pydocs.split_of("os") == "val" and pydocs.split_of("json") == "train"  # split by module, as pydocs
    assert list(docs["val"]) == ["path:os.py"] and docs["val"]["path:os.py"] == "# os.py\nx = 1\n"
    assert list(docs["train"]) == ["path:_pydecimal.py", "path:email/mime/text.py", "path:json/__init__.py"]


def test_pydocs_entries_have_signatures_and_summaries():
    by_name = {e.name: e for e in pydocs.entries()}
    dumps = by_name["json.dumps"]
    assert dumps.kind == "function" and dumps.signature.startswith("(obj")
    assert dumps.summary.startswith("Serialize") and dumps.summary.endswith(".")


def test_pydocs_names_what_is_called_by_another_name():
    tree = ast.parse("class Random:\n    def randint(self, a, b):\n        'Doc.'\n"
                     "_inst = Random()\nrandint = _inst.randint\n_hidden = _inst.randint\nother = len\n")
    assert pydocs._aliases(tree, "random") == {"Random.randint": "random.randint"}
    by_name = {e.name: e for e in pydocs.entries()}
    assert by_name["random.Random.randint"].alias == "random.randint"
    assert by_name[f"{os.path.__name__}.join"].alias == "os.path.join"
    assert by_name["genericpath.exists"].alias == "os.path.exists"
    assert by_name["json.dumps"].alias == "" and by_name["random.Random.randint"].signature == "(a, b)"


def test_pydocs_reads_the_functions_written_in_c_from_the_interpreter():
    """len, str.split, math.sqrt and time.time have no .py source; their docstrings come from the interpreter, under
    the names people call them by, with the signature from inspect or the docstring's first line."""
    import inspect
    import math

    by_name = {e.name: e for e in pydocs.compiled_entries()}
    assert (by_name["len"].module, by_name["len"].signature) == ("builtins", "(obj, /)")
    assert by_name["len"].summary == pydocs.first_sentence(inspect.cleandoc(len.__doc__))
    assert by_name["str.split"].signature == "(sep=None, maxsplit=-1)"  # the method's self dropped
    assert by_name["issubclass"].signature.startswith("(cls, ")  # a function's first argument kept
    assert by_name["math.sqrt"].summary == pydocs.first_sentence(math.sqrt.__doc__)
    assert by_name["time.time"].signature == "()"  # CPython 3.11: from its docstring's line "time() -> floating ..."
    assert by_name["time.time"].summary == "Return the current time in seconds since the Epoch."
    assert "functools.RLock" not in by_name  # _thread's, imported by functools
    assert "json.dumps" not in by_name and "heapq.heappush" not in by_name  # documented in the source already
    names = [n for n, _ in pydocs.documents("train")]
    assert "builtins" in names and "len(obj, /)\nReturn the number" in dict(pydocs.documents("train"))["builtins"]


@pytest.mark.parametrize("name, doc, signature, rest", [
    ("reduce", "reduce(function, iterable[, initial]) -> value\n\nApply a function.", "(function, iterable, initial)",
     "Apply a function."),
    ("range", "range(stop) -> range object\nrange(start, stop[, step]) -> range object\n\nReturn an object.",
     "(start, stop, step)", "Return an object."),
    ("zip", "zip(*iterables, strict=False) --> Yield tuples.\n\n>>> list(zip())", "(*iterables, strict=False)",
     "Yield tuples.\n\n>>> list(zip())"),
    ("format", "S.format(*args, **kwargs) -> str\n\nReturn a formatted version.", "(*args, **kwargs)",
     "Return a formatted version."),
    ("defaultdict", "defaultdict(default_factory=None, /, [...]) --> dict\n\nThe factory.",
     "(default_factory=None, /)", "The factory."),
    ("sqrt", "Return the square root of x.", "", "Return the square root of x."),  # no signature line
    ("name", "other(x) -> y\n\nNamed otherwise.", "", "other(x) -> y\n\nNamed otherwise."),  # not its own
])
def test_c_docstrings_give_their_signature_line(name, doc, signature, rest):
    assert pydocs._doc_signature(name, doc) == (signature, rest)


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"   \n\n", "only whitespace"),
    (b"hello\x00world", "binary"),
    (b"caf\xe9 au lait", "not UTF-8"),
])
def test_bad_text_files_are_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(MinigptError, match=message) as err:
        open_source(str(path))
    assert str(path) in str(err.value)


def test_missing_source_is_refused(tmp_path):
    with pytest.raises(MinigptError, match="no such file"):
        open_source(str(tmp_path / "nope.txt"))


def test_a_missing_path_is_never_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corp").mkdir()
    for spec in ("corp/typo.txt", "nowhere/typo.jsonl", str(tmp_path / "corp" / "typo"), "corp/typo", "a/b/c"):
        with pytest.raises(MinigptError, match="no such file or folder"):
            open_source(spec)
    assert open_source("roneneldan/TinyStories").kind == "hub" and open_source("wikitext").kind == "hub"


def test_a_folder_with_one_text_file_splits_like_the_file(text_file, tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "only.txt").write_text(TEXT, encoding="utf-8")
    alone, inside = open_source(str(text_file)), open_source(str(folder))
    for split in ("train", "val"):
        assert list(inside.documents(split)) == list(alone.documents(split)) != []
    tok = train_char(TEXT)
    prepared = prepare(inside, tok, out=tmp_path / "prep")
    assert tok.decode(prepared.shard("train").tolist()[1:] + prepared.shard("val").tolist()[1:]) == TEXT


@pytest.mark.parametrize("rows, message", [
    ([b'{"text": "fine"}', b'{"text": null}'], r"bad\.jsonl:2: 'text' is null, not a string"),
    ([b'{"text": "fine"}', b'{"text": 42}'], r"bad\.jsonl:2: 'text' is int, not a string"),
    ([b'{"text": "fine"}', b'{"body": "x"}'], r"bad\.jsonl:2: 'text' is missing"),
    ([b'{"text": "fine"}', b'{"text": "caf\xe9"}'], r"bad\.jsonl:2: not UTF-8 \(bad byte at column 14\)"),
    ([b'{"text": "fine"}', b'', b'{"text": "open'], r"bad\.jsonl:3: not valid JSON"),
    ([b'{"text": "fine"}', b'["text"]'], r"bad\.jsonl:2: expected a JSON object"),
])
def test_bad_jsonl_rows_are_refused_with_their_line(tmp_path, rows, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    with pytest.raises(MinigptError, match=message):
        prepare(open_source(str(path)), train_char("fine"), out=tmp_path / "prep")


def test_row_files_without_string_text_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    with pytest.raises(MinigptError, match="'text' column holds int64"):
        list(open_source(str(path)).documents("train"))
    pq.write_table(pa.table({"text": ["a", None, "c"]}), path)
    with pytest.raises(MinigptError, match="1 row"):
        list(open_source(str(path)).documents("train"))


def test_jsonl_rows_and_folders(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(40)))
    source = open_source(str(rows))
    train, val = (list(source.documents(s)) for s in ("train", "val"))
    assert sorted(train + val) == sorted(f"document number {i}" for i in range(40)) and len(val) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n" + json.dumps({"body": "y"}) + "\n")
    with pytest.raises(MinigptError, match="no 'text' column"):
        list(open_source(str(bad)).documents("train"))
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(12):
        (folder / f"f{i:02d}.md").write_text(f"file {i}\n")
    source = open_source(str(folder))
    docs = [d for s in ("train", "val") for d in source.documents(s)]
    assert sorted(docs) == sorted(f"file {i}\n" for i in range(12)) and list(source.documents("val"))


def test_prepare_char_shards_decode_back_to_the_text(text_file, tmp_path):
    source = open_source(str(text_file))
    tok = train_char(d for s in ("train", "val") for d in source.documents(s))
    prepared = prepare(source, tok, out=tmp_path / "prep")
    parts = {}
    for split in ("train", "val"):
        ids = prepared.shard(split).tolist()
        assert ids[0] == tok.bos_id and tok.bos_id not in ids[1:]
        parts[split] = tok.decode(ids[1:])
        meta = prepared.meta["splits"][split]
        assert meta["tokens"] == len(ids) and meta["bytes"] == len(parts[split].encode())
    assert parts["train"] + parts["val"] == TEXT
    assert prepared.meta["dtype"] == "uint16" and prepared.tokenizer().sha256 == tok.sha256


def test_carriage_returns_are_read_as_newlines_and_said_so(text_file, tmp_path, capsys):
    """`datasets` reads text files with universal newlines: "\\r\\n" and "\\r" become "\\n". The shards hold that
    text, and a note says so (the bits per byte count it); a file with plain newlines gets no note."""
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(TEXT.replace("\n", "\r\n").encode() + b"old mac\rline")
    source = open_source(str(crlf))
    tok = train_char(d for s in ("train", "val") for d in source.documents(s))
    prepared = prepare(source, tok, out=tmp_path / "prep")
    text = "".join(tok.decode(prepared.shard(split).tolist()[1:]) for split in ("train", "val"))
    assert text == TEXT + "old mac\nline"
    assert f"note: {crlf} has Windows (\\r\\n) or old Mac (\\r) line endings; they are read as \\n" in \
        " ".join(capsys.readouterr().out.split())
    prepare(open_source(str(text_file)), tok, out=tmp_path / "prep2")
    assert "line endings" not in capsys.readouterr().out


def test_prepare_is_reused_until_the_source_changes(text_file, tmp_path):
    source = open_source(str(text_file))
    tok = train_char(d for s in ("train", "val") for d in source.documents(s))
    first = prepare(source, tok, out=tmp_path / "prep")
    stamp = (first.path / "train.bin").stat().st_mtime_ns
    assert (prepare(source, tok, out=tmp_path / "prep").path / "train.bin").stat().st_mtime_ns == stamp
    text_file.write_text(TEXT + "one more line\n", encoding="utf-8")
    again = prepare(open_source(str(text_file)), tok, out=tmp_path / "prep")
    assert again.meta["source_fingerprint"] != first.meta["source_fingerprint"]


def test_prepare_with_several_processes_matches_one(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}: " + "abc def " * (i % 7)}) + "\n" for i in range(3000)))
    source = open_source(str(rows))
    tok = train_bpe(source.documents("train"), 300, progress=False)
    one = prepare(source, tok, out=tmp_path / "one", num_proc=1)
    two = prepare(source, tok, out=tmp_path / "two", num_proc=2)
    for split in ("train", "val"):
        assert np.array_equal(one.shard(split), two.shard(split))
    docs = list(source.documents("val"))
    expected = [i for d in docs for i in [tok.bos_id] + tok.encode(d)]
    assert one.shard("val").tolist() == expected


def test_windows_resume_exactly_and_ddp_slices_the_global_batch():
    tokens = np.arange(1000, dtype=np.uint16)
    a = TokenWindows(tokens, 8, 4, seed=3)
    for _ in range(5):
        next(a)
    state = a.state_dict()
    expected = [next(a) for _ in range(3)]
    b = TokenWindows(tokens, 8, 4, seed=99)
    b.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, [next(b) for _ in range(3)]):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x, y = next(TokenWindows(tokens, 8, 4, seed=3))
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y - x, torch.ones_like(x))
    whole = next(TokenWindows(tokens, 8, 4, seed=5))[0]
    halves = [next(TokenWindows(tokens, 8, 2, seed=5, rank=r, world=2))[0] for r in range(2)]
    assert torch.equal(whole, torch.cat(halves))


def test_too_short_data_is_refused():
    with pytest.raises(MinigptError, match="block-size"):
        TokenWindows(np.arange(10, dtype=np.uint16), 16, 2, seed=0)


def test_a_block_size_either_split_cannot_fill_is_refused_up_front(text_file, tmp_path):
    source = open_source(str(text_file))
    prepared = prepare(source, train_char(TEXT), out=tmp_path / "prep")
    val = len(prepared.shard("val"))
    assert val < len(prepared.shard("train"))
    prepared.check_block_size(val - 2)
    with pytest.raises(MinigptError, match=rf"the val split .* has {val:,} tokens, fewer than --block-size "
                                           rf"{val - 1} \+ 2; give a smaller --block-size"):
        prepared.check_block_size(val - 1)
    with pytest.raises(MinigptError, match="the train split"):
        prepared.check_block_size(100_000, splits=("train",))


def test_files_with_the_same_name_keep_their_own_shards(tmp_path):
    """a/notes.txt and b/notes.txt (and notes.jsonl / notes.csv) once shared data/notes-*: preparing one
    overwrote the other's shards and its run could no longer resume."""
    from conftest import tiny_model, tiny_train
    from minigpt.train.pretrain import pretrain

    texts = {"a": TEXT, "b": "".join(f"another text, line {i}\n" for i in range(300))}
    for name, text in texts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text(text, encoding="utf-8")

    def run(name: str, **kw):
        return pretrain(str(tmp_path / name / "notes.txt"), tokenizer="char", model_config=tiny_model(),
                        out=tmp_path / f"run-{name}", **kw)

    run("a", train_config=tiny_train(max_iters=2))
    run("b", train_config=tiny_train(max_iters=2))
    info = {n: json.loads((tmp_path / f"run-{n}" / "run.json").read_text()) for n in texts}
    assert info["a"]["prepared"] != info["b"]["prepared"]
    for name, text in texts.items():
        prepared = load_prepared(info[name]["prepared"])
        tok = prepared.tokenizer()
        assert tok.decode(prepared.shard("train").tolist()[1:] + prepared.shard("val").tolist()[1:]) == text
    assert run("a", resume=True, train_config=tiny_train(max_iters=3)).step == 3
    rows = {suffix: tmp_path / f"stories{suffix}" for suffix in (".jsonl", ".csv")}
    rows[".jsonl"].write_text("".join(json.dumps({"text": f"story {i}"}) + "\n" for i in range(40)))
    rows[".csv"].write_text("text\n" + "".join(f"tale {i}\n" for i in range(40)))
    tok = train_char("story tale 0123456789")
    folders = {prepare(open_source(str(p)), tok).path for p in rows.values()}
    assert len(folders) == 2
    other = train_char("story tale 0123456789!")  # another character set on the same source: its own folder
    assert prepared_name(open_source("pydocs"), tok) == f"pydocs-char-{tok.sha256[:8]}"
    assert prepare(open_source(str(rows[".csv"])), other).path not in folders
    assert {load_prepared(f).meta["tokenizer_sha256"] for f in folders} == {tok.sha256}


def test_a_folder_gives_validation_about_a_tenth_of_its_bytes(tmp_path):
    """Two books and a tiny readme: validation was the 8-byte readme (5 tokens); now ~10% of the bytes, the
    file the cut falls in split at a line."""
    folder = tmp_path / "books"
    folder.mkdir()
    books = {"alice_in_wonderland.txt": TEXT, "pride_and_prejudice.txt": TEXT.replace("fox", "cat") * 4,
             "readme.md": "# notes\n"}
    for name, text in books.items():
        (folder / name).write_text(text, encoding="utf-8")
    source = open_source(str(folder))
    train, val = (list(source.documents(s)) for s in ("train", "val"))
    total = sum(len(t.encode()) for t in books.values())
    assert 0.09 < sum(len(d.encode()) for d in val) / total < 0.11
    assert sorted(train[:-1] + [train[-1] + val[0]] + val[1:]) == sorted(books.values())
    assert train[-1].endswith("\n") and val[0].startswith("line ")
    assert list(open_source(str(folder)).documents("val")) == val  # the same split every time


@pytest.mark.parametrize("head", ["", "line one\nline two\n"])
def test_a_text_file_of_long_lines_still_splits_90_10(tmp_path, head):
    """A book on one line gave 'the train split is empty'; after two short lines, a train split of 10 tokens."""
    words = "".join(f"word{i} and 狐狸 " for i in range(3000))
    path = tmp_path / "oneline.txt"
    path.write_text(head + words, encoding="utf-8")
    source = open_source(str(path))
    train, val = ("".join(source.documents(s)) for s in ("train", "val"))
    assert train + val == head + words and train.endswith(" ")
    assert 0.89 < len(train.encode()) / len((head + words).encode()) < 0.91
    tok = train_char(head + words)
    prepared = prepare(source, tok, out=tmp_path / "prep")
    assert tok.decode(prepared.shard("val").tolist()[1:]) == val


def test_a_block_size_the_val_split_cannot_fill_is_refused_before_training(tmp_path):
    from dataclasses import replace

    from conftest import tiny_model, tiny_train
    from minigpt.train.pretrain import pretrain

    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    with pytest.raises(MinigptError, match=r"the val split .* has 2,\d{3} tokens, fewer than --block-size 5000"):
        pretrain(str(path), tokenizer="char", model_config=replace(tiny_model(), block_size=5000),
                 train_config=tiny_train(max_iters=1), out=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()

