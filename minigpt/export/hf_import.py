"""Models in: a Hugging Face GPT-2 folder (or Hub id) imported once as an ordinary minigpt run, for `--init-from`.

`hf_start(spec)` returns a run folder whose checkpoint holds GPT-2's weights (models/hf.py maps them) with the token
table grown for minigpt's special tokens, and a minigpt tokenizer keeping GPT-2's ranks (text/hf_tokenizer.py);
`pretrain`, `sft` and every later stage then treat it like a run they trained.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..common import MinigptError
from ..models.hf import from_hf_gpt2, resize_vocab


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
