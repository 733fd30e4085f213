"""Inspection: captured attention against a float64 recomputation and against cached decoding, the terminal,
PNG and HTML renderers (the page in a real headless Chromium), /attn and /probs in the chat, embedding
neighbours, and the `minigpt inspect` CLI end to end on a tiny checkpoint."""
from __future__ import annotations

import base64
import copy
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from minigpt.lens import attention as insp
from minigpt.lens import plots
from minigpt.chat.app import default_commands
from minigpt.chat.io import PlainIO
from minigpt.chat.loop import run_chat
from minigpt.chat.session import ChatSession
from minigpt.lens import views
from minigpt.lens.page import save_html
from minigpt.checkpoint import save_checkpoint
from minigpt.cli import main
from minigpt.common import MinigptError
from minigpt.infer.engine import Engine
from minigpt.models.gpt import GPT, GPTConfig, gpt2_compat
from minigpt.infer.sampling import SamplingConfig
from minigpt.text.tokenizer import train_char

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TEXT = "孤勇者 the quick brown fox jumps over the lazy dog.\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return train_char(TEXT)


def tiny_gpt(tok, **options) -> GPT:
    """A random 2x2x32 GPT whose residual branches are not zero, so every layer's attention differs."""
    torch.manual_seed(0)
    config = dict(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32, zero_init=False)
    return GPT(GPTConfig(**{**config, **options})).eval()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_gpt(tok)


def ids_of(tok, text: str = "孤勇者 the quick brown fox") -> list[int]:
    return [tok.bos_id] + tok.encode(text)


# ---------------------------------------------------------------------------------------------- capture


def float64_weights(model: GPT, ids: list[int]) -> torch.Tensor:
    """(L, H, T, T) recomputed by hand in float64 from the weights: q, k from each block's input (the residual
    stream runs through the blocks in float64), QK-norm, rotary or learned positions, causal softmax."""
    c = model.config
    m = copy.deepcopy(model).double()
    idx = torch.tensor([ids])
    T, hd = len(ids), c.head_dim
    x = m.transformer.wte(idx)
    if c.positions == "learned":
        x = x + m.transformer.wpe.weight[:T]
    freq = 1.0 / c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freq  # (T, hd/2)
    cos, sin = angle.cos()[:, None], angle.sin()[:, None]  # (T, 1, hd/2): broadcast over heads
    out = []
    for block in m.transformer.h:
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(c.n_embd, dim=2)
        q, k = (t.view(1, T, c.n_head, hd) for t in (q, k))
        if c.qk_norm:
            q, k = (t / (t.pow(2).mean(-1, keepdim=True) + c.norm_eps).sqrt() for t in (q, k))
        if c.positions == "rope":  # pairs (i, i + hd/2) turn by position * freq[i]
            q, k = (torch.cat([t[..., :hd // 2] * cos - t[..., hd // 2:] * sin,
                               t[..., hd // 2:] * cos + t[..., :hd // 2] * sin], -1) for t in (q, k))
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        out.append(scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf).softmax(-1)[0])
        rope = (torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1))
        x = block(x, rope if c.positions == "rope" else None, None, None, None)
    return torch.stack(out)


@pytest.mark.parametrize("options", [{}, gpt2_compat], ids=["modern", "gpt2"])
def test_captured_rows_are_causal_distributions_equal_to_float64(tok, options):
    model = tiny_gpt(tok, **options)
    ids = ids_of(tok)
    w = insp.capture(model, ids)
    T = len(ids)
    assert w.shape == (2, 2, T, T) and w.dtype == torch.float32
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, T))
    assert (w.masked_select(torch.ones(T, T, dtype=torch.bool).triu(1)) == 0).all()
    torch.testing.assert_close(w.double(), float64_weights(model, ids), atol=2e-6, rtol=0)
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[:, 0], w[:, 1])  # layers and heads differ


def test_record_windows_long_text_and_restores_training_mode(tok, model):
    ids = ids_of(tok, TEXT * 2)
    model.train()
    rec = insp.record(model, tok, ids, prompt_len=len(ids) - 5)
    assert model.training
    model.eval()
    assert len(rec) == 32 and rec.start == len(ids) - 32 and rec.ids == ids[-32:] and rec.prompt_len == 27
    torch.testing.assert_close(rec.weights, insp.capture(model, ids[-32:]))
    torch.testing.assert_close(rec.influence(5, 1, "mean"), rec.weights[1].mean(0)[4, :5])
    assert rec.check(-1, -1) == (1, 1)
    with pytest.raises(MinigptError, match="--layer 2: this model has 2 layers"):
        rec.check(2, 0)
    with pytest.raises(MinigptError, match="--head 5"):
        rec.head(0, 5)


