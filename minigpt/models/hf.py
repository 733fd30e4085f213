"""The Hugging Face mapping: GPT-2 weights and configs in, onto minigpt's `GPT` with the GPT-2 options.

`from_hf_gpt2` loads a `transformers` GPT-2 (a module, a state dict, a .safetensors file or a folder); the tensors
are renamed (no `transformer.` prefix needed), Conv1D's (in, out) weights transposed, the tied head restored.
Nothing is pickled: only safetensors files are read.

`resize_vocab` grows the token table and head with mean rows (for minigpt's special tokens). Making a run folder
of an imported model (`--init-from`) is export/hf_import.py; the way out (to transformers and llama.cpp) is the
rest of minigpt/export/.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..common import MinigptError
from ..config import from_dict
from .gpt import GPT, GPTConfig, gpt2_compat

_CONV1D = re.compile(r"h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$")
_ACTIVATIONS_HF = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                   "gelu": "gelu"}


def hf_gpt2_config(hf_config: Any, **overrides: Any) -> GPTConfig:
    """GPTConfig for a `transformers.GPT2Config` (or its config.json as a dict): GPT-2's options and shape."""
    c = hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
    act = c.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS_HF:
        raise MinigptError(f"GPT-2 config: activation {act!r} is not supported; use one of {', '.join(_ACTIVATIONS_HF)}")
    if c.get("scale_attn_by_inverse_layer_idx") or c.get("reorder_and_upcast_attn") or not c.get("scale_attn_weights", True):
        raise MinigptError("GPT-2 config: attention scaling variants are not supported (need the standard 1/sqrt(d))")
    values = dict(gpt2_compat, vocab_size=c["vocab_size"], block_size=c["n_positions"], n_layer=c["n_layer"],
                  n_head=c["n_head"], n_embd=c["n_embd"], mlp_hidden=c.get("n_inner"),
                  norm_eps=c.get("layer_norm_epsilon", 1e-5), activation=_ACTIVATIONS_HF[act])
    values.update(overrides)
    return from_dict(GPTConfig, values, source="GPT-2 config")


def _read_hf_source(source: Any) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, config dict or None) from a module, a state dict, a .safetensors file or an HF folder."""
    if isinstance(source, nn.Module):
        config = getattr(source, "config", None)
        return dict(source.state_dict()), (config.to_dict() if config is not None else None)
    if isinstance(source, Mapping):
        return dict(source), None
    path = Path(source)
    config = None
    if path.is_dir():
        if (path / "config.json").is_file():
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        path = path / "model.safetensors"
    if not path.is_file():
        raise MinigptError(f"{path}: no such file; give a .safetensors file or a folder holding model.safetensors")
    if path.suffix != ".safetensors":
        raise MinigptError(f"{path}: only .safetensors weights load (nothing pickled); convert the file first")
    from safetensors.torch import load_file

    return load_file(str(path)), config


def from_hf_gpt2(source: Any, config: GPTConfig | None = None, **overrides: Any) -> GPT:
    """A GPT holding Hugging Face GPT-2 weights.

    `source`: a `transformers.GPT2LMHeadModel`/`GPT2Model`, its state dict, a .safetensors file, or a folder with
    model.safetensors (+ config.json). Handles the `transformer.` prefix or its absence, Conv1D's (in, out) weight
    layout, the tied head (or its absence from the file) and the attention-mask buffers of older versions. The
    shape comes from `config`, else from config.json, else from the tensors (heads of 64 dims, as in every GPT-2).
    `overrides` change options after that, e.g. dropout=0.1 or a smaller block_size (the position table is cut).
    """
    raw, hf_config = _read_hf_source(source)
    sd = {}
    for key, t in raw.items():
        key = key.removeprefix("transformer.")
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers, not weights
        sd[key] = t.t() if _CONV1D.search(key) else t
    if "wte.weight" not in sd:
        raise MinigptError("GPT-2 weights: no wte.weight found; is this a GPT-2 state dict?")
    if config is None:
        if hf_config is not None:
            config = hf_gpt2_config(hf_config)
        else:
            V, C = sd["wte.weight"].shape
            n_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"h\.(\d+)\.", k)))
            hidden = sd["h.0.mlp.c_fc.weight"].size(0)
            config = from_dict(GPTConfig, dict(gpt2_compat, vocab_size=V, n_embd=C, n_head=max(1, C // 64),
                                               n_layer=n_layer, block_size=sd["wpe.weight"].size(0),
                                               mlp_hidden=None if hidden == 4 * C else hidden))
    if overrides:
        config = from_dict(GPTConfig, {**dataclasses.asdict(config), **overrides})
    if sd["wpe.weight"].size(0) < config.block_size:
        raise MinigptError(f"--block-size {config.block_size} exceeds the {sd['wpe.weight'].size(0)} positions "
                           f"these weights learned")
    sd["wpe.weight"] = sd["wpe.weight"][:config.block_size]
    head = sd.pop("lm_head.weight", None)
    model = GPT(config)
    ours = {f"transformer.{k}": v for k, v in sd.items()}
    if config.tie_embeddings:
        if head is not None and not torch.equal(head, sd["wte.weight"]):
            raise MinigptError("GPT-2 weights: lm_head differs from wte; load with tie_embeddings=False")
        ours["lm_head.weight"] = sd["wte.weight"]
    else:
        ours["lm_head.weight"] = sd["wte.weight"] if head is None else head
    try:
        model.load_state_dict(ours, strict=True)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:])[:400]
        raise MinigptError(f"GPT-2 weights do not fit the config ({detail}); give the right config or overrides") from None
    return model


# ---------------------------------------------------------------------------------------------- start from GPT-2


def resize_vocab(model: GPT, vocab_size: int) -> GPT:
    """A GPT with `vocab_size` rows in its token table and head. Rows past the old size are the mean of the old
    rows (a new token starts as an average token, not as noise: Hewitt 2021); rows past `vocab_size` (padding
    some checkpoints carry, e.g. 50304 for 50257) are dropped."""
    c = model.config
    sd = model.state_dict()

    def fit(w: torch.Tensor) -> torch.Tensor:
        if vocab_size <= w.size(0):
            return w[:vocab_size].clone()
        return torch.cat([w, w.mean(0, keepdim=True).expand(vocab_size - w.size(0), -1)])

    sd["transformer.wte.weight"] = fit(sd["transformer.wte.weight"])
    sd["lm_head.weight"] = sd["transformer.wte.weight"] if c.tie_embeddings else fit(sd["lm_head.weight"])
    resized = GPT(dataclasses.replace(c, vocab_size=vocab_size))
    resized.load_state_dict(sd)
    return resized
