"""`minigpt serve` against real clients on loopback: the official openai package (streamed and not), curl on the
CLI's server, raw sockets for errors and disconnects, and the chat page in headless Chromium. Every answer is
checked against the engine run directly on the same prompt (greedy, or the same seed)."""
from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

uvicorn = pytest.importorskip("uvicorn", reason="needs the serve extra: pip install -e '.[serve]'")
openai = pytest.importorskip("openai", reason="needs the openai package (the test extra)")

from minigpt.checkpoint import load_checkpoint  # noqa: E402
from minigpt.infer.engine import Engine  # noqa: E402
from minigpt.infer.sampling import SamplingConfig  # noqa: E402
from minigpt.lens import attention as insp  # noqa: E402
from minigpt.serve.app import Served, Server, create_app  # noqa: E402
from conftest import make_checkpoint  # noqa: E402
from minigpt.text.chat_format import render_prompt  # noqa: E402

CHARS = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?#'<|>/-`"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTION = [{"role": "user", "content": "what is a list?"}]

pytestmark = pytest.mark.usefixtures("one_thread")


class _Server(Server):
    def __init__(self, config: uvicorn.Config, served: Served):
        super().__init__(config, served)
        self.ready = threading.Event()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self.ready.set()


class Running:
    """A real uvicorn server in a thread, on a free loopback port; `served` is reachable for white-box checks."""

    def __init__(self, checkpoint: Path, **options):
        ckpt = load_checkpoint(checkpoint)
        self.served = Served(Engine(ckpt.model, ckpt.tokenizer), model_id="tiny",
                             stage=ckpt.config["stage"], **options)
        self.tokenizer, self.engine = ckpt.tokenizer, self.served.engine
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _Server(uvicorn.Config(create_app(self.served), log_level="warning"), self.served)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        assert self.server.ready.wait(30), "the server did not start"

    def client(self, **kw) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def post(self, path: str, body: bytes | dict, headers: dict | None = None) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
            r = conn.getresponse()
            return r.status, json.loads(r.read())
        finally:
            conn.close()

    def open_stream(self, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200
        return conn, r

    def reference(self, prompt_ids: list[int], chat: bool = True, **sampling):
        stops = set(self.tokenizer.specials.values()) if chat else None
        return self.engine.generate(prompt_ids, SamplingConfig(**sampling), stop_ids=stops)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve_ckpt")
    # the main one's context is long enough that a reply nobody stops runs for seconds (the disconnect, queue and
    # stop-button tests); "short" is block 64, for context overflow
    return {"sft": make_checkpoint(root, "sft", chars=CHARS, block_size=32768),
            "short": make_checkpoint(root, "sft", chars=CHARS),
            "pretrain": make_checkpoint(root, "pretrain", chars=CHARS),
            "end": make_checkpoint(root, "sft", end_first=True, chars=CHARS)}


@pytest.fixture(scope="module")
def server(ckpts):
    s = Running(ckpts["sft"])
    yield s
    s.close()


def sse_events(response: http.client.HTTPResponse):
    """The JSON payloads of a server-sent event stream, up to [DONE]."""
    for raw in response:
        line = raw.decode().strip()
        if line == "data: [DONE]":
            return
        if line.startswith("data: "):
            yield json.loads(line[6:])


# ---------------------------------------------------------------------------------------------- the openai client


def test_openai_chat_not_streamed_equals_the_engine(server):
    r = server.client().chat.completions.create(model="anything", messages=QUESTION, temperature=0, max_tokens=12)
    prompt = render_prompt(server.tokenizer, QUESTION)
    ref = server.reference(prompt, temperature=0, max_new_tokens=12)
    assert r.choices[0].message.content == ref.text and len(ref.text) == 12
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (len(prompt), 12, len(prompt) + 12)
    assert r.model == "tiny" and r.id.startswith("chatcmpl-")


def test_openai_chat_streamed_token_by_token_with_usage(server):
    stream = server.client().chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=10,
                                                     stream=True, stream_options={"include_usage": True},
                                                     logprobs=True)
    chunks = list(stream)
    ref = server.reference(render_prompt(server.tokenizer, QUESTION), temperature=0, max_new_tokens=10)
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == ref.text and len(content) == 10  # one chunk per token: streamed, not batched up
    entries = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.model_extra["token_id"] for e in entries] == ref.ids
    assert [e.logprob for e in entries] == pytest.approx(ref.logprobs, abs=1e-6)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_openai_completions_streamed_and_not(server):
    client, tok = server.client(), server.tokenizer
    ref = server.reference([tok.bos_id] + tok.encode("the fox"), chat=False, temperature=0, max_new_tokens=9)
    r = client.completions.create(model="tiny", prompt="the fox", temperature=0, max_tokens=9)
    assert r.choices[0].text == ref.text and r.usage.completion_tokens == 9 and r.usage.prompt_tokens == 8
    parts = [c.choices[0].text for c in client.completions.create(model="tiny", prompt="the fox", temperature=0,
                                                                  max_tokens=9, stream=True) if c.choices]
    assert "".join(parts) == ref.text