def test_cached_decoding_attention_equals_full_forward(tok, model):
    """Every step's rows from the engine's KV-cached decoding (through a window slide too) equal one full
    forward over the same window; ordinary generation carries no attention."""
    engine = Engine(model, tok)
    prompt = ids_of(tok, "the quick")
    config = SamplingConfig(temperature=0, max_new_tokens=40)
    steps = list(insp.stream_influence(engine, prompt, config, stop_ids=()))
    assert len(steps) == 40 and any(s.key_start > 0 for s in steps)  # 10 + 40 tokens > block 32: it slid
    ids = prompt + [s.token_id for s in steps]
    for i, s in enumerate(steps):
        t = len(prompt) + i  # the predicted token's position; its query is t - 1
        assert s.rows.shape == (2, 2, t - s.key_start)
        full = insp.capture(model, ids[s.key_start:t])[:, :, -1, :]
        torch.testing.assert_close(s.rows, full, atol=1e-6, rtol=0)
        torch.testing.assert_close(s.rows.sum(-1), torch.ones(2, 2))
    assert all(ev.attention is None for ev in engine.stream(prompt, config))


def test_the_generation_page_shows_the_rows_decoding_used_after_a_slide_too(tok, model):
    """`inspect generate --html/--png`: each generated token's row on the page is the one that predicted it. Before
    the text outgrows the context that is one forward's row; after the slide each token had its own window, which
    the page used to replace with one forward over the last block (rows off by up to 0.17 in an audit)."""
    engine = Engine(model, tok)
    prompt = ids_of(tok, "the quick")
    short = list(insp.stream_influence(engine, prompt, SamplingConfig(temperature=0, max_new_tokens=12), stop_ids=()))
    plain = insp.record(model, tok, prompt + [s.token_id for s in short], prompt_len=len(prompt))
    torch.testing.assert_close(insp.generation_record(model, tok, prompt, short).weights, plain.weights, atol=1e-6,
                               rtol=0)  # no slide yet: the same as one forward
    steps = list(insp.stream_influence(engine, prompt, SamplingConfig(temperature=0, max_new_tokens=40), stop_ids=()))
    rec = insp.generation_record(model, tok, prompt, steps)
    assert rec.start == len(prompt) + 40 - 32 and rec.weights.shape == (2, 2, 32, 32)
    differs = 0
    for i, s in enumerate(steps):
        q = len(prompt) + i - 1 - rec.start
        if q < 0:
            continue
        on_page = rec.weights[:, :, q, :q + 1]
        first = max(rec.start, s.key_start)
        torch.testing.assert_close(on_page[..., first - rec.start:], s.rows[..., first - s.key_start:])
        assert not on_page[..., :first - rec.start].any()
        one_forward = insp.capture(model, rec.ids)[:, :, q, :q + 1]
        differs += not torch.allclose(on_page, one_forward, atol=1e-3)
    assert differs > 0  # what the page showed before: another window's rows


def test_models_without_attention_are_refused_in_one_line(tok):
    from minigpt.models.bigram import Bigram, BigramConfig

    bigram = Bigram(BigramConfig(vocab_size=tok.vocab_size))
    with pytest.raises(MinigptError, match="this bigram model has no attention") as e:
        insp.capture(bigram, ids_of(tok))
    assert "\n" not in str(e.value)
    with pytest.raises(MinigptError, match="no attention"):
        next(insp.stream_influence(Engine(bigram, tok), ids_of(tok)))
    session = ChatSession(Engine(bigram, tok), sampling=SamplingConfig(max_new_tokens=3, seed=1), mode="continue")
    out = io.StringIO()
    run_chat(session, PlainIO(["the", "/attn", "/probs"], out, out), default_commands())
    assert "error: this bigram model has no attention" in out.getvalue() and "perplexity" in out.getvalue()


def test_stdlib_inspect_is_not_shadowed():
    import inspect as stdlib_inspect

    from minigpt.text.corpora import pydocs

    assert pydocs.inspect is stdlib_inspect and stdlib_inspect is not insp
    assert stdlib_inspect.cleandoc("  a\n  b") == "a\nb"


