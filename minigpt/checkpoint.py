"""Run directories and checkpoints: one format for every stage and model family (DESIGN section 4).

    checkpoints/<run>/
      run.json                 stage, parent run, resolved configs, minigpt version, format version
      metrics.jsonl            append-only training and eval metrics (the trainer writes it)
      step_000500/             written as a temp folder, then renamed into place
        config.json            {"format": 1, "model": {...}, "tokenizer_sha256": ..., "step": ...}
        model.safetensors      weights of the unwrapped module (tied tensors stored once)
        tokenizer.bpe|.char    a copy, so a checkpoint is self-contained
        trainer_state.safetensors + trainer_state.json   optimizer, RNG and data position, step
      latest                   names the newest complete step (written last, atomically)
      best                     names the step with the lowest val loss

Nothing is pickled: tensors go to safetensors, everything else to JSON. Loading checks, in order, that the
files exist, the format version, the model kind and config, the tokenizer hash, and strict weight loading;
each failure is one `MinigptError` line naming the file and the fix.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from . import __version__
from .common import MinigptError, atomic_dir, atomic_write_text, sha256_file
from .config import to_dict

FORMAT = 1
TOKENIZER_FILES = ("tokenizer.bpe", "tokenizer.char")


# ---------------------------------------------------------------------------------------------- flatten state


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, numbers) into {path: tensor} and a JSON skeleton in
    which each tensor is replaced by {"__tensor__": path}. Used for optimizer and trainer state."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[k, walk(v, f"{path}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return {"__list__" if isinstance(obj, list) else "__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        return obj

    return tensors, walk(state, prefix or "state")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__list__" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["__list__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
    return skeleton


# ---------------------------------------------------------------------------------------------- runs


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """run.json: what this run is (stage, parent, configs). Rewritten atomically on each start/resume."""
    atomic_write_text(run_dir / "run.json", json.dumps({"format": FORMAT, "minigpt": __version__, **info}, indent=2))


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def tokenizer_file(folder: Path) -> Path | None:
    return next((folder / n for n in TOKENIZER_FILES if (folder / n).is_file()), None)


def save_checkpoint(run_dir: Path, step: int, model, tokenizer_path: Path, *, trainer_state: dict | None = None,
                    extra: dict | None = None, keep: int = 2, best: bool = False) -> Path:
    """Write step_<step>/ atomically, then point `latest` (and `best` if asked) at it; prune old steps."""
    run_dir = Path(run_dir)
    target = run_dir / step_name(step)
    with atomic_dir(target) as tmp:
        config = {"format": FORMAT, "minigpt": __version__, "step": step, "model": to_dict(model.config),
                  "tokenizer_sha256": sha256_file(tokenizer_path), **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        save_model(model, str(tmp / "model.safetensors"))
        shutil.copyfile(tokenizer_path, tmp / Path(tokenizer_path).name)
        if trainer_state is not None:
            tensors, skeleton = flatten_state(trainer_state)
            save_file(tensors, str(tmp / "trainer_state.safetensors"))
            (tmp / "trainer_state.json").write_text(json.dumps(skeleton))
    atomic_write_text(run_dir / "latest", target.name + "\n")
    if best:
        atomic_write_text(run_dir / "best", target.name + "\n")
    _prune(run_dir, keep)
    return target


def _prune(run_dir: Path, keep: int) -> None:
    protected = {_read_pointer(run_dir, "latest"), _read_pointer(run_dir, "best")}
    steps = sorted(p for p in run_dir.glob("step_*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        if old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)


def check_run_dir(run_dir: str | Path, resume: bool) -> Path:
    """The one rule every training command follows, checked before any tokenizer or data work: a new run needs
    a folder that holds no run, and `--resume` needs the folder of an earlier run."""
    run_dir = Path(run_dir)
    if resume and not (run_dir / "run.json").is_file():
        raise MinigptError(f"--resume: {run_dir} holds no run (no run.json); give the --out of an earlier run")
    if resume and not (run_dir / "latest").is_file():
        raise MinigptError(f"--resume: {run_dir} stopped before its first checkpoint; start it again without "
                           "--resume")
    if not resume and (run_dir / "latest").exists():
        raise MinigptError(f"{run_dir}: already holds a run; add --resume to continue it, or choose another --out")
    return run_dir


def _read_pointer(run_dir: Path, name: str) -> str | None:
    path = run_dir / name
    return path.read_text().strip() if path.is_file() else None


def resolve_step(path: str | Path) -> Path:
    """A run folder (-> its latest step), a run folder's `best`/`latest`, or a step folder -> the step folder."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if path.name in ("latest", "best") and path.is_file():
        return path.parent / path.read_text().strip()
    if path.is_dir():
        pointer = _read_pointer(path, "latest")
        if pointer and (path / pointer / "config.json").is_file():
            return path / pointer
        raise MinigptError(f"{path}: no complete checkpoint in this folder (no 'latest'); train one first "
                           "or give a step_* folder")
    raise MinigptError(f"--checkpoint {path}: no such checkpoint folder")


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    model: Any
    tokenizer: Any
    tokenizer_path: Path
    trainer_state: dict | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))