def test_sampling_parameters_are_mapped(server):
    client, prompt = server.client(), render_prompt(server.tokenizer, QUESTION)

    def ask(**kw):
        return client.chat.completions.create(model="tiny", messages=QUESTION, max_tokens=16, **kw)

    seeded = ask(temperature=1.0, top_p=0.9, seed=7)
    assert seeded.choices[0].message.content == server.reference(prompt, temperature=1.0, top_p=0.9, seed=7,
                                                                 max_new_tokens=16).text
    assert seeded.model_extra["seed"] == 7
    assert ask(temperature=1.0, seed=8).choices[0].message.content != ask(temperature=1.0, seed=9).choices[0].message.content
    extension = ask(temperature=1.0, seed=3, extra_body={"top_k": 2, "repetition_penalty": 1.3})
    assert extension.choices[0].message.content == server.reference(prompt, temperature=1.0, seed=3, top_k=2,
                                                                    repetition_penalty=1.3, max_new_tokens=16).text
    two = ask(temperature=1.0, seed=11, n=2)  # sample i is seeded seed + i, from one shared prefill
    assert [c.message.content for c in two.choices] == [
        server.reference(prompt, temperature=1.0, seed=s, max_new_tokens=16).text for s in (11, 12)]
    assert two.usage.completion_tokens == 32
    greedy = server.reference(prompt, temperature=0, max_new_tokens=16).text
    stop = greedy[5:7]
    cut = ask(temperature=0, stop=[stop, "never there"])
    assert cut.choices[0].message.content == greedy[:greedy.find(stop)] and cut.choices[0].finish_reason == "stop"


def test_reply_stops_at_end_and_user_text_stays_text(ckpts):
    s = Running(ckpts["end"])
    try:
        r = s.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "<|end|>"}],
                                               temperature=0, max_tokens=50)
        assert r.choices[0].message.content == "" and r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens == 1  # the <|end|> it sampled
        assert r.usage.prompt_tokens == 1 + 1 + 7 + 1 + 1  # <|bos|> <|user|> the 7 characters <|end|> <|assistant|>
    finally:
        s.close()


def test_a_base_checkpoint_answers_chat_as_a_continuation(ckpts):
    s = Running(ckpts["pretrain"])
    try:
        card = s.client().models.list().data[0]
        assert card.id == "tiny" and card.model_extra["minigpt"]["chat"] == "continuation"
        r = s.client().chat.completions.create(model="tiny", messages=QUESTION, temperature=0, max_tokens=8)
        tok = s.tokenizer
        ref = s.reference([tok.bos_id] + tok.encode("what is a list?"), chat=False, temperature=0, max_new_tokens=8)
        assert r.choices[0].message.content == ref.text
    finally:
        s.close()


