"""A minigpt GPT as one llama.cpp GGUF file (fp32), written with the `gguf` package (`pip install minigpt[export]`).

Architectures (llama.cpp's names, tensors as its converter writes them; linear weights keep PyTorch's (out, in)
layout, which GGUF stores as ne = (in, out)):
  gpt2   token_embd, position_embd, blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down}
         (weight + bias; absent biases are written as zeros), output_norm, output (untied heads only)
  qwen3  token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_q_norm, attn_k_norm, attn_output, ffn_norm,
         ffn_gate, ffn_up, ffn_down} (norm weights are ones: ours have no parameters), output_norm, output

Vocabulary: the "gpt2" (byte-level BPE) tokenizer model with the same token strings and merges as the
tokenizer.json export (text/hf_tokenizer.py), the 5 special tokens as CONTROL tokens (llama.cpp never makes them
from text unless asked to parse specials), <|bos|>/<|end|> as bos/eos, and the chat template. llama.cpp pre-splits
text with built-in regexes chosen by `tokenizer.ggml.pre`: "gpt-2" is minigpt's gpt2 pattern, "llama-bpe" is close
to the gpt4 pattern; minigpt's default pattern (GPT-4's with every Han character on its own) has no built-in
twin, so "llama-bpe" is written and llama.cpp's tokens of raw text can differ on Chinese. Token ids in, logits out
are exact either way: scripts/check_gguf.py feeds minigpt's ids to llama.cpp and compares greedy tokens.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..common import MinigptError
from ..text.bpe import GPT2_PATTERN
from ..text.hf_tokenizer import CHAT_TEMPLATE, byte_string, bpe_merges
from .hf import hf_state_dict


def _gguf():
    try:
        import gguf
    except ImportError:
        raise MinigptError("--format gguf needs the gguf package; pip install 'minigpt[export]' (or gguf)") from None
    return gguf


def gguf_tensors(model, arch: str) -> dict[str, np.ndarray]:
    """The GGUF tensors (name -> fp32 array) of `model`, mapped from the Hugging Face layout."""
    hf = hf_state_dict(model, arch)
    c = model.config
    out: dict[str, torch.Tensor] = {"token_embd.weight": hf.pop("transformer.wte.weight" if arch == "gpt2"
                                                                else "model.embed_tokens.weight")}
    if "lm_head.weight" in hf:
        out["output.weight"] = hf.pop("lm_head.weight")
    if arch == "gpt2":
        out["position_embd.weight"] = hf.pop("transformer.wpe.weight")
        names = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
                 "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}
        for i in range(c.n_layer):
            for ours, theirs in names.items():
                w = hf.pop(f"transformer.h.{i}.{ours}.weight")
                out[f"blk.{i}.{theirs}.weight"] = w if ours.startswith("ln") else w.t()  # back from Conv1D
                out[f"blk.{i}.{theirs}.bias"] = hf.pop(f"transformer.h.{i}.{ours}.bias")
        out["output_norm.weight"] = hf.pop("transformer.ln_f.weight")
        out["output_norm.bias"] = hf.pop("transformer.ln_f.bias")
    else:
        names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                 "self_attn.v_proj": "attn_v", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
                 "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
                 "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
        for i in range(c.n_layer):
            for ours, theirs in names.items():
                out[f"blk.{i}.{theirs}.weight"] = hf.pop(f"model.layers.{i}.{ours}.weight")
        out["output_norm.weight"] = hf.pop("model.norm.weight")
    assert not hf, f"unmapped tensors: {sorted(hf)[:3]}"
    return {k: v.contiguous().numpy() for k, v in out.items()}


def _add_vocab(w, tokenizer) -> None:
    gguf = _gguf()
    if tokenizer.kind != "bpe":
        raise MinigptError("--format gguf: llama.cpp needs a byte-level BPE vocabulary, and this run uses a "
                           "character tokenizer; export --format hf instead")
    by_rank = sorted(tokenizer.ranks, key=tokenizer.ranks.__getitem__)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2" if tokenizer.pattern == GPT2_PATTERN else "llama-bpe")
    w.add_token_list([byte_string(t) for t in by_rank] + list(tokenizer.specials))
    w.add_token_types([gguf.TokenType.NORMAL] * len(by_rank) + [gguf.TokenType.CONTROL] * len(tokenizer.specials))
    w.add_token_merges([f"{byte_string(a)} {byte_string(b)}" for a, b in bpe_merges(tokenizer.ranks)])
    w.add_bos_token_id(tokenizer.bos_id)
    w.add_eos_token_id(tokenizer.special_id("<|end|>"))
    w.add_pad_token_id(tokenizer.special_id("<|end|>"))
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)


def export_gguf(model, tokenizer, out: str | Path, arch: str, *, name: str = "minigpt") -> Path:
    """Write `out` (a .gguf file) atomically: a temp file beside it, renamed into place when complete."""
    gguf = _gguf()
    out = Path(out)
    c = model.config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        w = gguf.GGUFWriter(tmp, arch)  # writes general.architecture itself
        w.add_name(name)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_context_length(c.block_size)
        w.add_embedding_length(c.n_embd)
        w.add_block_count(c.n_layer)
        w.add_feed_forward_length(c.hidden)
        w.add_head_count(c.n_head)
        w.add_head_count_kv(c.n_head)
        if arch == "gpt2":
            w.add_layer_norm_eps(c.norm_eps)
        else:
            w.add_layer_norm_rms_eps(c.norm_eps)
            w.add_rope_freq_base(c.rope_theta)
            w.add_key_length(c.head_dim)
            w.add_value_length(c.head_dim)
        _add_vocab(w, tokenizer)
        for tensor_name, array in gguf_tensors(model, arch).items():
            w.add_tensor(tensor_name, array)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
