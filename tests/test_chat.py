"""Chat: the loop with scripted input and an exact transcript, the session's prompts and memory, slash commands,
then the real CLI: one-shot, piped, `minigpt sample`, and a pseudo-terminal session (pexpect)."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from minigpt.chat.app import default_commands
from minigpt.chat.commands import BUILTIN
from minigpt.chat.io import PlainIO
from minigpt.chat.loop import CommandTable, run_chat
from minigpt.chat.session import ChatSession
from minigpt.common import MinigptError
from minigpt.infer.engine import Engine
from minigpt.models.base import LanguageModel
from minigpt.models.gpt import GPT, GPTConfig
from minigpt.infer.sampling import SamplingConfig
from minigpt.text.tokenizer import train_char

from conftest import CHARS, make_checkpoint



pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return train_char(CHARS + "\n")


# ---------------------------------------------------------------------------------------------- a rule model


@dataclass
class History:
    """A bounded 'cache' that remembers every id, so the rule can read the whole context."""

    max_len: int
    ids: list = field(default_factory=list)
    pos: int = 0
    bounded = True

    def repeat(self, n):
        return History(self.max_len, list(self.ids), self.pos)

    def select(self, rows):
        return History(self.max_len, list(self.ids), self.pos)


class Echo(LanguageModel):
    """A rule, not a network. Chat: replies "#<user turns it sees> <last user text>" then <|end|>.
    Continuation: "...<characters in the prompt>" then <|bos|>. The chosen logit is 20 above the rest."""

    def __init__(self, tok, block_size: int = 4096):
        super().__init__()
        self.tok, self.prompt_len = tok, 0
        self.config = SimpleNamespace(kind="echo", vocab_size=tok.vocab_size, block_size=block_size)
        self.weight = nn.Parameter(torch.zeros(1))

    def new_cache(self, batch, max_len, device, dtype):
        return History(max_len)

    def next_id(self, ctx: list[int]) -> int:
        s, tok = self.tok.specials, self.tok
        if s["<|assistant|>"] in ctx:
            a = len(ctx) - 1 - ctx[::-1].index(s["<|assistant|>"])
            u = a - ctx[a::-1].index(s["<|user|>"])
            reply = tok.encode(f"#{ctx.count(s['<|user|>'])} {tok.decode(ctx[u + 1:a - 1])}") + [s["<|end|>"]]
            k = len(ctx) - a - 1
        else:
            reply = tok.encode(f"...{len(tok.decode(ctx[1:self.prompt_len]))}") + [s["<|bos|>"]]
            k = len(ctx) - self.prompt_len
        return reply[max(0, min(k, len(reply) - 1))]  # prompt positions: any token will do

    def features(self, idx, *, cache=None, attention=None):
        B, T = idx.shape
        out = torch.full((B, T, self.config.vocab_size), -10.0)
        for b in range(B):
            ctx = (list(cache.ids) if cache is not None else []) + idx[b].tolist()
            for t in range(T):
                out[b, t, self.next_id(ctx[:len(ctx) - T + t + 1])] = 10.0
        if cache is not None:
            cache.ids = ctx
            cache.pos += T
        return out

    def logits(self, h):
        return h


def echo_session(tok, mode="chat", system=None, block_size=4096, **sampling) -> ChatSession:
    model = Echo(tok, block_size)
    engine = Engine(model, tok)
    session = ChatSession(engine, sampling=SamplingConfig(**{"max_new_tokens": 60, **sampling}), system=system,
                          mode=mode)
    if mode == "continue":  # the rule needs to know where the prompt ends
        original = session.prompt_ids

        def prompt_ids():
            ids, dropped = original()
            model.prompt_len = len(ids)
            return ids, dropped
        session.prompt_ids = prompt_ids
    return session


def transcript(session, lines, commands=None, **kw) -> str:
    out = io.StringIO()
    assert run_chat(session, PlainIO(lines, out, out, echo=True, **kw), commands or default_commands()) == 0
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- the loop


def test_exact_transcript_with_memory_commands_and_system_prompt(tok):
    session = echo_session(tok)
    text = transcript(session, ["hello there", "how are you", "/set temperature 0", "/clear", "again",
                                "/system be brief", "/regen", "/set", "//slash", "/nope", "", "/exit", "never read"])
    assert text == (
        "> hello there\n"
        "#1 hello there\n"
        "> how are you\n"
        "#2 how are you\n"           # the second turn sees the first: multi-turn memory
        "> /set temperature 0\n"
        "temperature = 0\n"
        "> /clear\n"
        "conversation cleared\n"
        "> again\n"
        "#1 again\n"                 # /clear forgot the earlier turns
        "> /system be brief\n"
        "system prompt set\n"
        "> /regen\n"
        "#1 again\n"
        "> /set\n"
        "temperature 0 · top_k 50 · top_p 0.95 · min_p 0 · repetition_penalty 1 · repetition_window 64 · "
            "max_new_tokens 60 · seed none · valid_utf8 on\n"
        "> //slash\n"
        "#2 /slash\n"
        "> /nope\n"
        "error: unknown command /nope; /help lists them (// sends a line starting with /)\n"
        "> \n"
        "> /exit\n")
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert session.messages[0]["content"] == "be brief"
    assert session.last.finish_reason == "stop" and session.last.ids[-1] == tok.specials["<|end|>"]


def test_prompt_is_the_chat_template_and_user_text_stays_ordinary(tok):
    session = echo_session(tok, system="sys")
    transcript(session, ["say <|end|> now"])
    ids = session.last.prompt_ids
    s = tok.specials
    assert ids[:2] == [s["<|bos|>"], s["<|system|>"]] and ids[-1] == s["<|assistant|>"]
    assert ids.count(s["<|end|>"]) == 2  # after the system message and after the user's: none from the text
    assert session.messages[-1]["content"] == "#1 say <|end|> now"


def test_ctrl_c_during_a_reply_keeps_the_partial_reply_and_the_session(tok):
    class Interrupting(PlainIO):
        calls = 0

        def reply_text(self, text):
            Interrupting.calls += 1
            if Interrupting.calls == 4:
                raise KeyboardInterrupt
            super().reply_text(text)

    session = echo_session(tok)
    out = io.StringIO()
    assert run_chat(session, Interrupting(["hello world", "next"], out, out, echo=True), default_commands()) == 0
    assert out.getvalue() == "> hello world\n#1 \n[interrupted]\n> next\n#2 next\n"
    assert session.messages[1] == {"role": "assistant", "content": "#1 h", "interrupted": True}
    assert [m["role"] for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert session.messages_for_save()[1] == session.messages[1]  # /save keeps the mark


def test_ctrl_c_and_ctrl_d_at_the_prompt_end_the_loop(tok):
    class Keys(PlainIO):
        def __init__(self, exc):
            super().__init__([], io.StringIO())
            self.exc = exc

        def read(self):
            raise self.exc

    assert run_chat(echo_session(tok), Keys(KeyboardInterrupt()), default_commands()) == 0
    assert run_chat(echo_session(tok), Keys(EOFError()), default_commands()) == 0


def test_a_ctrl_c_while_the_prompt_starts_counts_as_one_press(tmp_path):
    """A Ctrl-C that arrives before prompt-toolkit has the terminal in raw mode is a SIGINT, and asyncio's runner
    can hand it back as CancelledError: it is one press like any other (the chat goes on after one, ends cleanly
    after two), not a traceback and exit status 1 (seen in test_terminal_session under load)."""
    from asyncio import CancelledError

    from rich.console import Console

    from minigpt.chat.io import TerminalIO

    class Prompt:  # prompt-toolkit's PromptSession.prompt, scripted
        def __init__(self, *events):
            self.events = list(events)

        def prompt(self, message):
            event = self.events.pop(0)
            if isinstance(event, BaseException):
                raise event
            return event

    out = io.StringIO()
    term = TerminalIO(Console(file=out, width=120), tmp_path / "history", {})
    term._session = Prompt(CancelledError(), "hi")
    assert term.read() == "hi" and "Ctrl-C again within 2 s" in out.getvalue()
    term._session = Prompt(KeyboardInterrupt(), CancelledError())
    with pytest.raises(KeyboardInterrupt):
        term.read()


def test_base_model_continues_plain_text(tok):
    session = echo_session(tok, mode="continue")
    text = transcript(session, ["Once upon", "a time"])
    assert text == "> Once upon\n...9\n> a time\n...20\n"  # "Once upon...9" + "\\n" + "a time": 20 characters
    assert session.last.prompt_ids == [tok.bos_id] + tok.encode("Once upon...9\na time")
    assert not any(tok.is_special(t) for t in session.last.prompt_ids[1:])


def test_characters_a_char_tokenizer_lacks_are_named(tok, tmp_path, capsys):
    """They become <|unk|>, which the model never saw, silently: now a note in the chat, sample and tokenizer."""
    from minigpt.cli import main
    from minigpt.text.chat_format import unknown_note

    notes = io.StringIO()
    run_chat(echo_session(tok), PlainIO(["héllo 白日", "hello"], io.StringIO(), notes), default_commands())
    assert notes.getvalue().count("not in this character tokenizer's vocabulary") == 1
    assert "3 characters ('é白日')" in notes.getvalue()
    assert unknown_note(tok, "hello") is None and unknown_note(SimpleNamespace(kind="bpe"), "白") is None
    tok.save(tmp_path / "t.char")
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "t.char"), "naïve"]) == 0
    assert "1 character ('ï') not in" in capsys.readouterr().err


def test_oldest_turns_are_dropped_to_fit_and_the_system_prompt_stays(tok):
    session = echo_session(tok, system="rules", block_size=64, max_new_tokens=8)
    notes = io.StringIO()
    out = io.StringIO()
    run_chat(session, PlainIO([f"message number {i}" for i in range(4)], out, notes), default_commands())
    assert "left out the 2 oldest messages to fit the model's 64-token context (the system prompt stays)" in \
        notes.getvalue()
    ids = session.last.prompt_ids
    assert len(ids) <= session.prompt_budget() == 56
    assert ids[:2] == [tok.bos_id, tok.specials["<|system|>"]]
    assert tok.decode(ids).count("message number") == 2 and "message number 3" in tok.decode(ids)
    assert len(session.messages) == 9, "the history itself keeps every message"


def test_a_message_too_long_for_the_context_is_refused_and_a_failed_turn_is_not_kept(tok, monkeypatch):
    session = echo_session(tok, system="rules", block_size=64, max_new_tokens=8)
    out = io.StringIO()
    lines = ["hi", "x" * 60, "/regen", "again"]  # the long line alone would push out the system prompt
    assert run_chat(session, PlainIO(lines, out, out), default_commands(), piped=True) == 1  # a line failed
    assert "that message takes 71 tokens" in out.getvalue() and "more than the 56 the model's 64-token context" in \
        out.getvalue()
    assert [m["content"] for m in session.messages] == ["rules", "hi", "#1 hi", "again", "#2 again"]
    assert "#1 hi" in out.getvalue().split("shorten it")[1]  # /regen answered "hi" again: the long turn left
    # a reply that fails leaves no empty assistant turn behind, and a /regen that fails keeps the old reply
    from minigpt.chat import loop

    def broken(s, io):
        raise MinigptError("the model's next-token probabilities are not finite")

    monkeypatch.setattr(loop, "respond", broken)
    before = [dict(m) for m in session.messages]
    transcript_out = io.StringIO()
    run_chat(session, PlainIO(["more", "/regen"], transcript_out, transcript_out), default_commands())
    assert transcript_out.getvalue().count("not finite") == 2 and session.messages == before


def test_regen_after_a_loaded_reply_with_no_question_keeps_it(tok, tmp_path):
    session = echo_session(tok)
    (tmp_path / "c.jsonl").write_text(json.dumps({"messages": [{"role": "assistant", "content": "I am a bot"}]}))
    text = transcript(session, [f"/load {tmp_path / 'c.jsonl'}", "/regen"])
    assert "nothing to regenerate" in text and session.messages == [{"role": "assistant", "content": "I am a bot"}]


def test_save_load_tokens_stats_help(tok, tmp_path):
    session = echo_session(tok, system="sys")
    path = tmp_path / "conv.jsonl"
    text = transcript(session, ["hi", f"/save {path}", "/tokens", "/stats", "/help"])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "#1 hi"}]}]
    assert f"saved 3 messages to {path}" in text
    ids_line = f"reply ids ({len(session.last.ids)}): {session.last.ids}"
    assert "<|user|>hi<|end|><|assistant|>#1 hi<|end|>" in text and ids_line in text
    assert "context" in text and "1" in text and "temperature 0.8" in text
    assert all(f"/{name}" in text for name in ("clear", "regen", "set", "system", "save", "load", "tokens", "exit"))
    other = echo_session(tok)
    assert transcript(other, [f"/load {path}", "/regen"]).endswith("#1 hi\n")
    assert other.messages_for_save() == rows[0]["messages"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    assert "error: " in transcript(echo_session(tok), [f"/load {bad}", "/load nowhere.jsonl", "/regen"])


def test_set_validates_and_keeps_the_old_value(tok):
    session = echo_session(tok)
    text = transcript(session, ["/set top_p 2", "/set max_tokens 7", "/set seed 5", "/set seed none", "/set colour 1",
                                "/set valid_utf8 maybe", "/set valid_utf8 off"])
    assert "error: --top-p: must be in (0, 1]" in text and "error: valid_utf8: 'maybe' is not on or off" in text
    assert session.sampling.top_p == 0.95 and session.sampling.max_new_tokens == 7 and session.sampling.seed is None
    assert session.sampling.valid_utf8 is False
    assert "error: usage: /set NAME VALUE" in text


def test_seeded_sessions_reproduce_and_regen_differs(tok):
    """With a real (random) model: a seed makes a whole session repeatable; /regen draws a new reply."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=16, zero_init=False))

    def run(lines):
        session = ChatSession(Engine(model, tok), sampling=SamplingConfig(seed=3, max_new_tokens=12, temperature=1.0))
        run_chat(session, PlainIO(lines, io.StringIO(), io.StringIO()), default_commands())
        return [m["content"] for m in session.messages if m["role"] == "assistant"]

    a, b = run(["hi", "/regen"]), run(["hi", "/regen"])
    assert a == b and len(a) == 1 and run(["hi"]) != a