def test_models_lists_the_model(server):
    card = server.client().models.list().data[0]
    assert card.id == "tiny" and card.model_extra["minigpt"]["chat"] == "template"
    assert card.model_extra["minigpt"]["context_length"] == 32768
    assert server.client().models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        server.client().models.retrieve("gpt-4")


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("body, param, words", [
    ({"model": "tiny"}, "messages", "required"),
    ({"messages": []}, "messages", "non-empty"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages", "role 'tool'"),
    ({"messages": [{"role": "user"}]}, "messages", "needs 'role' and 'content'"),
    ({"messages": QUESTION, "temperature": -1}, "temperature", "must be a number >= 0"),
    ({"messages": QUESTION, "temperature": "hot"}, "temperature", "must be a number"),
    ({"messages": QUESTION, "top_p": 1.5}, "top_p", "(0, 1]"),
    ({"messages": QUESTION, "max_tokens": 0}, "max_tokens", "from 1 to 1,000,000"),
    ({"messages": QUESTION, "seed": -3}, "seed", "from 0 to 2**64 - 1"),
    ({"messages": QUESTION, "seed": 2**64}, "seed", "from 0 to 2**64 - 1"),
    ({"messages": QUESTION, "n": 0}, "n", "between 1 and"),
    ({"messages": QUESTION, "stop": [""]}, "stop", "non-empty"),
    ({"messages": QUESTION, "stream": "yes"}, "stream", "true or false"),
    ({"messages": QUESTION, "stream_options": {"include_usage": True}}, "stream_options", "only allowed with"),
    ({"messages": QUESTION, "response_format": {"type": "json_object"}}, "response_format", "plain text only"),
    ({"messages": QUESTION, "presence_penalty": 0.5}, "presence_penalty", "repetition_penalty"),
    ({"messages": QUESTION, "logprobs": True, "top_logprobs": 3}, "top_logprobs", "/v1/minigpt/inspect"),
    (b'{"messages": [', None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    ('{"messages": [{"role": "user", "content": "caf\u00e9"}]}'.encode("latin-1"), None, "not valid UTF-8"),
])
def test_bad_requests_get_openai_shaped_400s(server, body, param, words):
    status, reply = server.post("/v1/chat/completions", body)
    assert status == 400, reply
    assert set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["type"] == "invalid_request_error" and reply["error"]["param"] == param
    assert words in reply["error"]["message"]


def test_context_overflow_and_bad_prompts_on_completions(server, ckpts):
    short = Running(ckpts["short"])  # a 64-token context
    try:
        status, reply = short.post("/v1/completions", {"prompt": "x" * 63})  # <|bos|> + 63 fills the 64 tokens
        assert status == 400 and reply["error"]["code"] == "context_length_exceeded"
        assert "no room for a reply" in reply["error"]["message"]
        ids = [short.tokenizer.bos_id] + short.tokenizer.encode("x" * 61)  # room for 2: max_tokens is cut to it
        status, reply = short.post("/v1/completions", {"prompt": "x" * 61, "max_tokens": 50, "temperature": 0})
        assert status == 200 and reply["choices"][0]["finish_reason"] == "length"
        assert reply["usage"] == {"prompt_tokens": 62, "completion_tokens": 2, "total_tokens": 64}
        assert reply["choices"][0]["text"] == short.reference(ids, chat=False, temperature=0, max_new_tokens=2).text
        status, reply = short.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "a" * 80}]})
        assert status == 400 and reply["error"]["param"] == "messages"
        message = reply["error"]["message"]
        assert "context is 64 tokens" in message and "drop the oldest turns" in message
    finally:
        short.close()
    status, reply = server.post("/v1/completions", {"prompt": [0, 10**6]})
    assert status == 400 and "outside the vocabulary" in reply["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:  # what the official client raises, with the message
        server.client().chat.completions.create(model="tiny", messages=[{"role": "robot", "content": "hi"}])
    assert "role 'robot'" in e.value.message


def test_unknown_routes_and_methods_are_openai_shaped(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for method, path, status in (("GET", "/v1/nothing", 404), ("GET", "/v1/chat/completions", 405)):
        conn.request(method, path)
        r = conn.getresponse()
        assert r.status == status and "message" in json.loads(r.read())["error"]
    conn.close()


def test_api_key_is_a_bearer_check(ckpts):
    s = Running(ckpts["sft"], api_key="s3cret")
    try:
        status, reply = s.post("/v1/chat/completions", {"messages": QUESTION})
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        status, _ = s.post("/v1/chat/completions", {"messages": QUESTION}, {"Authorization": "Bearer wrong"})
        assert status == 401
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").models.list()
        r = s.client(api_key="s3cret").chat.completions.create(model="tiny", messages=QUESTION, max_tokens=3)
        assert r.usage.completion_tokens == 3
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.request("GET", "/")  # the page holds no secret; it asks for the key itself
        assert conn.getresponse().status == 200
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------- concurrency


def test_concurrent_clients_each_get_their_own_answer(server):
    prompt = render_prompt(server.tokenizer, QUESTION)

    def one(seed: int) -> str:
        stream = server.client().chat.completions.create(model="tiny", messages=QUESTION, temperature=1.0,
                                                         seed=seed, max_tokens=20, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    seeds = list(range(100, 116))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, seeds))
    assert answers == [server.reference(prompt, temperature=1.0, seed=s, max_new_tokens=20).text for s in seeds]


def _records_since(server, first_id: int):
    return [r for r in server.served.worker.records if r.id > first_id]


def test_a_client_that_disconnects_stops_its_generation(server):
    worker = server.served.worker
    last = max((r.id for r in worker.records), default=0)
    long = {"messages": QUESTION, "max_tokens": 100_000, "temperature": 1.0}  # ~minutes if nobody stopped it
    conn_a, a = server.open_stream(long)
    first = next(sse_events(a))  # job A is running on the worker
    assert first["choices"][0]["delta"]["role"] == "assistant"
    conn_b, b = server.open_stream(long)  # job B waits behind it
    conn_b.sock.shutdown(socket.SHUT_RDWR)  # B leaves before it starts
    conn_b.close()
    assert worker.wait_for(lambda rs: [j.cancelled for j in worker.queued] == [True], timeout=60)
    for _, event in zip(range(3), sse_events(a)):
        assert event["choices"][0]["delta"]["content"]
    conn_a.sock.shutdown(socket.SHUT_RDWR)  # A leaves mid-stream
    conn_a.close()
    assert worker.wait_for(lambda rs: len([r for r in rs if r.id > last]) >= 2, timeout=60)
    a_rec, b_rec = _records_since(server, last)[:2]
    assert a_rec.reason == "cancelled" and 3 <= a_rec.tokens < 100_000
    assert b_rec.reason == "skipped" and b_rec.tokens == 0
    # a non-streamed request whose client leaves is stopped too, and the worker moves on to the next one
    sock = socket.create_connection(("127.0.0.1", server.port))
    body = json.dumps(long).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert worker.wait_for(lambda rs: bool(worker.running), timeout=60)  # it is generating
    sock.close()
    r = server.client().chat.completions.create(model="tiny", messages=QUESTION, max_tokens=4)
    assert r.usage.completion_tokens == 4
    assert [rec.reason for rec in _records_since(server, b_rec.id)] == ["cancelled", "done"]


def test_a_full_queue_is_a_503_and_batches_can_plug_in(server):
    worker = server.served.worker
    worker.queue_size = 1
    try:
        conn_a, a = server.open_stream({"messages": QUESTION, "max_tokens": 100_000})
        next(sse_events(a))  # A runs
        conn_b, b = server.open_stream({"messages": QUESTION, "max_tokens": 100_000})  # B waits: the queue is full
        status, reply = server.post("/v1/chat/completions", {"messages": QUESTION})
        assert status == 503 and reply["error"]["code"] == "overloaded"
    finally:
        worker.queue_size = 64
        for conn in (conn_b, conn_a):
            conn.sock.shutdown(socket.SHUT_RDWR)
            conn.close()
    # the decoder is where batched decoding plugs in: it is handed up to max_batch waiting jobs at once
    from minigpt.serve.worker import Job, Worker

    class Batches:
        max_batch = 3

        def __init__(self):
            self.seen: list[list[int]] = []

        def run(self, jobs, admit):
            self.seen.append([j.prompt_ids[0] for j in jobs])
            return {j.id: "done" for j in jobs}

    decoder, loop = Batches(), asyncio.new_event_loop()
    batched = Worker(server.engine, decoder=decoder)
    jobs = [batched.submit(Job(loop, prompt_ids=[i])) for i in range(5)]
    jobs[1].cancel()
    batched.start()
    assert batched.wait_for(lambda rs: len(rs) == 5, timeout=30)
    batched.stop()
    loop.close()
    assert decoder.seen == [[0, 2], [3, 4]]  # the cancelled job 1 never reached the decoder
    assert {r.id: r.reason for r in batched.records}[jobs[1].id] == "skipped"


# ---------------------------------------------------------------------------------------------- inspect


def test_inspect_gives_the_tokens_probability_and_attention(server):
    prompt = render_prompt(server.tokenizer, QUESTION)
    ref = server.reference(prompt, temperature=0, max_new_tokens=6)
    status, view = server.post("/v1/minigpt/inspect", {"messages": QUESTION, "reply_ids": ref.ids, "index": 4})
    assert status == 200, view
    assert view["token"]["id"] == ref.ids[4]
    assert view["token"]["prob"] == pytest.approx(math.exp(ref.logprobs[4]), rel=1e-4)
    assert view["alternatives"][0]["id"] == ref.ids[4]  # greedy: the sampled token is the most likely one
    probs = [a["prob"] for a in view["alternatives"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 5
    att = view["attention"]
    model = server.engine.model
    rec = insp.record(model, server.tokenizer, prompt + ref.ids[:5], prompt_len=len(prompt))
    assert att["tokens"] == rec.texts and att["prompt_len"] == len(prompt)
    for layer in range(2):
        for head in range(2):
            row = att["rows"][layer][head]
            assert len(row) == len(prompt) + 4 and sum(row) == pytest.approx(1, abs=1e-3)
            assert row == pytest.approx(rec.influence(len(rec) - 1, layer, head).tolist(), abs=1e-5)
    assert att["rows"][0] != att["rows"][1]
    status, bad = server.post("/v1/minigpt/inspect", {"messages": QUESTION, "reply_ids": ref.ids, "index": 6})
    assert status == 400 and bad["error"]["param"] == "index"


# ---------------------------------------------------------------------------------------------- curl and the CLI


def serve_cli(checkpoint: Path, *flags: str) -> tuple[subprocess.Popen, str, str]:
    """`minigpt serve` in a subprocess on a free port: (the process, its API's base URL, what it printed so far)."""
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "serve", "--checkpoint", str(checkpoint), "--port",
                             "0", *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    banner = ""
    for line in proc.stdout:
        banner += line
        if "API http" in line:
            break
    return proc, re.search(r"API (http://127\.0\.0\.1:\d+)/v1", banner).group(1), banner


def test_curl_against_minigpt_serve(ckpts):
    proc, url, _ = serve_cli(ckpts["short"], "--api-key", "k3y", "--temperature", "0")
    try:
        body = json.dumps({"model": "run-sft", "messages": QUESTION, "max_tokens": 7})
        curl = ["curl", "-sS", "--max-time", "60", "-H", "Content-Type: application/json"]
        out = subprocess.run(curl + ["-H", "Authorization: Bearer k3y", "-d", body, url + "/v1/chat/completions"],
                             capture_output=True, text=True, timeout=90)
        reply = json.loads(out.stdout)
        ckpt = load_checkpoint(ckpts["short"])
        engine = Engine(ckpt.model, ckpt.tokenizer)
        ref = engine.generate(render_prompt(ckpt.tokenizer, QUESTION), SamplingConfig(temperature=0, max_new_tokens=7),
                              stop_ids=set(ckpt.tokenizer.specials.values()))
        assert reply["choices"][0]["message"]["content"] == ref.text and reply["model"] == "run-sft"
        streamed = subprocess.run(curl + ["-N", "-H", "Authorization: Bearer k3y", "-d",
                                          body[:-1] + ', "stream": true}', url + "/v1/chat/completions"],
                                  capture_output=True, text=True, timeout=90).stdout
        events = [ln[6:] for ln in streamed.splitlines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                       if json.loads(e)["choices"]) == ref.text
        denied = subprocess.run(curl + ["-w", "%{http_code}", "-o", "/dev/null", "-d", body,
                                        url + "/v1/chat/completions"], capture_output=True, text=True, timeout=90)
        assert denied.stdout == "401"
    finally:
        proc.terminate()
        proc.wait(30)


def test_ctrl_c_ends_a_running_stream_with_an_error_event_and_exits_at_once(ckpts):
    import signal
    import time

    proc, url, banner = serve_cli(ckpts["sft"])
    try:
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request("POST", "/v1/chat/completions", json.dumps({"messages": QUESTION, "max_tokens": 100_000,
                                                                 "stream": True}), {"Content-Type": "application/json"})
        response = conn.getresponse()
        first = response.readline()  # generating now: many seconds of it if nobody stops it
        start = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        rest = first + response.read()
        proc.wait(30)
        took = time.perf_counter() - start
        output = banner + proc.stdout.read()
    finally:
        proc.kill()
    events = [json.loads(ln[6:]) for ln in rest.decode().splitlines() if ln.startswith("data: {")]
    assert events[-1]["error"]["code"] == "shutting_down"  # the stream says why it ended
    assert took < 4 and proc.returncode == 130  # not after uvicorn's 5 s graceful timeout; 130: Ctrl-C
    assert "Traceback" not in output and "CancelledError" not in output, output


def test_a_server_told_to_exit_answers_queued_and_new_requests_with_a_503(ckpts):
    import signal

    s = Running(ckpts["sft"])
    try:
        conn_a, a = s.open_stream({"messages": QUESTION, "max_tokens": 100_000})
        next(sse_events(a))  # A runs
        replies = {}
        thread = threading.Thread(target=lambda: replies.update(b=s.post("/v1/chat/completions", {
            "messages": QUESTION, "max_tokens": 100_000})))
        thread.start()
        assert s.served.worker.wait_for(lambda rs: len(s.served.worker.queued) == 1, timeout=30)  # B waits
        s.server.handle_exit(signal.SIGINT, None)  # what Ctrl-C calls
        thread.join(30)
        status, body = replies["b"]
        assert status == 503 and body["error"]["code"] == "shutting_down" and "retry" in body["error"]["message"]
        assert list(sse_events(a))[-1]["error"]["code"] == "shutting_down"
        conn_a.close()
    finally:
        s.close()


def test_a_busy_port_is_a_one_line_error(ckpts):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "minigpt", "serve", "--checkpoint", str(ckpts["sft"]), "--port",
                            str(port)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "choose another --port" in r.stderr and "Traceback" not in r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "minigpt", "serve", "--checkpoint", str(ckpts["sft"]), "--api-key",
                        "clé"], capture_output=True, text=True, timeout=120)  # no client could send it
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "printable ASCII" in r.stderr


# ---------------------------------------------------------------------------------------------- the page

needs_chromium = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium "
                                    "(apt-get install chromium); no browser is downloaded")
