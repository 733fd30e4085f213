"""`minigpt export RUN --format hf|gguf --out PATH`: a run as a Hugging Face model folder or a llama.cpp GGUF file."""
from __future__ import annotations

import argparse

from ..common import console

EPILOG = """\
what exports to what (the GPT options a run was trained with):
  GPT-2 options (--positions learned --norm layernorm, no QK-norm):
      hf   -> GPT2LMHeadModel   (activation gelu_tanh, gelu or relu2; biases or not, tied head or not)
      gguf -> llama.cpp gpt2    (activation gelu_tanh)
  the default options (rotary, RMSNorm, QK-norm, ReLU^2, untied head, no biases):
      hf   -> Qwen3ForCausalLM  (ReLU^2 as relu(gate)*up with gate = up; --activation swiglu as SiLU-gated)
      gguf -> llama.cpp qwen3   (only with --activation swiglu: llama.cpp's qwen3 MLP is SiLU-gated)
  rotary, RMSNorm, --no-qk-norm:
      hf   -> LlamaForCausalLM  (relu2 or swiglu)
  refused, naming the option: --logit-softcap, --bias with rotary, --activation gelu* with rotary, swiglu
  with learned positions; reward models and the baseline kinds (bigram, mlp, cnn, rnn, lstm, gru).

The folder holds config.json, model.safetensors, generation_config.json, tokenizer.json and
tokenizer_config.json (with the chat template), so with no minigpt code:
  AutoModelForCausalLM.from_pretrained(DIR); AutoTokenizer.from_pretrained(DIR)
  tok.apply_chat_template(messages, add_generation_prompt=True)   # minigpt's chat format, id for id
A minigpt run folder (or its step_* folder) is not a Hugging Face folder, even though a step holds a
config.json: point from_pretrained at the output of this command instead.
Encode user text with tok(text, split_special_tokens=True) to get minigpt's ids even when it contains
"<|end|>" (minigpt never turns typed text into special tokens; Hugging Face does by default).
"""


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run as a Hugging Face model folder or a llama.cpp GGUF file",
                       description="Export a run's checkpoint (its latest step, RUN/best or a step_* folder) "
                                   "with its tokenizer and chat template, for transformers or llama.cpp.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run folder, RUN/best, or a step_* folder")
    p.add_argument("--format", choices=("hf", "gguf"), default="hf",
                   help="hf: a transformers model folder; gguf: one llama.cpp file (default: hf)")
    p.add_argument("--out", required=True, help="output folder (hf) or .gguf file (gguf); must not exist yet "
                   "unless --force")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from ..export import export_run

    out = export_run(args.run, args.format, args.out, force=args.force)
    console.print(f"[green]exported[/] {escape(args.run)} -> {escape(str(out))}", soft_wrap=True)
    return 0