def test_commands_can_be_added_from_another_module(tok):
    extra = CommandTable()

    @extra.command("count", "how many tokens the last reply had", usage="/count")
    def _count(ctx, arg):
        ctx.io.note(f"{len(ctx.session.last.ids)} tokens, first logprob {ctx.session.last.logprobs[0]:.2f}")

    text = transcript(echo_session(tok), ["hi", "/count", "/help"], commands=CommandTable(default_commands(), extra))
    assert "6 tokens, first logprob" in text and "/count" in text and "/attn" in text
    assert "count" not in BUILTIN and "count" not in default_commands(), "added to the merged table only"
    assert "unknown command /count" in transcript(echo_session(tok), ["hi", "/count"])


def test_input_that_is_not_utf8_and_a_binary_load_never_end_the_chat(tok, tmp_path):
    """Bad bytes become U+FFFD (with a note), so the reply and /save work; /load of a binary file is one line."""
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0 JFIF \x00\x01")
    saved = tmp_path / "c.jsonl"
    lines = [b"caf\xe9 ol\xe9\n", f"/load {binary}\n".encode(), f"/save {saved}\n".encode(), b"still here\n"]
    session = echo_session(tok)
    text = transcript(session, lines)
    assert "not valid UTF-8" in text and f"/load {binary}: not UTF-8 text" in text
    assert json.loads(saved.read_text())["messages"][0]["content"] == "caf\ufffd ol\ufffd"
    assert text.endswith("#2 still here\n")
    session.add_user("lone \udcff surrogate")  # what a terminal hands over for an undecodable byte
    assert session.messages[-1]["content"] == "lone \ufffd surrogate"