# ---------------------------------------------------------------------------------------------- terminal


def rendered(renderable, width: int = 140) -> str:
    console = Console(record=True, width=width, color_system="truecolor", file=io.StringIO())
    console.print(renderable)
    return console.export_text(styles=False, clear=False), console.export_text(styles=True)


def test_heatmap_text_shows_percentages_labels_and_the_left_out_mass(tok, model):
    rec = insp.record(model, tok, ids_of(tok))
    plain, styled = rendered(views.heatmap_text(rec, 0, 1, window=8))
    lines = plain.splitlines()
    assert "layer 0, head 1" in plain and "column < = attention to the" in plain
    last = [int(v) for v in re.findall(r"\d+", lines[8][14:])]  # the last query row: < column + 8 cells
    assert len(last) <= 9 and abs(sum(last) - 100) <= 5  # the row sums to 100% up to rounding
    assert "x" in lines[0] and "f" in lines[0]  # key labels ("fox" is the end of the text)
    assert "on #" in styled or "48;2;" in styled  # coloured cells
    mean_plain, _ = rendered(views.heatmap_text(rec, -1, "mean"))
    assert "layer 1, mean of heads" in mean_plain and "孤" in mean_plain


def test_influence_view_colours_the_context_and_marks_the_predicted_token(tok, model):
    ids = ids_of(tok, "the quick")
    rec = insp.record(model, tok, ids + tok.encode(" fox"), prompt_len=len(ids))
    plain, styled = rendered(views.influence_view(rec, 1, 0))
    lines = plain.splitlines()
    assert len(lines) >= 4 and lines[0].lstrip().startswith(str(len(ids)))  # one line per generated token
    assert "the quick" in lines[0] and "%" in lines[0] and "predicted token" in plain
    top = rec.influence(len(ids), 1, 0).argmax().item()
    assert f"{top}:" in lines[0]
    assert "\x1b[1;97;41m" in styled or "211;47;47" in styled  # the predicted token is red


# ---------------------------------------------------------------------------------------------- PNG, HTML


def test_png_grid_is_a_valid_image_of_the_expected_size(tok, model, tmp_path):
    import matplotlib.image

    rec = insp.record(model, tok, ids_of(tok))
    notes = plots.save_png(rec, tmp_path / "a.png", 1, "mean", title="test")
    image = matplotlib.image.imread(tmp_path / "a.png")
    width, height = plots.png_size(2, 2)
    assert image.shape[:2] == (height, width) and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.05  # something is drawn
    if plots.cjk_font() is None:  # the Chinese labels fall back to ids, and the note says so
        assert notes and "#id" in notes[0] and "fc-list" in notes[0]
    else:
        assert not notes


def decoded_weights(page: str) -> tuple[dict, np.ndarray]:
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    packed = np.frombuffer(base64.b64decode(data["weights"]), dtype="<u2").astype(np.float64) / 65535
    return data, packed


