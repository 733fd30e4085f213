"""A minigpt GPT as a Hugging Face model folder: config.json, model.safetensors, generation_config.json and the
tokenizer (tokenizer.json + tokenizer_config.json with the chat template), loadable by `transformers`'
Auto classes with no minigpt code. Written without importing `transformers` (plain JSON and safetensors).

Tensor mapping (ours -> theirs):
  gpt2    transformer.* keep their names; c_attn/c_proj/c_fc weights are transposed into Conv1D's (in, out)
          layout; absent biases (--no-bias) and LayerNorm biases are written as zeros; a tied head is not stored.
  qwen3   wte -> model.embed_tokens, c_attn -> q_proj/k_proj/v_proj (its three row blocks), attn.c_proj -> o_proj,
  llama   mlp.c_fc -> gate_proj and up_proj (relu2: both are c_fc, with hidden_act relu; swiglu: its two halves,
          with silu), mlp.c_proj -> down_proj; the parameter-free RMSNorms become weights of ones (q_norm and
          k_norm over head_dim for qwen3).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..common import atomic_dir
from ..text.hf_tokenizer import hf_tokenizer_config, hf_tokenizer_json

ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}
_GPT2_ACT = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "relu2": "relu2"}


def _token_ids(tokenizer) -> dict[str, Any]:
    end, bos = tokenizer.special_id("<|end|>"), tokenizer.bos_id
    return {"bos_token_id": bos, "eos_token_id": end, "pad_token_id": end}


def hf_config(c: Any, arch: str, tokenizer) -> dict[str, Any]:
    """config.json for the architecture `arch` (from `export.target`) with the shape of GPTConfig `c`."""
    common = {"architectures": [ARCHITECTURES[arch]], "model_type": arch, "vocab_size": c.vocab_size,
              "tie_word_embeddings": c.tie_embeddings, "dtype": "float32", "use_cache": True,
              "initializer_range": 0.02, **_token_ids(tokenizer)}
    if arch == "gpt2":
        return {**common, "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd,
                "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None if c.hidden == 4 * c.n_embd else c.hidden,
                "activation_function": _GPT2_ACT[c.activation], "layer_norm_epsilon": c.norm_eps,
                "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False}
    out = {**common, "hidden_size": c.n_embd, "intermediate_size": c.hidden, "num_hidden_layers": c.n_layer,
           "num_attention_heads": c.n_head, "num_key_value_heads": c.n_head, "head_dim": c.head_dim,
           "hidden_act": "relu" if c.activation == "relu2" else "silu", "max_position_embeddings": c.block_size,
           "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,  # transformers 4.x reads this,
           "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},  # 5.x this
           "attention_bias": False, "attention_dropout": c.dropout}
    if arch == "qwen3":
        out.update(use_sliding_window=False, sliding_window=None, max_window_layers=c.n_layer)
    else:
        out.update(mlp_bias=False, pretraining_tp=1)
    return out


def _gpt2_tensors(model) -> dict[str, torch.Tensor]:
    c, sd = model.config, model.state_dict()
    out: dict[str, torch.Tensor] = {}
    widths = {"ln_1": c.n_embd, "ln_2": c.n_embd, "attn.c_attn": 3 * c.n_embd, "attn.c_proj": c.n_embd,
              "mlp.c_fc": c.hidden, "mlp.c_proj": c.n_embd}
    for name in ("wte", "wpe"):
        out[f"transformer.{name}.weight"] = sd[f"transformer.{name}.weight"]
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        for layer, width in widths.items():
            w = sd[p + layer + ".weight"]
            out[p + layer + ".weight"] = w if layer.startswith("ln") else w.t()  # Conv1D stores (in, out)
            out[p + layer + ".bias"] = sd.get(p + layer + ".bias", torch.zeros(width))
    out["transformer.ln_f.weight"] = sd["transformer.ln_f.weight"]
    out["transformer.ln_f.bias"] = sd.get("transformer.ln_f.bias", torch.zeros(c.n_embd))
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def _rotary_tensors(model, arch: str) -> dict[str, torch.Tensor]:
    c, sd = model.config, model.state_dict()
    ones = torch.ones(c.n_embd)
    out = {"model.embed_tokens.weight": sd["transformer.wte.weight"], "model.norm.weight": ones}
    for i in range(c.n_layer):
        p, o = f"transformer.h.{i}.", f"model.layers.{i}."
        q, k, v = sd[p + "attn.c_attn.weight"].split(c.n_embd)  # rows: queries, keys, values of every head
        fc = sd[p + "mlp.c_fc.weight"]
        gate, up = (fc, fc) if c.activation == "relu2" else fc.chunk(2)
        out.update({o + "self_attn.q_proj.weight": q, o + "self_attn.k_proj.weight": k,
                    o + "self_attn.v_proj.weight": v, o + "self_attn.o_proj.weight": sd[p + "attn.c_proj.weight"],
                    o + "mlp.gate_proj.weight": gate, o + "mlp.up_proj.weight": up,
                    o + "mlp.down_proj.weight": sd[p + "mlp.c_proj.weight"],
                    o + "input_layernorm.weight": ones, o + "post_attention_layernorm.weight": ones})
        if arch == "qwen3":
            out[o + "self_attn.q_norm.weight"] = out[o + "self_attn.k_norm.weight"] = torch.ones(c.head_dim)
    if not c.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def hf_state_dict(model, arch: str) -> dict[str, torch.Tensor]:
    """The exported tensors, fp32, each its own contiguous copy (safetensors stores no shared memory)."""
    tensors = _gpt2_tensors(model) if arch == "gpt2" else _rotary_tensors(model, arch)
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in tensors.items()}


def export_hf(model, tokenizer, out: str | Path, arch: str) -> Path:
    """Write the model folder `out` atomically (replacing an earlier export there)."""
    from safetensors.torch import save_file

    out = Path(out)
    c = model.config
    generation = {**_token_ids(tokenizer), "eos_token_id": [tokenizer.special_id("<|end|>"), tokenizer.bos_id]}
    with atomic_dir(out) as tmp:
        save_file(hf_state_dict(model, arch), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        files = {"config.json": hf_config(c, arch, tokenizer), "generation_config.json": generation,
                 "tokenizer.json": hf_tokenizer_json(tokenizer),
                 "tokenizer_config.json": hf_tokenizer_config(tokenizer, c.block_size)}
        for name, content in files.items():
            (tmp / name).write_text(json.dumps(content, indent=None if name == "tokenizer.json" else 2,
                                               ensure_ascii=False), encoding="utf-8")
        (tmp / "model.safetensors").chmod((tmp / "config.json").stat().st_mode)  # safetensors writes 0600
    return out
