"""Models in and out: a minigpt run to a Hugging Face model folder (hf.py) or a llama.cpp GGUF file (gguf.py), and a
Hugging Face GPT-2 folder in as a minigpt run (hf_import.py, for `--init-from`).

Which options export to what (`target(config, fmt)` decides, and refuses with the option that blocks it):

    GPT options                                           --format hf                --format gguf
    learned positions, LayerNorm, no QK-norm (GPT-2)      GPT2LMHeadModel            gpt2 (gelu_tanh only)
      activation gelu_tanh | gelu | relu2; bias or not (zeros), tied head or not
    rotary, RMSNorm, QK-norm, no bias (the default)       Qwen3ForCausalLM           qwen3 (swiglu only)
    rotary, RMSNorm, no QK-norm, no bias                  LlamaForCausalLM           -
      activation relu2 (exported as relu(gate) * up with gate = up = c_fc: relu(g)*g == relu(g)^2 exactly,
      at twice the MLP input weights in the file) or swiglu (silu(gate) * up, the halves of c_fc)

Refused: a logit softcap, GELU or SwiGLU mixes that no target has, reward models and the baseline kinds.
llama.cpp's qwen3 graph hard-codes a SiLU-gated MLP, and no llama.cpp architecture has both ReLU^2 and QK-norm,
so the default options export to GGUF only when trained with `--activation swiglu`.

Exactness (tests/test_export.py): logits equal minigpt's to 1e-5 in fp32 over 64 positions, and greedy
generation is token-for-token equal. Past ~100 positions transformers' rotary tables (computed in fp32, ours in
float64) move Qwen3/Llama logits by up to ~2e-5 at 256 positions; GPT-2 has no such term.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common import MinigptError
from ..config import flag

FORMATS = ("hf", "gguf")


def _why_not(c: Any, fmt: str) -> tuple[str | None, str]:
    """(architecture, "") when the options map exactly, else (None, the one-line reason naming the option)."""
    if c.logit_softcap is not None:
        return None, f"{flag('logit_softcap')} {c.logit_softcap:g}: no exported architecture squashes logits"
    if c.positions == "learned":
        if c.norm != "layernorm":
            return None, f"{flag('norm')} {c.norm} with learned positions: GPT-2 uses LayerNorm"
        if c.qk_norm:
            return None, f"{flag('qk_norm')} with learned positions: GPT-2 has no QK-norm"
        allowed = ("gelu_tanh",) if fmt == "gguf" else ("gelu_tanh", "gelu", "relu2")
        if c.activation not in allowed:
            return None, (f"{flag('activation')} {c.activation}: "
                          + ("llama.cpp's gpt2 MLP is GELU (tanh)" if fmt == "gguf" else "GPT-2's MLP is not gated"))
        return "gpt2", ""
    if c.norm != "rmsnorm":
        return None, f"{flag('norm')} {c.norm} with rotary positions: Qwen3 and Llama use RMSNorm"
    if c.bias:
        return None, f"{flag('bias')} with rotary positions: Qwen3 and Llama have no biases"
    if fmt == "gguf":
        if not c.qk_norm:
            return None, f"{flag('no_qk_norm')}: only llama.cpp's qwen3 architecture matches, and it has QK-norm"
        if c.activation != "swiglu":
            return None, (f"{flag('activation')} {c.activation}: llama.cpp's qwen3 MLP is SiLU-gated (swiglu); "
                          "no llama.cpp architecture has ReLU^2 with QK-norm")
        return "qwen3", ""
    if c.activation not in ("relu2", "swiglu"):
        return None, f"{flag('activation')} {c.activation} with rotary positions: Qwen3 and Llama MLPs are gated"
    return ("qwen3" if c.qk_norm else "llama"), ""


def target(model_config: Any, fmt: str) -> str:
    """The architecture `fmt` exports these options to: gpt2, qwen3 or llama. Refuses with one line."""
    if fmt not in FORMATS:
        raise MinigptError(f"--format {fmt}: unknown; choose one of {', '.join(FORMATS)}")
    kind = getattr(model_config, "kind", "?")
    if kind == "reward":
        raise MinigptError("a reward model scores sequences; only language models export (give a pretrain, sft, "
                           "dpo or rl run)")
    if kind != "gpt":
        raise MinigptError(f"--model {kind}: a baseline kind has no Hugging Face or llama.cpp counterpart; "
                           "only the GPT exports")
    arch, why = _why_not(model_config, fmt)
    if arch is None:
        raise MinigptError(f"cannot export to --format {fmt}: {why}; see `minigpt export --help` for what exports")
    return arch


def _check_out(out: Path, fmt: str, force: bool, step: Path) -> None:
    """Refuse an `--out` that would lose something: an existing path without --force; with it, anything but an
    earlier export (a folder holding a Hugging Face config.json, or a file for gguf), the run being exported or a
    folder holding it, and the working folder or one above it."""
    where, source = out.resolve(), step.resolve()
    run = source.parent if (source.parent / "latest").is_file() else source
    if where in (source, run) or run in where.parents or where in run.parents or where == Path.cwd() \
            or where in Path.cwd().parents:
        raise MinigptError(f"--out {out}: is or holds the checkpoint being exported (or the working folder); "
                           "choose a path outside it, e.g. --out exported/NAME")
    if fmt == "gguf" and out.is_dir():
        raise MinigptError(f"--out {out}: is a folder; --format gguf writes one file, e.g. --out model.gguf")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not force:
        raise MinigptError(f"--out {out}: already exists; choose a new path, or add --force to replace it")
    if out.is_dir() and not _is_hf_export(out):
        raise MinigptError(f"--out {out}: is a folder that holds no earlier export (no Hugging Face config.json); "
                           "--force replaces only an export; choose a new path")


def _is_hf_export(folder: Path) -> bool:
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "model_type" in config and not (folder / "latest").exists()


def export_run(run: str | Path, fmt: str, out: str | Path, *, force: bool = False) -> Path:
    """Load a run's checkpoint and write it as `fmt` to `out` (a folder for hf, a .gguf file for gguf); an
    existing export at `out` is replaced only with `force` (`_check_out` says what else is refused)."""
    from ..checkpoint import load_checkpoint, read_config, resolve_step
    from ..models import config_from_dict

    out = Path(out)
    step = resolve_step(run)
    _check_out(out, fmt, force, step)
    config = read_config(step)
    arch = target(config_from_dict(config["model"], source=str(step)), fmt)  # refuse before loading weights
    ckpt = load_checkpoint(step)
    try:
        if fmt == "hf":
            from .hf import export_hf

            return export_hf(ckpt.model, ckpt.tokenizer, out, arch)
        from .gguf import export_gguf

        return export_gguf(ckpt.model, ckpt.tokenizer, out, arch, name=ckpt.run_dir.name)
    except OSError as e:
        raise MinigptError(f"--out {out}: cannot write there ({e.strerror or e}); choose another path") from None