REPLY_TEXT = "() => [...document.querySelectorAll('.msg.assistant .tok')].map(s => s.textContent).join('')"


@pytest.fixture
def page(server):
    """The chat page in headless Chromium; after the test: no page error, no request outside the server."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900}).new_page()
            problems, requests = [], []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server.url + "/")
            yield page
            assert not problems, problems
            assert all(u.startswith(server.url) for u in requests), requests  # nothing from outside
        finally:
            browser.close()


def ask_on_page(page, text: str, max_tokens: int, wait: bool = True) -> None:
    page.fill("#temperature", "0")
    page.fill("#max_tokens", str(max_tokens))
    page.fill("#input", text)
    page.press("#input", "Enter")
    if wait:
        page.wait_for_selector(".msg.assistant .note")  # the reply has finished


@pytest.mark.slow
@needs_chromium
def test_the_page_streams_a_reply_and_shows_a_tokens_attention(server, page):
    prompt = render_prompt(server.tokenizer, QUESTION)
    ref = server.reference(prompt, temperature=0, max_new_tokens=24)
    ask_on_page(page, QUESTION[0]["content"], 24)
    assert page.evaluate(REPLY_TEXT) == ref.text
    assert int(page.get_attribute("body", "data-chunks")) >= 24  # drawn chunk by chunk as they came
    # click a reply token: its probability, the alternatives, and the attention of its query
    page.locator(".msg.assistant .tok").nth(5).click()
    page.wait_for_selector("#influence[data-signature]")
    assert float(page.get_attribute("#prob", "data-prob")) == pytest.approx(math.exp(ref.logprobs[5]), rel=1e-4)
    assert page.locator("#alts div").first.get_attribute("class") == "chosen"  # greedy: the most likely
    spans = page.locator("#influence span")
    assert spans.count() == len(prompt) + 5 + 1
    assert spans.last.evaluate("s => s.style.background") == "rgb(211, 47, 47)"  # the predicted token
    before = page.get_attribute("#influence", "data-signature")
    assert page.get_attribute("#influence", "data-layer") == "1"
    page.select_option("#layer", "0")
    assert page.get_attribute("#influence", "data-layer") == "0"
    after_layer = page.get_attribute("#influence", "data-signature")
    page.select_option("#head", "1")
    assert page.get_attribute("#influence", "data-head") == "1"
    assert len({before, after_layer, page.get_attribute("#influence", "data-signature")}) == 3
    # the conversation survives a reload, tokens and all
    page.reload()
    page.wait_for_selector(".msg.assistant .tok")
    assert page.evaluate(REPLY_TEXT) == ref.text


@pytest.mark.slow
@needs_chromium
def test_the_page_saves_loads_and_stops(server, page, tmp_path):
    from minigpt.text.chat_format import validate_messages

    ref = server.reference(render_prompt(server.tokenizer, QUESTION), temperature=0, max_new_tokens=6)
    ask_on_page(page, QUESTION[0]["content"], 6)
    with page.expect_download() as download:  # one JSONL line {"messages": [...]}, what `minigpt chat` /load reads
        page.click("#save")
    saved = Path(download.value.path()).read_text()
    assert saved.endswith("\n") and saved.count("\n") == 1
    assert json.loads(saved) == {"messages": QUESTION + [{"role": "assistant", "content": ref.text}]}
    assert validate_messages(json.loads(saved)["messages"])
    other = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello"}]
    (tmp_path / "other.jsonl").write_text(json.dumps({"messages": other}) + "\n")
    page.set_input_files("#load", str(tmp_path / "other.jsonl"))
    page.wait_for_selector(".msg.system")
    assert page.locator("#chat .msg").count() == 3
    # stop: the page aborts the request, the server stops generating; on a page slowed 20x, so that tokens arrive
    # faster than it parses them (a page that read on while bytes waited never took the click: CI, 2026-12)
    page.context.new_cdp_session(page).send("Emulation.setCPUThrottlingRate", {"rate": 20})
    worker, last = server.served.worker, max(r.id for r in server.served.worker.records)
    page.click("#new")
    ask_on_page(page, "go on", 100_000, wait=False)
    page.wait_for_function("document.querySelectorAll('.msg.assistant .tok').length >= 5")
    page.click("#stop")
    assert worker.wait_for(lambda rs: any(r.id > last for r in rs), timeout=60)
    assert [r.reason for r in worker.records if r.id > last] == ["cancelled"]
    page.wait_for_selector(".msg.assistant .note")
    assert "stopped" in page.inner_text(".msg.assistant .note")
