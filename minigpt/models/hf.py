"""The Hugging Face mapping: GPT-2 weights and configs in, onto minigpt's `GPT` with the GPT-2 options.

`from_hf_gpt2` loads a `transformers` GPT-2 (a module, a state dict, a .safetensors file or a folder); the tensors
are renamed (no `transformer.` prefix needed), Conv1D's (in, out) weights transposed, the tied head restored.
Nothing is pickled: only safetensors files are read.

`hf_start` is `--init-from`: a GPT-2 folder or Hub id imported once into an ordinary minigpt run (GPT-2's ids
kept, the 5 special tokens appended, embedding and head grown by mean rows by `resize_vocab`). The way out
(export to transformers and llama.cpp) lives in minigpt/export/.
"""
from __future__ import annotations

import dataclasses
import hashlib
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


def _is_minigpt(path: Path) -> bool:
    """A minigpt run folder or step folder (whose config.json has minigpt's "format" and "model" keys)."""
    if (path / "run.json").is_file() or (path / "latest").is_file():
        return True
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "format" in config and isinstance(config.get("model"), dict)


def _local_folder(spec: str) -> Path:
    """A local folder as given, else a Hub id downloaded (config, weights, tokenizer) into the Hub cache."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists() or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec):
        raise MinigptError(f"--init-from {spec}: no such folder; give a Hugging Face GPT-2 folder or a Hub id")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, allow_patterns=["config.json", "model.safetensors", "tokenizer.json",
                                                            "vocab.json", "merges.txt"]))
    except Exception as e:  # the hub client raises many types; the user needs one line
        raise MinigptError(f"--init-from {spec}: cannot download ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''}); check the id and your network, "
                           "or give a local folder") from None


def hf_start(spec: str | Path) -> Path:
    """`--init-from`: a minigpt run stays as it is; a Hugging Face GPT-2 folder or Hub id is imported once into an
    ordinary minigpt run under $MINIGPT_HOME/imports/ (cached by the folder's content) and that run is returned.

    The import keeps GPT-2's ids: its byte-level BPE becomes the tokenizer's ranks (text/hf_tokenizer.py) with
    minigpt's 5 special tokens after them (50257..50261 for GPT-2), and the token table and tied head grow by
    5 mean-initialised rows, so model and tokenizer agree on the vocabulary (50262)."""
    from ..checkpoint import save_checkpoint, write_run_info
    from ..common import atomic_dir, minigpt_home, sha256_file
    from ..config import to_dict
    from ..text.hf_tokenizer import from_hf_tokenizer

    if _is_minigpt(Path(spec)):
        return Path(spec)
    folder = _local_folder(str(spec))
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise MinigptError(f"--init-from {spec}: no config.json in {folder}; give a Hugging Face model folder")
    model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    if model_type != "gpt2":
        raise MinigptError(f"--init-from {spec}: model_type {model_type!r}; only GPT-2 models import "
                           "(GPT2LMHeadModel folders)")
    weights = folder / "model.safetensors"
    small = sorted(folder.glob("*.json")) + sorted(folder.glob("*.txt"))  # config, tokenizer: hashed whole
    stamp = [str(folder.resolve())] + [sha256_file(p) for p in small]
    if weights.is_file():
        stamp.append(f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}")
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:10]
    slug = re.sub(r"[^\w.-]+", "-", str(spec).rstrip("/").split("/")[-1]) or "hf"
    run_dir = minigpt_home() / "imports" / f"{slug}-{key}"
    if (run_dir / "latest").is_file():
        return run_dir
    tokenizer = from_hf_tokenizer(folder, name=slug)
    model = from_hf_gpt2(folder)
    if model.config.vocab_size < tokenizer.n_ranks:
        raise MinigptError(f"--init-from {spec}: {model.config.vocab_size} embedding rows for {tokenizer.n_ranks} "
                           "tokenizer ids; the folder's model and tokenizer do not belong together")
    model = resize_vocab(model, tokenizer.vocab_size)
    with atomic_dir(run_dir) as tmp:
        tokenizer.save(tmp / "tokenizer.bpe")
        save_checkpoint(tmp, 0, model, tmp / "tokenizer.bpe", extra={"stage": "import", "source": str(spec)})
        write_run_info(tmp, {"stage": "import", "parent": None, "source": str(spec), "model": to_dict(model.config)})
    return run_dir