def test_an_unexpected_error_saves_the_conversation_and_the_chat_goes_on(tok, monkeypatch):
    from minigpt.chat import loop

    session = echo_session(tok)
    real, calls = loop.respond, []

    def flaky(s, io):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return real(s, io)

    monkeypatch.setattr(loop, "respond", flaky)
    text = transcript(session, ["first", "second", "third"])
    saved = sorted((Path(os.environ["MINIGPT_HOME"]) / "chats").glob("rescued-*.jsonl"))
    assert len(saved) == 1 and f"unexpected RuntimeError: a bug; the conversation is saved in {saved[0]}" in text
    # the failed turn is not kept (the next one follows a reply, as in any conversation); the chat went on
    assert [m["content"] for m in json.loads(saved[0].read_text())["messages"]] == ["first", "#1 first"]
    assert text.endswith("#2 third\n") and [m["content"] for m in session.messages][2:] == ["third", "#2 third"]
    assert "RuntimeError: a bug" in saved[0].with_suffix(".traceback.txt").read_text()


def test_ctrl_c_at_the_prompt_exits_only_when_pressed_twice_within_two_seconds():
    from minigpt.chat.io import CtrlC

    now = [100.0]
    rule = CtrlC(clock=lambda: now[0])
    assert not rule.pressed()  # the first press only arms
    now[0] += 2.5
    assert not rule.pressed()  # too late: arms again
    now[0] += 1.9
    assert rule.pressed()
    rule.reset()  # a line was entered: start over
    now[0] += 0.1
    assert not rule.pressed()