def read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise MinigptError(f"{cfg_path}: unreadable ({e}); the checkpoint is corrupt, use another step") from None
    if config.get("format") != FORMAT:
        raise MinigptError(f"{cfg_path}: checkpoint format {config.get('format')!r}, this minigpt reads {FORMAT}; "
                           "use a matching minigpt version")
    if not isinstance(config.get("model"), dict):
        raise MinigptError(f"{cfg_path}: no model config; the checkpoint is corrupt")
    return config


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu", with_trainer_state: bool = False,
                    build=None) -> Checkpoint:
    """Load and validate a checkpoint. `build(config_dict) -> nn.Module` builds the module (default: the model
    registry; the reward stage passes its own)."""
    from .models import build_model, config_from_dict
    from .text.tokenizer import load_tokenizer

    path = resolve_step(path)
    config = read_config(path)
    tok_path = tokenizer_file(path)
    if tok_path is None:
        raise MinigptError(f"{path}: no tokenizer file in the checkpoint; it is incomplete, use another step")
    if sha256_file(tok_path) != config.get("tokenizer_sha256"):
        raise MinigptError(f"{tok_path}: does not match the tokenizer the model was trained with "
                           "(sha256 differs); restore the original file")
    tokenizer = load_tokenizer(tok_path)
    model = (build or (lambda c: build_model(config_from_dict(c, source=str(path / "config.json")))))(config["model"])
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is not None and vocab < tokenizer.vocab_size:
        raise MinigptError(f"{path}: model vocab {vocab} is smaller than the tokenizer's {tokenizer.vocab_size}; "
                           "the checkpoint is inconsistent")
    weights = path / "model.safetensors"
    try:
        missing, unexpected = load_model(model, str(weights), strict=False)
    except (SafetensorError, OSError) as e:
        raise MinigptError(f"{weights}: unreadable ({e}); the file is truncated or corrupt, use another step") from None
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[-1] if first else "")
        raise MinigptError(f"{weights}: weights do not fit the config ({detail[:200]}); "
                           "the checkpoint is inconsistent") from None
    if missing or unexpected:
        raise MinigptError(f"{weights}: weights do not fit the config (missing {list(missing)[:3]}, "
                           f"unexpected {list(unexpected)[:3]}); the checkpoint is inconsistent")
    model.to(device)
    state = None
    if with_trainer_state and (path / "trainer_state.json").is_file():
        try:
            tensors = load_file(str(path / "trainer_state.safetensors"))
            state = unflatten_state(json.loads((path / "trainer_state.json").read_text()), tensors)
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            raise MinigptError(f"{path}/trainer_state.*: unreadable ({e}); resume from another step") from None
    return Checkpoint(path, config, model, tokenizer, tok_path, state)