def test_html_is_self_contained_and_holds_the_weights(tok, model, tmp_path):
    ids = ids_of(tok, "孤勇者 the </script> fox")
    rec = insp.record(model, tok, ids)
    page = save_html(rec, tmp_path / "a.html", layer=0, head=1, title="test page").read_text("utf-8")
    assert "http" not in page.lower() and "<script src" not in page and "<link" not in page
    assert "url(" not in page and "@import" not in page and "//cdn" not in page
    assert page.count("</script>") == 2  # the text's own </script> is escaped inside the JSON
    data, packed = decoded_weights(page)
    assert data["tokens"] == rec.texts and "孤" in page and "勇" in page and data["layer"] == 0
    T = len(rec)
    rows, cols = np.tril_indices(T)
    expected = rec.weights.numpy()[:, :, rows, cols].reshape(-1)
    np.testing.assert_allclose(packed, expected, atol=1 / 65535)


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                   "(apt-get install chromium); no browser is downloaded")
def test_html_page_in_headless_chromium(tok, model, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    ids = ids_of(tok, "the quick brown fox")
    rec = insp.record(model, tok, ids + tok.encode(" jumps"), prompt_len=len(ids))
    path = save_html(rec, tmp_path / "page.html", layer=1, head="mean", title="chromium test")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            problems, requests = [], []
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri())
            page.wait_for_selector("#map[data-signature]")
            assert page.get_attribute("#map", "data-layer") == "1"
            assert page.get_attribute("#map", "data-head") == "mean"
            assert page.locator("#grid canvas").count() == 2 * 3  # every layer x (heads + mean)
            before = (page.get_attribute("#map", "data-signature"), page.locator("#map").screenshot())
            # the heatmap is drawn: some cell is neither white nor the masked grey
            painted = page.evaluate("""() => { const c = document.getElementById('map');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
                for (let i = 0; i < d.length; i += 4) if (d[i] < 200 && d[i + 2] > d[i]) n++; return n; }""")
            assert painted > 100
            page.select_option("#layer", "0")
            after = (page.get_attribute("#map", "data-signature"), page.locator("#map").screenshot())
            assert page.get_attribute("#map", "data-layer") == "0"
            assert after[0] != before[0] and after[1] != before[1]
            page.select_option("#head", "1")
            assert page.get_attribute("#map", "data-head") == "1"
            assert page.get_attribute("#map", "data-signature") != after[0]
            page.locator("#grid canvas[data-layer='1'][data-head='0']").click()  # a thumbnail selects too
            assert page.input_value("#layer") == "1" and page.input_value("#head") == "0"
            # hover a token: it is outlined in the focus strips, it and the tokens before it are coloured by its
            # row (its weight on itself too), the tokens after it are white
            page.locator("#attends span").nth(6).hover()
            assert "token 6" in page.inner_text("#focusname")
            colours = page.eval_on_selector_all("#attends span", "s => s.map(e => e.style.background)")
            focused = page.eval_on_selector_all("#attends span.focus, #attended span.focus",
                                                "s => s.map(e => e.dataset.i)")
            assert focused == ["6", "6"] and len(set(colours[:7])) > 1 and set(colours[7:]) == {"rgb(255, 255, 255)"}
            own = float(rec.weights[1, 0, 6, 6])  # layer 1, head 0: the thumbnail clicked above
            assert own > 0.01 and colours[6] == page.evaluate(f"heat({own})").replace(",", ", ")
            # the influence view starts at the first generated token and follows the slider
            assert page.get_attribute("#influence", "data-step") == str(len(ids))
            page.click("#next")
            assert page.get_attribute("#influence", "data-step") == str(len(ids) + 1)
            assert "predicting token" in page.inner_text("#stepname")
            assert not problems, problems
            assert all(u.startswith("file://") for u in requests), requests
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------- /probs, chat


def test_token_probs_equal_the_engine_logprobs(tok, model):
    engine = Engine(model, tok)
    prompt = ids_of(tok, "the quick")
    gen = engine.generate(prompt, SamplingConfig(temperature=1.0, seed=3, max_new_tokens=12), stop_ids=())
    rows = insp.token_probs(model, tok, prompt, gen.ids, k=4)
    assert [r.token_id for r in rows] == gen.ids
    for r, lp in zip(rows, gen.logprobs):
        assert math.isclose(math.log(r.prob), lp, abs_tol=1e-5)
        probs = [p for _, _, p in r.alternatives]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and probs[0] >= r.prob - 1e-9


def test_chat_attn_and_probs_commands(tok, model):
    session = ChatSession(Engine(model, tok), sampling=SamplingConfig(temperature=0, max_new_tokens=8),
                          mode="continue")
    out = io.StringIO()
    lines = ["/attn", "the quick", "/attn", "/attn map 0 1", "/attn 7", "/probs 3", "/attn mean html page.html",
             "/attn mean 1", "/attn 0 1 1"]
    assert run_chat(session, PlainIO(lines, out, out), default_commands()) == 0
    text = out.getvalue()
    assert "error: no reply yet: /attn" in text
    reply = session.last
    assert "predicted token" in text and "layer 0, head 1" in text
    assert "error: --layer 7: this model has 2 layers" in text
    assert text.count("%") > 3 * len(reply.ids) and "perplexity" in text
    assert "wrote page.html" in text and "http" not in Path("page.html").read_text("utf-8")
    assert "error: /attn: 'mean 1' is too many numbers" in text and "'0 1 1' is too many numbers" in text


# ---------------------------------------------------------------------------------------------- embeddings