def test_commands_never_overwrite_or_create_folders_without_force_or_a_yes(tok, tmp_path):
    session = echo_session(tok)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = io.StringIO()
    lines = ["hi", f"/save {victim}", f"/save {tmp_path / 'new' / 'x.jsonl'}"]
    run_chat(session, PlainIO(lines, out, out), default_commands())
    text = out.getvalue()
    assert victim.read_text() == "precious" and not (tmp_path / "new").exists()
    assert f"{victim}: already exists" in text and "no such folder" in text
    run_chat(session, PlainIO([f"/save {victim}", f"/save {tmp_path / 'new' / 'x.jsonl'}"], out, out),
             default_commands(), force=True)
    assert json.loads(victim.read_text())["messages"][0]["content"] == "hi" and (tmp_path / "new" / "x.jsonl").is_file()


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("chat_ckpt"), "sft")


def minigpt(*args, input: str | None = None, timeout: int = 180,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minigpt", *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}, cwd=cwd)


def expected_transcript(ckpt: Path, lines: list[str], **sampling) -> str:
    from minigpt.checkpoint import load_checkpoint

    c = load_checkpoint(ckpt)
    session = ChatSession(Engine(c.model, c.tokenizer), sampling=SamplingConfig(**sampling))
    out = io.StringIO()
    run_chat(session, PlainIO(lines, out, io.StringIO()), default_commands())
    return out.getvalue()


def test_one_shot_prints_the_answer(ckpt):
    r = minigpt("chat", "--checkpoint", str(ckpt), "-p", "what is a list?", "--temperature", "0",
                "--max-new-tokens", "25")
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected_transcript(ckpt, ["what is a list?"], temperature=0, max_new_tokens=25)
    assert len(r.stdout) == 26 and "\x1b" not in r.stdout


def test_piped_stdin_is_one_turn_per_line(ckpt):
    r = minigpt("chat", "--checkpoint", str(ckpt), "--temperature", "0", "--max-new-tokens", "12",
                "--system", "be nice", input="hello\nand then?\n")
    assert r.returncode == 0, r.stderr
    expected = expected_transcript(ckpt, ["/system be nice", "hello", "and then?"], temperature=0, max_new_tokens=12)
    assert r.stdout == expected and len(r.stdout) == 2 * 13 and "\x1b" not in r.stdout


def test_piped_slash_commands_are_text_unless_commands_is_given(ckpt, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    r = minigpt("chat", "--checkpoint", str(ckpt), "--max-new-tokens", "5", input="/save victim.txt\n", cwd=tmp_path)
    assert r.returncode == 0 and victim.read_text() == "precious" and len(r.stdout) == 6  # a 64-token context
    assert "add --commands" in r.stderr
    r = minigpt("chat", "--checkpoint", str(ckpt), "--commands", "--max-new-tokens", "5",
                input=f"hello\n/save {victim}\n/attn html {victim}\n/attn html {tmp_path / 'new' / 'a.html'}\n")
    assert victim.read_text() == "precious" and r.stderr.count("already exists") == 2
    assert r.returncode == 1  # piped: a line that failed makes the exit status say so
    assert "no such folder" in r.stderr and not (tmp_path / "new").exists()
    r = minigpt("chat", "--checkpoint", str(ckpt), "--commands", "--force", input=f"/save {victim}\n")
    assert r.returncode == 1 and "the conversation is empty" in r.stderr and victim.read_text() == "precious"
    r = minigpt("chat", "--checkpoint", str(ckpt), "--commands", "--force", "--max-new-tokens", "3",
                input=f"hi\n/save {victim}\n")
    assert r.returncode == 0 and [m["role"] for m in json.loads(victim.read_text())["messages"]] == ["user",
                                                                                                  "assistant"]


def test_a_pipe_whose_reader_leaves_ends_the_chat_quietly(ckpt, tmp_path):
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "chat", "--checkpoint", str(ckpt), "--max-new-tokens",
                             "40"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "MINIGPT_HOME": str(home), "OMP_NUM_THREADS": "1"})
    proc.stdin.write(b"hi\n" * 200)
    proc.stdin.close()
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    assert proc.wait(120) == 0
    err = proc.stderr.read().decode()
    assert "unexpected" not in err and "Traceback" not in err and not (home / "chats").exists(), err


