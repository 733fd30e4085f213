"""Check a GGUF export in llama.cpp (through llama-cpp-python) against minigpt, in one run.

Exports RUN with `minigpt export --format gguf` to a temp file, loads it in llama.cpp with an fp32 KV cache, and
prints for each prompt (texts to continue after <|bos|>, and user questions in the chat template): the largest
logit difference over the prompt, whether the greedy continuations are token-for-token equal (both stop at
<|end|> or <|bos|>), and whether llama.cpp's own tokenization of the text equals minigpt's. Without RUN it builds two small random-weight runs (GPT-2 options -> gpt2, --activation
swiglu -> qwen3) with a BPE trained on the prompts.

llama-cpp-python is not in any extra: it compiles llama.cpp (about 15 minutes on 2 cores):
    pip install llama-cpp-python
    python scripts/check_gguf.py                      # the two built-in random runs
    python scripts/check_gguf.py checkpoints/my-run   # a run trained with GPT-2 options or --activation swiglu

Expected: qwen3 logits within ~1e-5; gpt2 within ~3e-3 (ggml's CPU GELU reads an fp16 table); greedy equal
unless two top logits are closer than that.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

PROMPTS = ["First Citizen:\nBefore we proceed any further, hear me speak.", "def add(a, b):\n    return",
           "床前明月光，疑是地上霜。", "The answer is 42 🤗"]
QUESTIONS = ["What does `len` do?", "What does `os.path.join` do?"]


def demo_runs(folder: Path) -> list[Path]:
    from minigpt.checkpoint import save_checkpoint
    from minigpt.models.gpt import GPT, GPTConfig, gpt2_compat
    from minigpt.text.tokenizer import train_bpe

    tok = train_bpe([" ".join(PROMPTS) * 50], 340, progress=False)
    tok.save(folder / "tokenizer.bpe")
    runs = []
    for name, options in (("gpt2", gpt2_compat), ("qwen3", dict(activation="swiglu"))):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=128, n_layer=2, n_head=4, n_embd=64, **options))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.15)
        runs.append(save_checkpoint(folder / name, 1, model, folder / "tokenizer.bpe").parent)
    return runs


def check(run: Path, folder: Path, max_new_tokens: int) -> bool:
    from llama_cpp import Llama

    from minigpt.checkpoint import load_checkpoint
    from minigpt.export import export_run
    from minigpt.infer.engine import Engine
    from minigpt.text.chat_format import render_prompt

    ckpt = load_checkpoint(run)
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    path = export_run(run, "gguf", folder / f"{run.name}.gguf", force=True)
    llm = Llama(model_path=str(path), n_ctx=model.config.block_size, n_threads=1, verbose=False, logits_all=True,
                type_k=0, type_v=0)  # ggml type 0 = f32: the default f16 KV cache moves logits by ~1e-3
    stops, ok = {tok.bos_id, tok.special_id("<|end|>")}, True
    try:
        cases = [(text, [tok.bos_id] + tok.encode(text)) for text in PROMPTS]
        cases += [(q, render_prompt(tok, [{"role": "user", "content": q}])) for q in QUESTIONS]
        for text, prompt in cases:
            llm.reset()
            llm.eval(prompt)
            with torch.no_grad():
                ours = model(torch.tensor([prompt]))[0]
            diff = (torch.tensor(llm.scores[:len(prompt)]) - ours).abs().max().item()
            greedy = list(Engine(model, tok).generate(prompt, temperature=0, max_new_tokens=max_new_tokens).ids)
            llm.reset()
            theirs: list[int] = []
            for t in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
                theirs.append(t)
                if t in stops or len(theirs) == len(greedy):
                    break
            same_text = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) == tok.encode(text)
            ok &= theirs == greedy
            print(f"{run.name:>12}  {text[:24]!r:<28} max |logit diff| {diff:.2e}  greedy "
                  f"{'equal' if theirs == greedy else 'DIFFERENT'} ({len(greedy)} tokens)  "
                  f"llama.cpp tokenization {'equal' if same_text else 'differs'}")
    finally:
        llm.close()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (default: two built-in random runs)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python is not installed: pip install llama-cpp-python (compiles llama.cpp)")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs or demo_runs(Path(tmp))
        ok = all([check(run, Path(tmp), args.max_new_tokens) for run in runs])
    print("all greedy continuations equal" if ok else "some greedy continuations differ")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