def test_nearest_tokens_and_the_pca_map(tok, tmp_path):
    import matplotlib.image

    model = tiny_gpt(tok)
    a, b = tok.encode("q")[0], tok.encode("u")[0]
    with torch.no_grad():
        model.transformer.wte.weight[b] = 2 * model.transformer.wte.weight[a]  # the same direction
    near = plots.nearest_tokens(model, tok, a, k=3)
    assert near[0][0] == b and near[0][2] > 0.99 and len(near) == 3 and all(i != a for i, _, _ in near)
    assert plots.find_token(tok, "q") == (a, None) and plots.find_token(tok, f"#{b}") == (b, None)
    with pytest.raises(MinigptError, match="is 3 tokens"):
        plots.find_token(tok, "fox")
    plots.save_embedding_png(model, tok, tmp_path / "e.png", count=30, highlight=[a, b])
    assert matplotlib.image.imread(tmp_path / "e.png").shape[:2] == (800, 1000)
    xy = plots.pca_2d(model.transformer.wte.weight.detach())
    assert xy.shape == (tok.vocab_size, 2) and xy[:, 0].var() >= xy[:, 1].var()


def test_models_without_an_embedding_table_are_refused(tok):
    class NoTable(torch.nn.Module):
        config = type("C", (), {"kind": "rule"})()

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 2)

    with pytest.raises(MinigptError, match="this rule model has no token embedding table"):
        plots.embedding_table(NoTable())


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def run_dir(tok, model, tmp_path) -> Path:
    tok_path = tmp_path / "tokenizer.char"
    tok.save(tok_path)
    save_checkpoint(tmp_path / "run", 1, model, tok_path, extra={"stage": "pretrain"})
    return tmp_path / "run"


def test_cli_end_to_end(run_dir, tmp_path):
    """The real entry point in a subprocess (attention with --png and --html), then the other actions
    in-process through cli.main."""
    import matplotlib.image

    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run([sys.executable, "-m", "minigpt", "inspect", "attention", "--checkpoint", str(run_dir),
                           "孤勇者 the lazy dog", "--layer", "1", "--head", "0", "--png", "a.png", "--html",
                           "a.html"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "layer 1, head 0" in done.stdout and "wrote a.png" in done.stdout and "wrote a.html" in done.stdout
    assert matplotlib.image.imread("a.png").shape[:2] == plots.png_size(2, 2)[::-1]
    assert json.loads(re.search(r'type="application/json">(.*?)</script>', Path("a.html").read_text("utf-8"),
                                re.S).group(1))["tokens"][1] == "孤"

    assert main(["inspect", "generate", "--checkpoint", str(run_dir), "the", "--max-new-tokens", "6",
                 "--temperature", "0", "--layer", "0", "--html", "g.html"]) == 0
    data, _ = decoded_weights(Path("g.html").read_text("utf-8"))
    assert data["prompt_len"] == 4 and len(data["tokens"]) <= 4 + 6 and data["layer"] == 0
    assert main(["inspect", "attention", "--checkpoint", str(run_dir), "the fox", "--view", "influence"]) == 0
    assert main(["inspect", "embeddings", "--checkpoint", str(run_dir), "--token", "o", "--png", "e.png"]) == 0
    assert Path("e.png").is_file()
    assert main(["inspect", "attention", "--checkpoint", str(run_dir), "x", "--layer", "5"]) == 2
    assert main(["inspect", "embeddings", "--checkpoint", str(run_dir)]) == 2


def test_cli_generate_prints_each_step(run_dir, capsys):
    assert main(["inspect", "generate", "--checkpoint", str(run_dir), "the quick", "--max-new-tokens", "5",
                 "--temperature", "0", "--head", "1"]) == 0
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if re.match(r"\s+\d+ p=", line)]
    assert 1 <= len(steps) <= 5 and all("%" in line for line in steps)  # a random model may stop early
    assert "head 1" in out and f"{len(steps)} tokens" in out


def test_cli_refuses_a_model_without_attention(tok, tmp_path, capsys):
    from minigpt.models.bigram import Bigram, BigramConfig

    tok_path = tmp_path / "tokenizer.char"
    tok.save(tok_path)
    save_checkpoint(tmp_path / "bigram", 1, Bigram(BigramConfig(vocab_size=tok.vocab_size)), tok_path,
                    extra={"stage": "pretrain"})
    assert main(["inspect", "attention", "--checkpoint", str(tmp_path / "bigram"), "the fox"]) == 2
    err = capsys.readouterr().err
    assert "error: this bigram model has no attention" in err and len(err.strip().splitlines()) <= 2
    assert main(["inspect", "embeddings", "--checkpoint", str(tmp_path / "bigram"), "--token", "o"]) == 0