def test_piped_bytes_that_are_not_utf8_do_not_end_the_chat(ckpt, tmp_path):
    saved = tmp_path / "c.jsonl"
    r = subprocess.run([sys.executable, "-m", "minigpt", "chat", "--checkpoint", str(ckpt), "--max-new-tokens", "3",
                        "--commands"], input=b"caf\xe9\n" + f"/save {saved}\n".encode(), capture_output=True,
                       timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr
    assert json.loads(saved.read_text())["messages"][0]["content"] == "caf\ufffd"


def test_base_checkpoint_continues_and_says_so(tmp_path):
    run = make_checkpoint(tmp_path / "base", "pretrain")
    r = minigpt("chat", "--checkpoint", str(run), "-p", "Once", "--max-new-tokens", "5", "--seed", "1")
    assert r.returncode == 0 and "base model" in r.stderr and len(r.stdout) == 6


def test_sample_streams_repeats_and_grids(ckpt):
    r = minigpt("sample", "--checkpoint", str(ckpt), "Hello", "--max-new-tokens", "20", "--seed", "4",
                "-n", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Hello") == 2 and "seed 4" in r.stderr and "seed 5" in r.stderr  # the text alone on stdout
    assert "seed" not in r.stdout
    b = minigpt("sample", "--checkpoint", str(ckpt), "Hello", "--max-new-tokens", "20", "--seed", "4",
                "-n", "2", "--batch")
    texts = [line for line in r.stdout.splitlines() if line.startswith("Hello")]
    assert texts == [line for line in b.stdout.splitlines() if line.startswith("Hello")]
    g = minigpt("sample", "--checkpoint", str(ckpt), "Hi", "--max-new-tokens", "80", "--grid",
                "temperature=0,1.5", "top_k=1,40", "--seed", "1", "--no-cache")
    assert g.returncode == 0, g.stderr
    assert "temperature" in g.stdout and "top_k" in g.stdout and g.stdout.count("│ 1.5") == 2
    assert "window slid" in g.stderr  # 80 tokens past a 64-token block
    bad = minigpt("sample", "--checkpoint", str(ckpt), "--top-p", "3")
    assert bad.returncode == 2 and "--top-p" in bad.stderr


# ---------------------------------------------------------------------------------------------- a real terminal


def spawn_chat(ckpt: Path, *flags: str):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "PROMPT_TOOLKIT_NO_CPR": "1", "TERM": "xterm-256color", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    # Ctrl-C as at a terminal, also when pytest itself was started in the background (`cmd &` in a script starts
    # it with SIGINT ignored, and an ignored signal stays ignored in its children)
    child = pexpect.spawn(sys.executable, ["-m", "minigpt", "chat", "--checkpoint", str(ckpt), *flags], env=env,
                          encoding="utf-8", timeout=90, dimensions=(40, 200),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.expect_exact("/help for commands")
    return child


def at_prompt(child) -> None:
    """Wait for prompt-toolkit's prompt: control keys typed before it (tty still in cooked mode) mean other things."""
    child.expect_exact(">")


def test_terminal_session(ckpt, tmp_path):
    from minigpt.checkpoint import load_checkpoint

    child = spawn_chat(ckpt, "--max-new-tokens", "20")
    try:
        child.sendline("hello")
        child.expect(r"20 tokens · [\d.]+ tokens/s · first token \d+ ms")
        child.sendline("/set temperature 0")
        child.expect_exact("temperature = 0")
        child.sendline("/clear")
        child.expect_exact("conversation cleared")
        child.sendline("/set max_tokens 100000")
        child.expect_exact("max_tokens = 100000")
        c = load_checkpoint(ckpt)  # what the reply must start with (greedy)
        session = ChatSession(Engine(c.model, c.tokenizer), sampling=SamplingConfig(temperature=0, max_new_tokens=30))
        session.add_user("tell me a long story")
        start = session.respond().text
        child.sendline("tell me a long story")
        child.expect_exact(start)  # streamed...
        child.sendintr()  # ... and stopped by Ctrl-C
        child.expect(r"tokens/s · first token \d+ ms · interrupted")
        path = tmp_path / "conv.jsonl"
        child.sendline(f"/save {path}")
        child.expect_exact("saved 2 messages")
        child.sendline("/set max_tokens 5")
        child.expect_exact("max_tokens = 5")
        child.sendline("and now?")
        child.expect(r"5 tokens · [\d.]+ tokens/s")
        at_prompt(child)
        child.sendcontrol("c")  # Ctrl-C at an empty prompt (e.g. meant for a reply that just ended): only arms
        child.expect_exact("Ctrl-C again within 2 s to exit")
        child.sendline("/set top_k 3")  # the chat goes on, conversation intact
        child.expect_exact("top_k = 3")
        at_prompt(child)
        child.sendcontrol("c")
        child.expect_exact("Ctrl-C again")
        child.sendcontrol("c")  # a second Ctrl-C within 2 s: leave
        child.expect(pexpect_eof())
    finally:
        child.close()
    assert child.exitstatus == 0
    saved = json.loads(path.read_text())
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["messages"][1]["content"].startswith(start)  # the partial reply, kept
    history = Path(os.environ["MINIGPT_HOME"]) / "chat_history"
    assert "tell me a long story" in history.read_text()


def test_terminal_ctrl_d_exits(ckpt):
    child = spawn_chat(ckpt)
    try:
        at_prompt(child)
        child.sendline("first message")
        child.expect(r"tokens/s")
        at_prompt(child)
        child.send("half a line")
        child.sendcontrol("c")  # Ctrl-C with text typed clears the line; the chat goes on
        child.sendline("/set top_k 7")
        child.expect_exact("top_k = 7")
        at_prompt(child)
        child.sendcontrol("d")
        child.expect(pexpect_eof())
    finally:
        child.close()
    assert child.exitstatus == 0


def test_terminal_asks_before_overwriting_or_creating_folders(ckpt, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    child = spawn_chat(ckpt, "--max-new-tokens", "3")
    try:
        at_prompt(child)
        child.sendline("hi")
        at_prompt(child)
        child.sendline(f"/save {victim}")
        child.expect_exact("exists; overwrite it? [y/N]")
        child.sendline("")  # the default is no
        child.expect_exact("already exists")
        child.sendline(f"/save {tmp_path / 'new' / 'c.jsonl'}")
        child.expect_exact("does not exist; create it? [y/N]")
        child.sendline("y")
        child.expect_exact("saved 2 messages")
        at_prompt(child)
        child.sendcontrol("d")
        child.expect(pexpect_eof())
    finally:
        child.close()
    assert victim.read_text() == "precious" and (tmp_path / "new" / "c.jsonl").is_file()


def pexpect_eof():
    import pexpect

    return pexpect.EOF
